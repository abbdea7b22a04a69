"""Wall time of `make demo` after set-up: measured (`--demo`, about 10 minutes) or carried.

Measured: the command `make demo` runs once `.venv` is installed,
`python run.py --stage all --config configs/demo.py --workdir DIR`, in a fresh temporary
workdir (deleted afterwards), timed from start to exit. (It is not run through `make`
itself, which would reinstall `.venv` first whenever setup.py is newer than it.)

Carried: too long to run on every `make bench`, so without `--demo` the figure is the
newest measured one among the committed results (`bench/results/*.json`), with its date
and machine; before any of them had one, the first slice's 9 min 14 s on the 2-core
build machine (README, commit dc5703f).

Run alone: `.venv/bin/python bench/demo_bench.py` (measures).
"""

import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

if __package__ in (None, ""):
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench import goals
from bench import timing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS_DIR = os.path.join(REPO, "bench", "results")
FIRST_SLICE = {"seconds": 554.0, "date": "2026-11-24", "machine": "amd-epyc-2c",
               "source": "the first slice's measurement (README, commit dc5703f)"}


def measure(timeout=7200):
    """Runs the demo in a fresh workdir; its wall seconds, CPU share and the command."""
    workdir = tempfile.mkdtemp(prefix="bench-demo-")
    command = [sys.executable, "run.py", "--stage", "all", "--config", "configs/demo.py",
               "--workdir", os.path.join(workdir, "demo")]
    try:
        with timing.Stopwatch(own=False, children=True) as demo:
            completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                                       timeout=timeout)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if completed.returncode != 0:
        tail = completed.stderr.strip().splitlines()[-3:]
        raise RuntimeError(f"the demo failed (status {completed.returncode}): {' / '.join(tail)}")
    return {"measured": True, "seconds": demo.wall, "cpu_share": demo.share,
            "command": "python run.py --stage all --config configs/demo.py --workdir DIR",
            "goal_seconds": goals.DEMO.bound * 60}


def carried(results_dir=RESULTS_DIR):
    """The newest measured demo figure among the results in `results_dir`, else the first slice's."""
    newest = None
    for path in glob.glob(os.path.join(results_dir, "*.json")):
        try:
            with open(path) as f:
                result = json.load(f)
        except (OSError, ValueError):
            continue
        demo = result.get("demo") or {}
        if demo.get("measured") and (newest is None or result["date"] > newest["date"]):
            newest = {"seconds": demo["seconds"], "date": result["date"],
                      "machine": result.get("machine", {}).get("slug", "?"),
                      "cpu_share": demo.get("cpu_share"),
                      "source": os.path.relpath(path, REPO)}
    return {"measured": False, **(newest or FIRST_SLICE), "goal_seconds": goals.DEMO.bound * 60}


def run(measure_now=False):
    return measure() if measure_now else carried()


if __name__ == "__main__":
    result = measure()
    print(f"make demo (after set-up): {result['seconds'] / 60:.1f} min (goal {goals.DEMO}; CPU share "
          f"{result['cpu_share']:.2f})")
