"""Robust accuracy of one model under FGSM and PGD at several epsilons, in batches.

FGSM needs the input gradient at the clean image only, so each batch costs one forward
and backward pass (which also gives the clean accuracy) plus one forward pass per
epsilon; PGD costs its steps per epsilon. The attack steps are compiled with XLA by
default (on the build machine's CPU it halved their time; `jit_compile=False` turns it off).

Besides accuracies it records what the sanity checks (`attacks.sanity_checks`) need:
how far any adversarial image strayed from its original and from [0, 1], whether two
forward passes agree (a model left in training mode or with randomness does not), and
the share of images whose input gradient is exactly zero (an attack then cannot move
them, which makes a model look robust when it is not).
"""

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from attacks.fgsm import check_epsilon
from attacks.fgsm import input_gradient
from attacks.fgsm import step_from_gradient
from attacks.pgd import default_step_size
from attacks.pgd import pgd


@dataclasses.dataclass
class AttackSettings:
    """Epsilons in [0, 1] pixel units; PGD's steps, step size (None: default) and restarts."""

    epsilons: tuple = (0.0, 1 / 255, 2 / 255, 4 / 255, 8 / 255, 16 / 255)
    pgd_steps: int = 10
    pgd_step_size: float = None
    pgd_restarts: int = 1
    use_predictions: bool = False
    batch_size: int = 256
    seed: int = 0
    jit_compile: bool = True

    def __post_init__(self):
        for epsilon in self.epsilons:
            check_epsilon(epsilon)
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size}: must be >= 1.")


@dataclasses.dataclass
class Evaluation:
    """Counts of correct predictions and the diagnostics, for one model."""

    n: int = 0
    clean_correct: int = 0
    correct: dict = dataclasses.field(default_factory=dict)  # (attack, epsilon) -> count
    max_ball_excess: float = 0.0  # max over images of |x_adv - x|_inf - epsilon
    min_pixel: float = 0.0
    max_pixel: float = 1.0
    deterministic: bool = True
    zero_gradient_images: int = 0

    def accuracy(self, attack, epsilon=0.0):
        count = self.clean_correct if attack == "clean" else self.correct[(attack, epsilon)]
        return count / self.n if self.n else float("nan")


def evaluate(model, images, labels, settings, progress=True):
    """Evaluates `model` on float32 images [N, H, W, C] in [0, 1] and labels [N]."""
    def predict(x):
        return tf.argmax(model(x, training=False), axis=-1, output_type=tf.int32)

    # Fixed signatures with an open batch size: one trace per model, also for the last,
    # smaller batch, and epsilon and the step size as tensors, not retrace-causing floats.
    image_spec = tf.TensorSpec([None, *images.shape[1:]], tf.float32)
    label_spec = tf.TensorSpec([None], tf.int32)
    scalar_spec = tf.TensorSpec([], tf.float32)

    compiled = dict(jit_compile=settings.jit_compile)

    @tf.function(input_signature=[image_spec, label_spec], **compiled)
    def clean_step(x, labels):
        """Clean predictions, whether inference is deterministic, the FGSM gradient, zero gradients."""
        logits = model(x, training=False)
        predictions = tf.argmax(logits, axis=-1, output_type=tf.int32)
        deterministic = tf.reduce_all(tf.equal(logits, model(x, training=False)))
        targets = predictions if settings.use_predictions else labels
        gradient, _ = input_gradient(model, x, targets)
        zero = tf.reduce_all(tf.equal(tf.reshape(gradient, [tf.shape(x)[0], -1]), 0.0), axis=1)
        return predictions, deterministic, gradient, tf.reduce_sum(tf.cast(zero, tf.int32))

    @tf.function(input_signature=[image_spec, image_spec, scalar_spec], **compiled)
    def fgsm_step(x, gradient, epsilon):
        adversarial = step_from_gradient(x, gradient, epsilon)
        return adversarial, predict(adversarial)

    @tf.function(input_signature=[image_spec, label_spec, scalar_spec, scalar_spec,
                                  tf.TensorSpec([2], tf.int64)], **compiled)
    def pgd_step(x, targets, epsilon, step_size, seed):
        adversarial = pgd(model, x, targets, epsilon, settings.pgd_steps, step_size,
                          settings.pgd_restarts, seed)
        return adversarial, predict(adversarial)

    result = Evaluation()
    labels = np.asarray(labels, np.int32)
    batches = range(0, len(labels), settings.batch_size)
    bar = keras.utils.Progbar(len(batches), unit_name="batch") if progress else None
    for index, start in enumerate(batches):
        x = tf.constant(images[start:start + settings.batch_size], tf.float32)
        y = tf.constant(labels[start:start + settings.batch_size])
        predictions, deterministic, gradient, zero = clean_step(x, y)
        targets = predictions if settings.use_predictions else y
        result.n += int(y.shape[0])
        result.clean_correct += int(tf.reduce_sum(tf.cast(predictions == y, tf.int32)))
        result.deterministic &= bool(deterministic)
        result.zero_gradient_images += int(zero)
        for epsilon in settings.epsilons:
            step_size = settings.pgd_step_size
            if step_size is None:
                step_size = default_step_size(epsilon, settings.pgd_steps)
            seed = tf.constant([settings.seed, start], tf.int64)
            for attack, (adversarial, adversarial_predictions) in (
                    ("fgsm", fgsm_step(x, gradient, tf.constant(epsilon, tf.float32))),
                    ("pgd", pgd_step(x, targets, tf.constant(epsilon, tf.float32),
                                     tf.constant(step_size, tf.float32), seed))):
                key = (attack, epsilon)
                result.correct[key] = result.correct.get(key, 0) + int(
                    tf.reduce_sum(tf.cast(adversarial_predictions == y, tf.int32)))
                distance = float(tf.reduce_max(tf.abs(adversarial - x)))
                result.max_ball_excess = max(result.max_ball_excess, distance - epsilon)
                result.min_pixel = min(result.min_pixel, float(tf.reduce_min(adversarial)))
                result.max_pixel = max(result.max_pixel, float(tf.reduce_max(adversarial)))
        if bar:
            bar.update(index + 1)
    return result
