"""Stage `tune` at smoke size: the search space, a search that is killed and resumes, its best
config feeding pretrain, a chief and two workers on 127.0.0.1, and a search whose every
trial fails.

The searches that are killed or distributed run `run.py --stage tune` in subprocesses, each
with a timeout and killed (with what it started) in a `finally`: a worker that dies can
leave the chief waiting (keras-tuner#915).
"""

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras_tuner
import pytest

from common.errors import UserError
from configs import demo
from configs import schema
from stages import train
from stages import tune as tune_stage
from training import fit as fit_lib
from training.run_context import global_state_snapshot
from tuning import hypermodel
from tuning import space

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tune_command(workdir, *overrides):
    return [sys.executable, "run.py", "--stage", "tune", "--config", "configs/demo.py:smoke",
            "--workdir", workdir, *overrides]


def read_json(path):
    with open(path) as f:
        return json.load(f)


def starts(workdir):
    """{trial id: how many times it started}, from the trials' own records."""
    trials = os.path.join(workdir, "tune", "trials")
    counts = {}
    for trial_id in sorted(os.listdir(trials)):
        with open(os.path.join(trials, trial_id, "starts.jsonl")) as f:
            counts[trial_id] = sum(1 for line in f if line.strip())
    return counts


def trial_status(workdir, trial_id):
    try:
        return read_json(os.path.join(workdir, "tune", "search", f"trial_{trial_id}",
                                      "trial.json"))["status"]
    except (OSError, ValueError, KeyError):
        return None  # Not written yet, or caught mid-write.


