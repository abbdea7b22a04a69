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

The other form ("additive") is SupCon with an additive margin on positive similarities,
`SupConLoss(additive_margin=m)` in `models.supcon_loss`. `make_margin_loss` builds
either from the config.
"""

import keras
import tensorflow as tf

from models.supcon_loss import SupConLoss

# Floor under squared distances before the square root: sqrt has an infinite slope at 0.
_SQUARED_DISTANCE_FLOOR = 1e-12


def pairwise_margin_per_anchor(labels, embeddings, margin):
    """Per-anchor losses [N]: each anchor's mean over its N - 1 pairs (float32)."""
    z = tf.math.l2_normalize(tf.cast(embeddings, tf.float32), axis=1)
    labels = tf.reshape(labels, [-1])
    count = tf.shape(z)[0]
    not_self = 1.0 - tf.eye(count)
    same = tf.cast(tf.equal(labels[:, None], labels[None, :]), tf.float32)
    # For unit vectors |a - b|^2 = 2 - 2 a.b; the floor keeps both it and sqrt's slope finite.
    squared = tf.maximum(2.0 - 2.0 * tf.matmul(z, z, transpose_b=True), _SQUARED_DISTANCE_FLOOR)
    distance = tf.sqrt(squared)
    pair_loss = same * squared + (1.0 - same) * tf.square(tf.nn.relu(margin - distance))
    pairs = tf.cast(tf.maximum(count - 1, 1), tf.float32)
    return tf.reduce_sum(pair_loss * not_self, axis=1) / pairs


@keras.saving.register_keras_serializable(package="supcon")
class MarginContrastiveLoss(keras.losses.Loss):
    """Hadsell et al. (2006) pairwise margin loss. Call as `loss(labels [N], embeddings [N, D])`.

    Args:
        margin: the distance in [0, 2] beyond which different-class pairs cost nothing.
    """

    def __init__(self, margin=1.0, name="margin_loss", **kwargs):
        if not 0.0 <= margin <= 2.0:
            raise ValueError(f"margin={margin}: distances between unit vectors lie in [0, 2].")
        super().__init__(name=name, dtype="float32", **kwargs)
        self.margin = float(margin)

    def call(self, y_true, y_pred):
        return pairwise_margin_per_anchor(y_true, y_pred, self.margin)

    def get_config(self):
        config = super().get_config()
        config.update(margin=self.margin)
        return config


MARGIN_FORMS = ("pairwise", "additive")


def make_margin_loss(form, margin, temperature):
    """The margin term chosen by `config.loss.margin_form`."""
    if form == "pairwise":
        return MarginContrastiveLoss(margin)
    if form == "additive":
        return SupConLoss(temperature, additive_margin=margin, name="margin_loss")
    raise ValueError(f"margin form {form!r}: choose one of {', '.join(MARGIN_FORMS)}.")
