"""The training model and the baseline / pretrain / finetune stages, at tiny sizes."""

import json
import os
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from common.errors import UserError
from configs import demo
from models import heads
from models import precision
from models import resnet
from models.contrastive_model import ContrastiveModel
from models.contrastive_model import flatten_views
from models.supcon_loss import SupConLoss
from stages import train
from training import builders
from training import specs

TINY_DATA = builders.DataInfo((8, 8, 3), 4, (0.5,) * 3, (0.25,) * 3)


def tiny_model(seed=0, spec=specs.PRETRAIN, data_info=TINY_DATA):
    """The stage's model as the training core builds it, at 1/16 width on 8x8 images."""
    config = demo.get_config("smoke")  # Width 1/16; pairwise margin 1.0, temperature 0.1.
    keras.utils.set_random_seed(seed)
    return builders.build_model(config, spec, data_info)


def separable_batches(num_classes=4, per_class=16, seed=0):
    """Two noisy views of solid-colour images, one colour per class: easy to tell apart."""
    rng = np.random.default_rng(seed)
    colours = rng.random((num_classes, 3))
    labels = np.tile(np.arange(num_classes), per_class)
    base = colours[labels][:, None, None, None, :]
    views = np.clip(base + 0.05 * rng.normal(size=(len(labels), 2, 8, 8, 3)), 0, 1)
    return tf.constant(views, tf.float32), tf.constant(labels, tf.int64)


def test_flatten_views_stacks_views_along_the_batch():
    images = tf.reshape(tf.range(2 * 3 * 1 * 1 * 1, dtype=tf.float32), (2, 3, 1, 1, 1))
    flat, labels = flatten_views(images, tf.constant([7, 9]))
    assert flat.shape == (6, 1, 1, 1)
    np.testing.assert_array_equal(flat.numpy().ravel(), [0, 3, 1, 4, 2, 5])
    np.testing.assert_array_equal(labels.numpy(), [7, 9, 7, 9, 7, 9])


def test_resnet18_full_width_has_the_papers_shape():
    encoder = resnet.resnet18((32, 32, 3), [0.5] * 3, [0.25] * 3, width=1.0)
    assert encoder.inputs[0].name.startswith("images") or encoder.layers[0].name == "images"
    assert encoder.outputs[0].shape[-1] == 512
    # ResNet-18 CIFAR variant: 11.17M parameters in the encoder (without the 512x100 head).
    assert encoder.count_params() == pytest.approx(11.17e6, rel=0.01)


def test_contrastive_weights_need_a_projection_head():
    encoder = resnet.resnet18((8, 8, 3), [0.5] * 3, [0.25] * 3, width=1 / 16)
    with pytest.raises(ValueError, match="projection head"):
        ContrastiveModel(encoder, heads.classifier(2), supcon_loss=SupConLoss(), supcon_weight=1.0)


def test_loss_goes_down_on_a_separable_problem():
    model = tiny_model()
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    views, labels = separable_batches()
    history = model.fit(views, labels, batch_size=32, epochs=8, shuffle=False, verbose=0)
    losses = history.history
    for term in ("loss", "ce_loss", "supcon_loss", "margin_loss"):
        assert losses[term][-1] < 0.7 * losses[term][0], (term, losses[term])
    assert losses["accuracy"][-1] >= 0.9
    assert "learning_rate" in losses


def run_steps(seed, steps=3):
    model = tiny_model(seed=seed)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), jit_compile=False)
    views, labels = separable_batches(seed=seed)
    logs = [model.train_on_batch(views[:32], labels[:32], return_dict=True)["loss"] for _ in range(steps)]
    return logs, [w.copy() for w in model.get_weights()]


def test_same_seed_gives_identical_losses_and_weights():
    first_losses, first_weights = run_steps(seed=5)
    second_losses, second_weights = run_steps(seed=5)
    assert first_losses == second_losses
    for a, b in zip(first_weights, second_weights):
        np.testing.assert_array_equal(a, b)
    other_losses, _ = run_steps(seed=6)
    assert other_losses != first_losses


def test_terms_are_float32_and_training_runs_under_mixed_bfloat16(bfloat16_ops):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        model = tiny_model()
        model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=False)
        views, labels = separable_batches()
        logs = model.train_on_batch(views[:16], labels[:16], return_dict=True)
        outputs = model(views[:4, 0])
        assert model.encoder.layers[2].compute_dtype == "bfloat16"
        classifier = precision.float32_copy(model.classifier_model())
    finally:
        keras.config.set_dtype_policy(previous)
    assert outputs["logits"].dtype == tf.float32
    assert all(np.isfinite(v) for v in logs.values())
    assert all(layer.compute_dtype == "float32" for layer in classifier.get_layer("encoder").layers)


def test_precision_choice():
    assert precision.resolve("float32") == "float32"
    expected_auto = "mixed_bfloat16" if precision.cpu_has_bfloat16() else "float32"
    if not tf.config.list_physical_devices("GPU"):
        assert precision.resolve("auto") == expected_auto
    with pytest.raises(UserError, match="precision"):
        precision.resolve("float8")


@pytest.fixture(scope="module")
def trained_workdir(tmp_path_factory):
    """baseline, pretrain and finetune with the smoke config, once for this module."""
    workdir = str(tmp_path_factory.mktemp("workdir"))
    config = demo.get_config("smoke")
    summaries = {stage: train.train(config, workdir, stage) for stage in ("baseline", "pretrain", "finetune")}
    return workdir, config, summaries


