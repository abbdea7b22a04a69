"""On-disk cache of decoded data sets, so that a folder or tar of JPEGs is decoded only once.

Decoding the 60,000 JPEGs of the CIFAR-10 copy (../shared/data/cifar10-jpeg.tar) takes
35-90 s per process on two cores; hashing the tar and reading the cached arrays back takes
under a second. Reading an official CIFAR archive costs 3 s or more (gunzip and unpickling
173 MB), the embedded sample 2 s; from the cache, well under a second. `load_or_decode`
returns (train Split, test Split, class names) from the cache when it holds them, else
calls the decoder and stores what it returns; `pipeline.datasets.load` uses it for image
folders, their tars, the embedded sample and the official CIFAR archives.

Where: `$SUPCON_CACHE_DIR` if set (`off`, `none`, `0`, `false` or `no` turn the cache off),
else `$XDG_CACHE_HOME/supcon_robust`, else `~/.cache/supcon_robust`. Delete the folder at
any time to reclaim the space (an entry is the size of the decoded arrays: 184 MB for the
60,000 CIFAR-10 images at 32x32x3).

The key is the content of the source plus everything else that changes the decoded arrays:

- a file (a tar, a .tar.gz, an official archive): its sha256 (read in 1 MiB chunks; 0.1-0.2 s
  for the 92 MB CIFAR-10 tar) and its size in bytes, so that a copy or a move of the same
  file still hits and any change of a byte misses;
- a directory: the sha256 of the sorted listing of (relative path, size, mtime_ns) of every
  image file below it, and the relative path of every folder. Reading tens of thousands of
  files to hash their contents would cost a good part of what the cache saves; a listing
  costs one stat per file, and an edited, added, removed or renamed image changes it, as it
  does for make and rsync. Only a rewrite that keeps a file's size and modification time
  to the nanosecond goes unseen (`touch` the file, or delete the cache, after such a rewrite);
- the loader's parameters (`params`, chosen by `pipeline.datasets`: image size, channels or
  label type, the loader's version `image_folder.DECODER_VERSION` /
  `cifar_archives.READER_VERSION`, raised whenever what it returns changes, and for images
  the TensorFlow version, whose JPEG decoder and resizer make the pixels) and
  `FORMAT_VERSION` (the layout of the stored file).

The key, as JSON, is stored in the file and compared when it is read; the file's name is
the source's name, the image shape and the key's sha256, so a person can tell entries apart.

Safety: an entry is written to a temporary file in the cache folder, flushed, fsynced and
only then renamed into place (`os.replace`), so a crash leaves either no entry or a whole
one (plus, after a hard kill, a hidden `.*.tmp` file that nothing reads; such leftovers are
removed after a day). Entries are read with `allow_pickle=False` and checked (the zip's CRCs,
the key, dtypes and shapes); one that fails is ignored with a warning and rewritten, never
trusted. A cache that cannot be written (a read-only home, a full disk) only costs a
warning. A source that changes while it is decoded is not stored. The cache only ever reads
the source; it writes nothing but its own folder.
"""

import hashlib
import json
import os
import re
import tempfile
import time

import numpy as np
from absl import logging

from pipeline.split import Split

ENV_VAR = "SUPCON_CACHE_DIR"
DISABLED_VALUES = ("off", "none", "0", "false", "no")
FORMAT_VERSION = 1
_CHUNK = 1 << 20
_ARRAYS = ("key", "train_images", "train_labels", "test_images", "test_labels", "class_names")
_STALE_TEMPORARY_S = 24 * 3600


def cache_directory():
    """The cache folder ($SUPCON_CACHE_DIR, $XDG_CACHE_HOME/supcon_robust or
    ~/.cache/supcon_robust), or None when $SUPCON_CACHE_DIR turns the cache off."""
    chosen = os.environ.get(ENV_VAR, "").strip()
    if chosen.lower() in DISABLED_VALUES:
        return None
    if chosen:
        return os.path.abspath(os.path.expanduser(chosen))
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):  # the XDG spec says to ignore a relative path
        base = os.path.expanduser(os.path.join("~", ".cache"))
        if base.startswith("~"):  # no home directory to expand to
            return None
    return os.path.join(base, "supcon_robust")


def source_fingerprint(path, image_extensions=()):
    """What the key knows of the source at `path`: see the module docstring. Reads only.

    `image_extensions` are the lower-case suffixes of the files a directory's listing covers
    (the files the loader reads; the folders are always listed).
    """
    status = os.stat(path)
    if not os.path.isdir(path):
        return {"kind": "file", "sha256": file_sha256(path), "bytes": status.st_size}
    listing = []
    for directory, subdirectories, names in os.walk(path):
        relative = os.path.relpath(directory, path).replace(os.sep, "/")
        listing.append(("folder", relative))
        for name in names:
            if name.lower().endswith(image_extensions):
                file_status = os.stat(os.path.join(directory, name))
                listing.append(("file", f"{relative}/{name}", file_status.st_size,
                                file_status.st_mtime_ns))
    listing.sort()
    digest = hashlib.sha256()
    for entry in listing:
        digest.update(json.dumps(entry).encode("utf-8") + b"\n")
    return {"kind": "directory", "listing_sha256": digest.hexdigest(),
            "files": sum(entry[0] == "file" for entry in listing)}


