"""FGSM, the fast gradient sign method (Goodfellow, Shlens and Szegedy, 2015).

    x_adv = clip(x + epsilon * sign(grad_x CE(model(x), y)), 0, 1)

in [0, 1] pixel space, with the model in inference mode (`training=False`: BatchNorm
uses its moving statistics, dropout is off). A pure function of its inputs; wrap it in
`tf.function` for speed (`stages.attack` does).
"""

import tensorflow as tf


def check_epsilon(epsilon):
    """Raises ValueError for an epsilon outside [0, 1] (pixel units)."""
    if not 0.0 <= float(epsilon) <= 1.0:
        raise ValueError(f"epsilon={epsilon}: must be in [0, 1] pixel units (8/255 = 0.0314).")


def input_gradient(model, images, targets):
    """Gradient of the summed cross-entropy with respect to the images, and the logits."""
    with tf.GradientTape() as tape:
        tape.watch(images)
        logits = tf.cast(model(images, training=False), tf.float32)
        loss = tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(targets, tf.int32), logits)
    return tape.gradient(loss, images), logits


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
