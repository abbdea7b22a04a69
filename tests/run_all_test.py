"""`run.py --stage all` end to end on the embedded sample, shrunk by the smoke config."""

import json
import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("run_all"))
    # The user's default: run.py turns oneDNN on (as TensorFlow does by itself on AVX-512
    # machines), and its start-up lines must not reach the user's terminal.
    environment = dict(os.environ)
    environment.pop("TF_ENABLE_ONEDNN_OPTS", None)
    environment.pop("TF_CPP_MIN_LOG_LEVEL", None)
    result = subprocess.run(
        [sys.executable, "run.py", "--stage", "all", "--config", "configs/demo.py:smoke",
         "--workdir", workdir], cwd=REPO, capture_output=True, text=True, timeout=900,
        env=environment)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return workdir, result.stdout, result.stderr


def test_results_json_has_rows_and_sanity_verdicts(workdir):
    path = workdir[0]
    with open(os.path.join(path, "attack", "results.json")) as f:
        results = json.load(f)
    models = {"baseline", "pretrain", "finetune", "robust"}  # robust: the demo's arm.
    assert {row["model"] for row in results["rows"]} == models
    for row in results["rows"]:
        assert set(row) >= {"model", "attack", "epsilon", "accuracy", "n"}
        assert row["attack"] in ("clean", "fgsm", "pgd", "worst")
        assert 0.0 <= row["epsilon"] <= 1.0 and 0.0 <= row["accuracy"] <= 1.0
    assert {row["epsilon"] for row in results["rows"] if row["attack"] == "fgsm"} == {0.0, 8 / 255}
    assert set(results["checks"]) == models
    for verdicts in results["checks"].values():
        assert {"eps_zero_is_clean", "monotone_in_epsilon", "stronger_not_weaker",
                "inside_epsilon_ball"} <= set(verdicts)
        # The checks that hold by construction must pass on any model.
        assert verdicts["eps_zero_is_clean"]["passed"] and verdicts["inside_epsilon_ball"]["passed"]
    assert results["attack"]["targets"] == "true labels"


def test_table_pictures_and_export_exist(workdir):
    path, stdout, _ = workdir
    with open(os.path.join(path, "attack", "results.md")) as f:
        table = f.read()
    assert "| baseline | FGSM |" in table and "| baseline | worst case |" in table and "eps 8/255" in table
    # Then every model at 8/255 in one table, the worst case last.
    standard = table.split("## At 8/255, the epsilon the field reports")[1]
    assert standard.splitlines()[2].startswith("| model | clean (") and "| worst case (" in standard
    assert all(f"| {model} | " in standard for model in ("baseline", "pretrain", "finetune"))
    for picture in ("robustness.png", "embeddings.png"):
        with open(os.path.join(path, "attack", picture), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    version = os.path.join(path, "export", "supcon_resnet18", "1")
    assert os.path.isfile(os.path.join(version, "saved_model.pb"))
    with open(os.path.join(version, "assets.extra", "source.json")) as f:
        assert json.load(f)["model"].endswith(os.path.join("finetune", "model.keras"))
    assert "robustness.png" in stdout and "| pretrain | PGD |" in stdout


def test_no_tensorflow_start_up_lines_reach_the_user(workdir):
    stderr = workdir[2]
    assert "absl::InitializeLog" not in stderr and "oneDNN custom operations" not in stderr, stderr
    assert "cpu_feature_guard" not in stderr, stderr


def test_running_all_again_retrains_attacks_and_exports_nothing(workdir):
    path = workdir[0]
    with open(os.path.join(path, "attack", "results.json")) as f:
        first = json.load(f)
    # A kill during the attack stage loses at most the evaluation in progress: remove one
    # record, as if the stage had been killed while computing it.
    records = os.path.join(path, "attack", "records")
    lost = os.path.join(records, "pretrain", next(name for name in os.listdir(os.path.join(records, "pretrain"))
                                                  if name.startswith("pgd-")))
    os.remove(lost)
    result = subprocess.run(
        [sys.executable, "run.py", "--stage", "all", "--config", "configs/demo.py:smoke",
         "--workdir", path], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    for stage in ("baseline", "pretrain", "finetune"):
        assert f"{stage}: already done" in result.stdout
    assert result.stdout.count(": reusing ") == 7  # 4 models x 2 attacks, less the lost one.
    assert "attacking pretrain" in result.stdout and "with pgd" in result.stdout
    assert os.path.exists(lost)
    with open(os.path.join(path, "attack", "results.json")) as f:
        again = json.load(f)
    assert again["rows"] == first["rows"]  # The recomputed evaluation gives the same numbers.
    assert "nothing to do" in result.stdout
    assert sorted(os.listdir(os.path.join(path, "export", "supcon_resnet18"))) == ["1"]


def test_an_arm_exports_by_its_name(workdir):
    # The demo's arm `robust` (configs/demo.py) trains in WORKDIR/robust/pretrain/; export
    # takes it by name, as `make robust-model` takes results/robust_photos' arms.
    path = workdir[0]
    result = subprocess.run(
        [sys.executable, "run.py", "--stage", "export", "--config", "configs/demo.py:smoke",
         "--workdir", path, "--config.export.model=robust", "--config.export.name=robust_resnet18"],
        cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    version = os.path.join(path, "export", "robust_resnet18", "1")
    with open(os.path.join(version, "assets.extra", "source.json")) as f:
        source = json.load(f)
    assert os.path.dirname(source["model"]) == os.path.join(path, "robust", "pretrain")
    # What each class id the model serves means: line i names class id i.
    with open(os.path.join(version, "assets.extra", "class_names.txt")) as f:
        assert f.read().splitlines() == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                         "horse", "ship", "truck"]
    # The other export, the finetuned model's, is left as it was.
    assert sorted(os.listdir(os.path.join(path, "export", "supcon_resnet18"))) == ["1"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
