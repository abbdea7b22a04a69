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

Adversarial training: given an `adversary` (`training.adversary.Adversary`, injected so
that this module needs no attack code), `train_step` first crafts an adversarial image
x' of every view, outside the gradient tape, and then trains on them:

- cross-entropy on the adversarial images (`ce_on="adversarial"`, Madry et al.) or on
  the clean and adversarial images together (`ce_on="both"`);
- with contrastive terms, each x' joins the contrast set as a further view: its own clean
  views and every same-class image are its positives, and the margin term sees it too
  (as ASCL, Bui et al. 2021, puts adversarial embeddings beside the clean ones);
- TRADES (`adversary.trades_beta` > 0): CE on the clean images plus
  beta * KL(f(x) || f(x')), tracked as `trades_loss`.

Clean and adversarial images share one forward pass when both are needed (so BatchNorm
normalises them with the statistics of both).

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

TERMS = ("ce_loss", "supcon_loss", "margin_loss", "trades_loss")
CE_ON = ("adversarial", "both")


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
        adversary: None, or a callable adversary(model, images, labels, step) -> adversarial
            images (`training.adversary.Adversary`) for adversarial training; its
            `trades_beta` weighs TRADES' KL term.
        ce_on: under adversarial training, "adversarial" or "both" (clean and adversarial).
    """

    def __init__(self, encoder, classifier, projection_head=None, supcon_loss=None,
                 margin_loss=None, ce_weight=1.0, supcon_weight=0.0, margin_weight=0.0,
                 adversary=None, ce_on="adversarial", **kwargs):
        super().__init__(**kwargs)
        if ce_on not in CE_ON:
            raise ValueError(f"ce_on={ce_on!r}: choose one of {', '.join(CE_ON)}.")
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
        self.adversary = adversary
        self.ce_on = ce_on
        trades_beta = float(getattr(adversary, "trades_beta", 0.0) or 0.0)
        self.weights_by_term = {"ce_loss": float(ce_weight), "supcon_loss": float(supcon_weight),
                                "margin_loss": float(margin_weight)}
        if trades_beta:
            self.weights_by_term["trades_loss"] = trades_beta
        self.uses_embedding = bool(supcon_weight or margin_weight)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.term_trackers = {term: keras.metrics.Mean(name=term) for term in TERMS
                              if term == "ce_loss" or self.weights_by_term.get(term)}
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

    def logits(self, images, training=False):
        """Images [N, H, W, C] in [0, 1] -> logits: what the adversary attacks."""
        return self.classifier(self.encoder(images, training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """The weighted sum of the terms; also records each term in its tracker.

        `y_pred` holds "logits" (of the images `y` labels) and, for the contrastive terms,
        "embedding"; under adversarial training "contrast_labels" (the embeddings' labels,
        when they are not `y`'s) and "trades_loss" (TRADES' KL term) too.
        """
        terms = {"ce_loss": self.cross_entropy(y, y_pred["logits"])}
        contrast_labels = y_pred.get("contrast_labels", y)
        if self.weights_by_term["supcon_loss"]:
            terms["supcon_loss"] = self.supcon_loss(contrast_labels, y_pred["embedding"])
        if self.weights_by_term["margin_loss"]:
            terms["margin_loss"] = self.margin_loss(contrast_labels, y_pred["embedding"])
        if "trades_loss" in y_pred:
            terms["trades_loss"] = y_pred["trades_loss"]
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
        adversarial = None
        if self.adversary is not None:
            # Before the tape: crafting is not part of what the weights are trained through.
            adversarial = self.adversary(self, images, labels, self.optimizer.iterations)
            adversarial, _ = flatten_views(adversarial, labels)
        images, labels = flatten_views(images, labels)
        with tf.GradientTape() as tape:
            if adversarial is None:
                outputs = self(images, training=True)
                loss = self.compute_loss(y=labels, y_pred=outputs, training=True)
            else:
                outputs, loss = self._adversarial_loss(images, adversarial, labels)
            # A no-op except under mixed_float16, where Keras wraps the optimiser in a
            # LossScaleOptimizer; `apply` then unscales the gradients.
            scaled_loss = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        self.optimizer.apply(tape.gradient(scaled_loss, variables), variables)
        return self._update_metrics(loss, outputs.get("labels", labels), outputs, learning_rate=True)

    def _adversarial_loss(self, images, adversarial, labels):
        """(outputs for the metrics, loss) of a batch and its adversarial images; see the
        module docstring for what each term sees."""
        trades = "trades_loss" in self.weights_by_term
        with_clean = self.uses_embedding or self.ce_on == "both" or trades
        if not with_clean:
            outputs = self(adversarial, training=True)
            return outputs, self.compute_loss(y=labels, y_pred=outputs, training=True)
        count = tf.shape(labels)[0]
        both = self(tf.concat([images, tf.cast(adversarial, images.dtype)], axis=0), training=True)
        both_labels = tf.concat([labels, labels], axis=0)
        clean_logits, adversarial_logits = both["logits"][:count], both["logits"][count:]
        if trades:
            # KL(f(x) || f(x')) per image, averaged over the global batch like Keras's losses.
            clean = tf.cast(clean_logits, tf.float32)
            divergence = tf.reduce_sum(tf.nn.softmax(clean) * (
                tf.nn.log_softmax(clean) - tf.nn.log_softmax(tf.cast(adversarial_logits, tf.float32))),
                axis=-1)
            predictions = {"logits": clean_logits,
                           "trades_loss": tf.reduce_mean(divergence) / replicas_in_sync()}
            ce_labels = labels
        elif self.ce_on == "both":
            predictions, ce_labels = {"logits": both["logits"]}, both_labels
        else:
            predictions, ce_labels = {"logits": adversarial_logits}, labels
        if self.uses_embedding:
            predictions.update(embedding=both["embedding"], contrast_labels=both_labels)
        loss = self.compute_loss(y=ce_labels, y_pred=predictions, training=True)
        return {"logits": predictions["logits"], "labels": ce_labels}, loss

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
