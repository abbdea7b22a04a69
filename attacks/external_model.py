"""A classifier this project did not train, made into what the attacks need.

`ExternalModel(name, path, ...)` is a `.keras` file or a SavedModel folder with what it is
declared to take and return; `load()` opens it and gives an `ExternalClassifier`, a
callable from float32 images [N, H, W, C] in [0, 1] to float32 logits [N, K],
differentiable with respect to the images and always in inference mode, which the
evaluator, the attacks and ART call as they call the project's own models.

What the model takes (`inputs`, declared; a dtype that contradicts it is refused):

- "float01": float32 images in [0, 1] (the default, as the project's models);
- "float255": float32 images in [0, 255]: the images are multiplied by 255 inside;
- "uint8": uint8 pixels. A cast to an integer type has no gradient, so through it FGSM,
  PGD and APGD would see zero gradients and overstate the robustness. For a `.keras`
  model the same layers are called on a float32 input instead (a uint8 input is cast to
  float by its first layer, so the values it computes are the same; checked on the first
  test images by `check_outputs`), fed `round(255 x)` with the rounding's gradient taken
  as 1 (straight-through, the BPDA of Athalye, Carlini and Wagner, 2018): the model sees
  exactly the uint8 image a client would send, the attacks a gradient. A SavedModel's
  uint8 signature is a graph whose cast cannot be bypassed: it is refused, naming the
  float signatures the SavedModel has (this project's exports have `serve_float`).

What it returns (`outputs`, declared): "logits" (assumed), or "probabilities", whose
logarithm is then used as logits (softmax(log p) = p: the cross-entropy is unchanged,
and DLR, invariant to a shift of the logits, too). `check_outputs` refuses outputs that
contradict the declaration (rows in [0, 1] summing to 1 declared as logits, or the
reverse) and a number of classes other than the data's. The classes must be in the
data's order (CIFAR-10's, also the sorted folder names of an image folder).

`content_sha256(path)` identifies a model file or folder by content, for the records.
"""

import dataclasses
import hashlib
import os

import keras
import numpy as np
import tensorflow as tf

from common.errors import UserError

SAVED_MODEL = "savedmodel"
KERAS = "keras"
_SCALES = {"float01": 1.0, "float255": 255.0, "uint8": 255.0}
# log() of a probability that underflowed to 0 in float32: the smallest normal float32.
_TINY = float(np.finfo(np.float32).tiny)


def content_sha256(path):
    """The sha256 of a file, or of a folder's files (their relative paths and contents)."""
    def file_digest(name):
        digest = hashlib.sha256()
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    if os.path.isfile(path):
        return file_digest(path)
    digest = hashlib.sha256()
    for folder, subfolders, names in os.walk(path):
        subfolders.sort()
        for name in sorted(names):
            full = os.path.join(folder, name)
            digest.update(os.path.relpath(full, path).encode() + b"\0" + file_digest(full).encode())
    return digest.hexdigest()


def default_name(path):
    """A model's name from its path: the file name without .keras, or the folder's name
    (`supcon_resnet18-1` for a TF Serving version folder `.../supcon_resnet18/1`)."""
    path = os.path.normpath(path)
    name = os.path.basename(path)
    if name.endswith(".keras"):
        name = name[:-len(".keras")]
    if name.isdigit():
        name = f"{os.path.basename(os.path.dirname(path))}-{name}"
    return "".join(c if c.isalnum() or c in "_.-" else "_" for c in name).lstrip(".") or "model"


@dataclasses.dataclass
class ExternalModel:
    """A classifier file and what it is declared to take and return (config.external)."""

    name: str
    path: str
    inputs: str = "float01"
    outputs: str = "logits"
    signature: str = "serving_default"
    image_size: int = 0  # 0: as the model says
    channels: int = 0

    @property
    def kind(self):
        return KERAS if os.path.isfile(self.path) else SAVED_MODEL

    def check_path(self):
        """Raises UserError unless the path is a .keras file or a SavedModel folder (no TensorFlow)."""
        if not os.path.exists(self.path):
            raise UserError(f"--model={self.path}: no such file or folder; give a .keras file or a "
                            "SavedModel folder (the one holding saved_model.pb).")
        if os.path.isfile(self.path):
            if not self.path.endswith(".keras"):
                raise UserError(f"--model={self.path}: not a .keras file; give a model saved by "
                                "model.save('NAME.keras') or a SavedModel folder.")
            return
        if not os.path.exists(os.path.join(self.path, "saved_model.pb")):
            versions = sorted((name for name in os.listdir(self.path) if name.isdigit()), key=int)
            hint = (f"; it holds the TF Serving version folder(s) {', '.join(versions)}: give one, "
                    f"e.g. --model={os.path.join(self.path, versions[-1])}") if versions else ""
            raise UserError(f"--model={self.path}: a folder without saved_model.pb, so not a "
                            f"SavedModel{hint}.")

    def describe(self):
        """What results.json says about it."""
        return {"path": os.path.abspath(self.path), "format": self.kind, "inputs": self.inputs,
                "outputs": self.outputs + (" (assumed: declare probabilities with "
                                           "--model_outputs=probabilities)"
                                           if self.outputs == "logits" else ""),
                **({"signature": self.signature} if self.kind == SAVED_MODEL else {})}

    def key(self):
        """What changes its results besides its content (part of each record's key)."""
        key = {"inputs": self.inputs, "outputs": self.outputs}
        if self.kind == SAVED_MODEL:
            key["signature"] = self.signature
        return key

    def load(self):
        """The ExternalClassifier; UserError for a file that is not a usable classifier."""
        self.check_path()
        if self.kind == KERAS:
            return _keras_classifier(self)
        return _saved_model_classifier(self)


