"""Stage `data`: loads the chosen data set and prints what it holds, before any training.

The splits themselves come from `pipeline.datasets.training_splits`, which every training
stage calls. Nothing is kept between calls in the process: a folder or archive of JPEGs is
decoded once and then read back from the on-disk cache of `pipeline.datasets`.
"""

import os

from common import atomic_files
from pipeline import datasets


def run(config, workdir):
    data, train, validation = datasets.training_splits(config)
    lines = [data.summary(),
             f"after the seeded validation split: {len(train)} train, "
             f"{len(validation) if validation else 0} validation"]
    text = "\n".join(lines)
    print(text)
    atomic_files.write_text(os.path.join(workdir, "data", "summary.txt"), text + "\n")
    return data
