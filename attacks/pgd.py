"""Signed-gradient attacks under an L-infinity budget: one iteration for evaluation and training.

`perturb` is the iteration every single- and multi-step attack here is made of, from a
start x_0 (x itself, or x plus noise uniform in [-k eps, k eps], or Gaussian):

    x_{t+1} = clip(project(x_t + step_size * sign(grad_x L(model(x_t), y))), 0, 1)

with `project` the projection onto the epsilon-ball around x, or none. Its settings give
the attacks of the literature:

| attack | start | steps | step size | projection | reach |
|---|---|---|---|---|---|
| FGSM (Goodfellow et al., 2015) | none | 1 | eps | yes | eps |
| FGSM-RS (Wong, Rice, Kolter, 2020) | U(-eps, eps) | 1 | 1.25 eps | yes | eps |
| N-FGSM (de Jorge et al., 2022) | U(-2 eps, 2 eps) | 1 | eps | no | 3 eps |
| PGD-k (Madry et al., 2018) | U(-eps, eps) | k | alpha | yes | eps |
| TRADES' adversary (Zhang et al., 2019) | N(0, 0.001^2) | k | alpha | yes | eps |

`pgd` is the evaluator's PGD: `perturb` from `restarts` random starts, keeping per image
the first restart that fools the model (else the last). Same conventions as
`attacks.fgsm`: [0, 1] pixel units, the model in inference mode unless `training`.
"""

import tensorflow as tf

from attacks.fgsm import check_epsilon
from attacks.fgsm import cross_entropy
from attacks.fgsm import input_gradient

STARTS = ("none", "uniform", "normal")


def default_step_size(epsilon, steps):
    """2.5 * epsilon / steps: enough to cross the ball and back (Madry et al.)."""
    return 2.5 * epsilon / steps


def start_noise(shape, epsilon, start, start_scale, seed):
    """The start's noise of `shape`: uniform in [-start_scale eps, start_scale eps], or
    Gaussian with standard deviation start_scale; `seed` stateless. None for start "none"."""
    if start == "none":
        return None
    if start == "uniform":
        return tf.random.stateless_uniform(shape, seed, -1.0, 1.0) * start_scale * epsilon
    if start == "normal":
        return tf.random.stateless_normal(shape, seed) * start_scale
    raise ValueError(f"start={start!r}: choose one of {', '.join(STARTS)}.")


def start_point(images, epsilon, start, start_scale, seed):
    """x_0: the images plus `start_noise`, clipped to [0, 1]."""
    noise = start_noise(tf.shape(images), epsilon, start, start_scale, seed)
    if noise is None:
        return images
    return tf.clip_by_value(images + tf.cast(noise, images.dtype), 0.0, 1.0)


def perturb(model, images, targets, epsilon, steps, step_size, start="uniform", start_scale=1.0,
            project=True, loss=cross_entropy, seed=(0, 0), training=False, gradient_scale=1.0,
            start_images=None):
    """`steps` signed-gradient steps from a start (see the module docstring); returns x_steps.

    Args:
        model: maps images to logits, called as model(x, training=training).
        images: float32 [B, H, W, C] in [0, 1].
        targets: what `loss(targets, logits)` takes: int labels [B] for the cross-entropy,
            probabilities [B, K] for `attacks.fgsm.kl_divergence`.
        epsilon, step_size: in [0, 1] pixel units (scalars or tensors).
        start, start_scale: "none", "uniform" (in start_scale * eps) or "normal" (standard
            deviation start_scale).
        project: project each step onto the epsilon-ball around `images`; without it only
            [0, 1] bounds the image (N-FGSM).
        seed: stateless seed (two ints) of the start.
        gradient_scale: see `attacks.fgsm.input_gradient` (mixed_float16).
        start_images: x_0 given directly (then start, start_scale and seed are unused).
    """
    lower = tf.maximum(images - epsilon, 0.0) if project else tf.zeros_like(images)
    upper = tf.minimum(images + epsilon, 1.0) if project else tf.ones_like(images)
    if start_images is None:
        start_images = start_point(images, epsilon, start, start_scale, seed)
    adversarial = tf.clip_by_value(start_images, lower, upper)
    # A Python loop: `steps` is fixed, and XLA compiles the unrolled steps about twice as
    # fast as a tf.while_loop on a CPU (measured on the 2-core build machine).
    for _ in range(steps):
        gradient, _ = input_gradient(model, adversarial, targets, loss, training, gradient_scale)
        adversarial = tf.clip_by_value(adversarial + step_size * tf.sign(gradient), lower, upper)
    return adversarial


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
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), restarts)
    best, fooled = images, tf.zeros(tf.shape(targets), tf.bool)
    for restart in range(restarts):
        adversarial = perturb(model, images, targets, epsilon, steps, step_size, "uniform",
                              seed=seeds[restart])
        logits = model(adversarial, training=False)
        now_fooled = tf.not_equal(tf.argmax(logits, axis=-1, output_type=tf.int32), targets)
        if restart == restarts - 1:
            take = tf.logical_not(fooled)  # Images no restart broke keep the last attempt.
        else:
            take = tf.logical_and(now_fooled, tf.logical_not(fooled))
        best = tf.where(take[:, None, None, None], adversarial, best)
        fooled = tf.logical_or(fooled, now_fooled)
    return best
