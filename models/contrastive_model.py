"""The training model: one encoder, a classifier and a projection head, trained jointly.

The loss is the paper's joint form,

    total = ce_weight * CE(logits) + supcon_weight * SupCon(z) + margin_weight * Margin(z),

with z the projection head's L2-normalised embedding. Each term is reported as its own
metric (`ce_loss`, `supcon_loss`, `margin_loss`) next to `loss`, `accuracy` and the
learning rate. With both contrastive weights at 0 and no projection head this is plain
cross-entropy training (the `baseline` and `finetune` stages).

A batch is `(images, labels)`; images [B, V, H, W, C] hold V augmented views of each
image, which are stacked along the batch (view-major) before the forward pass, and the
labels repeated, so each view's positives include the other views of its image.

Under tf.distribute (`training.distributed_loop` runs `train_step` in each replica) the
step sees the replica's share of the global batch. Keras's losses then return their
value divided by the number of replicas, so that the optimiser's sum of the replicas'
gradients is the gradient of the global mean; the contrastive terms compare the
replica's anchors with the global batch (`models.contrast_set`). The trackers record
each term times the replica count (its value on the replica's share), weighted by the
share's size, so that reading them sums the replicas into the global batch's mean.
"""

import keras
import tensorflow as tf

TERMS = ("ce_loss", "supcon_loss", "margin_loss")


def replicas_in_sync():
    """The replicas sharing a step: what Keras's losses divide by (and 1 on one device)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def flatten_views(images, labels):
    """[B, V, H, W, C] and [B] -> [V*B, H, W, C] and [V*B]; rank-4 input passes through."""
    if images.shape.rank != 5:
        return images, labels
    views = images.shape[1]
    return tf.concat(tf.unstack(images, axis=1), axis=0), tf.tile(labels, [views])


class ContrastiveModel(keras.Model):
    """Trains `encoder` + `classifier` (+ `projection_head`) on the weighted sum of losses.

    Args:
        encoder: a model from images to features.
        classifier: a layer from features to logits.
        projection_head: a model from features to embeddings; needed when a contrastive
            weight is > 0.
        supcon_loss, margin_loss: `keras.losses.Loss` instances called as loss(labels, z).
        ce_weight, supcon_weight, margin_weight: the weights of the three terms.
    """

    def __init__(self, encoder, classifier, projection_head=None, supcon_loss=None,
                 margin_loss=None, ce_weight=1.0, supcon_weight=0.0, margin_weight=0.0, **kwargs):
        super().__init__(**kwargs)
        if min(ce_weight, supcon_weight, margin_weight) < 0:
            raise ValueError("loss weights must be >= 0.")
        if (supcon_weight and supcon_loss is None) or (margin_weight and margin_loss is None):
            raise ValueError("a contrastive term with weight > 0 needs its loss.")
        if (supcon_weight or margin_weight) and projection_head is None:
            raise ValueError("the contrastive terms need a projection head.")
        self.encoder = encoder
        self.classifier = classifier
        self.projection_head = projection_head
        self.cross_entropy = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.supcon_loss = supcon_loss
        self.margin_loss = margin_loss
        self.weights_by_term = {"ce_loss": float(ce_weight), "supcon_loss": float(supcon_weight),
                                "margin_loss": float(margin_weight)}
        self.uses_embedding = bool(supcon_weight or margin_weight)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = {term: keras.metrics.Mean(name=term) for term in TERMS
                              if term == "ce_loss" or self.weights_by_term[term]}
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    @property
    def metrics(self):
        return [self.loss_tracker, *self.term_trackers.values(), self.accuracy_tracker]

    def call(self, images, training=False):
        features = self.encoder(images, training=training)
        outputs = {"logits": self.classifier(features)}
        if self.uses_embedding:
            outputs["embedding"] = self.projection_head(features, training=training)
        return outputs

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted sum of the terms; also records each term in its tracker."""
        terms = {"ce_loss": self.cross_entropy(y, y_pred["logits"])}
        if self.weights_by_term["supcon_loss"]:
            terms["supcon_loss"] = self.supcon_loss(y, y_pred["embedding"])
        if self.weights_by_term["margin_loss"]:
            terms["margin_loss"] = self.margin_loss(y, y_pred["embedding"])
        total = tf.add_n([self.weights_by_term[name] * value for name, value in terms.items()])
        if self.losses:
            # Per replica, like the terms: the replicas' gradients are summed.
            regularisation = tf.add_n([tf.cast(loss, tf.float32) for loss in self.losses])
            total += regularisation / replicas_in_sync()
        examples = tf.shape(y)[0]
        for name, value in terms.items():
            self.term_trackers[name].update_state(value * replicas_in_sync(), sample_weight=examples)
        return total

    def train_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, labels = flatten_views(images, labels)
        with tf.GradientTape() as tape:
            outputs = self(images, training=True)
            loss = self.compute_loss(y=labels, y_pred=outputs, training=True)
            # A no-op except under mixed_float16, where Keras wraps the optimiser in a
            # LossScaleOptimizer; `apply` then unscales the gradients.
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        return self._update_metrics(loss, labels, outputs, learning_rate=True)

    def test_step(self, data):
        images, labels, _ = keras.utils.unpack_x_y_sample_weight(data)
        images, labels = flatten_views(images, labels)
        outputs = self(images, training=False)
        loss = self.compute_loss(y=labels, y_pred=outputs, training=False)
        return self._update_metrics(loss, labels, outputs)

    def _update_metrics(self, loss, labels, outputs, learning_rate=False):
        self.loss_tracker.update_state(loss * replicas_in_sync(), sample_weight=tf.shape(labels)[0])
        self.accuracy_tracker.update_state(labels, outputs["logits"])
        logs = {metric.name: metric.result() for metric in self.metrics}
        if learning_rate:
            logs["learning_rate"] = self.optimizer.learning_rate
        return logs

    def classifier_model(self, name="classifier_model"):
        """A functional model images [B, H, W, C] in [0, 1] -> logits, sharing these weights."""
        images = keras.Input(self.encoder.inputs[0].shape[1:], name="images")
        return keras.Model(images, self.classifier(self.encoder(images)), name=name)
