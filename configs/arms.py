"""Arms: further models trained beside a workdir's stages, each a stage with config changes.

`config.arms.NAME = "STAGE; FIELD=VALUE; FIELD=VALUE"` trains STAGE (baseline or
pretrain) with those fields changed in WORKDIR/NAME/STAGE/, and the attack stage evaluates
it as NAME beside the others; e.g. the demo's

    config.arms.robust = "pretrain; adversarial.method=n_fgsm"

is the paper's joint loss trained adversarially. `--stage all` trains every arm after
the stages, and `--stage compare` trains its arms alike (each resumes and is skipped when
done, as a stage is). Values are Python literals (numbers, True, quoted or bare text,
comma-separated tuples). Nothing here imports TensorFlow.
"""

import ast
import os
import re

ARM_STAGES = ("baseline", "pretrain")

# The paper's three models, which stage compare trains first unless config.compare.paper_arms
# is off: (name, training stage, config changes); the same network, data, schedule and seed.
PAPER_ARMS = (
    ("baseline", "baseline", {}),  # Cross-entropy alone.
    ("supcon", "pretrain", {"loss.margin_weight": 0.0}),  # SupCon + CE.
    ("supcon_margin", "pretrain", {}),  # SupCon + margin + CE: the paper's method.
)

# NAME_seedK: the model NAME trained with seed K (see `seed_replica`).
_SEED_REPLICA = re.compile(r"^(?P<name>.+)_seed(?P<seed>[0-9]+)$")


def parse_value(text):
    """A field's value as `--config.x=...` would give it: a literal, a tuple, or the text."""
    text = text.strip()
    if "," in text and not text.startswith(("(", "[", "'", '"')):
        return tuple(parse_value(part) for part in text.split(",") if part.strip())
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse(text):
    """(stage, {dotted field: value}) of an arm's text; ValueError naming what is wrong."""
    parts = [part.strip() for part in str(text).split(";") if part.strip()]
    if not parts or parts[0] not in ARM_STAGES:
        raise ValueError(f"must start with the stage it trains ({' or '.join(ARM_STAGES)}), then "
                         "'; field=value' changes, e.g. 'pretrain; adversarial.method=n_fgsm'")
    changes = {}
    for part in parts[1:]:
        field, equals, value = part.partition("=")
        if not equals or not field.strip():
            raise ValueError(f"{part!r} is not field=value")
        changes[field.strip()] = parse_value(value)
    return parts[0], changes


def arm_config(config, changes):
    """A copy of `config` with the dotted-field `changes` applied and no arms of its own."""
    copy = config.copy_and_resolve_references()
    with copy.unlocked():
        for field, value in changes.items():
            section, name = field.rsplit(".", 1) if "." in field else ("", field)
            target = copy[section] if section else copy
            target[name] = value
        if "arms" in copy:
            for arm in list(copy.arms.keys()):
                del copy.arms[arm]
    return copy


def arms(config):
    """{name: (stage, changes)} of config.arms, by name (a ConfigDict keeps its keys sorted)."""
    return {name: parse(text) for name, text in (config.get("arms") or {}).items()}


def model_folder(config, workdir, name):
    """Where the model `name` trains: WORKDIR/NAME/STAGE/ for an arm of config.arms, else
    WORKDIR/NAME/ (a training stage). The attack and export stages find models by it."""
    found = arms(config).get(name)
    return os.path.join(workdir, name, found[0]) if found else os.path.join(workdir, name)


def compared(config):
    """[(name, stage, changes)] that stage compare trains, in order: the paper's three
    (unless config.compare.paper_arms is off), then config.arms by name, every NAME_seedK
    after the others (by K): each model once before any is trained again; the arms named
    in config.compare.follow_ups (questions the results raised) last, in that order."""
    compare = config.get("compare", {})
    paper = list(PAPER_ARMS) if compare.get("paper_arms", True) else []
    parsed = arms(config)
    later = [name for name in compare.get("follow_ups", ()) if name in parsed]
    order = sorted((name for name in parsed if name not in later),
                   key=lambda name: seed_replica(name)[1] or 0) + later
    return paper + [(name, *parsed[name]) for name in order]


def parse_pair(text):
    """("A", "B") of a verdict pair "A - B" (A judged against B); ValueError if malformed."""
    names = [part.strip() for part in str(text).split(" - ")]
    if len(names) != 2 or not all(names) or names[0] == names[1]:
        raise ValueError("must be 'A - B': two different models, A judged against B")
    return tuple(names)


def seed_replica(name):
    """(NAME, K) for an arm named NAME_seedK, the model NAME trained with seed K; else (name, None)."""
    found = _SEED_REPLICA.match(name)
    return (found["name"], int(found["seed"])) if found else (name, None)
