"""Chooses a data source by name and returns its images in memory.

`load` is the one entry point: every source (TFDS, the official CIFAR archives, an image
folder or its tar, the embedded sample) gives the same `ImageData`, whose splits hold
uint8 images [N, H, W, C] and int64 labels [N]; `Split.as_dataset` (below) makes a
`tf.data.Dataset` of `(uint8 image [H, W, C], int64 label)` from one of them.

Decoded images (an image folder, its tar, the embedded sample, an official CIFAR archive)
are kept in an on-disk cache keyed by the source's content and the decoding parameters
(`pipeline/decoded_cache.py`: `$SUPCON_CACHE_DIR`, `off` to disable, else
`~/.cache/supcon_robust`), so only the first load of a folder of JPEGs decodes it.
`load(..., cache=False)` bypasses the cache. TFDS has its own cache and does not use it.
"""

import dataclasses
import os

import numpy as np

from common.errors import UserError
from pipeline import cifar_archives
from pipeline import decoded_cache
from pipeline import image_folder
from pipeline.split import Split  # noqa: F401 (re-exported for the stages)

SAMPLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample",
                           "cifar10_sample.tar.gz")


@dataclasses.dataclass
class ImageData:
    """A data set in memory: train and test splits, class names and where it came from."""

    name: str
    source: str
    train: Split
    test: Split
    class_names: list

    @property
    def image_shape(self):
        return tuple(self.train.images.shape[1:])

    @property
    def num_classes(self):
        return len(self.class_names)

    def summary(self):
        """Counts per split and class, as lines a person can check before training."""
        lines = [f"dataset {self.name}: {self.source}",
                 f"image shape {self.image_shape} uint8, {self.num_classes} classes"]
        for split_name, split in (("train", self.train), ("test", self.test)):
            counts = np.bincount(split.labels, minlength=self.num_classes)
            lines.append(f"{split_name}: {len(split.labels)} images, per class "
                         f"min {counts.min()} max {counts.max()}")
        shown = ", ".join(f"{i}:{n}" for i, n in enumerate(self.class_names[:10]))
        lines.append("classes " + shown + (" ..." if self.num_classes > 10 else ""))
        return "\n".join(lines)


def load(name="sample", data_dir="", image_size=32, channels=3, label_type="fine",
         verify_checksums=True, cache=True):
    """Loads data set `name`; see the module docstring and README for the choices.

    `cache=False` decodes an image folder, the sample or an archive even when the on-disk
    cache of decoded images holds it, and writes nothing there; `SUPCON_CACHE_DIR=off` does
    the same for every load of a process.
    """
    if name == "sample":
        train, test, classes = _load_folder(SAMPLE_PATH, image_size, channels, cache)
        source = f"embedded sample of CIFAR-10 (JPEG copies), {SAMPLE_PATH}"
    elif name == "folder":
        if not data_dir:
            raise UserError("--dataset=folder needs --data_dir=<folder with train/ and test/, "
                            "or a .tar of it>.")
        train, test, classes = _load_folder(data_dir, image_size, channels, cache)
        source = f"image folder {data_dir}"
    else:
        found = None
        if name in ("cifar10", "cifar100") and data_dir:
            if not os.path.exists(data_dir):
                raise UserError(f"--data_dir={data_dir}: no such file or directory; give the folder "
                                f"that holds the official {name} archive.")
            found = cifar_archives.find_archive(name, data_dir)
        if found:
            path, archive = found
            train, test, classes = _load_archive(path, archive, label_type, verify_checksums,
                                                 cache)
            source = f"official archive {path}"
        else:
            from pipeline import tfds_source
            tfds_label = "coarse_label" if (name == "cifar100" and label_type == "coarse") else "label"
            train, test, classes = tfds_source.load(name, data_dir or None, tfds_label)
            source = f"TFDS {name}" + (f" in {data_dir}" if data_dir else "")
        train, test = conform(train, image_size, channels), conform(test, image_size, channels)
    return ImageData(name, source, train, test, list(classes))


