"""Builds tiny data files in the exact layouts of the official ones, for the loaders' tests.

The CIFAR archives hold a few images each under the official member names and in the
official formats (https://www.cs.toronto.edu/~kriz/cifar.html): fixed-size binary records
of label bytes then R, G and B planes, and pickles written the way Python 2 wrote the
originals. Every pixel has a known value (`pixel_value`), so a test can check the
plane-to-HWC layout exactly. The image-folder trees mix JPEG and PNG, grayscale, RGBA and
odd sizes, each with the 32x32 RGB image the loader should make of it.
"""

import dataclasses
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import tensorflow as tf

# A fixed modification time for every tar member, so that a fixture's bytes never change.
_MTIME = 1_600_000_000

CIFAR10_CLASS_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                       "ship", "truck"]
CIFAR100_FINE_NAMES = [f"fine_{k:02d}" for k in range(100)]
CIFAR100_COARSE_NAMES = [f"coarse_{k:02d}" for k in range(20)]

# Labels of the fixture images; a CIFAR-100 coarse label is its fine label // 5 here, so
# fine and coarse differ for every image but one and a mix-up shows.
_CIFAR10_LABELS = {"train": [6, 9, 9, 4, 1, 1, 2, 7, 8, 3], "test": [3, 8, 0]}
_CIFAR100_FINE_LABELS = {"train": [19, 29, 0, 11, 99, 86], "test": [49, 33, 72]}
_CIFAR10_TRAIN_BATCHES = 5


def pixel_value(index, row, column, channel):
    """The value of one pixel of fixture image `index`; differs when row and column swap."""
    return (17 * index + 85 * channel + 7 * row + 3 * column) % 256


def hwc_images(first_index, count):
    """Fixture images [count, 32, 32, 3] as a loader should return them, built pixel by pixel."""
    return np.fromfunction(
        lambda i, h, w, c: pixel_value(first_index + i, h, w, c), (count, 32, 32, 3),
        dtype=np.int64).astype(np.uint8)


def plane_rows(first_index, count):
    """The same images in the official layout: per image 1024 R, 1024 G, 1024 B bytes, rows first.

    Built from `pixel_value` directly, not by transposing `hwc_images`, so a layout mistake in
    the loader cannot cancel one in this file.
    """
    planes = np.fromfunction(
        lambda i, c, h, w: pixel_value(first_index + i, h, w, c), (count, 3, 32, 32),
        dtype=np.int64).astype(np.uint8)
    return planes.reshape(count, 3072)


@dataclasses.dataclass
class CifarContents:
    """What a fixture archive holds, as `datasets.load` should return it."""

    train_images: np.ndarray  # uint8 [N, 32, 32, 3]
    train_labels: np.ndarray  # int64 [N]
    test_images: np.ndarray
    test_labels: np.ndarray
    class_names: list


