"""Command line: `python run.py --stage STAGE --config CONFIG --workdir DIR`.

Stages: data, baseline, pretrain, finetune, attack, export, all, tune. Each is a function of
(config, workdir) in `stages/`; this file only reads flags, checks them and the config,
and calls it. Exit status: 0 done, 2 a mistake the user can fix (one line on stderr,
`error: ...`; the traceback with --verbose), 3 training diverged (one line saying where,
and the checkpoint that was kept), 4 under --strategy=multi_worker another worker stopped
answering (one line; rerun every worker to resume), 1 a bug (with its traceback).

`--stage attack --model PATH` evaluates a classifier trained elsewhere (the --model* flags
set config.external; README, "Evaluating your own model").

Flags and the config are checked before TensorFlow is imported, so a mistake there is
reported at once.
"""

import os
import re
import sys

# TensorFlow's C++ INFO and WARNING lines; errors still show. Its start-up notices, which
# ignore this setting, are filtered by common.startup.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app
from absl import flags
from ml_collections import config_flags

from common import errors
from configs import schema

STAGES = ("data", "baseline", "pretrain", "finetune", "attack", "export", "all", "tune", "compare")
_DEFAULT_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "demo.py")

_STAGE = flags.DEFINE_enum("stage", "data", STAGES,
                           "What to run; 'all' runs baseline, pretrain, finetune, attack, "
                           "export; 'tune' searches the loss for robustness (Keras Tuner).")


def _fail(message, status=errors.USER_ERROR_STATUS):
    # One line whatever the message holds (a library's error text can span several).
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _unknown_override(error, argv):
    """The one-line message for a --config.a.b=value whose field does not exist.

    ml_collections applies the overrides in sys.argv while the flag is defined, and says
    only which key was missing (as a bare AttributeError).
    """
    # The message is the missing key in quotes, sometimes followed by "Did you mean ...".
    found = re.search(r"[A-Za-z_][A-Za-z0-9_]*", str(error))
    key = found.group(0) if found else str(error)
    for arg in argv:
        path = arg.split("=", 1)[0]
        if path.startswith("--config.") and key in path[len("--config."):].split("."):
            return f"{path}: no such field in the config (configs/base.py lists every field)."
    return "a --config.section.field override names a field that does not exist."


try:
    _CONFIG = config_flags.DEFINE_config_file(
        "config", _DEFAULT_CONFIG,
        "A config file under configs/ (add :smoke for a seconds-long run); override single "
        "fields with --config.section.field=value.", lock_config=True)
except (AttributeError, KeyError) as _error:
    _fail(_unknown_override(_error, sys.argv))
_WORKDIR = flags.DEFINE_string("workdir", "runs/demo", "Where every stage writes (and resumes from).")
_DATASET = flags.DEFINE_string(
    "dataset", None, "sample (the embedded default), folder, cifar10, cifar100, or another TFDS "
    "name; overrides config.data.name.")
_DATA_DIR = flags.DEFINE_string(
    "data_dir", None, "Folder with the official CIFAR archives, an image folder (or its .tar), or "
    "a TFDS data_dir; overrides config.data.data_dir.")
_PRECISION = flags.DEFINE_enum(
    "precision", None, list(schema.PRECISIONS), "Overrides config.train.precision.")
_STRATEGY = flags.DEFINE_enum(
    "strategy", None, list(schema.STRATEGIES),
    "Overrides config.train.strategy: default (one device), mirrored (this host's GPUs), "
    "multi_worker (the hosts in TF_CONFIG).")
_SEED = flags.DEFINE_integer("seed", None, "Overrides config.seed.")
_VERBOSE = flags.DEFINE_bool("verbose", False, "Show tracebacks of user errors too.")

# Stage attack on classifiers this project did not train (README, "Evaluating your own
# model"); each overrides its config.external field.
_MODEL = flags.DEFINE_multi_string(
    "model", None, "With --stage attack: a classifier trained elsewhere, a .keras file or a "
    "SavedModel folder, images -> logits; repeat for several. Overrides config.external.models.")
_MODEL_NAME = flags.DEFINE_multi_string(
    "model_name", None, "Its name in the tables, one per --model (default: its file name).")
