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

ARM_STAGES = ("baseline", "pretrain")


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
    """{name: (stage, changes)} of config.arms, in the order they were set."""
    return {name: parse(text) for name, text in (config.get("arms") or {}).items()}
