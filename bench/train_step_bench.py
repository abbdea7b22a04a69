"""What the custom `ContrastiveModel.train_step` costs over a plain Keras `fit`.

Custom: the pretrain form (CE + SupCon + pairwise margin, two views, B pairs = 2B images
a step), with its projection head and per-term trackers. Plain: `compile(optimizer=SGD,
loss=SparseCategoricalCrossentropy(from_logits=True)).fit` of the same functional network
(encoder + classifier) on the same 2B images a step. Both use the project's SGD, width
1/4, float32, and one fixed batch repeated from memory, so only the step is timed. The
two are measured in alternation, step by step (`timing.alternate`: custom first in even
rounds, plain first in odd ones), and the median of the per-round ratios is reported,
which cancels slow drifts of a shared machine; the ratio of CPU seconds per step is
given beside it. The goal is `goals.CUSTOM_STEP_SPEED`.

Run alone: `.venv/bin/python bench/train_step_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras
import tensorflow as tf

from bench import goals
from bench import timing
from bench import training_bench
from training.run_context import run_context


def custom_model(width):
    """The pretrain stage's model as the training core builds it from the base config."""
    return training_bench.project_model("pretrain", width)


def plain_model(width):
    model = training_bench.classifier_network(width)
    model.compile(optimizer=training_bench.project_optimizer(),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def compiled_step(model, batch):
    """A callable running one step of `model`'s compiled `train_function` on `batch`, repeated.

    `fit` builds and traces the step first; then the step is called directly (it is what
    `fit` calls once per step), so that two models can alternate every step: contention
    on a shared machine changes over seconds, and neighbouring steps see nearly the same.
    The callable returns the loss as a Python float, so the step has finished.
    """
    dataset = tf.data.Dataset.from_tensors(batch).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
    iterator = iter(dataset)

    def step():
        return float(model.train_function(iterator)["loss"])

    step()  # Traces once more, for this iterator type.
    return step


@run_context(0, "float32", clear_session=False)  # Restores the policy and seeds afterwards.
def run(width=0.25, pairs=128, rounds=8):
    """Seconds per step of both, step by step in alternation, and the median ratio custom / plain."""
    pair_images, labels = training_bench.synthetic_batch(pairs, views=2)
    flat_images = tf.concat(tf.unstack(pair_images, axis=1), axis=0)
    timed = timing.alternate(
        {"custom": compiled_step(custom_model(width), (pair_images, labels)),
         "plain": compiled_step(plain_model(width), (flat_images, tf.tile(labels, [2])))}, rounds)
    images = 2 * pairs
    return {
        "policy": "float32",
        "width": width,
        "pairs_per_step": pairs,
        "images_per_step": images,
        "rounds": rounds,
        "custom_seconds_per_step": timed.wall["custom"],
        "plain_seconds_per_step": timed.wall["plain"],
        "custom_cpu_seconds_per_step": timed.cpu["custom"],
        "plain_cpu_seconds_per_step": timed.cpu["plain"],
        "ratios": timed.ratios("custom", "plain"),
        "ratio": timed.ratio("custom", "plain"),
        "cpu_ratio": timed.cpu_ratio("custom", "plain"),
        "custom_images_per_second": images / timed.seconds("custom"),
        "plain_images_per_second": images / timed.seconds("plain"),
        "cpu_share": timed.cpu_share(),
        # The goal as a bound on this time ratio: speed >= s is time custom / plain <= 1 / s.
        "goal_ratio": 1 / goals.CUSTOM_STEP_SPEED.bound,
    }


if __name__ == "__main__":
    result = run()
    print(f"custom: {result['images_per_step'] / result['custom_images_per_second']:.3f} s/step, "
          f"plain: {result['images_per_step'] / result['plain_images_per_second']:.3f} s/step "
          f"({result['images_per_step']} images, width {result['width']}, float32)")
    print(f"ratios per round: {', '.join(f'{r:.3f}' for r in result['ratios'])}")
    print(f"median ratio custom/plain: {result['ratio']:.3f}, in CPU seconds "
          f"{result['cpu_ratio']:.3f} (goal: speed plain/custom {goals.CUSTOM_STEP_SPEED}); "
          f"CPU share {result['cpu_share']:.2f}")
