"""Reads the official CIFAR-10 and CIFAR-100 archives from a local directory, offline.

Both official formats are read: the binary one (`cifar-*-binary.tar.gz`, fixed-size
records) and the Python one (`cifar-*-python.tar.gz`, pickles). Each archive is first
checked against its published checksum. A file that fails is reported and left exactly
as it is: nothing here deletes, moves or rewrites a user's file (which is why
`keras.utils.get_file`, which deletes a file whose hash mismatches, is not used).

The pickles are read with an unpickler that admits only the numpy array types the
CIFAR files contain, because a plain `pickle.load` runs whatever code a file names; and
an array's size is checked against the bytes the pickle really holds before any memory
is given to it, as is a tar member's size against what a CIFAR file can hold, so that a
file claiming terabytes is refused in one line instead of exhausting memory.
"""

import dataclasses
import hashlib
import io
import os
import pickle
import struct
import tarfile
import zlib

import numpy as np

from common.errors import UserError
from pipeline import tar_members
from pipeline.split import Split

IMAGE_SHAPE = (32, 32, 3)
# Part of the key of pipeline/decoded_cache.py: raise it with any change here that changes
# the arrays, labels or class names read from an archive, so that older entries are not reused.
READER_VERSION = 1
_PIXELS = 32 * 32 * 3
# The largest member of an official archive is CIFAR-100's training pickle (about 155 MB).
_MEMBER_LIMIT = 256 << 20


@dataclasses.dataclass(frozen=True)
class Archive:
    """One official archive: its file name, published checksum and layout."""

    filename: str
    algorithm: str  # "md5" or "sha256"
    digest: str
    source: str  # where the checksum was published
    fmt: str  # "binary" or "python"
    dataset: str  # "cifar10" or "cifar100"


# Checksums: the python archives' md5 as published on the CIFAR page (Krizhevsky);
# the binary archives' sha256 as TFDS 4.9.10 registers them (url_checksums/cifar*.txt).
ARCHIVES = (
    Archive("cifar-100-python.tar.gz", "md5", "eb9058c3a382ffc7106e4002c42a8d85",
            "CIFAR page", "python", "cifar100"),
    Archive("cifar-100-binary.tar.gz", "sha256",
            "58a81ae192c23a4be8b1804d68e518ed807d710a4eb253b1f2a199162a40d8ec",
            "TFDS 4.9.10", "binary", "cifar100"),
    Archive("cifar-10-python.tar.gz", "md5", "c58f30108f718f92721af3b95e74349a",
            "CIFAR page", "python", "cifar10"),
    Archive("cifar-10-binary.tar.gz", "sha256",
            "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd",
            "TFDS 4.9.10", "binary", "cifar10"),
)


def find_archive(dataset, data_dir):
    """Returns the path and description of the official archive for `dataset` in `data_dir`, or None."""
    if os.path.isfile(data_dir):
        candidates = [(data_dir, a) for a in ARCHIVES if os.path.basename(data_dir) == a.filename]
    else:
        candidates = [(os.path.join(data_dir, a.filename), a) for a in ARCHIVES]
    for path, archive in candidates:
        if archive.dataset == dataset and os.path.isfile(path):
            return path, archive
    return None


