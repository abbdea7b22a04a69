"""Supervised contrastive loss (Khosla et al., 2020, "Supervised Contrastive Learning").

The L_out form, for anchor i with positives P(i) (same label, not i) and temperature t:

    l_i = -1/|P(i)| * sum_{p in P(i)} log( exp(z_i.z_p / t) / sum_{a != i} exp(z_i.z_a / t) )

and the loss is the mean of l_i over all N anchors. An anchor with no positive in the
batch contributes 0 and still counts in that mean (dividing by |P(i)| = 0 is what gave
NaN in SupContrast issue #141).

`additive_margin` > 0 subtracts a margin m from every positive pair's similarity,
z_i.z_p - m, wherever it appears, as CosFace (Wang et al., 2018) does for the target
class: positives must then beat the negatives by m to reach the same loss. This is one
of the two margin forms this project offers (see `models.margin_loss`).

Under tf.distribute the anchors are the replica's and the positives and negatives come
from the global batch (`gather="global"`, see `models.contrast_set`).
"""

import keras
import tensorflow as tf

from models.contrast_set import GATHER_FORMS
from models.contrast_set import contrast_set


def supcon_per_anchor(labels, embeddings, temperature, additive_margin=0.0, gather="global"):
    """Per-anchor SupCon losses [n] from int labels [n] and embeddings [n, D], in float32."""
    pairs = contrast_set(labels, embeddings, gather)
    not_self = pairs.not_self
    positives = pairs.same_label * not_self
    similarity = (tf.matmul(pairs.anchors, pairs.contrast, transpose_b=True)
                  - additive_margin * positives)
    logits = similarity / temperature
    # Subtracting each row's maximum changes nothing mathematically and keeps exp finite.
    logits -= tf.stop_gradient(tf.reduce_max(logits, axis=1, keepdims=True))
    log_denominator = tf.math.log(tf.reduce_sum(tf.exp(logits) * not_self, axis=1, keepdims=True))
    log_probability = logits - log_denominator
    positive_count = tf.reduce_sum(positives, axis=1)
    summed = tf.reduce_sum(positives * log_probability, axis=1)
    return -tf.math.divide_no_nan(summed, positive_count)


@keras.saving.register_keras_serializable(package="supcon")
class SupConLoss(keras.losses.Loss):
    """SupCon L_out. Call as `loss(labels [N], embeddings [N, D])`; returns the mean over anchors.

    Args:
        temperature: t > 0 in the formula above (SupCon uses 0.1 for CIFAR).
        additive_margin: m >= 0 subtracted from positive similarities (0 gives plain SupCon).
        gather: "global" (contrast with the global batch under tf.distribute) or "local".
    """

    def __init__(self, temperature=0.1, additive_margin=0.0, name="supcon_loss", gather="global",
                 **kwargs):
        if temperature <= 0:
            raise ValueError(f"temperature={temperature}: must be > 0.")
        if additive_margin < 0:
            raise ValueError(f"additive_margin={additive_margin}: must be >= 0.")
        if gather not in GATHER_FORMS:
            raise ValueError(f"gather={gather!r}: choose one of {', '.join(GATHER_FORMS)}.")
        super().__init__(name=name, dtype="float32", **kwargs)
        self.temperature = float(temperature)
        self.additive_margin = float(additive_margin)
        self.gather = gather

    def call(self, y_true, y_pred):
        return supcon_per_anchor(y_true, y_pred, self.temperature, self.additive_margin, self.gather)

    def get_config(self):
        config = super().get_config()
        config.update(temperature=self.temperature, additive_margin=self.additive_margin,
                      gather=self.gather)
        return config
