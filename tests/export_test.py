"""The TF Serving export: versions, atomic install, and outputs equal to the Keras model's."""

import concurrent.futures
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from models import heads
from models import resnet
from stages import export


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    images = keras.Input((32, 32, 3), name="images")
    encoder = resnet.resnet18((32, 32, 3), [0.49, 0.48, 0.45], [0.25, 0.24, 0.26], width=1 / 16)
    return keras.Model(images, heads.classifier(10)(encoder(images)))


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    model_dir = str(tmp_path_factory.mktemp("export") / "supcon_resnet18")
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    first = export.export(model, model_dir, images)
    return model_dir, first, images


def test_versions_count_up_and_nothing_half_written_is_left(model, exported):
    model_dir, first, images = exported
    assert first == os.path.join(model_dir, "1")
    second = export.export(model, model_dir, images)
    assert second == os.path.join(model_dir, "2")
    assert sorted(os.listdir(model_dir)) == ["1", "2"]


def test_reloaded_signatures_match_keras(model, exported):
    _, path, images = exported
    reloaded = tf.saved_model.load(path)
    expected = model.predict(images.astype(np.float32) / 255.0, verbose=0)
    served = reloaded.signatures["serving_default"](images=tf.constant(images))
    assert set(served) == {"logits", "probabilities", "class_ids", "embedding"}
    np.testing.assert_allclose(served["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(served["probabilities"].numpy(), tf.nn.softmax(expected).numpy(), atol=1e-6)
    np.testing.assert_array_equal(served["class_ids"].numpy(), expected.argmax(-1))
    features = model.get_layer("encoder").predict(images.astype(np.float32) / 255.0, verbose=0)
    np.testing.assert_allclose(served["embedding"].numpy(), features, rtol=1e-5, atol=1e-5)
    floats = reloaded.signatures["serve_float"](images=tf.constant(images.astype(np.float32) / 255.0))
    np.testing.assert_allclose(floats["logits"].numpy(), expected, rtol=1e-5, atol=1e-5)


def test_saved_model_cli_runs_it(model, exported, tmp_path):
    _, path, images = exported
    np.save(tmp_path / "images.npy", images)
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    result = subprocess.run(
        [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'images.npy'}", "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    logits = np.load(tmp_path / "out" / "logits.npy")
    expected = model.predict(images.astype(np.float32) / 255.0, verbose=0)
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-5)


def wrong_inputs(images):
    """What serving_default must refuse, each with what its error must name."""
    rng = np.random.default_rng(1)
    return {
        # Float images in [0, 1], as a client that forgot to send pixels has them.
        "float": (images.astype(np.float32) / 255.0, "uint8"),
        "64x64": (rng.integers(0, 256, (2, 64, 64, 3), dtype=np.uint8), "32, 32, 3"),
        "one_channel": (rng.integers(0, 256, (2, 32, 32, 1), dtype=np.uint8), "32, 32, 3"),
    }


def test_serving_default_refuses_what_it_cannot_take_naming_what_it_expects(exported):
    _, path, images = exported
    serving = tf.saved_model.load(path).signatures["serving_default"]
    for name, (wrong, expected) in wrong_inputs(images).items():
        with pytest.raises((tf.errors.InvalidArgumentError, TypeError, ValueError), match=expected):
            serving(images=tf.constant(wrong))
    # A batch whose every pixel is 0 or 1 is what float images become when the client
    # converts them to uint8 itself (as saved_model_cli does, below).
    with pytest.raises(tf.errors.InvalidArgumentError, match="every pixel is 0 or 1"):
        serving(images=tf.constant((images >= 128).astype(np.uint8)))


def test_serve_float_takes_floats_in_0_1_and_refuses_pixels_and_other_shapes(model, exported):
    _, path, images = exported
    serve_float = tf.saved_model.load(path).signatures["serve_float"]
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"float32 images in \[0, 1\] of shape \[N, 32, 32, 3\]; got values from"):
        serve_float(images=tf.constant(images.astype(np.float32)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="of shape \\[N, 32, 32, 3\\]; got shape"):
        serve_float(images=tf.zeros([1, 64, 64, 3]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="got shape"):
        serve_float(images=tf.zeros([32, 32, 3]))


def test_saved_model_cli_refuses_them_too(exported, tmp_path):
    _, path, images = exported
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")

    def run(name, wrong):
        np.save(tmp_path / f"{name}.npy", wrong)
        return subprocess.run(
            [cli, "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
             "--inputs", f"images={tmp_path / name}.npy", "--outdir", str(tmp_path / name)],
            capture_output=True, text=True, timeout=300)

    cases = wrong_inputs(images)
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        results = {name: pool.submit(run, name, wrong) for name, (wrong, _) in cases.items()}
        results = {name: future.result() for name, future in results.items()}
    for name, result in results.items():
        assert result.returncode != 0, (name, result.stdout[-1000:])
        assert not (tmp_path / name).exists(), name  # no answer written
    # saved_model_cli converts the float images to uint8 itself (numpy's astype: 0 or 1)
    # before the model runs; the signature recognises what that makes of them.
    assert "every pixel is 0 or 1" in results["float"].stderr, results["float"].stderr[-2000:]
    for name in ("64x64", "one_channel"):
        assert "32, 32, 3" in results[name].stderr, results[name].stderr[-2000:]


def test_a_failed_check_installs_nothing_and_keeps_earlier_versions(model, exported, monkeypatch):
    model_dir, first, images = exported
    before = sorted(os.listdir(model_dir))
    saved_pb = os.path.join(first, "saved_model.pb")
    modified = os.path.getmtime(saved_pb)

    def failing_check(*args):
        raise RuntimeError("simulated mismatch")

    monkeypatch.setattr(export, "check_export", failing_check)
    with pytest.raises(RuntimeError, match="simulated"):
        export.export(model, model_dir, images)
    assert sorted(os.listdir(model_dir)) == before
    assert os.path.getmtime(saved_pb) == modified


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
