"""tools/experiment_progress.py: a run saved on one machine resumes on another, and a restore
never overwrites what the workdir already holds."""

import os
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(REPO, "tools"))

import experiment_progress  # noqa: E402


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def read(path):
    with open(path) as f:
        return f.read()


def test_save_then_restore_into_a_fresh_workdir_carries_everything_but_the_logs(tmp_path):
    run = tmp_path / "run"
    write(run / "baseline/baseline/model.keras", "model")
    write(run / "supcon/pretrain/backup/latest.weights.h5", "epoch 3")
    write(run / "supcon/pretrain/logs/train/events.out", "tensorboard")
    write(run / "attack/records/baseline/fgsm-abc.json", "{}")
    write(run / "compare.json", "{}")
    write(run / "tune/search/trial_01/trial.json", "{}")
    write(run / "tune/search/trial_01/checkpoint.weights.h5", "the trial's best weights")
    progress = tmp_path / "repo/results/progress"
    experiment_progress.save(str(run), str(progress))
    assert read(progress / "supcon/pretrain/backup/latest.weights.h5") == "epoch 3"
    assert not (progress / "supcon/pretrain/logs").exists()
    # The tune search's records are carried, its copies of the trials' weights are not.
    assert (progress / "tune/search/trial_01/trial.json").exists()
    assert not (progress / "tune/search/trial_01/checkpoint.weights.h5").exists()

    fresh = tmp_path / "fresh"
    experiment_progress.restore(str(progress), str(fresh))
    carried = sorted(experiment_progress.carried_files(str(fresh)))
    assert carried == ["attack/records/baseline/fgsm-abc.json", "baseline/baseline/model.keras",
                       "compare.json", "supcon/pretrain/backup/latest.weights.h5",
                       "tune/search/trial_01/trial.json"]


def test_restore_keeps_what_the_workdir_already_has(tmp_path):
    progress = tmp_path / "progress"
    write(progress / "PROGRESS.md", "x")
    write(progress / "supcon/pretrain/backup/latest.weights.h5", "epoch 3")
    write(progress / "baseline/baseline/model.keras", "saved model")
    workdir = tmp_path / "run"
    write(workdir / "supcon/pretrain/backup/latest.weights.h5", "epoch 7")
    experiment_progress.restore(str(progress), str(workdir))
    assert read(workdir / "supcon/pretrain/backup/latest.weights.h5") == "epoch 7"
    assert read(workdir / "baseline/baseline/model.keras") == "saved model"
    assert not (workdir / "PROGRESS.md").exists()


def test_save_refuses_a_folder_it_did_not_write_and_leaves_it_alone(tmp_path):
    run = tmp_path / "run"
    write(run / "compare.json", "{}")
    mine = tmp_path / "notes"
    write(mine / "todo.txt", "mine")
    with pytest.raises(SystemExit, match="was not written by this tool"):
        experiment_progress.save(str(run), str(mine))
    assert read(mine / "todo.txt") == "mine"


def test_a_second_save_replaces_the_first(tmp_path):
    run = tmp_path / "run"
    write(run / "baseline/baseline/backup/latest.weights.h5", "epoch 1")
    progress = tmp_path / "progress"
    experiment_progress.save(str(run), str(progress))
    os.remove(run / "baseline/baseline/backup/latest.weights.h5")
    write(run / "baseline/baseline/model.keras", "done")
    experiment_progress.save(str(run), str(progress))
    assert sorted(experiment_progress.carried_files(str(progress))) == [
        "PROGRESS.md", "baseline/baseline/model.keras"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
