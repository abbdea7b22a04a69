"""The training stages as data: what each one trains, from what, on which config fields.

A stage's `reads` are the config fields that decide its model. They form the key under
which a finished stage is recognised (and skipped) on a rerun: changing `loss.margin`
retrains pretrain and finetune, never the cross-entropy baseline.

The data enter the key by content where they are one file (a tar of images, an official
archive): `data.data_dir` is replaced by `data.data_sha256`, so a finished run is
recognised in a clone at another path, or with the archive moved. A folder or a TFDS
data_dir stays keyed by its path.
"""

import dataclasses
import os

from configs import schema
from pipeline import decoded_cache


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One training stage.

    Attributes:
        name: the stage, and the folder it writes under the workdir.
        views: augmented views of each image in a batch (2 for the contrastive terms).
        contrastive: trains the projection head with the SupCon and margin terms.
        schedule: the config section whose fields override config.train's schedule
            (epochs, learning rate, ...), or None to use config.train as it is.
        init_from: the stage whose trained encoder this one starts from, or None.
        reads: the config fields (sections or dotted fields) that decide the model.
    """

    name: str
    views: int = 1
    contrastive: bool = False
    schedule: str = None
    init_from: str = None
    reads: tuple = ()


# Fields of config.train that a run may change without changing what is learnt: how it
# is spread over devices. Kept out of every key so that a run resumes under another
# replica count.
NOT_DECIDING = ("train.strategy", "train.cpu_replicas",
                # Which model the later stages take, and how validation batches its images.
                "validation.use", "validation.batch_size")

# Fields that came after runs were keyed without them, each with the value that trains as
# before it existed: at that value a field stays out of the key, so those runs keep theirs.
ADDED_LATER = {"train.ema_momentum": 0.0}

# Adversarial training and robust validation decide a stage only where they are on (see
# `decisive_fields`): a run without them keeps the key it had before they existed.
ROBUSTNESS = ("adversarial", "validation")

BASELINE = StageSpec("baseline", views=1, reads=("seed", "data", "model", "train") + ROBUSTNESS)
PRETRAIN = StageSpec("pretrain", views=2, contrastive=True,
                     reads=("seed", "data", "model", "train", "loss") + ROBUSTNESS)
FINETUNE = StageSpec("finetune", views=1, schedule="finetune", init_from="pretrain",
                     reads=("seed", "data", "model", "train", "finetune") + ROBUSTNESS)

SPECS = {spec.name: spec for spec in (BASELINE, PRETRAIN, FINETUNE)}

# Fields a rerun may change after a divergence and still resume from the last good
# checkpoint: the optimiser's step sizes, nothing that changes the model's shape.
RESUMABLE_AFTER_DIVERGENCE = ("train.learning_rate", "train.warmup_epochs", "train.schedule",
                              "train.momentum", "train.weight_decay", "train.optimizer",
                              "finetune.learning_rate", "finetune.warmup_epochs",
                              "finetune.weight_decay")


def decisive_fields(resolved, spec):
    """The part of a resolved config (a plain dict) that `spec` reads, as a flat dict.

    config.adversarial enters only where it trains this stage, config.validation only
    where this stage validates robustly.
    """
    reads = tuple(read for read in spec.reads
                  if (read != "adversarial" or schema.adversarial_in(resolved, spec.name))
                  and (read != "validation" or schema.robust_validation_in(resolved, spec.name)))
    spec = dataclasses.replace(spec, reads=reads)
    flat = {}

    def walk(node, prefix):
        for key, value in node.items():
            name = prefix + key
            if isinstance(value, dict):
                walk(value, name + ".")
            else:
                flat[name] = value

    walk(resolved, "")
    return with_data_identity({
        name: value for name, value in flat.items()
        if any(name == read or name.startswith(read + ".") for read in spec.reads)
        and name not in NOT_DECIDING and not (name in ADDED_LATER and value == ADDED_LATER[name])})


# (path, size, mtime_ns) -> sha256: a stage checks its key more than once per run.
_HASHED = {}


def with_data_identity(inputs):
    """`inputs` (a flat key) with a `data.data_dir` that names a file replaced by the file's
    sha256, `data.data_sha256`; anything else unchanged.

    Applied to recorded keys too, so a key written before the data entered by content (it
    holds the archive's path) still matches where that path holds the same file.
    """
    path = inputs.get("data.data_dir")
    digest = data_sha256(path) if isinstance(path, str) else None
    if digest is None:
        return inputs
    identified = {name: value for name, value in inputs.items() if name != "data.data_dir"}
    identified["data.data_sha256"] = digest
    return identified


def data_sha256(data_dir):
    """The sha256 of `data_dir` where it names a file (hashed once per process while the
    file's size and modification time stay the same), else None."""
    if not data_dir or not os.path.isfile(data_dir):
        return None
    status = os.stat(data_dir)
    stamp = (os.path.abspath(data_dir), status.st_size, status.st_mtime_ns)
    if stamp not in _HASHED:
        _HASHED[stamp] = decoded_cache.file_sha256(data_dir)
    return _HASHED[stamp]
