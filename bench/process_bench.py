"""Start-up time and peak memory of real training runs, each in a fresh process.

Both run `run.py --stage baseline` through `bench/first_steps.py`, which is `run.py` as
the command line runs it, ended at the end of its Nth training step (in a temporary
workdir, deleted afterwards):

- start-up: `python run.py --stage baseline --config configs/demo.py` (the default
  config: the embedded sample, width 1/4, batch 128). The figure is the wall seconds
  from the kernel's start of the process to the end of the first training step
  (interpreter start, imports, flag and config checks, reading and decoding the data,
  building the model, tracing the step, and the step itself); goal `goals.STARTUP`. It is run
  twice: the first run may also fill the decoded-data cache (`pipeline/decoded_cache.py`)
  and the OS file cache; the second is what a user sees on every later run, and is the
  figure. Both are recorded.
- memory: the same at full width (`--config.model.width=1.0`, batch 128, `--precision`
  as configured: auto), ended after `memory_steps` steps; the figure is the process's
  peak resident memory (VmHWM, `first_steps.peak_resident_bytes`), goal `goals.PEAK_MEMORY`. On the full CIFAR-10 JPEG copy
  when `../shared/data/cifar10-jpeg.tar` is there (its 50,000 training images are held
  in memory as training does), else on the sample.

Each child's CPU share (its CPU seconds / (wall seconds x cores)) is recorded.

Run alone: `.venv/bin/python bench/process_bench.py`.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import goals
from bench import input_pipeline_bench
from bench import timing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIRST_STEPS = os.path.join(REPO, "bench", "first_steps.py")


def first_steps(steps, flags, timeout=3600):
    """Runs `run.py --stage baseline FLAGS` in a fresh process until the end of step `steps`.

    Returns bench/first_steps.py's record plus the command, the child's wall seconds as
    seen from here and its CPU share.
    """
    workdir = tempfile.mkdtemp(prefix="bench-first-steps-")
    out = os.path.join(workdir, "first_steps.json")
    command = [sys.executable, FIRST_STEPS, str(steps), out, "--stage", "baseline",
               "--workdir", os.path.join(workdir, "run")] + list(flags)
    try:
        with timing.Stopwatch(own=False, children=True) as child:
            completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                       timeout=timeout)
        if not os.path.exists(out):
            tail = (completed.stderr or completed.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{' '.join(command[2:])} ended (status {completed.returncode}) "
                               f"before step {steps}: {' / '.join(tail)}")
        with open(out) as f:
            record = json.load(f)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    record.update({"command": "python run.py " + " ".join(command[4:6] + command[8:]),
                   "wall_seconds_seen_by_parent": child.wall,
                   "cpu_seconds": child.cpu,
                   "cpu_share": child.share})
    return record


def data_flags():
    """The full CIFAR-10 JPEG copy if it is there, else the embedded sample (the default)."""
    if os.path.exists(input_pipeline_bench.CIFAR10_JPEG):
        return ["--dataset", "folder", "--data_dir", os.path.normpath(input_pipeline_bench.CIFAR10_JPEG)]
    return []


def run(startup_runs=2, memory_steps=3):
    """{"startup": ..., "memory": ...}: the start-up records (the last is the figure) and the
    full-width record with its peak memory."""
    startup = [first_steps(1, ["--config", "configs/demo.py"]) for _ in range(startup_runs)]
    memory = first_steps(memory_steps, ["--config", "configs/demo.py", "--config.model.width=1.0",
                                        "--config.train.batch_size=128"] + data_flags())
    return {
        "startup": {"runs": startup,
                    "seconds": startup[-1]["seconds_since_process_start"],
                    "first_run_seconds": startup[0]["seconds_since_process_start"],
                    "command": startup[-1]["command"],
                    "phases": startup[-1]["phases"],
                    "cpu_seconds": startup[-1]["cpu_seconds"],
                    "cpu_share": startup[-1]["cpu_share"],
                    "goal_seconds": goals.STARTUP.bound},
        "memory": {**memory, "width": 1.0, "batch_size": 128,
                   "data": "cifar10_jpeg" if data_flags() else "sample",
                   "goal_bytes": goals.PEAK_MEMORY.bound * 1e9},
    }


if __name__ == "__main__":
    result = run()
    startup, memory = result["startup"], result["memory"]
    print(f"start-up to the end of the first step: {startup['seconds']:.1f} s (first run "
          f"{startup['first_run_seconds']:.1f} s; goal {goals.STARTUP}; CPU share "
          f"{startup['cpu_share']:.2f}): {startup['command']}")
    print(f"peak resident memory, width 1, batch 128, after {memory['steps']} steps: "
          f"{memory['max_rss_bytes'] / 1e9:.2f} GB (goal {goals.PEAK_MEMORY}; "
          f"{memory['seconds_since_process_start']:.0f} s; CPU share {memory['cpu_share']:.2f}): "
          f"{memory['command']}")