def verify_checksum(path, archive):
    """Raises UserError if the file's digest differs from the published one; reads only."""
    digest = hashlib.new(archive.algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != archive.digest:
        raise UserError(
            f"{path}: checksum mismatch ({archive.algorithm} {digest.hexdigest()}, the official "
            f"file has {archive.digest} per {archive.source}); it is damaged or not the official "
            f"archive. It was left untouched: download it again, or pass "
            f"--config.data.verify_checksums=False to read it anyway.")


def load(path, archive, label_type="fine", verify=True):
    """Reads one official archive. Returns (train Split, test Split, class names)."""
    if verify:
        verify_checksum(path, archive)
    if archive.dataset == "cifar100" and label_type not in ("fine", "coarse"):
        raise UserError(f"config.data.label_type={label_type!r}: CIFAR-100 has 'fine' "
                        "(100 classes) or 'coarse' (20 superclasses) labels.")
    try:
        with tarfile.open(path, "r:*") as tar:
            # Every member in one pass, in the archive's order: extracting them by name from a
            # .tar.gz seeks back and decompresses it from the start again for each member
            # (7-8 s instead of 3 s for a full-size CIFAR archive).
            contents = {member.name: tar_members.read(tar, member, _MEMBER_LIMIT)
                        for member in tar if member.isfile()}

        def read(name):
            if name not in contents:
                raise UserError(f"{path}: {name} is missing from the archive; it is not an "
                                f"intact {archive.filename}. Download it again.")
            return contents[name]

        reader = _read_binary if archive.fmt == "binary" else _read_python
        return reader(read, path, archive.dataset, label_type)
    except tar_members.TooLarge as error:
        raise UserError(f"{path}: {error}; this is not the official archive.") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as error:
        raise UserError(f"{path}: corrupt or truncated archive ({tar_members.open_error(error)}); "
                        "download it again.") from None


def _read_binary(read, path, dataset, label_type):
    if dataset == "cifar10":
        root = "cifar-10-batches-bin/"
        names = _text_lines(read(root + "batches.meta.txt"))
        train_files = [root + f"data_batch_{i}.bin" for i in range(1, 6)]
        test_files = [root + "test_batch.bin"]
        label_bytes, label_index = 1, 0
    else:
        root = "cifar-100-binary/"
        names = _text_lines(read(root + f"{label_type}_label_names.txt"))
        train_files, test_files = [root + "train.bin"], [root + "test.bin"]
        label_bytes, label_index = 2, (0 if label_type == "coarse" else 1)

    def records(member_names):
        images, labels = [], []
        for name in member_names:
            raw = np.frombuffer(read(name), np.uint8)
            if raw.size % (label_bytes + _PIXELS):
                raise UserError(f"{path}: {name} is not a whole number of "
                                f"{label_bytes + _PIXELS}-byte records; download the archive again.")
            raw = raw.reshape(-1, label_bytes + _PIXELS)
            labels.append(raw[:, label_index].astype(np.int64))
            images.append(raw[:, label_bytes:])
        return _to_split(np.concatenate(images), np.concatenate(labels), len(names), path)

    return records(train_files), records(test_files), names


def _read_python(read, path, dataset, label_type):
    if dataset == "cifar10":
        root = "cifar-10-batches-py/"
        names = _strings(_unpickle(read(root + "batches.meta"), path)[b"label_names"])
        train_files = [root + f"data_batch_{i}" for i in range(1, 6)]
        test_files, label_key = [root + "test_batch"], b"labels"
    else:
        root = "cifar-100-python/"
        names = _strings(_unpickle(read(root + "meta"), path)[f"{label_type}_label_names".encode()])
        train_files, test_files = [root + "train"], [root + "test"]
        label_key = f"{label_type}_labels".encode()

    def batches(member_names):
        images, labels = [], []
        for name in member_names:
            batch = _unpickle(read(name), path)
            try:
                images.append(np.asarray(batch[b"data"], np.uint8).reshape(-1, _PIXELS))
                labels.append(np.asarray(batch[label_key], np.int64))
            except (KeyError, ValueError, TypeError) as error:
                raise UserError(f"{path}: {name} does not hold CIFAR data ({error!r}); "
                                "download the archive again.") from None
        return _to_split(np.concatenate(images), np.concatenate(labels), len(names), path)

    return batches(train_files), batches(test_files), names


def _to_split(flat_images, labels, num_classes, path):
    if len(flat_images) != len(labels):
        raise UserError(f"{path}: {len(flat_images)} images but {len(labels)} labels; "
                        "download the archive again.")
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise UserError(f"{path}: label {labels[bad[0]]} of example {bad[0]} is outside "
                        f"0..{num_classes - 1}; the archive is damaged, download it again.")
    # The official layout stores each image as three 32x32 planes (R, G, B).
    images = flat_images.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return Split(np.ascontiguousarray(images), labels)


def _text_lines(data):
    return [line.strip() for line in data.decode("utf-8").splitlines() if line.strip()]


def _strings(values):
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


class _CifarUnpickler(pickle._Unpickler):
    """Admits only the globals a pickled numpy array needs; refuses everything else.

    Python's own implementation of the unpickler, not the C one: for a string or bytes
    opcode the C unpickler allocates the length the pickle states before reading (up to
    2**64 bytes with BINBYTES8), where this one reads what is there (a CIFAR pickle holds
    a few hundred thousand opcodes: under a second).
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        if name == "_reconstruct":
            return _reconstruct
        return getattr(np, name)


def _reconstruct(cls, shape, typecode):
    """Stands in for numpy's `_reconstruct(ndarray, shape, typecode)`, which allocates `shape`.

    numpy pickles an array as an empty one (shape (0,)) that its state then fills; a pickle
    that asks for any other shape would make numpy allocate it before anything is checked
    (10 TiB for a hostile header), so only an empty start is accepted, and the array is
    built from its state by `_PickledArray`, which checks the size first.
    """
    if cls is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"an array starts as {tuple(shape)}, not the empty array "
                                     "numpy writes")
    return _PickledArray()


class _PickledArray:
    """An ndarray being unpickled: its state checked, then the array made (`array`).

    The state is numpy's (version, shape, dtype, fortran_order, raw bytes), or the older
    one without the version. Only numbers are admitted (an object array would be built
    from a list after numpy allocated its claimed shape), and the shape must account for
    exactly the raw bytes that the pickle holds.
    """

    array = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise pickle.UnpicklingError("an array's state is not numpy's")
        shape, dtype, fortran, raw = state[-4:]
        if not isinstance(dtype, np.dtype) or dtype.kind not in "biuf" or not isinstance(raw, bytes):
            raise pickle.UnpicklingError(f"an array holds {dtype!r} values, not numbers")
        if not isinstance(shape, tuple) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise pickle.UnpicklingError(f"an array's shape is {shape!r}")
        claimed = dtype.itemsize
        for dimension in shape:
            claimed *= dimension
        if claimed != len(raw):
            raise pickle.UnpicklingError(f"an array claims {claimed:,} bytes but holds {len(raw):,}")
        self.array = np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")


def _arrays(value):
    """`value` with every _PickledArray replaced by its array."""
    if isinstance(value, _PickledArray):
        if value.array is None:
            raise pickle.UnpicklingError("an array without its state")
        return value.array
    if isinstance(value, dict):
        return {key: _arrays(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_arrays(item) for item in value)
    return value


def _unpickle(data, path):
    try:
        return _arrays(_CifarUnpickler(io.BytesIO(data), encoding="bytes").load())
    except pickle.UnpicklingError as error:
        raise UserError(f"{path}: a pickle in it is not plain CIFAR data ({error}); "
                        "this is not the official archive.") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, struct.error,
            RecursionError) as error:
        raise UserError(f"{path}: a pickle in it is damaged ({error!r}); download it again.") from None
