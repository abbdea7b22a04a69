"""One run of a stage per workdir: a second process is refused, naming the first; a killed
holder blocks nothing; the workers of a distributed run, which share the chief's workdir,
are not refused.

Every process is real and bounded in time; the distributed roles only read TF_CONFIG here
(stage `data` makes no strategy), so nothing listens on any port.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from common import stage_lock
from common.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECONDS = 180  # For one run.py process to start (TensorFlow's import) and reach its stage.
HOLD = ("import sys\n"
        "from common import stage_lock\n"
        "with stage_lock.hold(sys.argv[1], sys.argv[2]):\n"
        "    print('held', flush=True)\n"
        "    sys.stdin.read()\n")


def run_py(workdir, *flags):
    return [sys.executable, "run.py", "--config", "configs/demo.py:smoke", "--workdir", workdir, *flags]


def holder_of(lock_file):
    """The pid written in a lock file, or None while there is none."""
    try:
        with open(lock_file) as f:
            return json.load(f)["pid"]
    except (OSError, ValueError, KeyError):
        return None


def stop(process):
    if process.poll() is None:
        process.kill()
    process.wait(timeout=60)


def test_a_second_run_of_a_stage_is_refused_naming_the_first_and_a_killed_run_blocks_nothing(tmp_path):
    workdir = str(tmp_path)
    lock_file = os.path.join(workdir, "baseline", stage_lock.LOCK_NAME)
    # Long enough to be still training when the second command arrives; killed after.
    first = subprocess.Popen(run_py(workdir, "--stage", "baseline", "--config.train.epochs=500",
                                    "--config.data.validation_fraction=0"),
                             cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + SECONDS
        while holder_of(lock_file) != first.pid and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert holder_of(lock_file) == first.pid, "the first run never took the stage"

        second = subprocess.run(run_py(workdir, "--stage", "baseline", "--config.train.epochs=500",
                                       "--config.data.validation_fraction=0"),
                                cwd=REPO, capture_output=True, text=True, timeout=SECONDS)
        assert first.poll() is None, "the first run ended before the second was refused"
    finally:
        stop(first)

    assert second.returncode == 2, second.stderr[-3000:]
    lines = second.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), second.stderr[-3000:]
    assert f"{os.path.join(workdir, 'baseline')} is in use by process {first.pid}" in lines[0]
    assert "run.py --config configs/demo.py:smoke" in lines[0]  # the holder's command
    history = os.path.join(workdir, "baseline", "history.csv")
    if os.path.exists(history):  # the first run's log alone: at most one header
        with open(history) as f:
            lines = f.read().splitlines()
        assert sum(line.startswith("epoch") for line in lines) <= 1, lines

    # The kill released the lock (the kernel drops it with the process): a rerun resumes.
    with stage_lock.hold(os.path.join(workdir, "baseline"), "baseline"):
        pass


def test_a_killed_holder_leaves_a_lock_that_blocks_nothing(tmp_path):
    folder = str(tmp_path / "attack")
    holder = subprocess.Popen([sys.executable, "-c", HOLD, folder, "attack"], cwd=REPO,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(UserError, match=f"is in use by process {holder.pid} "):
            with stage_lock.hold(folder, "attack"):
                pass
    finally:
        stop(holder)
    with stage_lock.hold(folder, "attack"):
        assert holder_of(os.path.join(folder, stage_lock.LOCK_NAME)) == os.getpid()


def test_workers_of_a_distributed_run_share_the_chiefs_workdir(tmp_path):
    # The chief holds stage data; worker 1 of the same cluster runs beside it, while a
    # second chief (the same command launched twice) is refused.
    workdir = str(tmp_path)
    holder = subprocess.Popen([sys.executable, "-c", HOLD, os.path.join(workdir, "data"), "data"],
                              cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        cluster = {"worker": ["127.0.0.1:1", "127.0.0.1:2"]}
        runs = {}
        for index in (1, 0):
            env = dict(os.environ, TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}))
            runs[index] = subprocess.run(run_py(workdir, "--stage", "data", "--strategy", "multi_worker"),
                                         cwd=REPO, env=env, capture_output=True, text=True,
                                         timeout=SECONDS)
    finally:
        stop(holder)
    assert runs[1].returncode == 0, runs[1].stderr[-3000:]
    assert os.path.exists(os.path.join(workdir, "data", "summary.txt"))
    assert runs[0].returncode == 2, runs[0].stderr[-3000:]
    assert f"is in use by process {holder.pid}" in runs[0].stderr


def test_who_takes_the_lock(monkeypatch):
    from configs import demo
    from stages import pipeline_stages

    config = demo.get_config("smoke")
    for name in ("TF_CONFIG", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        monkeypatch.delenv(name, raising=False)
    assert pipeline_stages.takes_lock("baseline", config)
    assert pipeline_stages.takes_lock("tune", config)
    config.train.strategy = "multi_worker"
    for index, takes in ((0, True), (1, False)):
        monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"worker": ["a:1", "b:1"]},
                                                    "task": {"type": "worker", "index": index}}))
        assert pipeline_stages.takes_lock("pretrain", config) is takes
    monkeypatch.setenv("KERASTUNER_ORACLE_IP", "127.0.0.1")
    monkeypatch.setenv("KERASTUNER_ORACLE_PORT", "8000")
    for tuner_id, takes in (("chief", True), ("worker0", False)):
        monkeypatch.setenv("KERASTUNER_TUNER_ID", tuner_id)
        assert pipeline_stages.takes_lock("tune", config) is takes


def test_a_workdir_that_is_a_file_or_cannot_be_written_is_one_user_error(tmp_path):
    path = tmp_path / "results.txt"
    path.write_text("mine\n")
    with pytest.raises(UserError, match="is a file, not a folder"):
        stage_lock.check_workdir(str(path))
    with pytest.raises(UserError, match="cannot write there"):
        stage_lock.check_workdir(str(path / "below_a_file"))
    nested = tmp_path / "new" / "runs"
    stage_lock.check_workdir(str(nested))
    assert nested.is_dir() and not list(nested.iterdir())  # nothing left inside
    assert path.read_text() == "mine\n"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
