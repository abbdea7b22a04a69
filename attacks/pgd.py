"""PGD, projected gradient descent under an L-infinity budget (Madry et al., 2018).

From a uniformly random start in the epsilon-ball, `steps` steps of

    x <- clip(project_ball(x + step_size * sign(grad_x CE(model(x), y))), 0, 1)

repeated from `restarts` random starts; per image, the first restart that fools the
model is kept (else the last). Same conventions as `attacks.fgsm`: [0, 1] pixel units,
model in inference mode.
"""

import tensorflow as tf

from attacks.fgsm import check_epsilon
from attacks.fgsm import input_gradient


def default_step_size(epsilon, steps):
    """2.5 * epsilon / steps: enough to cross the ball and back (Madry et al.)."""
    return 2.5 * epsilon / steps


def pgd(model, images, targets, epsilon, steps=10, step_size=None, restarts=1, seed=(0, 0)):
    """Adversarial images [B, H, W, C] for float32 images in [0, 1] and int targets [B].

    Args:
        epsilon: L-infinity budget in [0, 1] pixel units.
        steps: gradient steps per restart (k in PGD-k).
        step_size: per step, in [0, 1] pixel units; None gives `default_step_size`.
        restarts: random starts; an image counts as broken if any start breaks it.
        seed: stateless seed (two ints) of the random starts.
    """
    if not tf.is_tensor(epsilon):
        check_epsilon(epsilon)
    if steps < 1 or restarts < 1:
        raise ValueError(f"steps={steps}, restarts={restarts}: both must be >= 1.")
    if step_size is None:
        step_size = default_step_size(epsilon, steps)
    targets = tf.cast(targets, tf.int32)
    lower = tf.maximum(images - epsilon, 0.0)
    upper = tf.minimum(images + epsilon, 1.0)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), restarts)
    best, fooled = images, tf.zeros(tf.shape(targets), tf.bool)
    for restart in range(restarts):
        noise = tf.random.stateless_uniform(tf.shape(images), seeds[restart], -1.0, 1.0)
        adversarial = tf.clip_by_value(images + epsilon * noise, lower, upper)
        # A Python loop: `steps` is fixed, and XLA compiles the unrolled steps about twice as
        # fast as a tf.while_loop on a CPU (measured on the 2-core build machine).
        for _ in range(steps):
            gradient, _ = input_gradient(model, adversarial, targets)
            adversarial = tf.clip_by_value(adversarial + step_size * tf.sign(gradient), lower, upper)
        logits = model(adversarial, training=False)
        now_fooled = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets)
        if restart == restarts - 1:
            take = tf.logical_not(fooled)  # Images no restart broke keep the last attempt.
        else:
            take = tf.logical_and(now_fooled, tf.logical_not(fooled))
        best = tf.where(take[:, None, None, None], adversarial, best)
        fooled = tf.logical_or(fooled, now_fooled)
    return best
