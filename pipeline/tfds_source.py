"""Loads an image-classification data set with TensorFlow Datasets, failing fast offline.

TFDS retries a download for minutes when there is no network. Before asking it to
download, this checks in a few seconds whether the data's host answers at all, and if
not says how to provide the files offline instead.
"""

import contextlib
import socket
import urllib.parse

import numpy as np
from absl import logging as absl_logging

from common.errors import UserError
from pipeline.split import Split

_PROBE_TIMEOUT_SECONDS = 3.0
_DEFAULT_HOST = "storage.googleapis.com"
_OFFLINE_HINT = {
    "cifar100": "put cifar-100-binary.tar.gz or cifar-100-python.tar.gz in a folder and pass "
                "--dataset=cifar100 --data_dir=<that folder>",
    "cifar10": "put cifar-10-binary.tar.gz or cifar-10-python.tar.gz in a folder and pass "
               "--dataset=cifar10 --data_dir=<that folder>",
}


def reachable(host, port=443, timeout=_PROBE_TIMEOUT_SECONDS):
    """True if a TCP connection to host:port opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _quiet_tfds_lookup():
    """Hides TFDS's INFO and WARNING lines while it looks for a prepared copy.

    TFDS logs each place it looks ("Failed to load dataset ... from files", "Variant folder
    ... has no dataset_info.json"); under run.py those lines would precede the one-line
    error that says what to do instead.
    """
    verbosity = absl_logging.get_verbosity()
    absl_logging.set_verbosity(absl_logging.ERROR)
    try:
        yield
    finally:
        absl_logging.set_verbosity(verbosity)


def _download_host(builder):
    """The host of the builder's first registered download URL, else the TFDS bucket."""
    try:
        urls = list(builder.url_infos or {})
    except Exception:  # Builders without registered checksums raise various errors here.
        urls = []
    return urllib.parse.urlparse(urls[0]).hostname if urls else _DEFAULT_HOST


def load(name, data_dir=None, label_type="label"):
    """Returns (train Split, test Split, class names) of TFDS data set `name`."""
    import tensorflow_datasets as tfds  # Imported here: it is slow and only this path needs it.

    try:
        with _quiet_tfds_lookup():
            builder = tfds.builder(name, data_dir=data_dir or None)
            prepared = builder.is_prepared()
    except tfds.core.registered.DatasetNotFoundError:
        raise UserError(f"--dataset={name}: not a known data set; use sample, folder, cifar10, "
                        "cifar100 or another TFDS image-classification name.") from None
    if not prepared:
        host = _download_host(builder)
        if not reachable(host):
            hint = _OFFLINE_HINT.get(name, "prepare it with TFDS on a machine with internet and "
                                           "pass --data_dir=<its TFDS data_dir>")
            raise UserError(f"--dataset={name}: not prepared under {builder.data_dir} and {host} "
                            f"cannot be reached (no network?); {hint}.")
        builder.download_and_prepare()
    features = builder.info.features
    if "image" not in features or label_type not in features:
        raise UserError(f"--dataset={name}: has no 'image' and '{label_type}' features; it is "
                        "not an image-classification data set this project can train on.")
    splits = []
    for split in ("train", "test"):
        if split not in builder.info.splits:
            raise UserError(f"--dataset={name}: has no '{split}' split.")
        data = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1))
        splits.append(Split(np.asarray(data["image"], np.uint8),
                            np.asarray(data[label_type], np.int64)))
    return splits[0], splits[1], list(features[label_type].names)
