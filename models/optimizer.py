"""The optimiser and learning-rate schedule named by a training config.

SGD with momentum and a cosine schedule after a linear warm-up, as SupContrast trains
CIFAR; AdamW as an option. Weight decay skips BatchNorm parameters and biases, which it
would only shrink, and is decoupled: Keras shrinks a kernel by lr * weight_decay * w each
step, outside the momentum. PyTorch's SGD, which the published recipes use, adds
weight_decay * w to the gradient instead, so the momentum carries it: at momentum m it
shrinks a slowly changing kernel by lr * weight_decay * w / (1 - m) per step, 10 times
more at m = 0.9. A recipe's `weight_decay=5e-4` (fast adversarial training, N-FGSM,
TRADES) corresponds to about `config.train.weight_decay=5e-3` here.

With `ema_momentum` m > 0 the optimiser also keeps the exponential moving average of the
weights, a_t = m a_(t-1) + (1 - m) w_t after step t (a_1 = w_1), which Keras swaps into the
model to validate it and leaves there when training ends (`training/fit.py`). Weight
averaging adds robustness to adversarial training (Gowal et al. 2020; Rebuffi et al. 2021).
Only the trainable weights are averaged: BatchNorm's moving statistics are the raw
model's, a moving average of their own (over 1 / (1 - 0.9) = 10 steps here).
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
    momentum = train.get("ema_momentum", 0.0)
    averaging = dict(use_ema=True, ema_momentum=momentum) if momentum else {}
    if train.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(learning_rate, momentum=train.momentum, nesterov=False,
                                         weight_decay=train.weight_decay or None, **averaging)
    elif train.optimizer == "adamw":
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=train.weight_decay,
                                           **averaging)
    else:
        raise UserError(f"config.train.optimizer={train.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}.")
    # Keras matches these against variable names: BatchNorm scale and shift, and biases.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer
