"""The entries of the attack table, each built once per model.

FGSM and PGD trace their step once per model with a fixed signature (open batch size,
epsilon and step size as tensors) and compile it with XLA when `settings.jit_compile`
(halved the attack time on the build machine's CPU). The AutoAttack-like evaluation
wraps ART (`attacks.strong`) around one compiled inference model.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from attacks.fgsm import step_from_gradient
from attacks.pgd import default_step_size
from attacks.pgd import pgd

PGD_50_STEPS = 50


def _specs(image_spec):
    return (image_spec, tf.TensorSpec([None], tf.int32), tf.TensorSpec([], tf.float32))


def build_fgsm(model, settings, image_spec):
    """FGSM from the clean-image gradient the evaluator computed (shared by every epsilon)."""
    images, _, scalar = _specs(image_spec)

    @tf.function(input_signature=[images, images, scalar], jit_compile=settings.jit_compile)
    def step(x, gradient, epsilon):
        return step_from_gradient(x, gradient, epsilon)

    return lambda x, targets, epsilon, batch: step(x, batch.gradient, tf.constant(epsilon, tf.float32))


def build_pgd(model, settings, image_spec):
    images, labels, scalar = _specs(image_spec)

    @tf.function(input_signature=[images, labels, scalar, scalar, tf.TensorSpec([2], tf.int64)],
                 jit_compile=settings.jit_compile)
    def step(x, targets, epsilon, step_size, seed):
        return pgd(model, x, targets, epsilon, settings.pgd_steps, step_size,
                   settings.pgd_restarts, seed)

    def attack(x, targets, epsilon, batch):
        step_size = settings.pgd_step_size
        if step_size is None:
            step_size = default_step_size(epsilon, settings.pgd_steps)
        return step(x, targets, tf.constant(epsilon, tf.float32), tf.constant(step_size, tf.float32),
                    batch.seed)

    return attack


def build_pgd_50(model, settings, image_spec):
    """PGD with 50 steps whatever settings.pgd_steps says (the field's stronger PGD)."""
    return build_pgd(model, dataclasses.replace(settings, pgd_steps=PGD_50_STEPS), image_spec)


def build_strong(model, settings, image_spec):
    """APGD-CE, APGD-DLR and Square from ART, in AutoAttack's manner, on each batch."""
    from attacks import strong  # ART is imported only when this attack is asked for.

    options = strong.StrongSettings(**dict(settings.strong or {}), seed=settings.seed,
                                    jit_compile=settings.jit_compile)
    network = strong.InferenceModel(model, tuple(image_spec.shape[1:]), options.jit_compile,
                                    options.batch_size)

    def attack(x, targets, epsilon, batch):
        result = strong.strong_attack(network, x.numpy(), np.asarray(targets), float(epsilon), options)
        return result.adversarial

    return attack
