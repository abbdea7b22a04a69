"""The training core's promises: state restored after a stage, divergence keeps the last
good checkpoint and resumes, each stage's skip key covers only what it reads."""

import csv
import hashlib
import json
import os
import subprocess
import sys

import keras
import matplotlib
import numpy as np
import pytest

from common.errors import Diverged
from common.errors import UserError
from configs import demo
from models import precision
from models import resnet
from stages import train
from training import fit as fit_lib
from training import specs
from training.run_context import global_state_snapshot
from training.run_context import run_context

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(**train):
    config = demo.get_config("smoke")
    config.train.update(train)
    return config


def test_a_stage_leaves_policy_seeds_and_matplotlib_as_it_found_them(tmp_path, bfloat16_ops):
    backend = matplotlib.get_backend()
    keras.config.set_dtype_policy("float32")
    before = global_state_snapshot()
    config = smoke_config(precision="mixed_bfloat16")  # A policy the stage must not leave behind.
    train.train(config, str(tmp_path), "baseline", verbose=0)
    from stages import attack  # noqa: F401  (imports report.plots, which used to switch the backend)

    assert global_state_snapshot() == before
    assert keras.config.dtype_policy().name == "float32"
    assert matplotlib.get_backend() == backend


def test_run_context_restores_state_even_when_the_body_fails():
    before = global_state_snapshot()
    with pytest.raises(RuntimeError):
        with run_context(seed=7, precision="mixed_bfloat16"):
            assert keras.config.dtype_policy().name == "mixed_bfloat16"
            np.random.random()
            raise RuntimeError("the trial failed")
    assert global_state_snapshot() == before


class PoisonWeights(keras.callbacks.Callback):
    """Makes the classifier's weights NaN before one step, as a diverging run would."""

    def __init__(self, epoch, step):
        super().__init__()
        self.at = (epoch, step)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            kernel = self.model.classifier.kernel
            kernel.assign(np.full(kernel.shape, np.nan, np.float32))


def epochs_logged(out):
    with open(os.path.join(out, "history.csv")) as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_divergence_stops_at_the_first_nan_keeps_the_checkpoint_and_resumes(tmp_path):
    workdir, out = str(tmp_path), os.path.join(str(tmp_path), "baseline")
    config = smoke_config(epochs=3)
    with pytest.raises(Diverged) as stopped:
        train.train(config, workdir, "baseline", callbacks=[PoisonWeights(epoch=1, step=1)], verbose=0)
    message = str(stopped.value)
    assert "baseline" in message and "epoch 2, step 2" in message
    assert "end of epoch 1" in message and os.path.join(out, "backup") in message
    assert "--config.train.learning_rate" in message and "\n" not in message
    # The last good epoch survives (Keras's BackupAndRestore would delete it on a graceful stop).
    with open(os.path.join(out, "backup", "training_metadata.json")) as f:
        assert json.load(f)["epoch"] == 1  # Keras records the epoch to resume at.
    assert not os.path.exists(os.path.join(out, "model.keras"))
    assert fit_lib.divergence_record(out)["step"] == 2

    # Another config is refused, except for the step sizes after a divergence.
    with pytest.raises(UserError, match="unfinished baseline run with another config"):
        train.train(smoke_config(epochs=3, batch_size=16), workdir, "baseline", verbose=0)
    summary = train.train(smoke_config(epochs=3, learning_rate=0.01), workdir, "baseline", verbose=0)
    assert epochs_logged(out) == [0, 1, 2]  # Epoch 0 from the first run, 1 and 2 resumed.
    assert np.isfinite(summary["final"]["loss"])
    assert os.path.exists(os.path.join(out, "model.keras"))
    assert os.path.exists(os.path.join(out, "diverged-before-resume.json"))


def test_a_checkpoint_with_other_layer_classes_is_one_clear_error(tmp_path, monkeypatch):
    # A run checkpointed before BatchNorm became models.fused_batchnorm's layer.
    workdir, backup = str(tmp_path), os.path.join(str(tmp_path), "baseline", "backup")
    with monkeypatch.context() as patched:
        patched.setattr(resnet, "FusedBatchNormalization",
                        lambda synchronized, **kwargs: keras.layers.BatchNormalization(**kwargs))
        with pytest.raises(Diverged):
            train.train(smoke_config(epochs=3), workdir, "baseline",
                        callbacks=[PoisonWeights(epoch=1, step=1)], verbose=0)
    with pytest.raises(UserError, match=f"{backup} was written by a version .* other layers"):
        train.train(smoke_config(epochs=3), workdir, "baseline", verbose=0)


def test_divergence_before_any_checkpoint_says_so(tmp_path):
    with pytest.raises(Diverged, match="no epoch had finished, so there is no checkpoint"):
        train.train(smoke_config(), str(tmp_path), "baseline",
                    callbacks=[PoisonWeights(epoch=0, step=0)], verbose=0)


