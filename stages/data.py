"""Stage `data`: loads the chosen data set and prints what it holds, before any training.

The other stages get their splits from `training_splits`, which loads each data set
once per process (so `--stage all` decodes a folder of JPEGs only once).
"""

import os

import numpy as np

from pipeline import datasets
from stages import atomic_files

_LOADED = {}


def load(data_config):
    """The `ImageData` described by config.data, loaded once per process."""
    key = (data_config.name, data_config.data_dir, data_config.image_size, data_config.channels,
           data_config.label_type, data_config.verify_checksums)
    if key not in _LOADED:
        _LOADED[key] = datasets.load(*key)
    return _LOADED[key]


def training_splits(config):
    """(data, train split, validation split or None) as the config asks, seeded."""
    data = load(config.data)
    train, validation = datasets.split_validation(data.train, config.data.validation_fraction,
                                                  config.seed)
    if 0 < config.data.max_train_examples < len(train):
        keep = np.sort(np.random.default_rng(config.seed).choice(
            len(train), config.data.max_train_examples, replace=False))
        train = datasets.Split(train.images[keep], train.labels[keep])
    return data, train, validation


def channel_statistics(split):
    """Per-channel mean and standard deviation of the images, in [0, 1] units."""
    pixels = split.images.reshape(-1, split.images.shape[-1])
    return (pixels.mean(axis=0, dtype=np.float64) / 255.0,
            pixels.std(axis=0, dtype=np.float64) / 255.0)


def run(config, workdir):
    data, train, validation = training_splits(config)
    lines = [data.summary(),
             f"after the seeded validation split: {len(train)} train, "
             f"{len(validation) if validation else 0} validation"]
    text = "\n".join(lines)
    print(text)
    atomic_files.write_text(os.path.join(workdir, "data", "summary.txt"), text + "\n")
    return data
