"""The published experiments' stored models still load and classify as they did when published.

Every committed progress folder (results/*/progress, `tools/experiment_progress.py`) holds
an experiment's trained models and the records of their evaluation; each FGSM record
keeps, image by image, which of the 10,000 clean test images the model it names (by the
sha256 of its .keras file) classified correctly. A change to the layers (the fused
BatchNorm replaced Keras's after results/real_photos was trained), to the loading of a
stored model or to the data pipeline that altered what a published model computes shows
here as an image classified otherwise. The records also name the test images by sha256,
so the data is checked to be the published one first. And the robust model that `make
robust-model` hands a user, exported for TF Serving, answers as the published one did.

Slow (`make test-slow`): it needs the full CIFAR-10 copy (../shared/data) and predicts
all 10,000 test images with each of the stored models.
"""

import functools
import glob
import hashlib
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from attacks.evaluate import Evaluation
from configs import real_photos
from stages import attack
from training.run_context import run_context

# The checkout ($SUPCON_REPO_ROOT when the test runs from Bazel's runfiles).
REPO = os.environ.get("SUPCON_REPO_ROOT", os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROGRESS = sorted(glob.glob(os.path.join(REPO, "results", "*", "progress")))


@functools.lru_cache(maxsize=None)
def _stored_models(progress):
    """{sha256: path} of every .keras file in a progress folder, hashed once per folder."""
    found = {}
    for path in sorted(glob.glob(os.path.join(progress, "**", "*.keras"), recursive=True)):
        with open(path, "rb") as f:
            found.setdefault(hashlib.sha256(f.read()).hexdigest(), path)
    return found


def _published():
    """[(experiment, model name, FGSM record path)] of every committed progress folder (not
    the `.partial.json` of an evaluation still under way)."""
    found = []
    for progress in PROGRESS:
        experiment = os.path.basename(os.path.dirname(progress))
        for record in sorted(glob.glob(os.path.join(progress, "attack", "records", "*", "fgsm-*.json"))):
            if not record.endswith(".partial.json"):
                found.append((experiment, os.path.basename(os.path.dirname(record)), record))
    return found


@pytest.fixture(scope="module")
def test_split():
    config = real_photos.get_config()
    config.data.data_dir = os.path.join(REPO, "..", "shared", "data", "cifar10-jpeg.tar")
    if not os.path.isfile(config.data.data_dir):
        pytest.skip(f"{config.data.data_dir} is absent")
    with run_context(config.seed, "float32"):
        _, images, labels = attack.test_images(config)
    return images, labels


def test_every_experiment_has_published_models():
    assert {experiment for experiment, _, _ in _published()} >= {"real_photos", "robust_photos"}


@pytest.mark.slow
@pytest.mark.parametrize("experiment,name,record", _published(), ids=lambda v: str(v).split("/")[-1])
def test_a_stored_model_classifies_every_test_image_as_published(test_split, experiment, name, record):
    images, labels = test_split
    with open(record) as f:
        stored = json.load(f)
    key, published = stored["key"], Evaluation.from_record(stored["evaluation"])
    assert hashlib.sha256(images.tobytes() + np.asarray(labels).tobytes()).hexdigest() == key["images_sha256"]
    # The model the record names, wherever the progress folder keeps it.
    path = _stored_models(os.path.join(REPO, "results", experiment, "progress")).get(key["model_sha256"])
    assert path, f"{experiment}: no stored model has the sha256 {name}'s record names"
    with run_context(0, "float32"):
        model = keras.models.load_model(path)
        logits = model.predict(images[published.indices], batch_size=500, verbose=0)
    correct = np.argmax(logits, axis=-1) == labels[published.indices]
    differ = np.flatnonzero(correct != published.clean)
    assert differ.size == 0, (f"{experiment}/{name}: {differ.size} of {published.n} images classified "
                              f"otherwise than published (first: {published.indices[differ[:5]]})")


def test_make_robust_model_takes_the_most_robust_published_arm():
    # The Makefile's ROBUST_ARM default is what the README calls the most robust model so
    # far: the highest worst case at 8/255 in results/robust_photos/results.json.
    import re

    with open(os.path.join(REPO, "results", "robust_photos", "results.json")) as f:
        rows = json.load(f)["rows"]
    worst = {row["model"]: row["accuracy"] for row in rows
             if row["attack"] == "worst" and row["epsilon_255"] == "8/255"}
    with open(os.path.join(REPO, "Makefile")) as f:
        default = re.search(r"^ROBUST_ARM \?= (\S+)$", f.read(), re.MULTILINE).group(1)
    assert worst[default] == max(worst.values()), worst


@pytest.mark.slow
def test_the_robust_model_serves_as_published(test_split, tmp_path):
    # What `make robust-model` does, into a workdir of the test's own: restore the committed
    # progress, export the arm; then TF Serving's signature on uint8 pixels.
    import tensorflow as tf

    images, labels = test_split
    progress = os.path.join(REPO, "results", "robust_photos", "progress")
    workdir = str(tmp_path / "robust_photos")
    for command in (["tools/experiment_progress.py", "restore", progress, workdir],
                    ["run.py", "--stage", "export", "--config", "configs/robust_photos.py", "--workdir",
                     workdir, "--config.export.model=at_ce", "--config.export.name=at_ce"]):
        result = subprocess.run([sys.executable, *command], cwd=REPO, capture_output=True, text=True,
                                timeout=300)
        assert result.returncode == 0, result.stderr[-3000:]
    serve = tf.saved_model.load(os.path.join(workdir, "export", "at_ce", "1")).signatures["serving_default"]
    pixels = np.round(images * 255.0).astype(np.uint8)
    class_ids = np.concatenate([serve(images=tf.constant(pixels[start:start + 500]))["class_ids"].numpy()
                                for start in range(0, len(pixels), 500)])
    record = glob.glob(os.path.join(progress, "attack", "records", "at_ce", "fgsm-*.json"))[0]
    with open(record) as f:
        published = Evaluation.from_record(json.load(f)["evaluation"])
    assert np.array_equal(class_ids[published.indices] == labels[published.indices], published.clean)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q", "--run-slow"]))
