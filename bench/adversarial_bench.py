"""What adversarial training costs per step: the AT step over the same clean step.

Two workloads, width 1/4, 128 images (pairs for the contrastive one), the policy `auto`
picks on this machine: N-FGSM + CE (the baseline stage's model with its adversary) and
N-FGSM + SupCon + margin + CE (the pretrain stage's; its adversarial images join the
contrast set, so its forward pass holds twice the images). N-FGSM adds one forward and one
input-gradient pass of the network in inference mode before the step; a bare Keras loop of
this network measured 1.5x for N-FGSM + CE (../shared/research/adversarial-training.md).
The AT and clean steps run in alternation, step by step, and the median of the per-round
ratios is reported, as `bench/train_step_bench.py` does.

Run alone: `.venv/bin/python bench/adversarial_bench.py`.
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
from models import precision
from training import builders
from training import specs


def model(stage, width, adversarial):
    config = training_bench.bench_config(width)
    if adversarial:
        config.adversarial.method = "n_fgsm"
    spec = specs.SPECS[stage]
    return builders.compile_model(builders.build_model(config, spec, training_bench.DATA_INFO),
                                  config, spec, steps_per_epoch=1)


def _step(trained, iterator):
    return float(trained.train_function(iterator)["loss"])


def run(width=0.25, batch_size=128, rounds=6):
    previous = keras.config.dtype_policy()
    policy = precision.set_policy("auto", width)
    try:
        results = {"policy": policy, "width": width, "images": batch_size, "workloads": {}}
        for workload, stage, views in (("n_fgsm_ce", "baseline", 1),
                                       ("n_fgsm_supcon_margin", "pretrain", 2)):
            keras.utils.set_random_seed(0)
            images, labels = training_bench.synthetic_batch(batch_size, views=views)
            steps = {}
            for name, adversarial in (("adversarial", True), ("clean", False)):
                trained = model(stage, width, adversarial)
                dataset = tf.data.Dataset.from_tensors((images, labels)).repeat()
                trained.fit(dataset, epochs=1, steps_per_epoch=2, verbose=0, shuffle=False)
                steps[name] = functools.partial(_step, trained, iter(dataset))
                steps[name]()
            wall = {name: [] for name in steps}
            for round_index in range(rounds):
                order = ("adversarial", "clean") if round_index % 2 == 0 else ("clean", "adversarial")
                for name in order:
                    wall[name].append(timing.time_call(steps[name])[0])
            ratios = [a / c for a, c in zip(wall["adversarial"], wall["clean"])]
            results["workloads"][workload] = {
                "stage": stage, "views": views, "ratios": ratios, "ratio": timing.median(ratios),
                "adversarial_seconds_per_step": timing.median(wall["adversarial"]),
                "clean_seconds_per_step": timing.median(wall["clean"]),
                "adversarial_images_per_second": batch_size * views / timing.median(wall["adversarial"])}
        return results
    finally:
        keras.config.set_dtype_policy(previous)


if __name__ == "__main__":
    measured = run()
    for name, workload in measured["workloads"].items():
        print(f"{name}: AT step / clean step {workload['ratio']:.2f} "
              f"({workload['adversarial_seconds_per_step']:.3f} s against "
              f"{workload['clean_seconds_per_step']:.3f} s; {measured['policy']}, width "
              f"{measured['width']}, {measured['images']} images)")
