"""A training stage killed mid-run resumes from its last finished epoch when run again."""

import csv
import json
import os
import subprocess
import sys
import time

import pytest

from training import fit

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 30


def baseline_command(workdir):
    return [sys.executable, "run.py", "--stage", "baseline", "--config", "configs/demo.py:smoke",
            "--workdir", workdir, f"--config.train.epochs={EPOCHS}"]


def test_killed_training_resumes_from_its_last_epoch(tmp_path):
    workdir = str(tmp_path)
    metadata = os.path.join(workdir, "baseline", "backup", "training_metadata.json")
    process = subprocess.Popen(baseline_command(workdir), cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with open(metadata) as f:
                    if json.load(f)["epoch"] >= 2:
                        break
            except (OSError, ValueError, KeyError):
                pass  # Not written yet, or caught mid-write.
            time.sleep(0.1)
    finally:
        process.kill()
        process.wait(timeout=60)
    assert not os.path.exists(os.path.join(workdir, "baseline", "model.keras")), "finished before the kill"

    result = subprocess.run(baseline_command(workdir), cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    with open(os.path.join(workdir, "baseline", "history.csv")) as f:
        epochs = [int(row["epoch"]) for row in csv.DictReader(f)]
    # The first run logged epochs 0..k-1 (k >= 2); the second carries on from the backup
    # instead of starting again at 0, and ends at the last epoch.
    assert epochs[0] == 0 and epochs[-1] == EPOCHS - 1
    assert epochs.count(0) == 1
    assert len(epochs) <= EPOCHS + 1  # At most the one epoch cut short is run again.
    # Every epoch's wall time, from both runs, is read back from history.csv.
    seconds = fit.epoch_seconds(os.path.join(workdir, "baseline"))
    assert sorted(seconds) == list(range(1, EPOCHS + 1)) and min(seconds.values()) > 0
    assert os.path.exists(os.path.join(workdir, "baseline", "model.keras"))


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
