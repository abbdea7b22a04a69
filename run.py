"""Command line: `python run.py --stage STAGE --config CONFIG --workdir DIR`.

Stages: data, baseline, pretrain, finetune, attack, export, all. Each is a function of
(config, workdir) in `stages/`; this file only reads flags and calls it. Errors that a
user can fix are printed as one line, exit status 2 (a traceback with --verbose).
"""

import os
import sys

# TensorFlow's C++ start-up chatter (CPU features, oneDNN) hides the output that matters.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from ml_collections import config_flags

STAGES = ("data", "baseline", "pretrain", "finetune", "attack", "export", "all")
_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.py")

_STAGE = flags.DEFINE_enum("stage", "data", STAGES,
                           "What to run; 'all' runs baseline, pretrain, finetune, attack, export.")
_CONFIG = config_flags.DEFINE_config_file(
    "config", _DEFAULT_CONFIG,
    "A config file under configs/ (add :smoke for a seconds-long run); override single fields "
    "with --config.section.field=value.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where every stage writes (and resumes from).")
_DATASET = flags.DEFINE_string(
    "dataset", None, "sample (the embedded default), folder, cifar10, cifar100, or another TFDS "
    "name; overrides config.data.name.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder with the official CIFAR archives, an image folder (or its .tar), or "
    "a TFDS data_dir; overrides config.data.data_dir.")
_PRECISION = flags.DEFINE_enum(
    "precision", None, ["auto", "float32", "mixed_float16", "mixed_bfloat16"],
    "Overrides config.train.precision.")
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks of user errors too.")


def resolved_config():
    """The config file's values with the command line's overrides applied."""
    config = _CONFIG.value
    with config.unlocked():
        if _DATASET.value is not None:
            config.data.name = _DATASET.value
        if _DATA_DIR.value is not None:
            config.data.data_dir = _DATA_DIR.value
        if _PRECISION.value is not None:
            config.train.precision = _PRECISION.value
        if _SEED.value is not None:
            config.seed = _SEED.value
    return config


def run_stage(stage, config, workdir):
    # Imported here so that --help answers without loading TensorFlow.
    from stages import pipeline_stages

    return pipeline_stages.run(stage, config, workdir)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    from absl import logging

    from pipeline.errors import UserError

    if not _VERBOSE.value:
        # TensorFlow's savers log a line per file at INFO; warnings and errors still show.
        logging.set_verbosity(logging.WARNING)
    try:
        run_stage(_STAGE.value, resolved_config(), _WORKDIR.value)
    except UserError as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)


def entry_point():
    """The console script `supcon-robust`."""
    app.run(main)


if __name__ == "__main__":
    entry_point()