def _load_folder(path, image_size, channels, cache):
    """`image_folder.load`, through the on-disk cache of decoded images when `cache` is on."""
    def decode():
        return image_folder.load(path, image_size, channels)

    if not cache or not (os.path.isdir(path) or (os.path.isfile(path) and
                                                 path.endswith(image_folder.TAR_SUFFIXES))):
        return decode()  # the decoder also says what is wrong with a bad path
    import tensorflow as tf

    params = {"loader": "image_folder", "image_size": image_size, "channels": channels,
              "decoder_version": image_folder.DECODER_VERSION, "tensorflow": tf.__version__}
    return decoded_cache.load_or_decode(path, params, decode, image_folder.IMAGE_EXTENSIONS)


def _load_archive(path, archive, label_type, verify_checksums, cache):
    """`cifar_archives.load`, through the on-disk cache when `cache` is on. The checksum is
    checked first either way, so a damaged archive is reported even when it was cached."""
    if verify_checksums:
        cifar_archives.verify_checksum(path, archive)

    def decode():
        return cifar_archives.load(path, archive, label_type, verify=False)

    if not cache:
        return decode()
    params = {"loader": "cifar_archive", "dataset": archive.dataset, "format": archive.fmt,
              # CIFAR-10 has one kind of label, whatever label_type says.
              "label_type": label_type if archive.dataset == "cifar100" else "fine",
              "reader_version": cifar_archives.READER_VERSION}
    return decoded_cache.load_or_decode(path, params, decode)


def conform(split, size, channels):
    """Converts a split's images to [size, size, channels] if they are not already."""
    if split.images.ndim == 3:
        split = Split(split.images[..., None], split.labels)
    _, height, width, have = split.images.shape
    if (height, width, have) == (size, size, channels):
        return split
    import tensorflow as tf

    images = tf.constant(split.images)
    if have != channels:
        if (have, channels) == (3, 1):
            images = tf.image.rgb_to_grayscale(images)
        elif (have, channels) == (1, 3):
            images = tf.image.grayscale_to_rgb(images)
        else:
            raise UserError(f"cannot convert {have}-channel images to {channels} channels; set "
                            "--config.data.channels to 1 or 3.")
    images = image_folder.fit_image_batch(images, size)
    return Split(images.numpy(), split.labels)


def split_validation(split, fraction, seed):
    """Carves a class-stratified validation set from `split`; returns (train, validation).

    The same seed always picks the same images. Tune on the validation set, never on test.
    """
    if not 0.0 <= fraction < 1.0:
        raise UserError(f"config.data.validation_fraction={fraction}: must be in [0, 1).")
    if fraction == 0.0:
        return split, None
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(split.labels):
        members = np.flatnonzero(split.labels == label)
        count = int(round(fraction * len(members)))
        held_out.extend(rng.choice(members, count, replace=False))
    mask = np.zeros(len(split.labels), bool)
    mask[np.array(held_out, np.int64)] = True
    return (Split(split.images[~mask], split.labels[~mask]),
            Split(split.images[mask], split.labels[mask]))


def load_config(data_config):
    """The `ImageData` that config.data describes."""
    return load(data_config.name, data_config.data_dir, data_config.image_size,
                data_config.channels, data_config.label_type, data_config.verify_checksums)


def training_splits(config):
    """(data, train split, validation split or None) as the config asks, seeded.

    config.data.max_train_examples > 0 keeps a seeded subset of the training split (after
    the validation images were carved out, so they never change with it).
    """
    data = load_config(config.data)
    train, validation = split_validation(data.train, config.data.validation_fraction, config.seed)
    if 0 < config.data.max_train_examples < len(train):
        keep = np.sort(np.random.default_rng(config.seed).choice(
            len(train), config.data.max_train_examples, replace=False))
        train = Split(train.images[keep], train.labels[keep])
    return data, train, validation
