"""Small models for attack tests: a trained CNN, and wrappers of it that mask gradients.

Gradient masking makes a model look robust to gradient attacks (FGSM, PGD) while it is
not: the gradient is zero, vanishes or points nowhere useful, yet the decision boundary
is as close as before. Two classic forms, both wrapping a model without changing its
predictions on clean images:

- `scaled_logits`: logits times a huge constant (1e4). The softmax saturates in float32,
  so the cross-entropy of a correctly classified image is exactly 0 and so is its
  gradient; PGD-CE cannot move, while a scale-invariant loss (APGD-DLR) or a
  gradient-free attack (Square) still can.
- `quantized_input`: the images are rounded to a few grey levels first, by an op whose
  gradient is exactly zero; every gradient attack is blind, only gradient-free attacks
  (Square) see the model.

`trained_cnn` gives the model to wrap: a small CNN trained in a few seconds on
`separable_data` (synthetic 8x8 images, one pattern per class), near 100% clean
accuracy but not robust: PGD at epsilon 0.1 breaks most images.
"""

import keras
import numpy as np
import tensorflow as tf

IMAGE_SHAPE = (8, 8, 3)


def separable_data(count, num_classes=5, seed=0):
    """(images float32 [count, 8, 8, 3] in [0, 1], labels int64 [count]).

    Class c's images are 0.5 + 0.12 * a fixed random +-1 pattern of that class, plus
    uniform noise of +-0.08: separable, yet a perturbation of 0.1 per pixel is enough to
    move an image most of the way to another class's pattern.
    """
    patterns = np.random.default_rng(12345).choice([-1.0, 1.0], (num_classes,) + IMAGE_SHAPE)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, num_classes, count)
    noise = rng.uniform(-0.08, 0.08, (count,) + IMAGE_SHAPE)
    images = np.clip(0.5 + 0.12 * patterns[labels] + noise, 0.0, 1.0)
    return images.astype(np.float32), labels.astype(np.int64)


def small_cnn(num_classes=5, seed=0):
    """Conv(8) - BatchNorm - ReLU - Conv(16, stride 2) - ReLU - Flatten - Dense: logits."""
    keras.utils.set_random_seed(seed)
    images = keras.Input(IMAGE_SHAPE, name="images")
    x = keras.layers.Conv2D(8, 3, padding="same")(images)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(images, keras.layers.Dense(num_classes, name="logits")(x), name="small_cnn")


def trained_cnn(num_classes=5, seed=0, count=512, epochs=8):
    """`small_cnn` trained with cross-entropy on `separable_data(count)` (a few seconds)."""
    model = small_cnn(num_classes, seed)
    images, labels = separable_data(count, num_classes, seed=seed + 1)
    model.compile(optimizer=keras.optimizers.Adam(0.01),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(images, labels, batch_size=64, epochs=epochs, verbose=0, shuffle=False)
    return model


@keras.saving.register_keras_serializable(package="masking_models")
class Scale(keras.layers.Layer):
    """Multiplies its input by a constant."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


@keras.saving.register_keras_serializable(package="masking_models")
class ZeroGradientQuantize(keras.layers.Layer):
    """Rounds [0, 1] images to `levels` grey levels; the gradient through it is exactly 0."""

    def __init__(self, levels, **kwargs):
        super().__init__(**kwargs)
        self.levels = int(levels)

    def call(self, x):
        steps = float(self.levels - 1)
        rounded = tf.stop_gradient(tf.round(x * steps) / steps)
        return rounded + 0.0 * x  # Connected to x, so the gradient is 0, not None.

    def get_config(self):
        return {**super().get_config(), "levels": self.levels}


def scaled_logits(model, factor=1e4):
    """`model` with its logits multiplied by `factor`: same predictions, saturated softmax."""
    images = keras.Input(model.input_shape[1:], name="images")
    return keras.Model(images, Scale(factor, name="scale")(model(images)), name="scaled_logits")


def quantized_input(model, levels=8):
    """`model` on images rounded to `levels` grey levels, with a zero gradient."""
    images = keras.Input(model.input_shape[1:], name="images")
    quantized = ZeroGradientQuantize(levels, name="quantize")(images)
    return keras.Model(images, model(quantized), name="quantized_input")


def accuracy(model, images, labels):
    """Share of images whose argmax logit (inference mode) is the label."""
    logits = model(tf.constant(images), training=False)
    return float(np.mean(np.argmax(np.asarray(logits), axis=-1) == np.asarray(labels)))