@pytest.mark.parametrize("stage", ["baseline", "pretrain", "finetune"])
def test_stage_writes_a_loadable_float32_model_and_its_records(trained_workdir, stage):
    workdir, config, summaries = trained_workdir
    out = os.path.join(workdir, stage)
    for name in ("config.json", "history.csv", "summary.json", "model.keras", "logs"):
        assert os.path.exists(os.path.join(out, name)), name
    assert not os.path.exists(os.path.join(out, "backup"))  # Removed by Keras once training ends.
    model = keras.models.load_model(os.path.join(out, "model.keras"), safe_mode=True)
    images = np.random.default_rng(0).random((3, 32, 32, 3)).astype(np.float32)
    logits = model(images)
    assert logits.shape == (3, 10) and logits.dtype == tf.float32
    assert model.inputs[0].shape[1:] == (32, 32, 3)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model"]["width"] == config.model.width
    expected_terms = {"pretrain": {"ce_loss", "supcon_loss", "margin_loss"}}.get(stage, {"ce_loss"})
    assert expected_terms <= set(summaries[stage]["final"])


def test_pretrain_model_has_the_configured_loss_terms():
    model = tiny_model()
    assert model.weights_by_term == {"ce_loss": 1.0, "supcon_loss": 1.0, "margin_loss": 1.0}
    assert model.margin_loss.margin == 1.0 and model.supcon_loss.temperature == 0.1
    baseline = tiny_model(spec=specs.BASELINE)
    assert baseline.projection_head is None and not baseline.uses_embedding


def test_linear_probe_keeps_the_pretrained_encoder(trained_workdir):
    workdir, _, _ = trained_workdir
    encoders = {stage: keras.models.load_model(os.path.join(workdir, stage, "model.keras")).get_layer("encoder")
                for stage in ("pretrain", "finetune")}
    for a, b in zip(encoders["pretrain"].get_weights(), encoders["finetune"].get_weights()):
        np.testing.assert_array_equal(a, b)


def test_a_finished_stage_with_the_same_config_is_not_run_again(trained_workdir, capsys):
    workdir, config, summaries = trained_workdir
    modified = os.path.getmtime(os.path.join(workdir, "baseline", "model.keras"))
    assert train.train(config, workdir, "baseline") == summaries["baseline"]
    assert "already done" in capsys.readouterr().out
    assert os.path.getmtime(os.path.join(workdir, "baseline", "model.keras")) == modified
    # What stage compare asks of a model it has not reached yet: finished with this config?
    assert train.finished(config, workdir, "baseline") == summaries["baseline"]
    other = config.copy_and_resolve_references()
    other.train.learning_rate *= 2
    assert train.finished(other, workdir, "baseline") is None  # train would refuse it.
    assert train.finished(config, os.path.join(workdir, "nothing_here"), "baseline") is None


def test_finetune_without_pretrain_says_what_to_run(tmp_path):
    with pytest.raises(UserError, match="--stage pretrain"):
        train.train(demo.get_config("smoke"), str(tmp_path), "finetune")


def test_channel_statistics_are_exact_without_a_float_copy_of_the_images():
    # Half the images black, half white in channel 0; channel 1 all 51 (0.2); channel 2 random.
    images = np.zeros((10, 4, 4, 3), np.uint8)
    images[5:, :, :, 0] = 255
    images[:, :, :, 1] = 51
    images[:, :, :, 2] = np.random.default_rng(0).integers(0, 256, (10, 4, 4))
    mean, std = builders.channel_statistics(images, chunk=3)
    assert mean[:2] == pytest.approx((0.5, 0.2), abs=1e-15) and std[:2] == pytest.approx((0.5, 0.0), abs=1e-15)
    pixels = images[..., 2].astype(np.float64) / 255.0
    assert mean[2] == pytest.approx(pixels.mean(), abs=1e-14) and std[2] == pytest.approx(pixels.std(), abs=1e-14)


def test_the_builder_warns_where_the_margin_cannot_be_kept(capsys):
    # Four classes keep at most sqrt(8/3) = 1.633 apart (models/margin_loss.py).
    config = demo.get_config("smoke")
    config.loss.update(margin_form="pairwise", margin=1.7)
    builders.build_model(config, specs.PRETRAIN, TINY_DATA)
    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("WARNING")]
    assert printed == ["WARNING: loss.margin=1.7 is more than 4 classes can all keep apart on the unit "
                       "sphere (at most sqrt(2C/(C-1)) = 1.633, a regular simplex): the margin term "
                       "never reaches zero (models/margin_loss.py)."]
    builders.build_model(config, specs.BASELINE, TINY_DATA)  # No margin term: quiet.
    for quiet in (dict(margin=1.6), dict(margin_weight=0.0), dict(margin_form="additive", margin=0.3)):
        changed = demo.get_config("smoke")
        changed.loss.update(**{**dict(margin_form="pairwise", margin=1.7), **quiet})
        builders.warn_if_margin_unkeepable(changed.loss, 4)
    builders.warn_if_margin_unkeepable(config.loss, 2)  # Two classes keep any distance up to 2.
    assert "WARNING" not in capsys.readouterr().out


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