class ExternalClassifier:
    """float32 images in [0, 1] -> float32 logits, inference mode, differentiable (see the module).

    Attributes:
        image_shape: (H, W, C) the model takes, None for a size it leaves open.
        reference: for uint8 Keras models, the model called as a client would (uint8 in),
            to check that the float path computes the same.
    """

    def __init__(self, spec, forward, image_shape, reference=None, keep=None):
        self.spec = spec
        self.image_shape = tuple(image_shape)
        self._forward = forward
        self.reference = reference
        self._keep = keep  # a loaded SavedModel must outlive its functions

    def _model_inputs(self, images):
        images = tf.cast(images, tf.float32) * _SCALES[self.spec.inputs]
        if self.spec.inputs == "uint8":
            # The pixels a client would send, with the rounding's gradient taken as 1.
            images = images + tf.stop_gradient(tf.round(images) - images)
        return images

    def __call__(self, images, training=False):
        del training  # Always inference: the attacks must see the deployed model.
        outputs = tf.cast(self._forward(self._model_inputs(images)), tf.float32)
        if self.spec.outputs == "probabilities":
            return tf.math.log(tf.maximum(outputs, _TINY))
        return outputs


def _refuse(spec, problem):
    raise UserError(f"--model={spec.path}: {problem}")


def _check_dtype(spec, dtype, where):
    """The declared inputs against the dtype the model's input has."""
    if dtype == tf.uint8 and spec.inputs != "uint8":
        _refuse(spec, f"{where} takes uint8 images, but --model_inputs={spec.inputs}; add "
                      "--model_inputs=uint8.")
    if dtype != tf.uint8 and spec.inputs == "uint8":
        _refuse(spec, f"{where} takes {dtype.name} images, not uint8; use --model_inputs=float255 "
                      "for pixels 0..255 as floats, or float01 for [0, 1].")
    if dtype != tf.uint8 and not dtype.is_floating:
        _refuse(spec, f"{where} takes {dtype.name} images; only float or uint8 images can be attacked.")


def _image_shape(spec, shape, where):
    if len(shape) != 4:
        _refuse(spec, f"{where} takes inputs of shape {tuple(shape)}, not images [N, H, W, C].")
    return tuple(None if d is None else int(d) for d in shape[1:])


def _keras_classifier(spec):
    try:
        model = keras.models.load_model(spec.path, compile=False)
    except Exception as error:  # Whatever the file holds, it is the user's file that failed.
        _refuse(spec, f"cannot be loaded as a Keras model ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}); a model with custom "
                      "layers needs them registered, or export it as a SavedModel.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        _refuse(spec, f"has {len(model.inputs)} inputs and {len(model.outputs)} outputs; a "
                      "classifier with one image input and one output is needed.")
    where = f"its input {model.inputs[0].name!r}"
    dtype = tf.as_dtype(model.inputs[0].dtype)
    _check_dtype(spec, dtype, where)
    shape = _image_shape(spec, model.inputs[0].shape, where)
    if spec.inputs != "uint8":
        return ExternalClassifier(spec, lambda x: model(x, training=False), shape)
    try:
        # The same layers on a float32 input (see the module docstring).
        float_model = keras.models.clone_model(
            model, input_tensors=keras.Input(model.inputs[0].shape[1:], dtype="float32"),
            clone_function=lambda layer: layer)
    except Exception as error:
        _refuse(spec, f"takes uint8 images, through which no gradient flows, and its layers could "
                      f"not be called on float pixels instead ({type(error).__name__}); save it "
                      "with a float32 input (e.g. a Rescaling layer first) and --model_inputs=float255.")
    return ExternalClassifier(spec, lambda x: float_model(x, training=False), shape,
                              reference=lambda pixels: model(pixels, training=False))


