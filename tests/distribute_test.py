"""Training under tf.distribute: two logical CPU replicas, and two worker processes on 127.0.0.1.

TensorFlow fixes its devices and collectives when it starts, so every distributed run is
a fresh process (tests/distribute_checks.py, or `run.py --strategy=multi_worker` with
TF_CONFIG), and every one is bounded from outside: a collective waits for its peers
forever by default. Workers listen on free ports of 127.0.0.1 only.
"""

import functools
import json
import os
import re
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from configs import demo
from models import precision
from models import resnet
from models.fused_batchnorm import FusedBatchNormalization
from stages import train

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKS = os.path.join(REPO, "tests", "distribute_checks.py")
# Two workers of the smoke config need about 25 CPU-seconds each (10 s of TensorFlow's
# start); the bounds leave room for a busy machine.
RUN_SECONDS = 420
# How soon the other worker must stop when one is killed. Measured on the 2-core machine:
# about 1.5 s when the chief is killed (its connections are reset), about 10.5 s when
# another worker is (TensorFlow's coordination service misses its heartbeats for 10 s).
LOST_WORKER_SECONDS = 60


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_workers(arguments, logs):
    """One `run.py` process per log file, each with its TF_CONFIG; returns the processes."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(len(logs))]}
    processes = []
    for index, log in enumerate(logs):
        env = dict(os.environ, TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}),
            # The kernels of this process, which trains the one-process reference: oneDNN's
            # and TensorFlow's own round differently (run.py alone would turn oneDNN on).
            TF_ENABLE_ONEDNN_OPTS="1" if precision.onednn_enabled() else "0")
        with open(log, "w") as output:
            processes.append(subprocess.Popen([sys.executable, "run.py", *arguments], cwd=REPO,
                                              env=env, stdout=output, stderr=subprocess.STDOUT))
    return processes


def wait_all(processes, seconds):
    """Exit statuses of `processes`, killing any still running after `seconds`."""
    deadline = time.monotonic() + seconds
    try:
        return [process.wait(timeout=max(deadline - time.monotonic(), 1)) for process in processes]
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=60)


def read(path):
    with open(path) as f:
        return f.read()


def test_two_replicas_give_the_gradients_and_weights_of_one_device(tmp_path):
    result_path = str(tmp_path / "measured.json")
    result = subprocess.run([sys.executable, CHECKS, result_path], cwd=REPO, capture_output=True,
                            text=True, timeout=RUN_SECONDS)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    measured = json.loads(read(result_path))
    for name, term in measured["terms"].items():
        if name.endswith("/global"):
            # The global batch's loss and gradient, to float32 rounding.
            assert term["loss_difference"] <= 1e-5 * max(1.0, abs(term["loss_one_device"])), (name, term)
            assert term["gradient_difference"] <= 1e-5, (name, term)
        else:
            # Each replica contrasting its own half is another loss.
            assert term["loss_difference"] > 1e-3, (name, term)
    training = measured["training"]
    # Three steps of the pretrain model through the fit seam: the same weights within
    # float32 rounding (measured 8e-6; the weights moved by 0.84), and BatchNorm
    # statistics equal on both replicas.
    assert training["weights_difference"] <= 1e-4 * training["weights_moved"], training
    assert training["moving_statistics_spread_synchronised"] == 0.0, training
    # A checkpoint of two replicas resumes on one device.
    assert training["restored_difference"] == 0.0, training
    # Adversarial training: each replica crafts its share of the global batch's images,
    # exactly those one device crafts. Training then agrees less closely than clean training:
    # a pixel whose input gradient is near zero takes the sign of its rounding, so the
    # float32 differences of one step move some pixels of the next step's images by 2 eps
    # (measured: 1.1% of how far the weights moved, after three steps).
    adversarial = measured["adversarial_training"]
    assert adversarial["crafted_difference"] == 0.0, adversarial
    assert adversarial["weights_difference"] <= 0.05 * adversarial["weights_moved"], adversarial


def test_two_workers_stay_in_step_and_match_one_process(tmp_path, monkeypatch):
    arguments = ["--stage", "pretrain", "--config", "configs/demo.py:smoke",
                 "--strategy", "multi_worker", "--workdir", str(tmp_path / "workers")]
    logs = [str(tmp_path / f"worker{index}.log") for index in range(2)]
    statuses = wait_all(start_workers(arguments, logs), RUN_SECONDS)
    outputs = [read(log) for log in logs]
    assert statuses == [0, 0], [output[-3000:] for output in outputs]
    digests = [re.findall(r"ends with weights sha256 (\w+)", output) for output in outputs]
    assert digests[0] and digests[0] == digests[1], digests

    # One process, the same global batches (each worker augments only its rows of them),
    # and BatchNorm with the arithmetic of several replicas: the fused kernel's rounding,
    # amplified where a ReLU input is near zero, would differ by more than rounding
    # (tests/distribute_checks.py, `keras_arithmetic`).
    monkeypatch.setattr(resnet, "FusedBatchNormalization",
                        functools.partial(FusedBatchNormalization, fused=False))
    train.train(demo.get_config("smoke"), str(tmp_path / "single"), "pretrain", verbose=0)
    runs = ("workers", "single")
    histories = [read(tmp_path / name / "pretrain" / "history.csv").splitlines() for name in runs]
    logged = [dict(zip(lines[0].split(","), map(float, lines[1].split(",")))) for lines in histories]
    for term in ("loss", "ce_loss", "supcon_loss", "margin_loss", "accuracy"):
        # The global batch's values (measured: within 2e-7 of each other).
        assert logged[0][term] == pytest.approx(logged[1][term], rel=1e-5), (term, logged)
    models = [keras.models.load_model(str(tmp_path / name / "pretrain" / "model.keras"))
              for name in runs]
    difference = max(float(np.max(np.abs(a - b)))
                     for a, b in zip(models[0].get_weights(), models[1].get_weights()))
    # Measured 1.05e-4, and the same on two logical CPU replicas: float32 rounding, which
    # these two steps at learning rate 0.1 amplify (moving the initial weights by 1e-7 of
    # themselves moves the result by 8e-3).
    assert difference <= 1e-3, difference


def test_a_killed_worker_stops_the_other_and_both_resume(tmp_path):
    epochs, killed = 12, 0  # The chief: it writes the checkpoints the rerun resumes from.
    arguments = ["--stage", "baseline", "--config", "configs/demo.py:smoke",
                 "--strategy", "multi_worker", "--workdir", str(tmp_path / "workers"),
                 f"--config.train.epochs={epochs}", "--config.data.validation_fraction=0.0"]
    out = tmp_path / "workers" / "baseline"
    metadata = out / "backup" / "training_metadata.json"
    logs = [str(tmp_path / f"worker{index}.log") for index in range(2)]
    processes = start_workers(arguments, logs)
    survivor = processes[1 - killed]
    try:
        deadline = time.monotonic() + RUN_SECONDS
        while time.monotonic() < deadline and survivor.poll() is None:
            try:
                if json.loads(read(metadata))["epoch"] >= 1:
                    break
            except (OSError, ValueError, KeyError):
                pass  # Not written yet, or caught mid-write.
            time.sleep(0.05)
        processes[killed].kill()
        killed_at = time.monotonic()
        status = survivor.wait(timeout=LOST_WORKER_SECONDS)
        seconds = time.monotonic() - killed_at
    finally:
        wait_all(processes, 1)
    output = read(logs[1 - killed])
    assert not (out / "model.keras").exists(), "finished before the kill"
    assert status == 4, output[-3000:]
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "another worker stopped answering" in errors[0], output[-3000:]
    assert "rerun every worker" in errors[0]
    print(f"the surviving worker stopped {seconds:.1f} s after the kill: {errors[0]}")

    logs = [str(tmp_path / f"rerun{index}.log") for index in range(2)]
    statuses = wait_all(start_workers(arguments, logs), RUN_SECONDS)
    assert statuses == [0, 0], [read(log)[-3000:] for log in logs]
    with open(out / "history.csv") as f:
        history = [int(line.split(",")[0]) for line in f.read().splitlines()[1:]]
    # The first run logged epochs 0..k-1; the rerun goes on from the chief's checkpoint.
    assert history[0] == 0 and history.count(0) == 1 and history[-1] == epochs - 1, history
    assert (out / "model.keras").exists()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
