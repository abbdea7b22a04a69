"""mixed_bfloat16 against float32 training, and whether `--precision=auto` picks the faster.

Only on a CPU with bfloat16 instructions (AVX512_BF16 or AMX): elsewhere bfloat16 is
emulated, `auto` never picks it, and the result says "n/a". At widths 1/4 and 1, the
baseline stage's model (`training_bench.project_model`, built under each policy) trains
on one fixed batch of 128 images in memory; the two policies' compiled steps run in
alternation (`timing.alternate`), one step each per round, and the ratio is the median
of the per-round speed ratios (mixed_bfloat16 images/s / float32 images/s).

The goals: `goals.BFLOAT16_SPEEDUP` at full width; and at each width, the policy
`models.precision.resolve("auto", width)` picks must not be slower than float32
(`goals.AUTO_PRECISION_SPEEDUP`): with float32 that holds by definition, with
mixed_bfloat16 its ratio must meet it.

Run alone: `.venv/bin/python bench/precision_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import goals
from bench import timing
from bench import train_step_bench
from bench import training_bench
from models import precision
from training.run_context import run_context

POLICIES = ("float32", "mixed_bfloat16")


def training_step(policy, width, batch_size):
    """One compiled training step of the baseline model built under `policy`, ready to time."""
    with run_context(0, policy, clear_session=False):
        model = training_bench.project_model("baseline", width)
    return train_step_bench.compiled_step(model, training_bench.synthetic_batch(batch_size))


def compare(width, batch_size, rounds):
    timed = timing.alternate({policy: training_step(policy, width, batch_size)
                              for policy in POLICIES}, rounds)
    ratio = timed.ratio("float32", "mixed_bfloat16")
    auto = precision.resolve("auto", width)
    return {
        "width": width,
        "batch_size": batch_size,
        "rounds": rounds,
        "images_per_second": {policy: batch_size / timed.seconds(policy) for policy in POLICIES},
        "ratio": ratio,
        "cpu_ratio": timed.cpu_ratio("float32", "mixed_bfloat16"),
        "auto_picks": auto,
        "auto_not_slower": auto == "float32" or goals.AUTO_PRECISION_SPEEDUP.met(ratio),
        "cpu_share": timed.cpu_share(),
    }


def run(widths=(0.25, 1.0), batch_size=128, rounds=None):
    """{"cases": [one per width]} on a bfloat16 CPU; {"not_applicable": why} elsewhere."""
    if not precision.cpu_has_bfloat16():
        return {"not_applicable": "no AVX512_BF16 or AMX on this CPU: bfloat16 would be emulated, "
                                  "and `auto` picks float32 at every width",
                "auto_picks": {str(width): precision.resolve("auto", width) for width in widths}}
    cases = [compare(width, batch_size, rounds or (6 if width < 1 else 3)) for width in widths]
    return {"cases": cases, "goal_ratio": goals.BFLOAT16_SPEEDUP.bound,
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
