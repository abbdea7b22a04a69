"""Stage `export`: a SavedModel for TF Serving under WORKDIR/export/<name>/<version>/.

The model is config.export.model's: a training stage's (WORKDIR/STAGE/) or an arm's of
config.arms (WORKDIR/ARM/STAGE/, `configs/arms.py`), its kept epoch where robust
validation kept one. `make robust-model` exports results/robust_photos' most robust arm so.

Built with `keras.export.ExportArchive`. Endpoints:

- `serving_default`: input `images`, uint8 [None, H, W, C] (raw pixels, what a client
  has); outputs `logits` [None, K], `probabilities` [None, K], `class_ids` [None] (int64)
  and `embedding` [None, D] (the encoder's pooled features).
- `serve_float`: the same from float32 images in [0, 1] (what the attacks use).

Both refuse what they cannot take, with an error naming what they expect, rather than
answer it (`_refusing`): another image size or channel count (a loaded signature does not
check the shape it declares); for `serve_float`, values outside [0, 1] (pixels 0..255
sent as floats); for `serving_default`, a batch whose every pixel is 0 or 1, which is
what float images in [0, 1] become when a client converts them to uint8 itself
(`saved_model_cli run` and numpy's `astype` do, before the model sees them; a float
tensor given to the loaded signature is refused by TensorFlow's own dtype check). Such a
batch is also an all-black one, refused as well: a real photo is never all 0s and 1s.

The version is one more than the highest existing one (TF Serving serves the highest).
The SavedModel is written to a hidden temporary directory beside the versions, reloaded,
checked against the Keras model, and only then renamed to its version number, so TF
Serving never sees a half-written or wrong model. Earlier versions are never touched.
Each version records the sha256 of the `.keras` file it came from in
`assets.extra/source.json` (the folder TF Serving leaves to its users), and the data's
class names in `assets.extra/class_names.txt` (line i names class id i); when the newest
version already holds the same model, the stage exports nothing.
"""

import hashlib
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from common.errors import UserError
from configs import arms
from pipeline import datasets
from training import robust_validation
from training.run_context import run_context

# Logits of the reloaded SavedModel must match Keras's to float32 rounding, relative to
# the largest logit (an undertrained model can have logits in the thousands).
_RELATIVE_TOLERANCE = 1e-4


def _refusing(images, expected, name, floats):
    """`images` after checks that raise InvalidArgumentError, naming what `name` expects.

    `expected` is [H, W, C]; `floats` says whether the signature takes floats in [0, 1]
    (else uint8 pixels). The checks run in the graph, so they hold for every client.
    """
    height, width, channels = expected
    wanted = (f"{name} takes {'float32 images in [0, 1]' if floats else 'uint8 images (pixels 0..255)'}"
              f" of shape [N, {height}, {width}, {channels}]")
    shape = tf.shape(images)
    # Padded, so that an input of another rank is compared (and refused) too.
    padded = tf.concat([shape, tf.zeros([4], tf.int32)], axis=0)
    shape_check = tf.debugging.Assert(
        tf.logical_and(tf.equal(tf.size(shape), 4),
                       tf.reduce_all(tf.equal(padded[1:4], [height, width, channels]))),
        [f"{wanted}; got shape", shape], summarize=4)
    # Checked after the shape, so that a wrong shape is what is reported.
    with tf.control_dependencies([shape_check]):
        if floats:
            checks = [tf.debugging.Assert(
                tf.reduce_all(tf.logical_and(images >= 0.0, images <= 1.0)),
                [f"{wanted}; got values from", tf.reduce_min(images), "to", tf.reduce_max(images),
                 "(pixels 0..255 go to serving_default as uint8)"])]
        else:
            checks = [tf.debugging.Assert(
                tf.logical_or(tf.equal(tf.size(images), 0), tf.reduce_any(images > 1)),
                [f"{wanted}; got a batch whose every pixel is 0 or 1: float images in [0, 1] "
                 "converted to uint8 by the client? Send pixels 0..255, or the floats to serve_float"])]
    with tf.control_dependencies(checks):
        return tf.identity(images)


