"""The optimiser and learning-rate schedule named by a training config.

SGD with momentum and a cosine schedule after a linear warm-up, as SupContrast trains
CIFAR; AdamW as an option. Weight decay is decoupled (Keras applies it to the weights
directly) and skips BatchNorm parameters and biases, which it would only shrink.
"""

import keras

from common.errors import UserError

OPTIMIZERS = ("sgd", "adamw")
SCHEDULES = ("cosine", "constant")


def learning_rate_schedule(train, total_steps):
    """Linear warm-up from 0 over `warmup_epochs`, then cosine decay to 0, or a constant."""
    if train.schedule == "constant":
        return train.learning_rate
    if train.schedule != "cosine":
        raise UserError(f"config.train.schedule={train.schedule!r}: choose one of {', '.join(SCHEDULES)}.")
    warmup_steps = int(round(train.warmup_epochs / max(train.epochs, 1) * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=0.0 if warmup_steps else train.learning_rate,
        decay_steps=max(total_steps - warmup_steps, 1),
        warmup_target=train.learning_rate if warmup_steps else None,
        warmup_steps=warmup_steps)


def build_optimizer(train, total_steps):
    """An optimiser for `total_steps` steps from config.train (a ConfigDict)."""
    learning_rate = learning_rate_schedule(train, total_steps)
    if train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=train.momentum, nesterov=False,
                                         weight_decay=train.weight_decay or None)
    elif train.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=train.weight_decay)
    else:
        raise UserError(f"config.train.optimizer={train.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
    # Keras matches these against variable names: BatchNorm scale and shift, and biases.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer
