"""What FGSM and PGD cost next to a clean evaluation of the same batch, as the evaluator runs them.

The network `attacks.evaluate` attacks: a width-1/4 encoder + classifier (untrained: the
cost does not depend on the weights) turned into its float32 copy with Keras's
BatchNormalization (`models.precision.float32_copy`, what the attack stage loads), every
pass in inference mode, on 256 test images of the embedded sample. Clean is one forward
pass; FGSM (`attacks.fgsm.fgsm`) is a forward and a backward pass to the input, then a
forward pass to score the adversarial images; PGD-k (`attacks.pgd.pgd`, one restart) is k
forward and backward passes plus that final forward pass. Each is a `tf.function`, traced
before timing, timed with XLA and without in alternation (`timing.alternate`), medians
over the rounds; the headline ratios are those of the setting the evaluator picks here
(`attack.jit_compile=auto`: XLA on a GPU or without oneDNN, not with oneDNN on a CPU).
(The evaluator shares one FGSM gradient among all epsilons, so there each further
epsilon costs one forward pass: `fgsm_shared_gradient_ratio`.)

FGSM's floor: a backward pass to the input costs in FLOPs what the forward pass does
(the gradients of the weights are not asked for, and TensorFlow prunes them), so FGSM is
at least 2 + (backward to the input / forward) clean passes, 3 where the two cost alike;
`bench/fgsm_ops_bench.py` times that ratio convolution by convolution. PGD-k is about
2k + 1; `pgd_ratio / (k + 1)` is given as well, k + 1 being the other rule of thumb. The
goal is `goals.FGSM_OVER_CLEAN`.

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
from models import precision
from pipeline import datasets
from training.run_context import run_context

EPSILON = 8 / 255


def evaluator_uses_xla():
    """Whether `attacks.evaluate` compiles its attack steps with XLA on this machine."""
    return precision.jit_compile("auto", on_cpu=precision.onednn_enabled() is False)


@run_context(0, "float32", clear_session=False)  # Restores the policy and seeds afterwards.
def run(width=0.25, batch_size=256, pgd_steps=10, rounds=3, no_xla=True):
    """Median seconds of clean, FGSM and PGD-k on one batch, and their ratios to clean.

    Every attack and its clean reference run the evaluator's network in inference mode,
    with XLA and (with `no_xla`) without; "clean", "fgsm", "fgsm_shared_gradient" and
    "pgd" and the ratios are those of the evaluator's own setting (`evaluator_xla`).
    """
    model = precision.float32_copy(training_bench.classifier_network(width))
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

    xla = evaluator_uses_xla()
    compiled = (True, False) if no_xla else (True,)
    attacks = {f"{name}_{'xla' if jit else 'no_xla'}": tf.function(function, jit_compile=jit)
               for jit in compiled
               for name, function in (("clean", clean), ("fgsm", fgsm_attack),
                                      ("fgsm_shared_gradient", fgsm_shared_gradient), ("pgd", pgd_attack))}
    timed = timing.alternate(attacks, rounds, warmup=1)  # The warm-up traces.
    seconds = {name: timed.seconds(name) for name in attacks}
    cpu_seconds = {name: timed.cpu_seconds(name) for name in attacks}
    own = "xla" if xla or not no_xla else "no_xla"
    for name in ("clean", "fgsm", "fgsm_shared_gradient", "pgd"):
        seconds[name], cpu_seconds[name] = seconds[f"{name}_{own}"], cpu_seconds[f"{name}_{own}"]
    pgd_ratio = seconds["pgd"] / seconds["clean"]
    return {
        "policy": "float32",
        "network": "float32 copy with Keras BatchNormalization, inference mode (what the attack stage attacks)",
        "evaluator_xla": own == "xla",
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
        "fgsm_xla_ratio": seconds["fgsm_xla"] / seconds["clean_xla"],
        **({"fgsm_no_xla_ratio": seconds["fgsm_no_xla"] / seconds["clean_no_xla"],
            "fgsm_no_xla_cpu_ratio": cpu_seconds["fgsm_no_xla"] / cpu_seconds["clean_no_xla"]}
           if no_xla else {}),
    }


if __name__ == "__main__":
    result = run()
    seconds = result["seconds"]
    print(f"as the evaluator runs them ({'XLA' if result['evaluator_xla'] else 'no XLA'}): "
          f"clean {seconds['clean']:.3f} s, FGSM {seconds['fgsm']:.3f} s, "
          f"PGD-{result['pgd_steps']} {seconds['pgd']:.3f} s for {result['batch_size']} images")
    print(f"FGSM/clean {result['fgsm_ratio']:.2f} (goal {goals.FGSM_OVER_CLEAN}), in CPU seconds "
          f"{result['fgsm_cpu_ratio']:.2f}")
    print(f"PGD/clean {result['pgd_ratio']:.2f} = {result['pgd_ratio_per_k_plus_1']:.2f} x (k + 1), "
          f"in CPU seconds {result['pgd_cpu_ratio']:.2f}; CPU share {result['cpu_share']:.2f}")
    if "fgsm_no_xla_ratio" in result:
        print(f"without XLA: clean {seconds['clean_no_xla']:.3f} s, FGSM {seconds['fgsm_no_xla']:.3f} s, "
              f"FGSM/clean {result['fgsm_no_xla_ratio']:.2f}, "
              f"in CPU seconds {result['fgsm_no_xla_cpu_ratio']:.2f}")
