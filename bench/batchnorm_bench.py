"""The training step with BatchNorm on TensorFlow's fused op against Keras's arithmetic.

The baseline stage's model at width 1/4 (`precision_bench.training_step`: one fixed batch
of 128 images in memory, the compiled step) under float32 and mixed_bfloat16, each with
`FusedBatchNormalization` as the ResNet builds it and with `fused=False` (Keras's ops,
what every model trained before it used). The four steps run in alternation
(`timing.alternate`, the order rotating every round), 2 warm-up rounds, then the medians;
a ratio is the median of the per-round ratios. Not part of `make bench`: it measured the
change once (bench/README.md).

Run alone: `.venv/bin/python bench/batchnorm_bench.py [--rounds 15]`.
"""

import argparse
import functools
import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from bench import precision_bench
from bench import timing
from models import resnet

POLICIES = ("float32", "mixed_bfloat16")
LAYERS = ("keras", "fused")


def training_step(policy, layer, width, batch_size):
    """`precision_bench.training_step` with the ResNet's BatchNorm fused or on Keras's ops."""
    fused = resnet.FusedBatchNormalization
    if layer == "keras":
        resnet.FusedBatchNormalization = functools.partial(fused, fused=False)
    try:
        return precision_bench.training_step(policy, width, batch_size)
    finally:
        resnet.FusedBatchNormalization = fused


def run(width=0.25, batch_size=128, rounds=15, warm_up=2):
    steps = {(policy, layer): training_step(policy, layer, width, batch_size)
             for policy in POLICIES for layer in LAYERS}
    timed = timing.alternate(steps, rounds, warm_up)
    return {
        "width": width, "batch_size": batch_size, "rounds": rounds,
        "images_per_second": {f"{policy}/{layer}": batch_size / timed.seconds((policy, layer))
                              for policy, layer in steps},
        "fused_speedup": {policy: timed.ratio((policy, "keras"), (policy, "fused"))
                          for policy in POLICIES},
        "bfloat16_speedup": {layer: timed.ratio(("float32", layer), ("mixed_bfloat16", layer))
                             for layer in LAYERS},
        "cpu_share": timed.cpu_share(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    result = run(rounds=parser.parse_args().rounds)
    for case, rate in result["images_per_second"].items():
        print(f"{case}: {rate:.0f} images/s")
    for policy, ratio in result["fused_speedup"].items():
        print(f"{policy}: fused / Keras's ops = {ratio:.2f}x")
    for layer, ratio in result["bfloat16_speedup"].items():
        print(f"{layer}: mixed_bfloat16 / float32 = {ratio:.2f}x")
    print(f"width {result['width']}, batch {result['batch_size']}, median of {result['rounds']} "
          f"rounds; CPU share {result['cpu_share']:.2f}")
