"""BatchNormalization on TensorFlow's fused op (FusedBatchNormV3), in the layer's compute dtype.

For each channel of x [B, H, W, C], over its n = B * H * W values:

    training:   y = gamma * (x - mean) / sqrt(variance + epsilon) + beta, with the batch's
                mean and biased variance (squared deviations summed, divided by n); then
                moving_mean     <- moving_mean * momentum + mean * (1 - momentum)
                moving_variance <- moving_variance * momentum + variance * (1 - momentum)
    inference:  the same with moving_mean and moving_variance, which stay as they are.

That is what `keras.layers.BatchNormalization` computes, with the same weights (gamma,
beta, moving_mean, moving_variance: that order, shape [C], float32), so `set_weights`
works in both directions. Why another layer: on TensorFlow, Keras 3 builds the layer from
about ten element-wise ops forward and fifteen backward, all in float32, and under
mixed_bfloat16 casts the whole tensor in and out (keras/src/layers/normalization/
batch_normalization.py). FusedBatchNormV3 is one op forward and one backward (oneDNN's
kernels on a CPU) that read and write the compute dtype, bfloat16 under mixed_bfloat16,
while the statistics and parameters stay float32. With oneDNN (and on a GPU), grappler's
remapper also folds a Relu that is the op's only reader into it (`_FusedBatchNormEx`:
oneDNN's batch normalisation with a fused ReLU; tensorflow/core/grappler/optimizers/
remapper.cc, FindFusedBatchNormEx), so `models.resnet` puts its ReLU layer directly after
this one. bench/README.md has the speed and what oneDNN runs.

Three details keep it equal to Keras's layer:
- In training the op's batch variance output is the unbiased one (times n / (n - 1)).
  Keras moves its moving variance with the biased one, so the layer takes the factor out.
- The layer updates the moving statistics itself, with Keras's formula: the op's own
  moving average (`exponential_avg_factor`) would use the unbiased variance.
- It calls the op through `tf.raw_ops`: `tf.compat.v1.nn.fused_batch_norm` raises epsilon
  to 1.001e-5 (an old cuDNN limit), which would change the output of any channel whose
  variance is near zero.

Under several replicas the op sees only its own replica's share of the batch. With
`synchronized=True` a training-mode call there takes Keras's own path with the moments of
the global batch in two passes (`models.sync_batchnorm`). One class for one replica and
for several keeps a checkpoint (BackupAndRestore, whose layout follows the layers'
classes) restorable under any number of replicas. Whatever else the op cannot do (a mask,
batch renormalisation, an input that is not 4-D with the channels last, float64) also
takes Keras's path, and so does everything with `fused=False`.

The two paths agree to float32 rounding, but a network amplifies rounding wherever it moves
a ReLU's input across zero: one such value in 65,536 changed a 1/16-width ResNet-18's
weight gradients by 0.4% (on tests/distribute_checks.py's batch). So a comparison that
must agree to rounding with training under several replicas runs its one device with
`fused=False`. TensorFlow backend only, as the project is.
"""

import keras
import tensorflow as tf

from models.sync_batchnorm import global_moments

# The input dtypes FusedBatchNormV3 takes (its attribute T); its statistics are float32.
_FUSED_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def _replicas_in_sync():
    """How many replicas compute this batch together (1 outside tf.distribute's replica context)."""
    context = tf.distribute.get_replica_context()
    return 1 if context is None else context.num_replicas_in_sync


@keras.saving.register_keras_serializable(package="supcon")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` on TensorFlow's fused op; the same arguments.

    `synchronized=True`: under several replicas, training uses the statistics of the
    global batch (two passes, `models.sync_batchnorm`); on one replica it changes nothing.
    `fused=False`: always Keras's arithmetic (see the module docstring for when).
    """

    def __init__(self, fused=True, **kwargs):
        super().__init__(**kwargs)
        self.fused = bool(fused)

    def call(self, inputs, training=None, mask=None):
        # As in Keras's layer, a frozen layer normalises with its moving statistics.
        training = bool(training) and self.trainable
        synchronizing = training and self.synchronized and _replicas_in_sync() > 1
        if synchronizing or not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        return self._fused(inputs, training)

    def _fusable(self, inputs, mask):
        return (self.fused and mask is None and not self.renorm and len(inputs.shape) == 4
                and self.axis % 4 == 3 and inputs.dtype in _FUSED_DTYPES)

    def _fused(self, inputs, training):
        channels = self.moving_mean.shape
        gamma = self.gamma if self.scale else tf.ones(channels)
        beta = self.beta if self.center else tf.zeros(channels)
        if not training:
            return tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=self.moving_mean,
                variance=self.moving_variance, epsilon=self.epsilon, data_format="NHWC",
                is_training=False)[0]
        # Empty mean and variance inputs: in training the op computes them from the batch.
        none = tf.zeros([0])
        outputs, mean, unbiased, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=inputs, scale=gamma, offset=beta, mean=none, variance=none, epsilon=self.epsilon,
            exponential_avg_factor=1.0, data_format="NHWC", is_training=True)
        count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), tf.float32)
        variance = unbiased * ((count - 1.0) / count)
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        return outputs

    def _moments(self, inputs, mask):
        """Keras's path: the global batch's moments when synchronising, else this replica's."""
        if mask is not None:
            return super()._moments(inputs, mask)
        if self.synchronized and _replicas_in_sync() > 1:
            return global_moments(inputs, self._reduction_axes, tf.distribute.get_replica_context())
        # Not Keras's synchronised E[x^2] - E[x]^2, which loses small variances in float32.
        return keras.ops.moments(inputs, axes=self._reduction_axes)

    def get_config(self):
        return {**super().get_config(), "fused": self.fused}
