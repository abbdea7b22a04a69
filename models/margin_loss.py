"""The margin-based contrastive loss, in the two forms the paper's description admits.

The paper adds "a margin-based contrastive loss" to SupCon without giving its formula.

`MarginContrastiveLoss` (form "pairwise") is the loss of Hadsell, Chopra and LeCun
(2006), the one `tfa.losses.ContrastiveLoss` computed before TensorFlow Addons reached
its end of life: over all ordered pairs i != j,

    y_ij * d_ij^2 + (1 - y_ij) * max(margin - d_ij, 0)^2

with y_ij = 1 for the same label and d_ij the Euclidean distance between the
L2-normalised embeddings (so d is in [0, 2]); the loss is the mean over all pairs.
Same-class embeddings are pulled together, and different classes pushed apart until
they are `margin` away, after which they cost nothing.

The margin all C classes can keep at once is bounded. With every class pulled to one
point of the unit sphere, the smallest distance between C points is largest when they
are the vertices of a regular simplex centred at the origin (Rankin 1955):

    d_max(C) = sqrt(2C / (C - 1))      (2 for C = 2, 1.49 for C = 10, 1.42 for C = 100)

Above d_max(C) no arrangement costs nothing: C unit vectors have a mean squared pairwise
distance of at most d_max^2, so (Jensen) with each class at one point the term is at least
(margin - d_max)^2, reached by the simplex alone: the negative pairs never stop pushing.
`simplex_distance` gives d_max; the model builder warns when a pairwise margin exceeds it
for the data's number of classes.

The other form ("additive") is SupCon with an additive margin on positive similarities,
`SupConLoss(additive_margin=m)` in `models.supcon_loss`. `make_margin_loss` builds
either from the config. Under tf.distribute both take their pairs from the global batch
(`gather="global"`, see `models.contrast_set`).
"""

import math

import keras
import tensorflow as tf

from models.contrast_set import GATHER_FORMS
from models.contrast_set import contrast_set
from models.supcon_loss import SupConLoss

# Floor under squared distances before the square root: sqrt has an infinite slope at 0.
_SQUARED_DISTANCE_FLOOR = 1e-12


def pairwise_margin_per_anchor(labels, embeddings, margin, gather="global"):
    """Per-anchor losses [n]: each anchor's mean over its N - 1 pairs (float32)."""
    pairs = contrast_set(labels, embeddings, gather)
    same = pairs.same_label
    # For unit vectors |a - b|^2 = 2 - 2 a.b; the floor keeps both it and sqrt's slope finite.
    squared = tf.maximum(2.0 - 2.0 * tf.matmul(pairs.anchors, pairs.contrast, transpose_b=True),
                         _SQUARED_DISTANCE_FLOOR)
    distance = tf.sqrt(squared)
    pair_loss = same * squared + (1.0 - same) * tf.square(tf.nn.relu(margin - distance))
    others = tf.maximum(pairs.contrast_count - 1.0, 1.0)
    return tf.reduce_sum(pair_loss * pairs.not_self, axis=1) / others


def simplex_distance(num_classes):
    """d_max(C) = sqrt(2C / (C - 1)): the largest margin C unit vectors can all keep apart."""
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a margin needs at least two classes.")
    return math.sqrt(2.0 * num_classes / (num_classes - 1.0))


@keras.saving.register_keras_serializable(package="supcon")
class MarginContrastiveLoss(keras.losses.Loss):
    """Hadsell et al. (2006) pairwise margin loss. Call as `loss(labels [N], embeddings [N, D])`.

    Args:
        margin: the distance in [0, 2] beyond which different-class pairs cost nothing.
        gather: "global" (pairs from the global batch under tf.distribute) or "local".
    """

    def __init__(self, margin=1.0, name="margin_loss", gather="global", **kwargs):
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"margin={margin}: distances between unit vectors lie in [0, 2].")
        if gather not in GATHER_FORMS:
            raise ValueError(f"gather={gather!r}: choose one of {', '.join(GATHER_FORMS)}.")
        super().__init__(name=name, dtype="float32", **kwargs)
        self.margin = float(margin)
        self.gather = gather

    def call(self, y_true, y_pred):
        return pairwise_margin_per_anchor(y_true, y_pred, self.margin, self.gather)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin, gather=self.gather)
        return config


MARGIN_FORMS = ("pairwise", "additive")


def make_margin_loss(form, margin, temperature, gather="global"):
    """The margin term chosen by `config.loss.margin_form`."""
    if form == "pairwise":
        return MarginContrastiveLoss(margin, gather=gather)
    if form == "additive":
        return SupConLoss(temperature, additive_margin=margin, name="margin_loss", gather=gather)
    raise ValueError(f"margin form {form!r}: choose one of {', '.join(MARGIN_FORMS)}.")
