"""The project's training step against its PyTorch peer (bench/torch_peer.py), in one process.

For each workload (plain: cross-entropy, one view of B images; contrastive: CE + SupCon +
margin on two views, 2B images), each precision this CPU runs fast (float32; bfloat16
only with AVX512_BF16 or AMX) and each width (1/4 and 1), with B = 128:

1. the peer's settings (channels_last on/off x torch.compile on/off) are timed in
   alternation and the fastest is kept (`torch_peer.best_setting`);
2. the project's step (the Keras model `fit` trains, called through its compiled
   `train_function`: `train_step_bench.compiled_step`) and the peer's best step run in
   alternation (`timing.alternate`), one step each per round (the project first in even
   rounds, the peer first in odd ones), on one fixed synthetic batch each;
3. the ratio project images/s / torch images/s is the median of the per-round ratios,
   which cancels slow drifts of a shared machine; the ratio of CPU seconds per step is
   given beside it, and the CPU share (CPU seconds / (wall seconds x cores)) of the
   whole comparison. A ratio above 1 means the project's step is the faster; the goal
   is `goals.PEER_SPEED`.

Both sides use every core (TensorFlow's default pools; torch.set_num_threads(cores)).
Importing torch beside TensorFlow slows neither (measured; see bench/README.md). On a
machine that other programs keep busy, torch's OpenMP threads spin-wait by default and
lose much of their time to it: `OMP_WAIT_POLICY=PASSIVE` in the environment avoids that
(TensorFlow does not use OpenMP); the result records the setting.

Needs torch: `make bench-peer` installs it in bench/.peer-venv (with the project) and runs
this file; without torch, `run()` returns {"skipped": reason}.
Run alone: `bench/.peer-venv/bin/python bench/peer_bench.py [--widths 0.25] [--rounds N]`.
"""

import argparse
import os
import sys
import time

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from common import startup  # noqa: E402 (imports nothing heavy)

startup.enable_onednn()  # What run.py does: oneDNN on unless the environment says otherwise.

import keras
import tensorflow as tf

from common import cpu
from bench import figures
from bench import machine
from bench import timing
from bench import train_step_bench
from bench import training_bench
from training.run_context import run_context

try:
    from bench import torch_peer
except ImportError as error:  # torch is an optional extra (`bench-peer`).
    torch_peer = None
    TORCH_MISSING = f"torch is not installed ({error}); `make bench-peer` installs it"

WORKLOADS = ("plain", "contrastive")
WIDTHS = (0.25, 1.0)
BATCH_SIZE = 128
# Per width (full width is about 12x slower): rounds of the alternation, and the peer's
# setting selection's untimed steps per setting (the first compiles) and timed rounds.
ROUNDS = {0.25: 6, 1.0: 3}
SELECT_WARMUP = {0.25: 2, 1.0: 1}
SELECT_ROUNDS = {0.25: 2, 1.0: 1}
KERAS_POLICY = {"float32": "float32", "bfloat16": "mixed_bfloat16"}


def project_step(workload, width, batch_size, precision):
    """The project's training step, built by the project's code: (step, images per step).

    `step()` runs one step of the compiled `train_function` that `fit` runs, on a fixed
    batch of `batch_size` images (plain) or pairs (contrastive), and returns the loss.
    """
    views = 2 if workload == "contrastive" else 1
    with run_context(0, KERAS_POLICY[precision], clear_session=False):
        batch = training_bench.synthetic_batch(batch_size, views=views)
        model = (train_step_bench.custom_model if views == 2 else train_step_bench.plain_model)(width)
    return train_step_bench.compiled_step(model, batch), views * batch_size


def compare(workload, width, batch_size=BATCH_SIZE, precision="float32", rounds=None,
            select_rounds=None):
    """The project's step against the peer's best setting for one case; a dict of figures."""
    rounds = rounds or ROUNDS.get(width, 3)
    select_rounds = select_rounds or SELECT_ROUNDS.get(width, 1)
    start = time.perf_counter()
    best = torch_peer.best_setting(workload, width, batch_size, precision, rounds=select_rounds,
                                   warmup=SELECT_WARMUP.get(width, 1))
    select_seconds = time.perf_counter() - start
    project, images = project_step(workload, width, batch_size, precision)
    if best["step"].images_per_step != images:
        raise AssertionError(f"images per step differ: {images} and {best['step'].images_per_step}")
    timed = timing.alternate({"project": project, "torch": best.pop("step")}, rounds)
    return {
        "workload": workload,
        "width": width,
        "precision": precision,
        "batch_size": batch_size,
        "images_per_step": images,
        "rounds": rounds,
        "project_images_per_second": images / timed.seconds("project"),
        "torch_images_per_second": images / timed.seconds("torch"),
        # Same images per step on both sides: project images/s / torch images/s = torch s / project s.
        "ratio": timed.ratio("torch", "project"),
        "ratios": timed.ratios("torch", "project"),
        "cpu_ratio": timed.cpu_ratio("torch", "project"),
        "project_images_per_cpu_second": images / timed.cpu_seconds("project"),
        "torch_images_per_cpu_second": images / timed.cpu_seconds("torch"),
        "torch_setting": best["setting"],
        "torch_settings_images_per_second": best["per_setting"],
        "torch_settings_warmup_seconds": best["warmup_seconds"],
        "torch_compile": best["compile"],
        "project_seconds_per_step": timed.wall["project"],
        "torch_seconds_per_step": timed.wall["torch"],
        "last_loss": timed.last,
        "cpu_share": timed.cpu_share(),
        "project_cpu_share": timed.cpu_share("project"),
        "torch_cpu_share": timed.cpu_share("torch"),
        "select_seconds": select_seconds,
    }


