"""ResNet-18, CIFAR variant (He et al., 2016, as SupCon and most CIFAR work use it).

A 3x3 stride-1 stem without max-pooling, four stages of two BasicBlocks with widths
64, 128, 256 and 512 times `width` (1.0 is the paper's network; 0.25 trains about 12x
faster on a CPU), and global average pooling. The first layer normalises by the data
set's per-channel mean and standard deviation, so the encoder takes float32 images in
[0, 1] (named `images`) and attack epsilons stay in pixel units.
"""

import keras
import numpy as np

from models.fused_batchnorm import FusedBatchNormalization

STAGE_WIDTHS = (64, 128, 256, 512)


def channels(base, width):
    """Channels of a layer whose full-width count is `base`, at least 8."""
    return max(8, int(round(base * width)))


def _conv_bn(x, filters, kernel, stride, name, relu=True, synchronized=False):
    x = keras.layers.Conv2D(filters, kernel, stride, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name=name + "_conv")(x)
    # PyTorch's defaults (momentum 0.1 there, 0.9 here; eps 1e-5), which SupCon trained with.
    # synchronized: under tf.distribute, statistics of the global batch (all replicas).
    x = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=synchronized,
                                name=name + "_bn")(x)
    # The ReLU is the BatchNorm's only reader, which lets TensorFlow fuse the two into one op.
    return keras.layers.ReLU(name=name + "_relu")(x) if relu else x


def basic_block(x, filters, stride, name, synchronized=False):
    """Two 3x3 convolutions with a residual connection (a 1x1 projection when the shape changes)."""
    shortcut = x
    x = _conv_bn(x, filters, 3, stride, name + "_1", synchronized=synchronized)
    x = _conv_bn(x, filters, 3, 1, name + "_2", relu=False, synchronized=synchronized)
    if stride != 1 or shortcut.shape[-1] != filters:
        shortcut = _conv_bn(shortcut, filters, 1, stride, name + "_shortcut", relu=False,
                            synchronized=synchronized)
    x = keras.layers.Add(name=name + "_add")([x, shortcut])
    return keras.layers.ReLU(name=name + "_out")(x)


def resnet18(image_shape, mean, std, width=1.0, name="encoder", sync_batchnorm=False):
    """The encoder: float32 images [B, H, W, C] in [0, 1] -> features [B, 512 * width].

    Args:
        image_shape: (H, W, C).
        mean, std: per-channel statistics of the training images, in [0, 1] units.
        width: multiplier of every stage's channels.
        sync_batchnorm: BatchNormalization over the global batch under tf.distribute
            (`models.fused_batchnorm`); without it each replica normalises by its own
            share and keeps moving statistics that drift apart from the others'.
    """
    images = keras.Input(image_shape, name="images")
    x = keras.layers.Normalization(mean=np.asarray(mean, np.float32),
                                   variance=np.square(np.asarray(std, np.float32)),
                                   name="normalize")(images)
    x = _conv_bn(x, channels(64, width), 3, 1, "stem", synchronized=sync_batchnorm)
    for stage, base in enumerate(STAGE_WIDTHS):
        for block in range(2):
            stride = 2 if (stage > 0 and block == 0) else 1
            x = basic_block(x, channels(base, width), stride, f"stage{stage + 1}_block{block + 1}",
                            synchronized=sync_batchnorm)
    features = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(images, features, name=name)