def build_archive(model):
    """An ExportArchive of a float32 classifier model (images in [0, 1] -> logits)."""
    encoder = model.get_layer("encoder")
    classifier = model.layers[-1]
    height, width, channels = model.inputs[0].shape[1:]
    expected = (height, width, channels)

    def outputs(images):
        features = encoder(images, training=False)
        logits = classifier(features)
        return {"logits": logits, "probabilities": tf.nn.softmax(logits),
                "class_ids": tf.argmax(logits, axis=-1), "embedding": features}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "serving_default",
        lambda images: outputs(tf.cast(_refusing(images, expected, "serving_default", False),
                                       tf.float32) / 255.0),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")])
    archive.add_endpoint(
        "serve_float", lambda images: outputs(_refusing(images, expected, "serve_float", True)),
        input_signature=[tf.TensorSpec([None, height, width, channels], tf.float32, name="images")])
    return archive


def next_version(model_dir):
    """One more than the highest integer-named version directory (1 if none)."""
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(name) for name in os.listdir(model_dir) if name.isdigit()]
    return max(versions, default=0) + 1


def check_export(path, model, images):
    """Reloads the SavedModel and compares its outputs with the Keras model's; raises if they differ."""
    reloaded = tf.saved_model.load(path)
    served = reloaded.signatures["serving_default"](images=tf.constant(images))
    expected = model.predict(images.astype(np.float32) / 255.0, verbose=0)
    logits = served["logits"].numpy()
    error = float(np.max(np.abs(logits - expected)))
    if (error > _RELATIVE_TOLERANCE * max(1.0, float(np.max(np.abs(expected))))
            or not np.array_equal(served["class_ids"].numpy(), logits.argmax(-1))):
        raise RuntimeError(f"the exported model's logits differ from Keras's by {error:.2e}; "
                           "the export was not installed.")
    return error


def export(model, model_dir, check_images, source=None, class_names=None):
    """Writes, checks and installs a new version of `model`; returns its path.

    `source` (a dict) is written to the version's assets.extra/source.json, `class_names`
    to assets.extra/class_names.txt, one a line: line i names class id i.
    """
    os.makedirs(model_dir, exist_ok=True)
    temporary = tempfile.mkdtemp(prefix=".incomplete-", dir=model_dir)
    try:
        build_archive(model).write_out(temporary, verbose=False)
        error = check_export(temporary, model, check_images)
        os.makedirs(os.path.join(temporary, "assets.extra"))
        if source is not None:
            with open(os.path.join(temporary, "assets.extra", "source.json"), "w") as f:
                json.dump(source, f, indent=2)
        if class_names is not None:
            with open(os.path.join(temporary, "assets.extra", "class_names.txt"), "w") as f:
                f.writelines(f"{name}\n" for name in class_names)
        # Choosing the number only now keeps two exports from claiming the same one
        # for long; os.rename fails rather than overwrite if another export got there first.
        final = os.path.join(model_dir, str(next_version(model_dir)))
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    print(f"exported {final} (max |logit difference| after reload {error:.1e})")
    return final


def run(config, workdir):
    # The stage's or arm's best epoch where robust validation kept one (config.validation.use).
    name = config.export.model
    path = robust_validation.model_file(arms.model_folder(config, workdir, name), config.validation.use)
    if not os.path.exists(path):
        trainer = "compare (or all)" if name in arms.arms(config) else name
        raise UserError(f"{path} does not exist: run --stage {trainer} first, or choose "
                        "another with --config.export.model.")
    with open(path, "rb") as f:
        source = {"model": os.path.abspath(path), "sha256": hashlib.sha256(f.read()).hexdigest()}
    model_dir = os.path.join(workdir, "export", config.export.name)
    latest = os.path.join(model_dir, str(next_version(model_dir) - 1))
    try:
        with open(os.path.join(latest, "assets.extra", "source.json")) as f:
            if json.load(f)["sha256"] == source["sha256"]:
                print(f"export: {latest} already holds {path}; nothing to do.")
                return latest
    except (OSError, ValueError, KeyError):
        pass  # No earlier version, or one without a record: export.
    with run_context(config.seed, "float32"):
        model = keras.models.load_model(path)
        data = datasets.load_config(config.data)
        return export(model, model_dir, data.test.images[:16], source, data.class_names)
