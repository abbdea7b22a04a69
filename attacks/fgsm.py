"""FGSM, the fast gradient sign method (Goodfellow, Shlens and Szegedy, 2015).

    x_adv = clip(x + epsilon * sign(grad_x L(model(x), y)), 0, 1)

in [0, 1] pixel space, with the model in inference mode by default (`training=False`:
BatchNorm uses its moving statistics, dropout is off). L is the cross-entropy unless a
`loss` is given (TRADES' adversary follows a KL divergence). A pure function of its
inputs; wrap it in `tf.function` for speed (`attacks.steps` does).
"""

import tensorflow as tf


def check_epsilon(epsilon):
    """Raises ValueError for an epsilon outside [0, 1] (pixel units)."""
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon={epsilon}: must be in [0, 1] pixel units (8/255 = 0.0314).")


def cross_entropy(targets, logits):
    """Per-image cross-entropy of int targets [B] and float32 logits [B, K]."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(targets, tf.int32), logits)


def kl_divergence(targets, logits):
    """Per-image KL(p || softmax(logits)) for target probabilities p [B, K] (TRADES' term)."""
    targets = tf.cast(targets, tf.float32)
    log_ratio = tf.math.log(tf.maximum(targets, 1e-12)) - tf.nn.log_softmax(logits)
    return tf.reduce_sum(targets * log_ratio, axis=-1)


def input_gradient(model, images, targets, loss=cross_entropy, training=False, scale=1.0):
    """Gradient of the summed `loss(targets, logits)` with respect to the images, and the logits.

    `scale` multiplies the loss before differentiating: under mixed_float16 the input
    gradient of a float16 network can underflow to zero, and sign(0) = 0 leaves the image
    where it is; a power of two restores it without changing its sign (the loss scaling of
    mixed-precision training, applied to the attack). Non-finite entries become 0.
    """
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = tf.cast(model(images, training=training), tf.float32)
        value = tf.reduce_sum(loss(targets, logits))
        if scale != 1.0:
            value = value * scale
    gradient = tape.gradient(value, images)
    if scale != 1.0:
        gradient = tf.where(tf.math.is_finite(gradient), gradient, tf.zeros_like(gradient))
    return gradient, logits


def fgsm(model, images, targets, epsilon):
    """Adversarial images [B, H, W, C] for float32 images in [0, 1] and int targets [B].

    Args:
        model: maps images to logits.
        targets: the labels to move away from (true labels, or the model's predictions
            to avoid label leaking).
        epsilon: the L-infinity budget in [0, 1] pixel units.
    """
    if not tf.is_tensor(epsilon):
        check_epsilon(epsilon)
    gradient, _ = input_gradient(model, images, targets)
    return step_from_gradient(images, gradient, epsilon)


def step_from_gradient(images, gradient, epsilon):
    """The FGSM image for a gradient already computed: one gradient serves every epsilon."""
    return tf.clip_by_value(images + epsilon * tf.sign(gradient), 0.0, 1.0)
