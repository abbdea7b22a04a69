"""What the custom `ContrastiveModel.train_step` costs over a plain Keras `fit`.

Custom: the pretrain form (CE + SupCon + pairwise margin, two views, B pairs = 2B images
a step), with its projection head and per-term trackers. Plain: `compile(optimizer=SGD,
loss=SparseCategoricalCrossentropy(from_logits=True)).fit` of the same functional network
(encoder + classifier) on the same 2B images a step. Both use the project's SGD, width
1/4, float32, and one fixed batch repeated from memory, so only the step is timed. The
two are measured in alternation, step by step (custom first in even rounds, plain
first in odd ones), and the median of the per-round ratios is reported, which cancels
slow drifts of a shared machine; the ratio of CPU seconds per step is given beside it.

Run alone: `.venv/bin/python bench/train_step_bench.py`.
"""

import functools
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import tensorflow as tf

from bench import timing
from bench import training_bench

GOAL_RATIO = 1.05


def custom_model(width):
    """The pretrain stage's model as the training core builds it from the base config."""
    return training_bench.project_model("pretrain", width)


def plain_model(width):
    model = training_bench.classifier_network(width)
    model.compile(optimizer=training_bench.project_optimizer(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def run(width=0.25, pairs=128, rounds=8):
    """Seconds per step of both, step by step in alternation, and the median ratio custom / plain.

    After `fit` has built and traced each model's step, the steps are run by calling
    `model.train_function` (the compiled step `fit` calls once per step) directly, so the
    two models can alternate every step: contention on a shared machine changes over
    seconds, and neighbouring steps see nearly the same.
    """
    keras.config.set_dtype_policy("float32")
    keras.utils.set_random_seed(0)
    pair_images, labels = training_bench.synthetic_batch(pairs, views=2)
    flat_images = tf.concat(tf.unstack(pair_images, axis=1), axis=0)
    models = {
        "custom": (custom_model(width),
                   tf.data.Dataset.from_tensors((pair_images, labels)).repeat()),
        "plain": (plain_model(width),
                  tf.data.Dataset.from_tensors((flat_images, tf.tile(labels, [2]))).repeat()),
    }
    steps = {}
    for name, (model, dataset) in models.items():
        # Builds and traces the step.
        model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
        iterator = iter(dataset)
        steps[name] = functools.partial(_train_step, model, iterator)
        steps[name]()  # Traces once more, for this iterator type.
    wall = {name: [] for name in models}
    cpu = {name: [] for name in models}
    for round_index in range(rounds):
        order = ("custom", "plain") if round_index % 2 == 0 else ("plain", "custom")
        for name in order:
            seconds, cpu_seconds = timing.time_call(steps[name])
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)
    ratios = [c / p for c, p in zip(wall["custom"], wall["plain"])]
    images = 2 * pairs
    return {
        "policy": "float32",
        "width": width,
        "pairs_per_step": pairs,
        "images_per_step": images,
        "rounds": rounds,
        "custom_seconds_per_step": wall["custom"],
        "plain_seconds_per_step": wall["plain"],
        "custom_cpu_seconds_per_step": cpu["custom"],
        "plain_cpu_seconds_per_step": cpu["plain"],
        "ratios": ratios,
        "ratio": timing.median(ratios),
        "cpu_ratio": timing.median(cpu["custom"]) / timing.median(cpu["plain"]),
        "custom_images_per_second": images / timing.median(wall["custom"]),
        "plain_images_per_second": images / timing.median(wall["plain"]),
        "cpu_share": timing.cpu_share(sum(map(sum, cpu.values())), sum(map(sum, wall.values()))),
        "goal_ratio": GOAL_RATIO,
    }


def _train_step(model, iterator):
    """One step of `model`'s compiled training function; returns the loss as a Python float."""
    return float(model.train_function(iterator)["loss"])


if __name__ == "__main__":
    result = run()
    print(f"custom: {timing.median(result['custom_seconds_per_step']):.3f} s/step, "
          f"plain: {timing.median(result['plain_seconds_per_step']):.3f} s/step "
          f"({result['images_per_step']} images, width {result['width']}, float32)")
    print(f"ratios per round: {', '.join(f'{r:.3f}' for r in result['ratios'])}")
    print(f"median ratio custom/plain: {result['ratio']:.3f}, in CPU seconds "
          f"{result['cpu_ratio']:.3f} (goal <= {GOAL_RATIO}); CPU share {result['cpu_share']:.2f}")
