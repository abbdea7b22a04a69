"""The search space of stage `tune`: which loss fields a trial sets, and from which ranges.

`apply(hp, config)` declares the hyperparameters in `hp` (Keras Tuner records them on the
first call and samples them on later ones) and returns a copy of `config` with the
trial's values in `config.loss`. The margin means different things in the two forms, so
each form has its own hyperparameter and range, active only when that form is chosen:
`pairwise_margin` (a Euclidean distance between unit vectors, in [0, 2]) and
`additive_margin` (a cosine-similarity margin, in [0, 1]). A range (low, high) with
low == high fixes the value. Nothing here imports TensorFlow.
"""

# Every hyperparameter is named after the config.loss field it sets, except the margin,
# which has one hyperparameter per form.
MARGIN_NAMES = {"pairwise": "pairwise_margin", "additive": "additive_margin"}
SHARED = ("temperature", "supcon_weight", "margin_weight")


def _number(hp, name, interval, log=False, parent=None):
    low, high = (float(v) for v in interval)
    parent_name, parent_values = parent or (None, None)
    if low == high:
        return hp.Fixed(name, low, parent_name=parent_name, parent_values=parent_values)
    return hp.Float(name, low, high, sampling="log" if log else "linear",
                    parent_name=parent_name, parent_values=parent_values)


def declare(hp, tune):
    """Declares the space of `tune` (config.tune) in `hp`; returns the trial's loss fields."""
    forms = list(tune.margin_forms)
    values = {"margin_form": hp.Choice("margin_form", forms)}
    for form in forms:
        margin = _number(hp, MARGIN_NAMES[form], tune[MARGIN_NAMES[form]],
                         parent=("margin_form", [form]))
        if values["margin_form"] == form:
            values["margin"] = margin
    for name in SHARED:
        values[name] = _number(hp, name, tune[name], log=name == "temperature")
    return values


def loss_values(hp_values):
    """The config.loss fields a trial's hyperparameter values (as Keras Tuner stores them) set."""
    form = hp_values["margin_form"]
    return {"margin_form": form, "margin": hp_values[MARGIN_NAMES[form]],
            **{name: hp_values[name] for name in SHARED}}


def with_loss(config, loss):
    """A copy of `config` with `loss` ({field: value}) in config.loss."""
    config = config.copy_and_resolve_references()
    config.loss.update({field: (float(value) if field != "margin_form" else value)
                        for field, value in loss.items()})
    return config


def apply(hp, config):
    """A copy of `config` with this trial's values (declared in `hp`) in config.loss."""
    return with_loss(config, declare(hp, config.tune))


def overrides(loss):
    """The command-line flags that set `loss` ({field: value}), e.g. for a README."""
    return " ".join(f"--config.loss.{field}={value if isinstance(value, str) else f'{value:.4g}'}"
                    for field, value in loss.items())