def cifar_contents(dataset, label_type="fine"):
    """The expected contents of the fixture archives of `dataset` (either format)."""
    if dataset == "cifar10":
        labels, names = _CIFAR10_LABELS, CIFAR10_CLASS_NAMES
    elif label_type == "fine":
        labels, names = _CIFAR100_FINE_LABELS, CIFAR100_FINE_NAMES
    else:
        labels = {split: [fine // 5 for fine in fine_labels]
                  for split, fine_labels in _CIFAR100_FINE_LABELS.items()}
        names = CIFAR100_COARSE_NAMES
    train_count = len(labels["train"])
    return CifarContents(
        train_images=hwc_images(0, train_count),
        train_labels=np.array(labels["train"], np.int64),
        test_images=hwc_images(train_count, len(labels["test"])),
        test_labels=np.array(labels["test"], np.int64),
        class_names=list(names))


def binary_records(label_rows, first_index=0):
    """Official binary records: per image its label bytes (CIFAR-100: coarse, fine), then pixels.

    `label_rows` holds one sequence of label bytes per image; the images are the fixture
    images from `first_index` on.
    """
    pixels = plane_rows(first_index, len(label_rows))
    return b"".join(bytes(labels) + row.tobytes() for labels, row in zip(label_rows, pixels))


def write_cifar_archive(directory, dataset, fmt, replace=None):
    """Writes the official archive of `dataset` ("cifar10" or "cifar100") in `fmt` ("binary" or
    "python") into `directory`, holding the fixture images; returns its path.

    `replace` maps member names (e.g. "cifar-100-binary/train.bin") to bytes written instead
    of the official contents, to make damaged or hostile archives.
    """
    members = _CIFAR_WRITERS[(dataset, fmt)]()
    for name, data in (replace or {}).items():
        if name not in members:
            raise KeyError(f"{name} is not a member of the {dataset} {fmt} archive")
        members[name] = data
    filename = {("cifar10", "binary"): "cifar-10-binary.tar.gz",
                ("cifar10", "python"): "cifar-10-python.tar.gz",
                ("cifar100", "binary"): "cifar-100-binary.tar.gz",
                ("cifar100", "python"): "cifar-100-python.tar.gz"}[(dataset, fmt)]
    path = os.path.join(directory, filename)
    write_tar(path, members)
    return path


def _cifar10_binary():
    root = "cifar-10-batches-bin/"
    train, test = _CIFAR10_LABELS["train"], _CIFAR10_LABELS["test"]
    per_batch = len(train) // _CIFAR10_TRAIN_BATCHES
    members = {root + "batches.meta.txt": _names_text(CIFAR10_CLASS_NAMES),
               root + "readme.html": b"<html></html>\n"}
    for batch in range(_CIFAR10_TRAIN_BATCHES):
        first = batch * per_batch
        members[root + f"data_batch_{batch + 1}.bin"] = binary_records(
            [[label] for label in train[first:first + per_batch]], first)
    members[root + "test_batch.bin"] = binary_records([[label] for label in test], len(train))
    return members


def _cifar10_python():
    root = "cifar-10-batches-py/"
    train, test = _CIFAR10_LABELS["train"], _CIFAR10_LABELS["test"]
    per_batch = len(train) // _CIFAR10_TRAIN_BATCHES
    members = {
        root + "batches.meta": python2_pickle({
            b"num_cases_per_batch": per_batch,
            b"label_names": [name.encode() for name in CIFAR10_CLASS_NAMES],
            b"num_vis": 3072}),
        root + "readme.html": b"<html></html>\n",
    }

    def batch(batch_label, labels, first):
        return python2_pickle({
            b"batch_label": batch_label,
            b"labels": list(labels),
            b"data": plane_rows(first, len(labels)),
            b"filenames": [f"image_{first + i:05d}.png".encode() for i in range(len(labels))]})

    for index in range(_CIFAR10_TRAIN_BATCHES):
        first = index * per_batch
        members[root + f"data_batch_{index + 1}"] = batch(
            f"training batch {index + 1} of 5".encode(), train[first:first + per_batch], first)
    members[root + "test_batch"] = batch(b"testing batch 1 of 1", test, len(train))
    return members


def _cifar100_binary():
    root = "cifar-100-binary/"
    fine = _CIFAR100_FINE_LABELS
    return {
        root + "coarse_label_names.txt": _names_text(CIFAR100_COARSE_NAMES),
        root + "fine_label_names.txt": _names_text(CIFAR100_FINE_NAMES),
        root + "train.bin": binary_records([[label // 5, label] for label in fine["train"]]),
        root + "test.bin": binary_records([[label // 5, label] for label in fine["test"]],
                                          len(fine["train"])),
    }


def _cifar100_python():
    root = "cifar-100-python/"
    fine = _CIFAR100_FINE_LABELS

    def batch(batch_label, labels, first):
        return python2_pickle({
            b"filenames": [f"image_{first + i:05d}.png".encode() for i in range(len(labels))],
            b"batch_label": batch_label,
            b"fine_labels": list(labels),
            b"coarse_labels": [label // 5 for label in labels],
            b"data": plane_rows(first, len(labels))})

    return {
        root + "file.txt~": b"",
        root + "meta": python2_pickle({
            b"fine_label_names": [name.encode() for name in CIFAR100_FINE_NAMES],
            b"coarse_label_names": [name.encode() for name in CIFAR100_COARSE_NAMES]}),
        root + "test": batch(b"testing batch 1 of 1", fine["test"], len(fine["train"])),
        root + "train": batch(b"training batch 1 of 1", fine["train"], 0),
    }


_CIFAR_WRITERS = {
    ("cifar10", "binary"): _cifar10_binary,
    ("cifar10", "python"): _cifar10_python,
    ("cifar100", "binary"): _cifar100_binary,
    ("cifar100", "python"): _cifar100_python,
}


def _names_text(names):
    # The official name files end with a blank line.
    return ("\n".join(names) + "\n\n").encode()


class _Python2Pickler(pickle._Pickler):
    """Writes protocol-2 pickles as Python 2's cPickle wrote the official CIFAR files.

    Python 3 writes bytes at protocol 2 as calls of `_codecs.encode`, and numpy arrays through
    `numpy._core`; Python 2 wrote its strings as plain BINSTRING opcodes and arrays through
    `numpy.core.multiarray._reconstruct`. The originals hold only the latter, so a loader that
    admits only what they need must read these.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def save_string(self, value):
        data = value if isinstance(value, bytes) else value.encode("latin-1")
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(value)

    dispatch[bytes] = save_string
    dispatch[str] = save_string

    def save_ndarray(self, array):
        # _reconstruct(ndarray, (0,), b"b"), then BUILD with the state
        # (1, shape, dtype("u1"), False, raw bytes), as numpy 1.x under Python 2 wrote it.
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        self.write(pickle.GLOBAL + b"numpy\nndarray\n")
        self.save((0,))
        self.save(b"b")
        self.write(pickle.TUPLE3 + pickle.REDUCE)
        self.write(pickle.MARK)
        self.save(1)
        self.save(array.shape)
        self.write(pickle.GLOBAL + b"numpy\ndtype\n")
        self.save(b"u1")
        self.save(0)
        self.save(1)
        self.write(pickle.TUPLE3 + pickle.REDUCE)
        self.save((3, b"|", None, None, None, -1, -1, 0))
        self.write(pickle.BUILD)
        self.save(False)
        self.save(np.ascontiguousarray(array, np.uint8).tobytes())
        self.write(pickle.TUPLE + pickle.BUILD)

    dispatch[np.ndarray] = save_ndarray


def python2_pickle(value):
    """`value` pickled at protocol 2 as the official (Python 2) CIFAR files are."""
    buffer = io.BytesIO()
    _Python2Pickler(buffer, protocol=2).dump(value)
    return buffer.getvalue()


def hostile_array_pickle(start_shape=(0,), shape=(2, 3072), dtype=b"u1", raw=b"\0" * 10):
    """A CIFAR batch pickle whose `data` array claims a size its bytes do not back.

    Written opcode by opcode as the official files are (`python2_pickle`), with the
    numbers a hostile file would put in the array's header: numpy's `_reconstruct` then
    allocates `start_shape` at once (an honest pickle says (0,)), and the state `shape`
    claims what the raw bytes must fill.
    """
    buffer = io.BytesIO()
    pickler = _Python2Pickler(buffer, protocol=2)
    write = pickler.write
    write(pickle.PROTO + bytes([2]) + pickle.MARK)
    pickler.save(b"labels")
    pickler.save([0, 1])
    pickler.save(b"data")
    write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n" + pickle.GLOBAL + b"numpy\nndarray\n")
    pickler.save(start_shape)
    pickler.save(b"b")
    write(pickle.TUPLE3 + pickle.REDUCE + pickle.MARK)
    pickler.save(1)
    pickler.save(shape)
    write(pickle.GLOBAL + b"numpy\ndtype\n")
    pickler.save(dtype)
    pickler.save(0)
    pickler.save(1)
    write(pickle.TUPLE3 + pickle.REDUCE)
    pickler.save((3, b"|", None, None, None, -1, -1, 0))
    write(pickle.BUILD)
    pickler.save(False)
    pickler.save(raw)
    write(pickle.TUPLE + pickle.BUILD + pickle.DICT + pickle.STOP)
    return buffer.getvalue()


def write_tar(path, members):
    """Writes `members` (name -> bytes) as a tar, gzip-compressed if `path` ends in .gz or .tgz.

    Each member's folders come first as their own entries, as `tar` writes them.
    """
    mode = "w:gz" if path.endswith((".gz", ".tgz")) else "w"
    written = set()
    with tarfile.open(path, mode) as tar:
        for name in sorted(members):
            parts = name.split("/")[:-1]
            for depth in range(1, len(parts) + 1):
                folder = "/".join(parts[:depth])
                if folder not in written:
                    info = tarfile.TarInfo(folder)
                    info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, _MTIME
                    tar.addfile(info)
                    written.add(folder)
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(members[name]), 0o644, _MTIME
            tar.addfile(info, io.BytesIO(members[name]))
    return path


@dataclasses.dataclass
class FolderImage:
    """One file of an image-folder tree and the 32x32 RGB image a loader should make of it."""

    path: str  # relative to the tree's root, e.g. "train/apple/a0.png"
    label: int  # index of its class among the sorted class names
    expected: np.ndarray  # uint8 [32, 32, 3]
    exact: bool  # False for JPEG, whose decoded pixels may differ by a few levels


@dataclasses.dataclass
class FolderTree:
    """What `write_image_folder` wrote: sorted class names and each split's images in the
    order a loader returns them (class by class, file names sorted within a class)."""

    class_names: list
    train: list
    test: list


def _solid(height, width, colour):
    return np.broadcast_to(np.array(colour, np.uint8), (height, width, len(colour))).copy()


def write_image_folder(root):
    """Writes a small image-folder tree under `root` (root/train/<class>/..., root/test/...).

    Three classes, written in unsorted order, each with its own colour: RGB PNGs and JPEGs,
    a grayscale PNG, an RGBA PNG and images that are not 32x32. Returns a `FolderTree`.
    """
    red, green, blue = (200, 30, 40), (20, 160, 60), (10, 20, 250)
    # A 16x64 image keeps its aspect ratio: it becomes 8x32, with 12 black rows above and below.
    wide = np.zeros((32, 32, 3), np.uint8)
    wide[12:20] = blue
    # A 20x10 image becomes 32x16, with 8 black columns on either side.
    tall = np.zeros((32, 32, 3), np.uint8)
    tall[:, 8:24] = green
    files = [
        # (path, label, pixels as written, encoding, expected 32x32 RGB)
        ("train/zebra/z0.png", 2, _solid(16, 64, blue), "png", wide),
        ("train/zebra/z1.png", 2, _solid(64, 64, blue), "png", _solid(32, 32, blue)),
        ("train/zebra/z2.jpg", 2, _solid(32, 32, blue), "jpeg", _solid(32, 32, blue)),
        ("train/apple/a0.png", 0, _solid(32, 32, red), "png", _solid(32, 32, red)),
        ("train/apple/a1.jpg", 0, _solid(32, 32, red), "jpeg", _solid(32, 32, red)),
        ("train/apple/a2.png", 0, _solid(32, 32, red + (100,)), "png", _solid(32, 32, red)),
        ("train/mango/m0.png", 1, _solid(32, 32, (90,)), "png", _solid(32, 32, (90, 90, 90))),
        ("train/mango/m1.png", 1, _solid(20, 10, green), "png", tall),
        ("test/zebra/t0.jpeg", 2, _solid(32, 32, blue), "jpeg", _solid(32, 32, blue)),
        ("test/apple/t0.png", 0, _solid(32, 32, red + (255,)), "png", _solid(32, 32, red)),
        ("test/mango/t0.png", 1, _solid(32, 32, green), "png", _solid(32, 32, green)),
        ("test/mango/t1.png", 1, _solid(8, 8, (90,)), "png", _solid(32, 32, (90, 90, 90))),
    ]
    splits = {"train": [], "test": []}
    for path, label, pixels, encoding, expected in files:
        full = os.path.join(root, *path.split("/"))
        os.makedirs(os.path.dirname(full), exist_ok=True)
        if encoding == "png":
            data = tf.io.encode_png(pixels).numpy()
        else:
            data = tf.io.encode_jpeg(pixels, quality=95).numpy()
        with open(full, "wb") as f:
            f.write(data)
        splits[path.split("/")[0]].append(FolderImage(path, label, expected, encoding == "png"))
    for images in splits.values():
        images.sort(key=lambda image: (image.label, image.path))
    return FolderTree(["apple", "mango", "zebra"], splits["train"], splits["test"])


def write_tree_tar(tree_root, path, prefix=""):
    """Writes the files under `tree_root` into a tar at `path` (gzip for .gz/.tgz), each named
    `prefix` + its path below `tree_root`; returns `path`."""
    members = {}
    for directory, subdirectories, names in os.walk(tree_root):
        subdirectories.sort()
        for name in sorted(names):
            full = os.path.join(directory, name)
            relative = os.path.relpath(full, tree_root).replace(os.sep, "/")
            with open(full, "rb") as f:
                members[prefix + relative] = f.read()
    return write_tar(path, members)