_MODEL_INPUTS = flags.DEFINE_enum(
    "model_inputs", None, list(schema.MODEL_INPUTS),
    "What --model takes: float01 (float32 in [0, 1], the default), float255 (float32 in "
    "[0, 255]) or uint8 (pixels 0..255).")
_MODEL_OUTPUTS = flags.DEFINE_enum(
    "model_outputs", None, list(schema.MODEL_OUTPUTS),
    "What --model returns: logits (assumed) or probabilities (a softmax at its end).")
_MODEL_IMAGE_SIZE = flags.DEFINE_integer(
    "model_image_size", None, "The image size --model takes, checked against the data and the "
    "model (default: read from the model).")
_MODEL_CHANNELS = flags.DEFINE_integer(
    "model_channels", None, "The channels --model takes (1 or 3; default: read from the model).")
_MODEL_SIGNATURE = flags.DEFINE_string(
    "model_signature", None, "The signature of a SavedModel --model to call (default "
    "serving_default).")


def parse_flags(argv):
    """absl's flag parsing, with every mistake shown as one line and exit status 2."""
    try:
        return flags.FLAGS(argv)
    except schema.UnknownArgument as error:
        _fail(error)
    except flags.Error as error:
        _fail(str(error).splitlines()[0])
    except (AttributeError, KeyError) as error:
        _fail(_unknown_override(error, argv))


def resolved_config():
    """The config file's values with the command line's overrides applied, validated."""
    config = _CONFIG.value
    try:
        config.unlocked()
    except OSError as error:  # The file could not be loaded; ml_collections says so on use.
        path = flags.FLAGS["config"].config_filename
        raise errors.UserError(f"--config={path}: no such config file (see configs/).") from error
    with config.unlocked():
        if _DATASET.value is not None:
            config.data.name = _DATASET.value
        if _DATA_DIR.value is not None:
            config.data.data_dir = _DATA_DIR.value
        if _PRECISION.value is not None:
            config.train.precision = _PRECISION.value
        if _STRATEGY.value is not None:
            config.train.strategy = _STRATEGY.value
        if _SEED.value is not None:
            config.seed = _SEED.value
        _apply_model_flags(config)
        schema.split_text_lists(config)
    return schema.validate(config)


def _apply_model_flags(config):
    """The --model* flags into config.external."""
    external = config.external
    if _MODEL.value:
        external.models = tuple(_MODEL.value)
    if _MODEL_NAME.value:
        external.names = tuple(_MODEL_NAME.value)
    for flag, field in ((_MODEL_INPUTS, "inputs"), (_MODEL_OUTPUTS, "outputs"),
                        (_MODEL_IMAGE_SIZE, "image_size"), (_MODEL_CHANNELS, "channels"),
                        (_MODEL_SIGNATURE, "signature")):
        if flag.value is not None:
            external[field] = flag.value


def run_stage(stage, config, workdir):
    from common import startup

    startup.import_tensorflow()
    from stages import pipeline_stages

    return pipeline_stages.run_locked(stage, config, workdir)


def main(argv):
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])} (every option is a --flag; see --help).")
    from absl import logging

    if not _VERBOSE.value:
        # TensorFlow's savers log a line per file at INFO; warnings and errors still show.
        logging.set_verbosity(logging.WARNING)
    try:
        config = resolved_config()
        if config.external.models and _STAGE.value not in ("attack", "data"):
            raise errors.UserError(f"--model (config.external.models) is evaluated by --stage attack, "
                                   f"not --stage {_STAGE.value}.")
        from common import stage_lock

        stage_lock.check_workdir(_WORKDIR.value)
        run_stage(_STAGE.value, config, _WORKDIR.value)
    except errors.UserError as error:
        if _VERBOSE.value:
            raise
        _fail(error)
    except errors.Diverged as error:
        if _VERBOSE.value:
            raise
        _fail(error, errors.DIVERGED_STATUS)
    except errors.WorkerLost as error:
        if _VERBOSE.value:
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # A normal exit would wait in TensorFlow's shutdown barrier for the lost worker.
        os._exit(errors.WORKER_LOST_STATUS)


def entry_point():
    """The console script `supcon-robust`."""
    app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
    entry_point()
