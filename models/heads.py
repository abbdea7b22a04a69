"""The two heads on the shared encoder: the projection head (contrastive) and the classifier.

Both produce float32 whatever the mixed-precision policy: the losses need it, and logits
in bfloat16 lose the small differences an attack's gradient depends on.
"""

import keras

from models.resnet import channels


def projection_head(feature_dim, width=1.0, name="projection_head"):
    """MLP 512 -> 512 -> 128 (times `width`), output L2-normalised: the contrastive embedding z."""
    features = keras.Input((feature_dim,), name="features")
    x = keras.layers.Dense(channels(512, width), activation="relu", name=name + "_hidden")(features)
    x = keras.layers.Dense(channels(128, width), name=name + "_out", dtype="float32")(x)
    z = keras.layers.UnitNormalization(name=name + "_normalize", dtype="float32")(x)
    return keras.Model(features, z, name=name)


def classifier(num_classes, name="classifier"):
    """A linear layer from features to logits [B, num_classes] (float32)."""
    return keras.layers.Dense(num_classes, name=name, dtype="float32")