def stop(process):
    """Kills `process` and everything it started (its own process group)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=60)


def test_each_form_sets_the_margin_from_its_own_hyperparameter():
    config = demo.get_config("smoke")
    config.tune.update(pairwise_margin=(1.0, 2.0), additive_margin=(0.1, 0.2),
                       temperature=(0.07, 0.07))
    for form, margin in (("pairwise", 1.7), ("additive", 0.15)):
        hp = keras_tuner.HyperParameters()
        hp.values.update({"margin_form": form, space.MARGIN_NAMES[form]: margin})
        trial = space.apply(hp, config)
        assert (trial.loss.margin_form, trial.loss.margin) == (form, margin)
        assert trial.loss.temperature == 0.07  # low == high fixes it.
        other = space.MARGIN_NAMES["additive" if form == "pairwise" else "pairwise"]
        assert not hp.is_active(other)  # Only the chosen form's margin is in the trial.
        ranges = {p.name: (p.min_value, p.max_value) for p in hp.space if hasattr(p, "min_value")}
        assert ranges[space.MARGIN_NAMES[form]] == tuple(config.tune[space.MARGIN_NAMES[form]])
        schema.validate(trial)
    assert config.loss.margin == demo.get_config("smoke").loss.margin  # The config is copied.


@pytest.mark.parametrize("field, value, message", [
    ("pairwise_margin", (1.0, 2.5), "in \\[0, 2\\]"),
    ("additive_margin", (0.0, 1.5), "in \\[0, 1\\]"),
    ("temperature", (0.5, 0.1), "low <= high"),
    ("margin_forms", ("pairwise", "triplet"), "must be one of"),
])
def test_schema_checks_the_search_space(field, value, message):
    config = demo.get_config("smoke")
    config.tune[field] = value
    with pytest.raises(UserError, match=f"--config.tune.{field}=.*{message}"):
        schema.validate(config)


def test_score_puts_every_unqualified_trial_below_every_qualified_one():
    assert hypermodel.score(0.5, 0.0, floor=0.3) == (0.0, True)
    assert hypermodel.score(0.29, 0.28, floor=0.3)[0] < 0.0
    assert hypermodel.score(0.29, 0.28, floor=0.3)[1] is False
    assert hypermodel.score(0.2, 0.1, 0.3)[0] < hypermodel.score(0.29, 0.1, 0.3)[0]


@pytest.fixture(scope="module")
def resumed_search(tmp_path_factory):
    """A 3-trial search killed during its second trial, then run again to the end."""
    workdir = str(tmp_path_factory.mktemp("tune"))
    log = open(os.path.join(workdir, "first.log"), "w")
    process = subprocess.Popen(tune_command(workdir), cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT, start_new_session=True)
    second_key = os.path.join(workdir, "tune", "trials", "1", "trial_key.json")
    try:
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline and process.poll() is None:
            if trial_status(workdir, "0") == "COMPLETED" and os.path.exists(second_key):
                break
            time.sleep(0.2)
    finally:
        stop(process)
        log.close()
    assert trial_status(workdir, "0") == "COMPLETED", open(log.name).read()[-3000:]
    assert trial_status(workdir, "1") == "RUNNING", "the kill came too late"
    killed_values = read_json(second_key)["values"]
    started_before = starts(workdir)

    result = subprocess.run(tune_command(workdir), cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result.stdout, started_before, killed_values


def test_killed_search_resumes_without_rerunning_finished_trials(resumed_search):
    workdir, stdout, started_before, killed_values = resumed_search
    assert started_before == {"0": 1, "1": 1}
    # Trial 0 finished before the kill and never ran again; trial 1 was cut short and ran
    # again with the same values; trial 2 ran once.
    assert starts(workdir) == {"0": 1, "1": 2, "2": 1}
    summary = read_json(os.path.join(workdir, "tune", "summary.json"))
    assert [t["id"] for t in summary["trials"]] == ["0", "1", "2"]
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 3
    assert summary["trials"][1]["hyperparameters"] == killed_values
    for trial in summary["trials"]:
        assert set(trial) >= {"id", "status", "hyperparameters", "objective", "clean_accuracy",
                              "robust_accuracy", "seconds", "error"}
        assert 0.0 <= trial["robust_accuracy"] <= trial["clean_accuracy"] + 1e-9 <= 1.0 + 1e-9
        assert trial["validation_images"] == 32  # From the validation split (smoke: 32 of them).
        assert trial["error"] is None
    assert "best:" in stdout and "--stage all" in stdout
    out = os.path.join(workdir, "tune")
    with open(os.path.join(out, "objective.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with open(os.path.join(out, "summary.md")) as f:
        assert "| rank | trial | status |" in f.read()
    # The tuner's own callbacks ran inside the fit seam: its checkpoint of each trial's model,
    # and TensorBoard with HParams in a folder per trial.
    for trial_id in ("0", "1", "2"):
        assert os.path.exists(os.path.join(out, "search", f"trial_{trial_id}",
                                           "checkpoint.weights.h5"))
    assert sorted(os.listdir(os.path.join(out, "tensorboard"))) == ["0", "1", "2"]


def test_a_rerun_with_another_config_is_refused(resumed_search):
    config = demo.get_config("smoke")
    config.tune.epsilon = 4.0
    with pytest.raises(UserError, match=r"another config \(tune.epsilon: 8.0 -> 4.0\).*"
                                        r"--config.tune.overwrite=True"):
        tune_stage.run(config, resumed_search[0])


def test_a_search_folder_made_by_an_early_worker_does_not_stop_the_chief(tmp_path):
    # Workers create tune/search as they start; one that starts before the chief must not
    # make the chief think it found a search of unknown config (the race CI once lost).
    out = tmp_path / "tune"
    (out / "search").mkdir(parents=True)
    tune_stage.check_inputs(str(out), {"loss.margin": 1.0})
    (out / "search" / "oracle.json").write_text("{}")  # A search's own state, config unknown.
    with pytest.raises(UserError, match="holds a search without its inputs.json"):
        tune_stage.check_inputs(str(out), {"loss.margin": 1.0})


def test_starting_afresh_deletes_only_what_the_stage_wrote(tmp_path):
    out = tmp_path / "tune"
    for folder in ("search/trial_0", "trials/0/backup", "tensorboard/0"):
        (out / folder).mkdir(parents=True)
    for name in ("summary.json", "summary.md", "objective.png", "best_config.py", "inputs.json",
                 "config.json", "my_notes.txt"):
        (out / name).write_text("x")
    tune_stage.start_afresh(str(out))
    assert sorted(os.listdir(out)) == ["my_notes.txt"]


def test_best_config_feeds_pretrain(resumed_search, tmp_path):
    workdir = resumed_search[0]
    summary = read_json(os.path.join(workdir, "tune", "summary.json"))
    best = summary["best"]
    assert best["id"] == max(summary["trials"], key=lambda t: t["objective"])["id"]
    assert best["command"] == (f"python run.py --stage all --config {best['config']} "
                               f"--workdir {workdir}-best")
    # What `--config WORKDIR/tune/best_config.py` loads.
    spec = importlib.util.spec_from_file_location("best_config", best["config"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = schema.validate(module.get_config())
    assert {field: config.loss[field] for field in best["loss"]} == best["loss"]
    assert config.train.epochs == 1  # The config's own schedule (smoke), not the trial's.
    summary = train.train(config, str(tmp_path), "pretrain")
    assert os.path.exists(os.path.join(tmp_path, "pretrain", "model.keras"))
    assert summary["inputs"]["loss.margin"] == best["loss"]["margin"]


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_chief_and_two_workers_run_every_trial_once_and_turn_a_third_away(tmp_path):
    workdir = str(tmp_path)
    environment = dict(os.environ, KERASTUNER_ORACLE_IP="127.0.0.1",
                       KERASTUNER_ORACLE_PORT=str(free_port()))
    processes, logs = {}, {}
    try:
        # worker0 runs each trial in a fresh process (the default), worker1 all in one;
        # worker2 has another config and must be turned away before it takes a trial.
        for tuner_id, overrides in (("chief", []), ("worker0", []),
                                    ("worker1", ["--config.tune.trials_per_process=0"]),
                                    ("worker2", ["--config.tune.trials_per_process=0",
                                                 "--config.tune.epsilon=4"])):
            logs[tuner_id] = open(os.path.join(workdir, f"{tuner_id}.log"), "w+")
            processes[tuner_id] = subprocess.Popen(
                tune_command(workdir, "--config.tune.max_trials=3", *overrides), cwd=REPO,
                env=dict(environment, KERASTUNER_TUNER_ID=tuner_id), stdout=logs[tuner_id],
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 540
        while time.monotonic() < deadline and any(p.poll() is None for p in processes.values()):
            time.sleep(0.5)
    finally:
        for process in processes.values():
            stop(process)
    output = {}
    for tuner_id, log in logs.items():
        log.seek(0)
        output[tuner_id] = log.read()
        log.close()
    everything = "\n".join(f"--- {tuner_id} (status {processes[tuner_id].returncode}):\n"
                           f"{text[-2500:]}" for tuner_id, text in output.items())
    assert processes["chief"].returncode == 0, everything
    assert processes.pop("worker2").returncode == 2, everything
    assert "this worker's config" in output["worker2"]
    assert "differs from the chief's" in output["worker2"]
    for tuner_id, process in processes.items():
        assert process.returncode == 0, everything
    summary = read_json(os.path.join(workdir, "tune", "summary.json"))
    assert [t["status"] for t in summary["trials"]] == ["completed"] * 3
    assert starts(workdir) == {"0": 1, "1": 1, "2": 1}
    ran_on = {read_json_lines(os.path.join(workdir, "tune", "trials", trial, "starts.jsonl"))[0]
              ["tuner_id"] for trial in ("0", "1", "2")}
    assert ran_on <= {"worker0", "worker1"}  # The chief trains nothing.
    assert "worker worker0 done" in output["worker0"]
    assert "best:" in output["chief"]


def read_json_lines(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def test_a_search_whose_every_trial_fails_says_so_and_restores_global_state(tmp_path,
                                                                             monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("simulated failure inside every trial")

    monkeypatch.setattr(fit_lib, "fit", fail)
    config = demo.get_config("smoke")
    config.tune.update(max_trials=2, trials_per_process=0)
    before = global_state_snapshot()
    # run.py shows this UserError as one `error:` line and exits with status 2.
    with pytest.raises(UserError) as raised:
        tune_stage.run(config, str(tmp_path))
    assert global_state_snapshot() == before  # Seeds and precision policy, after two trials.
    message = str(raised.value)
    assert message.startswith("no trial of the search completed: 2 trial(s) failed")
    assert "RuntimeError: simulated failure inside every trial" in message
    summary = read_json(os.path.join(tmp_path, "tune", "summary.json"))
    assert [t["status"] for t in summary["trials"]] == ["failed", "failed"]
    assert all(t["error"] == "RuntimeError: simulated failure inside every trial"
               for t in summary["trials"])
    assert summary["best"] is None
    assert not os.path.exists(os.path.join(tmp_path, "tune", "best_config.py"))


def test_adversarial_training_enters_the_search_key_where_it_trains_the_trials():
    from configs import demo
    from stages import tune as tune_stage

    plain = tune_stage.search_inputs(demo.get_config())
    assert not any(name.startswith(("adversarial.", "validation.")) for name in plain)
    config = demo.get_config()
    config.adversarial.method = "n_fgsm"
    robust = tune_stage.search_inputs(config)
    assert robust["adversarial.method"] == "n_fgsm" and robust["adversarial.epsilon"] == 8.0
    config.adversarial.stages = ("baseline",)  # Trials train pretrain's model: not adversarially.
    assert tune_stage.search_inputs(config) == plain


def test_the_committed_robust_search_is_the_one_configs_robust_photos_asks_for():
    """`make reproduce-robust` skips the committed margin search only while the `:tune`
    config's search key equals the one it was run with (results/robust_photos/progress)."""
    from configs import robust_photos

    config = robust_photos.get_config("tune")
    if not os.path.isfile(config.data.data_dir):
        pytest.skip(f"{config.data.data_dir} is not here (../shared)")
    with open(os.path.join(REPO, "results", "robust_photos", "progress", "tune", "inputs.json")) as f:
        committed = json.load(f)
    assert tune_stage.search_inputs(config) == committed


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
