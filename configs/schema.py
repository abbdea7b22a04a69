"""What every config field may hold, checked once before any work starts.

`validate(config)` walks the resolved config and raises `UserError` at the first field
that is missing, unknown, of the wrong type, out of range or not one of its choices. The
message names the field as the user types it (`--config.loss.margin=-1.0`) and what is
allowed, so `run.py` can show it as one line. Nothing here imports TensorFlow: a mistake
is reported instantly, before seconds of start-up.

`check_argument(path, arg, allowed)` is for a config file's `get_config(arg)`: an unknown
`:arg` (say `configs/demo.py:smok`) must fail, not silently run the full config.
"""

import dataclasses
import numbers

from attacks.table import ATTACKS
from configs import arms
from common.errors import UserError


class UnknownArgument(Exception):
    """An unknown `:arg` after a config file.

    Deliberately not a ValueError: absl's flag parser turns a ValueError raised while it
    loads the config file into a message holding a whole traceback.
    """


def check_argument(path, arg, allowed):
    """Raises UnknownArgument unless `arg` (the text after ':') is None or in `allowed`."""
    if arg is not None and arg not in allowed:
        choices = " or ".join(f"{path}:{a}" for a in allowed)
        raise UnknownArgument(f"--config={path}:{arg}: unknown argument {arg!r}; use {path} or {choices}.")


@dataclasses.dataclass(frozen=True)
class Number:
    """An int (or float) in [low, high]; `open_low` excludes low itself."""

    kind: type = float
    low: float = None
    high: float = None
    open_low: bool = False
    open_high: bool = False

    def problem(self, value):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return f"must be a number ({self.kind.__name__})"
        if self.kind is int and int(value) != value:
            return "must be a whole number"
        if value != value:  # NaN
            return "must be a number, not NaN"
        too_low = self.low is not None and (value < self.low or (self.open_low and value == self.low))
        too_high = self.high is not None and (value > self.high or (self.open_high and value == self.high))
        if too_low or too_high:
            return f"must be in {self.describe()}"
        return None

    def describe(self):
        left = "(" if self.open_low else "["
        right = ")" if self.open_high else "]"
        low = "-inf" if self.low is None else f"{self.low:g}"
        high = "inf" if self.high is None else f"{self.high:g}"
        return f"{left}{low}, {high}{right}"


@dataclasses.dataclass(frozen=True)
class Choice:
    values: tuple

    def problem(self, value):
        # A field whose default is text ("auto") keeps --config...=True as the text "True".
        as_bool = {"true": True, "false": False}.get(value.lower()) if isinstance(value, str) else None
        if value not in self.values and (as_bool is None or as_bool not in self.values):
            return "must be one of " + ", ".join(str(v) for v in self.values)
        return None


@dataclasses.dataclass(frozen=True)
class Flag:
    def problem(self, value):
        return None if isinstance(value, bool) else "must be True or False"


@dataclasses.dataclass(frozen=True)
class Text:
    def problem(self, value):
        return None if isinstance(value, str) else "must be text"


@dataclasses.dataclass(frozen=True)
class Items:
    """A list or tuple whose items each satisfy `item`, with at least `min_length` of them."""

    item: object
    min_length: int = 0
    unique: bool = False

    def problem(self, value):
        if isinstance(value, str) or not isinstance(value, (list, tuple)):
            return "must be a list, e.g. a,b,c"
        if len(value) < self.min_length:
            return f"must hold at least {self.min_length} item(s)"
        if self.unique and len(set(value)) != len(value):
            return "must not repeat an item"
        for item in value:
            problem = self.item.problem(item)
            if problem:
                return f"item {item!r} {problem}"
        return None


@dataclasses.dataclass(frozen=True)
class Interval:
    """A range (low, high) of two numbers, each satisfying `bound`, with low <= high."""

    bound: Number

    def problem(self, value):
        if isinstance(value, str) or not isinstance(value, (list, tuple)) or len(value) != 2:
            return "must be two numbers low,high"
        for item in value:
            problem = self.bound.problem(item)
            if problem:
                return f"item {item!r} {problem}"
        if value[0] > value[1]:
            return "must have low <= high"
        return None


TRAINING_STAGES = ("baseline", "pretrain", "finetune")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("default", "mirrored", "multi_worker")
MARGIN_FORMS = ("pairwise", "additive")
# What a classifier trained elsewhere takes and returns (config.external, run.py's --model*).
MODEL_INPUTS = ("float01", "float255", "uint8")
MODEL_OUTPUTS = ("logits", "probabilities")
# The margin's meaning depends on its form: a Euclidean distance between unit vectors
# (pairwise) or a cosine-similarity margin (additive).
MARGIN_RANGES = {"pairwise": Number(float, 0.0, 2.0), "additive": Number(float, 0.0, 1.0)}