def file_sha256(path):
    """The sha256 of the file at `path` (hex), read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def load_or_decode(path, params, decode, image_extensions=()):
    """(train Split, test Split, class names) for the source at `path`, from the cache when it
    holds them, else from `decode()`, whose result is then stored.

    `params` maps every setting that changes what `decode` returns (image size, channels,
    decoder version, ...) to a JSON value. Errors from `decode` (a bad file, a bad layout)
    pass through unchanged and are never cached.
    """
    directory = cache_directory()
    if directory is None:
        return decode()
    try:
        fingerprint = source_fingerprint(path, image_extensions)
    except OSError:
        return decode()  # a missing or unreadable source: the decoder says what is wrong
    key = json.dumps({"format": FORMAT_VERSION, "params": params, "source": fingerprint},
                     sort_keys=True)
    entry = os.path.join(directory, _entry_name(path, params, key))
    if os.path.exists(entry):
        started = time.perf_counter()
        try:
            result = _read(entry, key)
        except Exception as error:  # noqa: BLE001 (whatever is wrong, the entry is not used)
            logging.warning("%s: unusable decoded-data cache entry (%s: %s); ignored, decoding "
                            "%s again and rewriting it.", entry, type(error).__name__, error, path)
        else:
            logging.info("%s: read from the decoded-data cache %s in %.2f s.", path, entry,
                         time.perf_counter() - started)
            return result
    train, test, class_names = decode()
    try:
        unchanged = source_fingerprint(path, image_extensions) == fingerprint
    except OSError:
        unchanged = False
    if not unchanged:
        logging.warning("%s changed while it was being decoded; not cached.", path)
        return train, test, class_names
    try:
        _write(entry, key, train, test, class_names)
    except Exception as error:  # noqa: BLE001 (a cache that cannot be written costs only time)
        logging.warning("%s: could not write the decoded-data cache entry (%s: %s); the next "
                        "run decodes %s again.", entry, type(error).__name__, error, path)
    else:
        logging.info("%s: decoded images cached in %s.", path, entry)
    return train, test, class_names


def _entry_name(path, params, key):
    label = os.path.basename(os.path.normpath(os.path.abspath(path))) or "root"
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60].lstrip(".") or "source"
    if "image_size" in params and "channels" in params:
        label += f"-{params['image_size']}x{params['image_size']}x{params['channels']}"
    return f"{label}-{hashlib.sha256(key.encode('utf-8')).hexdigest()[:32]}.npz"


def _read(entry, key):
    with np.load(entry, allow_pickle=False) as stored:
        if sorted(stored.files) != sorted(_ARRAYS):
            raise ValueError(f"holds {sorted(stored.files)}, expected {sorted(_ARRAYS)}")
        if str(stored["key"][()]) != key:
            raise ValueError("made for another source or other parameters")
        # Reading a member in full checks its CRC-32, so damaged bytes raise here.
        arrays = {name: stored[name] for name in _ARRAYS if name != "key"}
    class_names = arrays["class_names"]
    if class_names.dtype.kind != "U" or class_names.ndim != 1 or not len(class_names):
        raise ValueError(f"class names of dtype {class_names.dtype}, shape {class_names.shape}")
    splits = []
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.dtype != np.uint8 or images.ndim != 4:
            raise ValueError(f"{split} images of dtype {images.dtype}, shape {images.shape}")
        if labels.dtype != np.int64 or labels.shape != images.shape[:1]:
            raise ValueError(f"{split} labels of dtype {labels.dtype}, shape {labels.shape} for "
                             f"{len(images)} images")
        if labels.size and (labels.min() < 0 or labels.max() >= len(class_names)):
            raise ValueError(f"{split} labels outside 0..{len(class_names) - 1}")
        splits.append(Split(images, labels))
    if splits[0].images.shape[1:] != splits[1].images.shape[1:]:
        raise ValueError("train and test images differ in shape")
    return splits[0], splits[1], [str(name) for name in class_names]


def _write(entry, key, train, test, class_names):
    directory = os.path.dirname(entry)
    os.makedirs(directory, exist_ok=True)
    _remove_stale_temporaries(directory)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{os.path.basename(entry)}.",
                                             suffix=".tmp", dir=directory)
    try:
        with os.fdopen(descriptor, "wb") as f:
            # Uncompressed: reading back 184 MB costs a fraction of a second this way.
            np.savez(f, key=np.array(key), train_images=train.images,
                     train_labels=np.asarray(train.labels, np.int64),
                     test_images=test.images, test_labels=np.asarray(test.labels, np.int64),
                     class_names=np.array([str(name) for name in class_names]))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, entry)
    except BaseException:
        try:
            os.remove(temporary)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable; not every file system allows this
        folder = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)
    except OSError:
        pass


def _remove_stale_temporaries(directory):
    """Removes the temporary files that writers killed over a day ago left behind."""
    now = time.time()
    for name in os.listdir(directory):
        if name.startswith(".") and name.endswith(".tmp") and ".npz." in name:
            path = os.path.join(directory, name)
            try:
                if now - os.stat(path).st_mtime > _STALE_TEMPORARY_S:
                    os.remove(path)
            except OSError:
                pass
