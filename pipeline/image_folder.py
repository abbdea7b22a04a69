"""Reads an image-folder tree, as a directory or a tar of one.

Layout: `ROOT/train/<class>/*.{jpg,jpeg,png,bmp,gif}` and `ROOT/test/<class>/...`;
`ROOT` may also hold a single directory that holds `train/` and `test/` (as the CIFAR-10
JPEG tar does). Class names are the sorted folder names under `train/`. Images of any
size and channel count are converted to `channels` and fitted into `size` x `size`
(resized with their aspect ratio kept, then padded), so a folder of photos works as is.
"""

import os
import tarfile
import zlib

import numpy as np
import tensorflow as tf

from common.errors import UserError
from pipeline import tar_members
from pipeline.split import Split

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
_DECODE_BATCH = 512
# Part of the key of pipeline/decoded_cache.py: raise it with any change here that changes
# the decoded pixels, labels or class names, so that arrays decoded before are not reused.
DECODER_VERSION = 1


def load(path, size, channels):
    """Returns (train Split, test Split, class names) for a folder tree or its tar."""
    if not os.path.exists(path):
        raise UserError(f"{path}: no such file or directory; pass --data_dir=<folder with "
                        "train/ and test/, or a .tar of it>.")
    if os.path.isdir(path):
        files = _files_in_directory(path)
    elif path.endswith(TAR_SUFFIXES):
        files = _files_in_tar(path)
    else:
        raise UserError(f"{path}: neither a directory nor a .tar/.tar.gz/.tgz archive of an "
                        "image-folder tree.")
    root = _find_root(files, path)
    class_names = sorted({key[1] for key in files if key[0] == root + ("train",)})
    if not class_names:
        raise UserError(f"{path}: {os.path.join(*root, 'train') if root else 'train'}/ has no "
                        "class folders; expected train/<class>/<image> and test/<class>/<image>.")
    splits = []
    for split in ("train", "test"):
        folder = root + (split,)
        names = sorted({key[1] for key in files if key[0] == folder})
        unknown = sorted(set(names) - set(class_names))
        if unknown:
            raise UserError(f"{path}: {split}/{unknown[0]} is a class that train/ lacks; "
                            "test/ may only use the classes of train/.")
        entries = []
        for label, class_name in enumerate(class_names):
            images = sorted(files.get((folder, class_name), []))
            if split == "train" and not images:
                raise UserError(f"{path}: {split}/{class_name}/ holds no images "
                                f"({', '.join(IMAGE_EXTENSIONS)}); add some or remove the folder.")
            entries.extend((name, reader, label) for name, reader in images)
        if not entries:
            raise UserError(f"{path}: {split}/ holds no images.")
        splits.append(_decode(entries, size, channels, path))
    return splits[0], splits[1], class_names


def _files_in_directory(path):
    """Maps (folder parts, class) to [(file name, reader)] for every image file below path."""
    files = {}
    for directory, subdirectories, names in os.walk(path):
        subdirectories.sort()
        parts = tuple(os.path.relpath(directory, path).split(os.sep))
        if parts != (".",):
            # Registered even when empty, so that an empty class folder is reported.
            files.setdefault((parts[:-1], parts[-1]), [])
        for name in names:
            if name.lower().endswith(IMAGE_EXTENSIONS) and parts != (".",):
                full = os.path.join(directory, name)
                files.setdefault((parts[:-1], parts[-1]), []).append(
                    (full, lambda full=full: _read_file(full)))
    return files


def _read_file(path):
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as error:
        raise UserError(f"{path}: cannot be read ({error.strerror}); fix its permissions or "
                        "remove it.") from None


def _files_in_tar(path):
    try:
        with tarfile.open(path, "r:*") as tar:
            files = {}
            for member in tar:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if member.isdir() and parts:
                    files.setdefault((parts[:-1], parts[-1]), [])
                if member.isfile() and len(parts) >= 3 and parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                    data = tar_members.read(tar, member)  # in blocks: its header may lie
                    files.setdefault((parts[:-2], parts[-2]), []).append(
                        (f"{path}:{member.name}", lambda data=data: data))
            return files
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise UserError(f"{path}: corrupt or truncated tar ({tar_members.open_error(error)}); make "
                        "it again.") from None


def _find_root(files, path):
    """Finds the folder that holds train/: the top, or one level down."""
    folders = {key[0] for key in files}
    roots = sorted({folder[:-1] for folder in folders if folder and folder[-1] == "train" and len(folder) <= 2})
    if not roots:
        if not files:
            raise UserError(f"{path}: holds no images; expected train/<class>/<image> and "
                            "test/<class>/<image>.")
        raise UserError(f"{path}: no train/ folder with class folders in it; expected "
                        "train/<class>/<image> and test/<class>/<image>.")
    if len(roots) > 1:
        raise UserError(f"{path}: several train/ folders ({', '.join('/'.join(r) or '.' for r in roots)}); "
                        "point --data_dir at one of them.")
    return roots[0]


def _decode(entries, size, channels, path):
    """Decodes every image in parallel with tf.data; names the file that fails."""
    def decode(data):
        # decode_image decodes JPEGs with libjpeg's fast, inexact DCT, which darkens red and
        # blue by about one level on average (CIFAR-10's JPEG copies: means off by 0.005);
        # the accurate DCT gives the published means of the originals to within 0.0002.
        image = tf.cond(
            tf.io.is_jpeg(data),
            lambda: tf.io.decode_jpeg(data, channels=channels, dct_method="INTEGER_ACCURATE"),
            lambda: tf.io.decode_image(data, channels=channels, expand_animations=False))
        return fit_image(image, size)

    images = []
    for start in range(0, len(entries), _DECODE_BATCH):
        chunk = entries[start:start + _DECODE_BATCH]
        encoded = [reader() for _, reader, _ in chunk]
        for (name, _, _), data in zip(chunk, encoded):
            # libjpeg prints its own complaint about a truncated JPEG to stderr before TF
            # raises; a JPEG must end with its end-of-image marker (trailing bytes allowed).
            if data[:2] == b"\xff\xd8" and b"\xff\xd9" not in data[-64:]:
                raise UserError(f"{name}: truncated JPEG (no end-of-image marker); replace or "
                                "remove it.")
        try:
            dataset = tf.data.Dataset.from_tensor_slices(encoded).map(
                decode, num_parallel_calls=tf.data.AUTOTUNE).batch(len(chunk))
            images.append(next(iter(dataset)).numpy())
        except tf.errors.InvalidArgumentError:
            for (name, _, _), data in zip(chunk, encoded):
                try:
                    decode(tf.constant(data))
                except tf.errors.InvalidArgumentError:
                    raise UserError(f"{name}: not a readable image; replace or remove it.") from None
            raise
    labels = np.array([label for _, _, label in entries], np.int64)
    return Split(np.concatenate(images), labels)


def fit_image(image, size):
    """Fits a uint8 [H, W, C] image into [size, size, C]: aspect ratio kept, padded with black."""
    shape = tf.shape(image)
    return tf.cond(
        tf.logical_and(shape[0] == size, shape[1] == size),
        lambda: tf.ensure_shape(image, [size, size, None]),
        lambda: fit_image_batch(image, size))


def fit_image_batch(images, size):
    """Like `fit_image` for uint8 images [..., H, W, C] of one size; always resamples."""
    resized = tf.image.resize_with_pad(images, size, size, antialias=True)
    return tf.cast(tf.clip_by_value(tf.round(resized), 0, 255), tf.uint8)