_RATE = Number(float, 0.0, 10.0, open_low=True)
_FRACTION = Number(float, 0.0, 1.0)
_COUNT = Number(int, 0)
_POSITIVE = Number(int, 1)

FIELDS = {
    "seed": Number(int, 0, 2 ** 31 - 1),

    "data.name": Text(),
    "data.data_dir": Text(),
    "data.image_size": Number(int, 8, 1024),
    "data.channels": Choice((1, 3)),
    "data.label_type": Choice(("fine", "coarse")),
    "data.verify_checksums": Flag(),
    "data.validation_fraction": Number(float, 0.0, 1.0, open_high=True),
    "data.max_train_examples": _COUNT,
    "data.crop_padding": Number(int, 0, 64),
    "data.flip": Flag(),
    "data.jitter_strength": _FRACTION,
    "data.grayscale_probability": _FRACTION,

    "model.width": Number(float, 0.0, 4.0, open_low=True),
    "model.sync_batchnorm": Flag(),

    "loss.ce_weight": Number(float, 0.0, 100.0),
    "loss.supcon_weight": Number(float, 0.0, 100.0),
    "loss.margin_weight": Number(float, 0.0, 100.0),
    "loss.temperature": Number(float, 0.0, 10.0, open_low=True),
    "loss.margin_form": Choice(MARGIN_FORMS),
    "loss.margin": Number(float, 0.0, 2.0),  # Narrowed by form in `_check_relations`.
    "loss.gather": Choice(("global", "local")),

    "train.batch_size": Number(int, 2),
    "train.epochs": _POSITIVE,
    "train.steps_per_epoch": _COUNT,
    "train.optimizer": Choice(("sgd", "adamw")),
    "train.learning_rate": _RATE,
    "train.momentum": Number(float, 0.0, 1.0, open_high=True),
    "train.weight_decay": Number(float, 0.0, 1.0, open_high=True),
    "train.ema_momentum": Number(float, 0.0, 1.0, open_high=True),
    "train.schedule": Choice(("cosine", "constant")),
    "train.warmup_epochs": _COUNT,
    "train.precision": Choice(PRECISIONS),
    "train.jit_compile": Choice(("auto", True, False)),
    "train.strategy": Choice(STRATEGIES),
    "train.cpu_replicas": Number(int, 1, 64),

    "adversarial.method": Choice(("none", "fgsm_rs", "n_fgsm", "pgd")),
    "adversarial.epsilon": Number(float, 0.0, 255.0, open_low=True),
    "adversarial.steps": _POSITIVE,
    "adversarial.step_size": Number(float, 0.0, 255.0, open_low=True),
    "adversarial.bn_mode": Choice(("inference", "training")),
    "adversarial.stages": Items(Choice(TRAINING_STAGES), min_length=1, unique=True),
    "adversarial.ce_on": Choice(("adversarial", "both")),
    "adversarial.trades_beta": Number(float, 0.0, 100.0),

    "validation.robust": Choice(("auto", True, False)),
    "validation.attack": Choice(("pgd", "fgsm")),
    "validation.steps": _POSITIVE,
    "validation.epsilon": Number(float, 0.0, 255.0, open_low=True),
    "validation.examples": _COUNT,
    "validation.batch_size": _POSITIVE,
    "validation.collapse_drop": Number(float, 0.0, 100.0, open_low=True),
    "validation.stop_on_collapse": Flag(),
    "validation.keep": Choice(("one_se", "most_robust")),
    "validation.use": Choice(("best", "last")),

    "compare.paper_arms": Flag(),
    "compare.pairs": Items(Text(), unique=True),
    "compare.claim": Text(),
    "compare.follow_ups": Items(Text(), unique=True),

    "finetune.mode": Choice(("linear", "full")),
    "finetune.epochs": _POSITIVE,
    "finetune.learning_rate": _RATE,
    "finetune.weight_decay": Number(float, 0.0, 1.0, open_high=True),
    "finetune.warmup_epochs": _COUNT,

    "attack.models": Items(Choice(TRAINING_STAGES), min_length=1, unique=True),
    "attack.attacks": Items(Choice(tuple(ATTACKS)), min_length=1, unique=True),
    "attack.epsilons": Items(Number(float, 0.0, 255.0), min_length=1, unique=True),
    **{f"attack.subsets.{name.replace('-', '_')}": _COUNT for name in ATTACKS},
    **{f"attack.own_epsilons.{name.replace('-', '_')}": Items(Number(float, 0.0, 255.0), unique=True)
       for name in ATTACKS},
    "attack.strong.attacks": Items(Choice(("apgd-ce", "apgd-dlr", "square")), min_length=1, unique=True),
    "attack.strong.apgd_steps": _POSITIVE,
    "attack.strong.apgd_restarts": _POSITIVE,
    "attack.strong.square_queries": _POSITIVE,
    "attack.pgd_steps": _POSITIVE,
    "attack.pgd_step_size": Number(float, 0.0, 255.0),
    "attack.pgd_restarts": _POSITIVE,
    "attack.use_predictions": Flag(),
    "attack.max_examples": _COUNT,
    "attack.batch_size": _POSITIVE,
    "attack.jit_compile": Choice(("auto", True, False)),
    "attack.embedding_examples": _COUNT,

    "export.model": Text(),  # A training stage or an arm: `_check_relations`.
    "export.name": Text(),

    "tune.algorithm": Choice(("random", "bayesian", "hyperband")),
    "tune.max_trials": _POSITIVE,
    "tune.epochs": _POSITIVE,
    "tune.margin_forms": Items(Choice(MARGIN_FORMS), min_length=1, unique=True),
    "tune.pairwise_margin": Interval(MARGIN_RANGES["pairwise"]),
    "tune.additive_margin": Interval(MARGIN_RANGES["additive"]),
    "tune.temperature": Interval(Number(float, 0.0, 10.0, open_low=True)),
    "tune.supcon_weight": Interval(Number(float, 0.0, 100.0)),
    "tune.margin_weight": Interval(Number(float, 0.0, 100.0)),
    "tune.attack": Choice(("pgd", "fgsm")),
    "tune.epsilon": Number(float, 0.0, 255.0, open_low=True),
    "tune.min_clean_accuracy": _FRACTION,
    "tune.validation_examples": _COUNT,
    "tune.jit_compile": Choice(("auto", True, False)),
    "tune.trials_per_process": _COUNT,
    "tune.overwrite": Flag(),

    "external.models": Items(Text()),
    "external.names": Items(Text(), unique=True),
    "external.inputs": Choice(MODEL_INPUTS),
    "external.outputs": Choice(MODEL_OUTPUTS),
    "external.image_size": Number(int, 0, 1024),
    "external.channels": Choice((0, 1, 3)),
    "external.signature": Text(),
}


