"""What FGSM and PGD cost next to a clean evaluation of the same batch.

A width-1/4 float32 encoder + classifier (untrained: the cost does not depend on the
weights) and 256 test images of the embedded sample. Clean is one forward pass; FGSM
(`attacks.fgsm.fgsm`) is a forward and a backward pass to the input, then a forward pass
to score the adversarial images; PGD-k (`attacks.pgd.pgd`, one restart) is k forward and
backward passes plus that final forward pass. Each is a `tf.function` compiled with XLA
as `attacks.evaluate` runs them, traced before timing; all are timed in alternation
(`timing.alternate`) and the medians over the rounds are reported. (The evaluator shares one FGSM
gradient among all epsilons, so there each further epsilon costs one forward pass.)

In FLOPs a backward pass to the input equals a forward pass (the gradients of the
weights are not asked for, and TensorFlow prunes them), so FGSM ideally costs 2 clean
passes and PGD-k 2k + 1; `pgd_ratio / (k + 1)` is given as well, since k + 1 is the
other common rule of thumb. The goal is `goals.FGSM_OVER_CLEAN`.

Run alone: `.venv/bin/python bench/attack_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np
import tensorflow as tf

from attacks.fgsm import fgsm
from attacks.fgsm import input_gradient
from attacks.fgsm import step_from_gradient
from attacks.pgd import pgd
from bench import goals
from bench import timing
from bench import training_bench
from pipeline import datasets
from training.run_context import run_context

EPSILON = 8 / 255


@run_context(0, "float32", clear_session=False)  # Restores the policy and seeds afterwards.
def run(width=0.25, batch_size=256, pgd_steps=10, rounds=3, no_xla=True):
    """Median seconds of clean, FGSM and PGD-k on one batch, and their ratios to clean.

    Clean, FGSM and PGD (each ending with the forward pass that scores the adversarial
    images) are compiled with XLA (`jit_compile=True`), as `attacks.evaluate` compiles
    them by default. With `no_xla`, clean and FGSM are also timed without XLA, to show
    what compiling them changes.
    """
    model = training_bench.classifier_network(width)
    test = datasets.load("sample").test
    if len(test) < batch_size:
        raise ValueError(f"the sample's test split has {len(test)} images, fewer than "
                         f"batch_size={batch_size}.")
    images = tf.constant(test.images[:batch_size].astype(np.float32) / 255.0)
    labels = tf.constant(test.labels[:batch_size].astype(np.int32))

    def clean():
        return tf.argmax(model(images, training=False), axis=-1)

    def fgsm_attack():
        return tf.argmax(model(fgsm(model, images, labels, EPSILON), training=False), axis=-1)

    def pgd_attack():
        return tf.argmax(model(pgd(model, images, labels, EPSILON, steps=pgd_steps), training=False), axis=-1)

    # What attacks.evaluate pays for each further epsilon: the gradient at the clean images
    # is computed once per batch and shared, so one more FGSM epsilon is one forward pass.
    gradient, _ = input_gradient(model, images, labels)

    def fgsm_shared_gradient():
        return tf.argmax(model(step_from_gradient(images, gradient, EPSILON), training=False), axis=-1)

    # The project's path (attacks.evaluate) compiles with XLA; the no-XLA figures are for comparison.
    attacks = {"clean": tf.function(clean, jit_compile=True),
               "fgsm": tf.function(fgsm_attack, jit_compile=True),
               "fgsm_shared_gradient": tf.function(fgsm_shared_gradient, jit_compile=True),
               "pgd": tf.function(pgd_attack, jit_compile=True)}
    if no_xla:
        attacks["clean_no_xla"] = tf.function(clean, jit_compile=False)
        attacks["fgsm_no_xla"] = tf.function(fgsm_attack, jit_compile=False)
        attacks["pgd_no_xla"] = tf.function(pgd_attack, jit_compile=False)
    timed = timing.alternate(attacks, rounds, warmup=1)  # The warm-up traces.
    seconds = {name: timed.seconds(name) for name in attacks}
    cpu_seconds = {name: timed.cpu_seconds(name) for name in attacks}
    pgd_ratio = seconds["pgd"] / seconds["clean"]
    return {
        "policy": "float32",
        "width": width,
        "batch_size": batch_size,
        "epsilon": "8/255",
        "pgd_steps": pgd_steps,
        "rounds": rounds,
        "seconds": seconds,
        "all_seconds": timed.wall,
        "cpu_seconds": cpu_seconds,
        "fgsm_ratio": seconds["fgsm"] / seconds["clean"],
        "fgsm_shared_gradient_ratio": seconds["fgsm_shared_gradient"] / seconds["clean"],
        "pgd_ratio": pgd_ratio,
        "pgd_ratio_per_k_plus_1": pgd_ratio / (pgd_steps + 1),
        # PGD-k is k FGSM-like steps and one forward pass; near 1 means its loop adds nothing.
        "pgd_over_k_fgsm_plus_clean": seconds["pgd"] / (pgd_steps * seconds["fgsm"] + seconds["clean"]),
        "fgsm_cpu_ratio": cpu_seconds["fgsm"] / cpu_seconds["clean"],
        "pgd_cpu_ratio": cpu_seconds["pgd"] / cpu_seconds["clean"],
        "cpu_share": timed.cpu_share(),
        "goal_fgsm_ratio": goals.FGSM_OVER_CLEAN.bound,
        **({"fgsm_no_xla_ratio": seconds["fgsm_no_xla"] / seconds["clean_no_xla"],
            "fgsm_no_xla_cpu_ratio": cpu_seconds["fgsm_no_xla"] / cpu_seconds["clean_no_xla"]}
           if no_xla else {}),
    }


if __name__ == "__main__":
    result = run()
    seconds = result["seconds"]
    print(f"clean {seconds['clean']:.3f} s, FGSM {seconds['fgsm']:.3f} s, "
          f"PGD-{result['pgd_steps']} {seconds['pgd']:.3f} s for {result['batch_size']} images")
    print(f"FGSM/clean {result['fgsm_ratio']:.2f} (goal {goals.FGSM_OVER_CLEAN}), in CPU seconds "
          f"{result['fgsm_cpu_ratio']:.2f}")
    print(f"PGD/clean {result['pgd_ratio']:.2f} = {result['pgd_ratio_per_k_plus_1']:.2f} x (k + 1), "
          f"in CPU seconds {result['pgd_cpu_ratio']:.2f}; CPU share {result['cpu_share']:.2f}")
    if "fgsm_no_xla_ratio" in result:
        print(f"without XLA: clean {seconds['clean_no_xla']:.3f} s, FGSM {seconds['fgsm_no_xla']:.3f} s, "
              f"FGSM/clean {result['fgsm_no_xla_ratio']:.2f}, "
              f"in CPU seconds {result['fgsm_no_xla_cpu_ratio']:.2f}")
