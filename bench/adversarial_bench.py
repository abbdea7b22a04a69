"""What adversarial training costs per step: the AT step over the same clean step.

Two workloads, width 1/4, 128 images (pairs for the contrastive one), the policy `auto`
picks on this machine: N-FGSM + CE (the baseline stage's model with its adversary) and
N-FGSM + SupCon + margin + CE (the pretrain stage's; its adversarial images join the
contrast set, so its forward pass holds twice the images). N-FGSM adds one forward and one
input-gradient pass of the network in inference mode before the step; a bare Keras loop of
this network measured 1.5x for N-FGSM + CE (../shared/research/adversarial-training.md).
The AT and clean steps run in alternation, step by step (`timing.alternate`), and the
median of the per-round ratios is reported, as `bench/train_step_bench.py` does.

Run alone: `.venv/bin/python bench/adversarial_bench.py`.
"""

import os
import sys

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import timing
from bench import train_step_bench
from bench import training_bench
from training import builders
from training import specs
from training.run_context import run_context


def model(stage, width, adversarial):
    config = training_bench.bench_config(width)
    if adversarial:
        config.adversarial.method = "n_fgsm"
    spec = specs.SPECS[stage]
    return builders.compile_model(builders.build_model(config, spec, training_bench.DATA_INFO),
                                  config, spec, steps_per_epoch=1)


def run(width=0.25, batch_size=128, rounds=6):
    results = {"width": width, "images": batch_size, "workloads": {}}
    for workload, stage, views in (("n_fgsm_ce", "baseline", 1),
                                   ("n_fgsm_supcon_margin", "pretrain", 2)):
        with run_context(0, "auto", clear_session=False, width=width) as policy:
            batch = training_bench.synthetic_batch(batch_size, views=views)
            timed = timing.alternate(
                {name: train_step_bench.compiled_step(model(stage, width, adversarial), batch)
                 for name, adversarial in (("adversarial", True), ("clean", False))}, rounds)
        results["policy"] = policy
        results["workloads"][workload] = {
            "stage": stage, "views": views, "ratios": timed.ratios("adversarial", "clean"),
            "ratio": timed.ratio("adversarial", "clean"),
            "adversarial_seconds_per_step": timed.seconds("adversarial"),
            "clean_seconds_per_step": timed.seconds("clean"),
            "adversarial_images_per_second": batch_size * views / timed.seconds("adversarial")}
    return results


if __name__ == "__main__":
    measured = run()
    for name, workload in measured["workloads"].items():
        print(f"{name}: AT step / clean step {workload['ratio']:.2f} "
              f"({workload['adversarial_seconds_per_step']:.3f} s against "
              f"{workload['clean_seconds_per_step']:.3f} s; {measured['policy']}, width "
              f"{measured['width']}, {measured['images']} images)")