def _leaves(config, prefix=""):
    """(dotted name, value) of every field of a ConfigDict, nested sections flattened."""
    for key, value in config.items():
        name = prefix + key
        if hasattr(value, "items") and not isinstance(value, (list, tuple)):
            yield from _leaves(value, name + ".")
        else:
            yield name, value


def _fail(name, value, problem):
    raise UserError(f"--config.{name}={_show(value)}: {problem}.")


def _show(value):
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def split_text_lists(config, fields=None):
    """Splits "a,b" items of text-list fields: ml_collections reads `--config.x=a,b` as ("a,b",)."""
    rules = dict(FIELDS, **(fields or {}))
    for name, value in list(_leaves(config)):
        rule = rules.get(name)
        if (isinstance(rule, Items) and isinstance(value, (list, tuple))
                and any(isinstance(item, str) and "," in item for item in value)):
            items = tuple(part.strip() for item in value for part in str(item).split(",") if part.strip())
            section, field = name.rsplit(".", 1)
            config[section][field] = items
    return config


def _check_external(config):
    """config.external: as many names as models, each usable as a folder name."""
    external = config.external
    if external.names and len(external.names) != len(external.models):
        _fail("external.names", external.names,
              f"must name each of the {len(external.models)} model(s) (--model_name once per --model)")
    for name in external.names:
        if not name or name.startswith(".") or any(not (c.isalnum() or c in "_.-") for c in name):
            _fail("external.names", external.names,
                  f"item {name!r} must be letters, digits, '_', '.' or '-' (it names a folder)")


def validate(config, fields=None):
    """Raises UserError naming the first field of `config` that is not allowed.

    `fields` extends or replaces entries of FIELDS (a later section, such as `tune`,
    brings its own).
    """
    rules = dict(FIELDS, **(fields or {}))
    leaves = dict(_leaves(config))
    for name, value in leaves.items():
        if name.startswith("arms."):
            _check_arm(name, value, rules)
            continue
        if name not in rules:
            section = name.rsplit(".", 1)[0] if "." in name else ""
            known = sorted(rule for rule in rules if rule.rsplit(".", 1)[0] == section)
            _fail(name, value, "not a field of this config" + (
                f"; {section} has {', '.join(k.rsplit('.', 1)[1] for k in known)}" if known else ""))
        problem = rules[name].problem(value)
        if problem:
            _fail(name, value, problem)
    missing = [name for name in rules if name not in leaves and "." in name
               and name.split(".")[0] in {leaf.split(".")[0] for leaf in leaves}]
    if missing:
        raise UserError(f"--config.{missing[0]}: missing from the config file; configs/base.py "
                        "holds every field with its default.")
    _check_relations(config)
    if "external" in config:
        _check_external(config)
    return config