def test_diverged_exits_with_status_3_and_one_line():
    code = ("import sys, run\n"
            "from common.errors import Diverged\n"
            "def fail(*args): raise Diverged('pretrain: loss became nan at epoch 2, step 3; kept')\n"
            "run.run_stage = fail\n"
            "sys.argv = ['run.py', '--stage', 'pretrain', '--config', 'configs/demo.py:smoke']\n"
            "run.entry_point()\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 3
    assert result.stderr.splitlines() == ["error: pretrain: loss became nan at epoch 2, step 3; kept"]


def test_each_stage_key_holds_only_what_the_stage_reads():
    config = demo.get_config("smoke")
    other = demo.get_config("smoke")
    other.loss.margin = 0.5
    other.attack.pgd_steps = 7
    other.finetune.epochs = 3
    keys = {}
    for name, spec in specs.SPECS.items():
        keys[name] = [specs.decisive_fields(json.loads(c.to_json_best_effort()), spec)
                      for c in (config, other)]
    assert keys["baseline"][0] == keys["baseline"][1]  # Neither the loss nor the finetune schedule.
    assert keys["pretrain"][0] != keys["pretrain"][1]
    assert keys["finetune"][0]["finetune.epochs"] != keys["finetune"][1]["finetune.epochs"]
    assert not any(name.startswith("attack") for key in keys.values() for name in key[0])


def test_a_field_added_later_stays_out_of_the_key_until_it_changes_training():
    # Runs keyed before train.ema_momentum existed keep their keys at its default.
    config = demo.get_config("smoke")
    resolved = json.loads(config.to_json_best_effort())
    before = {**resolved, "train": {k: v for k, v in resolved["train"].items() if k != "ema_momentum"}}
    for spec in specs.SPECS.values():
        assert specs.decisive_fields(resolved, spec) == specs.decisive_fields(before, spec)
    config.train.ema_momentum = 0.99
    key = specs.decisive_fields(json.loads(config.to_json_best_effort()), specs.BASELINE)
    assert key["train.ema_momentum"] == 0.99


class Interrupt(Exception):
    pass


class RecordWeights(keras.callbacks.Callback):
    """Keeps the weights after every training step; raises `Interrupt` before step 1 of epoch
    `stop_at`, as a crash would."""

    def __init__(self, steps, stop_at=None):
        super().__init__()
        self.steps, self.stop_at, self.epoch = steps, stop_at, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        if epoch == self.stop_at:
            raise Interrupt()

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({w.path: w.numpy() for w in self.model.trainable_weights})


def test_weight_averaging_keeps_the_average_across_a_crash_and_validates_it(tmp_path):
    # a_1 = w_1, a_t = m a_(t-1) + (1 - m) w_t over every step, the crashed run's and the
    # resumed run's: the final model and the kept epoch's are the average at their step.
    momentum = 0.6
    config = smoke_config(epochs=3, ema_momentum=momentum, steps_per_epoch=3)
    config.adversarial.method = "n_fgsm"  # Robust validation on: it keeps a best epoch.
    config.validation.update(keep="most_robust", stop_on_collapse=False)
    workdir, out = str(tmp_path), os.path.join(str(tmp_path), "baseline")
    steps = []
    with pytest.raises(Interrupt):
        train.train(config, workdir, "baseline", callbacks=[RecordWeights(steps, stop_at=2)], verbose=0)
    assert len(steps) == 6
    train.train(config, workdir, "baseline", callbacks=[RecordWeights(steps)], verbose=0)
    assert len(steps) == 9  # Epoch 3 only: the backup of epoch 2 held the raw weights.
    averages = [steps[0]]
    for weights in steps[1:]:
        averages.append({path: momentum * averages[-1][path] + (1 - momentum) * value
                         for path, value in weights.items()})

    def assert_average(model_file, step):
        model = keras.saving.load_model(os.path.join(out, model_file))
        weights = {w.path: w.numpy() for w in model.trainable_weights}
        shared = set(weights) & set(averages[step])
        assert len(shared) >= 3  # The classifier's and the encoder's.
        for path in shared:
            np.testing.assert_allclose(weights[path], averages[step][path], rtol=1e-4, atol=1e-6)
            assert not np.allclose(weights[path], steps[step][path], rtol=1e-3, atol=1e-5), path

    assert_average("model.keras", 8)
    with open(os.path.join(out, "best.json")) as f:
        best_epoch = json.load(f)["best"]["epoch"]
    assert_average("best_model.keras", 3 * best_epoch - 1)


class StopAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        self.model.stop_training = True


def test_training_stopped_early_still_ends_with_the_average(tmp_path):
    # As a collapse stops it: after the average was swapped in at the end of the epoch.
    momentum = 0.5
    steps = []
    train.train(smoke_config(epochs=3, ema_momentum=momentum, steps_per_epoch=2), str(tmp_path),
                "baseline", callbacks=[RecordWeights(steps), StopAfterFirstEpoch()], verbose=0)
    assert len(steps) == 2
    model = keras.saving.load_model(os.path.join(str(tmp_path), "baseline", "model.keras"))
    weights = {w.path: w.numpy() for w in model.trainable_weights if w.path in steps[0]}
    assert len(weights) >= 3
    for path, value in weights.items():
        np.testing.assert_allclose(value, momentum * steps[0][path] + (1 - momentum) * steps[1][path],
                                   rtol=1e-4, atol=1e-6)


def test_a_finished_stage_with_another_config_is_not_mixed(tmp_path):
    out = str(tmp_path / "pretrain")
    os.makedirs(out)
    with open(os.path.join(out, "model.keras"), "w") as f:
        f.write("stand-in")
    with open(os.path.join(out, "summary.json"), "w") as f:
        json.dump({"inputs": {"loss.margin": 1.0}}, f)
    assert train.check_workdir(out, {"loss.margin": 1.0}, "pretrain") == {"inputs": {"loss.margin": 1.0}}
    with pytest.raises(UserError) as error:
        train.check_workdir(out, {"loss.margin": 0.5}, "pretrain")
    assert "loss.margin: 1.0 -> 0.5" in str(error.value) and f"delete {out}" in str(error.value)


def test_an_archive_enters_the_key_by_content_so_a_run_is_found_at_another_path(tmp_path):
    archive = tmp_path / "here" / "photos.tar"
    moved = tmp_path / "elsewhere" / "photos.tar"
    for path in (archive, moved):
        path.parent.mkdir()
        path.write_bytes(b"the same images")
    keys = []
    for path in (archive, moved):
        config = demo.get_config("smoke")
        config.data.update(name="folder", data_dir=str(path))
        keys.append(specs.decisive_fields(json.loads(config.to_json_best_effort()), specs.BASELINE))
    assert keys[0] == keys[1] and "data.data_dir" not in keys[0]
    assert keys[0]["data.data_sha256"] == hashlib.sha256(b"the same images").hexdigest()
    # A run finished before the key held the content (its summary names the path) is
    # still recognised, and is refused once the archive at that path has other bytes.
    out = tmp_path / "run" / "baseline"
    out.mkdir(parents=True)
    (out / "model.keras").write_text("stand-in")
    recorded = {name: value for name, value in keys[0].items() if name != "data.data_sha256"}
    (out / "summary.json").write_text(json.dumps({"inputs": {**recorded, "data.data_dir": str(archive)}}))
    assert train.check_workdir(str(out), keys[1], "baseline")["inputs"] == keys[1]
    archive.write_bytes(b"other images")
    with pytest.raises(UserError, match="data.data_sha256"):
        train.check_workdir(str(out), keys[1], "baseline")
    # A folder of images stays keyed by its path.
    folder_config = demo.get_config("smoke")
    folder_config.data.update(name="folder", data_dir=str(tmp_path / "here"))
    folder_key = specs.decisive_fields(json.loads(folder_config.to_json_best_effort()), specs.BASELINE)
    assert folder_key["data.data_dir"] == str(tmp_path / "here")


def test_auto_precision_weighs_the_width_and_a_resumed_run_keeps_its_policy(tmp_path, monkeypatch,
                                                                          capsys):
    monkeypatch.setattr(precision, "cpu_has_bfloat16", lambda: True)  # an AVX512_BF16 CPU
    monkeypatch.setattr(precision.tf.config, "list_physical_devices", lambda kind=None: [])
    out = str(tmp_path / "pretrain")
    os.makedirs(out)
    config = smoke_config(precision="auto")
    config.model.width = precision.BFLOAT16_MIN_WIDTH / 2  # narrower than bfloat16 pays for
    assert train.resumed_precision(out, config, "pretrain") == "float32"
    with run_context(0, "auto", width=config.model.width) as policy:
        assert policy == "float32"
    config.model.width = 1.0
    assert train.resumed_precision(out, config, "pretrain") == "mixed_bfloat16"
    # Started in float32 on another machine, resumed here from its backup: stays float32.
    with open(os.path.join(out, train.PRECISION), "w") as f:
        json.dump({"policy": "float32"}, f)
    assert train.resumed_precision(out, config, "pretrain") == "mixed_bfloat16"  # no backup yet
    os.makedirs(os.path.join(out, fit_lib.BACKUP))
    assert train.resumed_precision(out, config, "pretrain") == "float32"
    assert "resuming with the precision policy it started with, float32" in capsys.readouterr().out
    config.train.precision = "mixed_bfloat16"  # asked for by name: what is asked for
    assert train.resumed_precision(out, config, "pretrain") == "mixed_bfloat16"


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