def _saved_model_classifier(spec):
    try:
        loaded = tf.saved_model.load(spec.path)
    except Exception as error:
        _refuse(spec, f"cannot be loaded as a SavedModel ({type(error).__name__}: "
                      f"{str(error).splitlines()[0] if str(error) else ''}).")
    signatures = dict(loaded.signatures)
    if spec.signature not in signatures:
        _refuse(spec, f"has no signature {spec.signature!r}; it has "
                      f"{', '.join(sorted(signatures)) or 'none'} (--model_signature=NAME).")
    function = signatures[spec.signature]
    args, kwargs = function.structured_input_signature
    specs = list(args) + list(kwargs.values())
    if len(specs) != 1:
        _refuse(spec, f"its signature {spec.signature!r} takes {len(specs)} inputs "
                      f"({', '.join(kwargs)}); a classifier with one image input is needed.")
    key, input_spec = next(iter(kwargs.items()))
    where = f"its signature {spec.signature!r}"
    if input_spec.dtype == tf.uint8:
        floats = [name for name, other in sorted(signatures.items())
                  if len(other.structured_input_signature[1]) == 1
                  and next(iter(other.structured_input_signature[1].values())).dtype.is_floating]
        _refuse(spec, f"{where} takes uint8 images, through which no gradient flows (FGSM, PGD and "
                      "APGD would see zero gradients and overstate its robustness); "
                      + (f"call a float signature it has, --model_signature={floats[0]} (with the "
                         "--model_inputs it expects)" if floats else
                         "export it with a float32 signature too, or give the .keras model")
                      + ".")
    _check_dtype(spec, input_spec.dtype, where)
    shape = _image_shape(spec, input_spec.shape, where)
    outputs = function.structured_outputs
    if not isinstance(outputs, dict):
        outputs = {"output_0": outputs}
    names = sorted(outputs)
    if len(names) == 1:
        output = names[0]
    elif spec.outputs in outputs:
        output = spec.outputs  # "logits" or "probabilities", as this project's exports name them
    else:
        _refuse(spec, f"{where} returns {', '.join(names)}; give a model with one output, or one "
                      f"named {spec.outputs!r}.")
    dtype = input_spec.dtype

    def forward(x):
        return function(**{key: tf.cast(x, dtype)})[output]

    return ExternalClassifier(spec, forward, shape, keep=loaded)


def check_image_shape(classifier, data_size, data_channels):
    """Raises UserError unless the model, its declaration and the data agree on the image shape.

    `data_size` and `data_channels` are config.data.image_size and channels (the data are
    fitted to them). Returns the (H, W, C) the model is evaluated at.
    """
    spec = classifier.spec
    declared = (spec.image_size or None, spec.image_size or None, spec.channels or None)
    for model_dim, declared_dim in zip(classifier.image_shape, declared):
        if model_dim is not None and declared_dim is not None and model_dim != declared_dim:
            _refuse(spec, f"takes {_shape_text(classifier.image_shape)} images, not "
                          f"{_shape_text(declared)} as --model_image_size/--model_channels say.")
    wanted = tuple(m if m is not None else d for m, d in zip(classifier.image_shape, declared))
    data = (data_size, data_size, data_channels)
    if any(w is not None and w != d for w, d in zip(wanted, data)):
        _refuse(spec, f"takes {_shape_text(wanted)} images but the data are {_shape_text(data)} "
                      f"(--config.data.image_size={data_size}, --config.data.channels="
                      f"{data_channels}); set those to the model's size (the data are resized to "
                      "fit), or give a model of the data's.")
    return data


def _shape_text(shape):
    return "x".join("?" if d is None else str(d) for d in shape)


def check_outputs(classifier, images, labels, num_classes):
    """Raises UserError when the model's outputs on `images` (float32 in [0, 1]) contradict
    what was declared, or its classes are not the data's `num_classes`; returns its accuracy
    on them against `labels`."""
    spec = classifier.spec
    raw = classifier._forward(classifier._model_inputs(tf.constant(images, tf.float32)))
    raw = np.asarray(tf.cast(raw, tf.float32))
    if raw.ndim != 2:
        _refuse(spec, f"returns outputs of shape {raw.shape}; a classifier returns [N, classes].")
    if raw.shape[1] != num_classes:
        _refuse(spec, f"returns {raw.shape[1]} classes, the data have {num_classes}; the model "
                      "must score the data's classes, in the data's order.")
    if not np.all(np.isfinite(raw)):
        _refuse(spec, "returns NaN or infinite outputs on the test images.")
    probabilities = bool(np.all(raw >= 0) and np.all(raw <= 1)
                         and np.allclose(raw.sum(axis=1), 1.0, atol=1e-3))
    if spec.outputs == "logits" and probabilities:
        _refuse(spec, "returns probabilities (every row in [0, 1], summing to 1), not logits; add "
                      "--model_outputs=probabilities.")
    if spec.outputs == "probabilities" and not probabilities:
        _refuse(spec, f"was declared to return probabilities, but its rows sum to "
                      f"{raw.sum(axis=1).min():.3g}..{raw.sum(axis=1).max():.3g} (values "
                      f"{raw.min():.3g}..{raw.max():.3g}): logits? Drop --model_outputs=probabilities.")
    if classifier.reference is not None:
        pixels = np.round(np.asarray(images, np.float32) * 255.0)
        expected = np.asarray(tf.cast(classifier.reference(tf.constant(pixels.astype(np.uint8))),
                                      tf.float32))
        scale = max(1.0, float(np.max(np.abs(expected))))
        if not np.allclose(raw, expected, rtol=0, atol=1e-4 * scale):
            _refuse(spec, "takes uint8 images and its layers give other outputs on the same pixels "
                          "as float32 (a layer depends on the integer type); save it with a float32 "
                          "input and use --model_inputs=float255.")
    return float(np.mean(raw.argmax(axis=1) == np.asarray(labels)))