def _check_arm(name, value, rules):
    """An arm (configs/arms.py): its stage, and each change as the field's own rule allows."""
    if not isinstance(value, str):
        _fail(name, value, "must be text: 'STAGE; field=value; ...'")
    if name.split(".", 1)[1] in TRAINING_STAGES + ("attack", "export", "data", "tune"):
        _fail(name, value, "an arm needs a name of its own, not a stage's")
    try:
        _, changes = arms.parse(value)
    except ValueError as error:
        _fail(name, value, str(error))
    for field, change in changes.items():
        if field not in rules or field.startswith(("arms.", "tune.", "attack.", "export.")):
            _fail(name, value, f"{field!r} is not a training field an arm can change")
        problem = rules[field].problem(change)
        if problem:
            _fail(name, value, f"{field}={change} {problem}")


def _check_pairs(config):
    """config.compare.pairs: each "A - B", both models trained by stage compare."""
    trained = [name for name, _, _ in arms.compared(config)]
    for pair in config.compare.pairs:
        try:
            names = arms.parse_pair(pair)
        except ValueError as error:
            _fail("compare.pairs", config.compare.pairs, f"item {pair!r} {error}")
        unknown = [name for name in names if name not in trained]
        if unknown:
            _fail("compare.pairs", config.compare.pairs,
                  f"item {pair!r} names {unknown[0]!r}, which stage compare does not train "
                  f"(it trains {', '.join(trained) or 'nothing'})")


def _check_relations(config):
    """The rules that tie one field to another."""
    loss = config.loss
    problem = MARGIN_RANGES[loss.margin_form].problem(loss.margin)
    if problem:
        _fail("loss.margin", loss.margin, f"{problem} for loss.margin_form={loss.margin_form}")
    for section in ("train", "finetune"):
        schedule = config[section]
        if schedule.warmup_epochs > schedule.epochs:
            _fail(f"{section}.warmup_epochs", schedule.warmup_epochs,
                  f"must be at most {section}.epochs={schedule.epochs}")
    if "compare" in config:
        _check_pairs(config)
        unknown = [name for name in config.compare.follow_ups if name not in arms.arms(config)]
        if unknown:
            _fail("compare.follow_ups", config.compare.follow_ups,
                  f"item {unknown[0]!r} is not an arm of this config (its arms: "
                  f"{', '.join(arms.arms(config)) or 'none'})")
    exportable = TRAINING_STAGES + tuple(arms.arms(config))
    if "export" in config and config.export.model not in exportable:
        _fail("export.model", config.export.model,
              f"must be a training stage or an arm of this config: one of {', '.join(exportable)}")
    if "adversarial" in config:
        adversarial = config.adversarial
        if adversarial.trades_beta and adversarial.method == "none":
            _fail("adversarial.trades_beta", adversarial.trades_beta,
                  "needs an adversary: set --config.adversarial.method (pgd, as TRADES uses)")
        if adversarial.trades_beta and adversarial.ce_on != "adversarial":
            _fail("adversarial.ce_on", adversarial.ce_on,
                  "TRADES (trades_beta > 0) trains CE on the clean images by definition; "
                  "leave ce_on at adversarial")
    if (any(robust_validation_in(config, stage) for stage in TRAINING_STAGES)
            and not config.data.validation_fraction):
        _fail("data.validation_fraction", config.data.validation_fraction,
              "robust validation needs validation images: set it above 0 (e.g. 0.1), or "
              "--config.validation.robust=False")
    if config.data.max_train_examples and config.data.max_train_examples < config.train.batch_size:
        _fail("data.max_train_examples", config.data.max_train_examples,
              f"must be 0 (all) or at least train.batch_size={config.train.batch_size}")


def adversarial_in(config, stage):
    """Whether config.adversarial trains `stage` adversarially. `config` is a ConfigDict or
    the plain dict of a resolved one (a recorded key may predate the section)."""
    adversarial = config.get("adversarial") or {}
    return (adversarial.get("method", "none") != "none"
            and stage in tuple(adversarial.get("stages", ())))


def robust_validation_in(config, stage):
    """Whether `stage` validates robustly after each epoch: config.validation.robust, where
    `auto` means wherever adversarial training is on."""
    robust = str((config.get("validation") or {}).get("robust", "auto")).lower()
    return adversarial_in(config, stage) if robust == "auto" else robust == "true"
