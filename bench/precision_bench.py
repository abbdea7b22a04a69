"""mixed_bfloat16 against float32 training, and whether `--precision=auto` picks the faster.

Only on a CPU with bfloat16 instructions (AVX512_BF16 or AMX): elsewhere bfloat16 is
emulated, `auto` never picks it, and the result says "n/a". At widths 1/4 and 1, the
baseline stage's model (`training_bench.project_model`, built under each policy) trains
on one fixed batch of 128 images in memory; the two policies' compiled steps run in
alternation, one step each per round, and the ratio is the median of the per-round
speed ratios (mixed_bfloat16 images/s / float32 images/s).

The goal (issue #11): >= 1.3 at full width. And for each width, the policy
`models.precision.resolve("auto", width)` picks must not be slower than float32: with
float32 that holds by definition, with mixed_bfloat16 its ratio must be >= 1.

Run alone: `.venv/bin/python bench/precision_bench.py`.
"""

import functools
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

from bench import timing
from bench import train_step_bench
from bench import training_bench
from models import precision

GOAL_RATIO = 1.3
POLICIES = ("float32", "mixed_bfloat16")


def training_step(policy, width, batch_size):
    """One compiled training step of the baseline model built under `policy`, ready to time."""
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        model = training_bench.project_model("baseline", width)
    finally:
        keras.config.set_dtype_policy(previous)
    dataset = tf.data.Dataset.from_tensors(training_bench.synthetic_batch(batch_size)).repeat()
    model.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)  # Builds and traces.
    step = functools.partial(train_step_bench._train_step, model, iter(dataset))
    step()  # Traces once more, for this iterator type.
    return step


def compare(width, batch_size, rounds):
    steps = {policy: training_step(policy, width, batch_size) for policy in POLICIES}
    wall = {policy: [] for policy in POLICIES}
    cpu = {policy: [] for policy in POLICIES}
    for round_index in range(rounds):
        order = POLICIES if round_index % 2 == 0 else POLICIES[::-1]
        for policy in order:
            seconds, cpu_seconds = timing.time_call(steps[policy])
            wall[policy].append(seconds)
            cpu[policy].append(cpu_seconds)
    ratio = timing.median([f / b for f, b in zip(wall["float32"], wall["mixed_bfloat16"])])
    auto = precision.resolve("auto", width)
    return {
        "width": width,
        "batch_size": batch_size,
        "rounds": rounds,
        "images_per_second": {policy: batch_size / timing.median(wall[policy]) for policy in POLICIES},
        "ratio": ratio,
        "cpu_ratio": timing.median(cpu["float32"]) / timing.median(cpu["mixed_bfloat16"]),
        "auto_picks": auto,
        "auto_not_slower": auto == "float32" or ratio >= 1.0,
        "cpu_share": timing.cpu_share(sum(map(sum, cpu.values())), sum(map(sum, wall.values()))),
    }


def run(widths=(0.25, 1.0), batch_size=128, rounds=None):
    """{"cases": [one per width]} on a bfloat16 CPU; {"not_applicable": why} elsewhere."""
    if not precision.cpu_has_bfloat16():
        return {"not_applicable": "no AVX512_BF16 or AMX on this CPU: bfloat16 would be emulated, "
                                  "and `auto` picks float32 at every width",
                "auto_picks": {str(width): precision.resolve("auto", width) for width in widths}}
    cases = [compare(width, batch_size, rounds or (6 if width < 1 else 3)) for width in widths]
    return {"cases": cases, "goal_ratio": GOAL_RATIO,
            "bfloat16_min_width": precision.BFLOAT16_MIN_WIDTH}


if __name__ == "__main__":
    result = run()
    if "not_applicable" in result:
        print(f"n/a: {result['not_applicable']}")
    for case in result.get("cases", []):
        print(f"width {case['width']}: mixed_bfloat16 / float32 = {case['ratio']:.2f} "
              f"({case['images_per_second']['mixed_bfloat16']:.1f} / "
              f"{case['images_per_second']['float32']:.1f} images/s); auto picks "
              f"{case['auto_picks']} ({'not slower' if case['auto_not_slower'] else 'SLOWER'} "
              f"than float32); CPU share {case['cpu_share']:.2f}")
