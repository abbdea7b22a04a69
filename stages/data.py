"""Stage `data`: loads the chosen data set and prints what it holds, before any training.

The other stages get their splits from `training_splits`. Nothing is kept between calls
in the process: a folder or archive of JPEGs is decoded once and then read back from the
on-disk cache of `pipeline.datasets`.
"""

import os

import numpy as np

from pipeline import datasets
from stages import atomic_files


def load(data_config):
    """The `ImageData` described by config.data."""
    return datasets.load(data_config.name, data_config.data_dir, data_config.image_size,
                         data_config.channels, data_config.label_type, data_config.verify_checksums)


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


def run(config, workdir):
    data, train, validation = training_splits(config)
    lines = [data.summary(),
             f"after the seeded validation split: {len(train)} train, "
             f"{len(validation) if validation else 0} validation"]
    text = "\n".join(lines)
    print(text)
    atomic_files.write_text(os.path.join(workdir, "data", "summary.txt"), text + "\n")
    return data