def run(widths=WIDTHS, workloads=WORKLOADS, batch_size=BATCH_SIZE, rounds=None, select_rounds=None):
    """Every case: {"cases": [...], "torch": version, threads, precisions, ...}, or {"skipped": why}."""
    if torch_peer is None:
        return {"skipped": TORCH_MISSING}
    import torch

    precisions = torch_peer.supported_precisions()
    compile_ok, compile_why = torch_peer.compile_available()
    result = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cores": cpu.CORES,
        "cpu_model": cpu.model_name(),
        "precisions": list(precisions),
        "bfloat16": "yes" if "bfloat16" in precisions else
                    "n/a (no AVX512_BF16 or AMX on this CPU: bfloat16 would be emulated)",
        "torch_compile": "works" if compile_ok else compile_why,
        # libgomp's threads spin while they wait (the default): on a busy machine that burns
        # the time slices their partners need, and OMP_WAIT_POLICY=PASSIVE is much faster.
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset"),
        "load_average_before": machine.load_average(),
        "cases": [],
    }
    start = time.perf_counter()
    for width in widths:
        for workload in workloads:
            for precision in precisions:
                print(f"peer bench: {workload}, width {width}, {precision} ...", file=sys.stderr, flush=True)
                result["cases"].append(compare(workload, width, batch_size, precision, rounds,
                                               select_rounds))
    result["seconds"] = time.perf_counter() - start
    result["load_average_after"] = machine.load_average()
    return result


def table(result):
    """A text table of `run()`'s result."""
    if "skipped" in result:
        return f"peer bench skipped: {result['skipped']}"
    header = ("workload", "width", "precision", "images/step", "project img/s", "torch img/s",
              "project/torch", "in CPU s", "torch setting", "CPU share")
    rows = [(case["workload"], f"{case['width']:g}", case["precision"], str(case["images_per_step"]),
             f"{case['project_images_per_second']:.1f}", f"{case['torch_images_per_second']:.1f}",
             f"{case['ratio']:.2f}", f"{case['cpu_ratio']:.2f}", case["torch_setting"],
             f"{case['cpu_share']:.2f}") for case in result["cases"]]
    if "bfloat16" not in result["precisions"]:
        rows.append(("(both)", "(all)", "bfloat16", "", "n/a", "n/a", "n/a", "", "no bfloat16 hardware", ""))
    return figures.text_table(rows, tuple(enumerate(header)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=float, nargs="+", default=list(WIDTHS))
    parser.add_argument("--workloads", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    parser.add_argument("--batch_size", type=int, default=BATCH_SIZE)
    parser.add_argument("--rounds", type=int, default=None,
                        help=f"alternation rounds (default per width: {ROUNDS})")
    parser.add_argument("--json", help="also write the result to this JSON file")
    args = parser.parse_args(argv)
    result = run(args.widths, args.workloads, args.batch_size, args.rounds)
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if "skipped" not in result:
        print(f"torch {result['torch']} ({result['torch_threads']} threads, {result['torch_cpu_capability']}), "
              f"TensorFlow {result['tensorflow']}, Keras {result['keras']}; {result['cpu_model']}, "
              f"{result['cores']} cores; torch.compile: {result['torch_compile']}; "
              f"bfloat16: {result['bfloat16']}; OMP_WAIT_POLICY: {result['omp_wait_policy']}")
        print(f"load average before / after: {result['load_average_before']:.2f} / "
              f"{result['load_average_after']:.2f}; {result['seconds']:.0f} s\n")
    print(table(result))
    if "skipped" not in result:
        print("\nproject/torch: median over rounds of the paired steps' speed ratio (> 1: the "
              "project's step is faster); 'in CPU s': the same from CPU seconds per step.")


if __name__ == "__main__":
    main()
