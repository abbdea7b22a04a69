"""Measurements for tests/distribute_test.py that need two logical CPUs, hence a fresh process.

    python tests/distribute_checks.py RESULT.json

TensorFlow must split the CPU into logical devices before it sets up its devices, so this
runs as its own process and writes what it measured as JSON; the test judges it.

- `terms`: for SupCon, the additive margin and the pairwise margin, the loss and its
  gradient with respect to the weights that make the embeddings, summed over the two
  replicas of a MirroredStrategy, against one device on the concatenated batch (the
  global gather), and the same for the local form (which should differ).
- `training`: the pretrain model trained for a few steps through the fit seam on 2
  replicas and on one device, from the same weights on the same global batches: the
  largest weight difference, the largest difference between the two replicas'
  BatchNorm moving statistics, and the 2-replica weights saved as BackupAndRestore saves
  them and restored into a one-device model. Both runs compute BatchNorm with Keras's
  arithmetic (`keras_arithmetic`), as several replicas must.
- `adversarial_training`: with N-FGSM adversarial training, the images two replicas craft
  against those of one device on the concatenated batch (same weights), and the weights
  after three steps.
"""

import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import tensorflow as tf  # noqa: E402

tf.config.set_logical_device_configuration(tf.config.list_physical_devices("CPU")[0],
                                           [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from configs import demo  # noqa: E402
from models.fused_batchnorm import FusedBatchNormalization  # noqa: E402
from models.margin_loss import MarginContrastiveLoss  # noqa: E402
from models.supcon_loss import SupConLoss  # noqa: E402
from pipeline.split import Split  # noqa: E402
from training import builders  # noqa: E402
from training import fit as fit_lib  # noqa: E402
from training import specs  # noqa: E402
from training.run_context import run_context  # noqa: E402

TWO = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
ONE = tf.distribute.get_strategy()


def term_losses(gather):
    return {"supcon": SupConLoss(0.1, gather=gather),
            "additive_margin": SupConLoss(0.1, additive_margin=0.2, name="margin_loss", gather=gather),
            "pairwise_margin": MarginContrastiveLoss(1.0, gather=gather)}


def loss_and_gradient(strategy, loss, projection, features, labels):
    """The loss of the global batch and its gradient w.r.t. `projection`, summed over replicas."""
    def replica(batch):
        x, y = batch
        with tf.GradientTape() as tape:
            value = loss(y, tf.matmul(x, projection))  # Already divided by the replica count.
        return value, tape.gradient(value, projection)

    dataset = tf.data.Dataset.from_tensors((features, labels))
    batch = next(iter(strategy.experimental_distribute_dataset(dataset)))
    value, gradient = strategy.run(tf.function(replica), args=(batch,))
    return (float(strategy.reduce("SUM", value, axis=None)),
            strategy.reduce("SUM", gradient, axis=None).numpy())


def check_terms():
    rng = np.random.default_rng(0)
    features = tf.constant(rng.normal(size=(24, 6)), tf.float32)
    labels = tf.constant(rng.integers(0, 3, 24), tf.int64)
    with TWO.scope():
        projection = tf.Variable(rng.normal(size=(6, 5)), dtype=tf.float32)
    whole = {name: loss_and_gradient(ONE, loss, projection, features, labels)
             for name, loss in term_losses("global").items()}
    results = {}
    for gather in ("global", "local"):
        for name, loss in term_losses(gather).items():
            value, gradient = loss_and_gradient(TWO, loss, projection, features, labels)
            results[f"{name}/{gather}"] = {
                "loss_one_device": whole[name][0], "loss_two_replicas": value,
                "loss_difference": abs(value - whole[name][0]),
                "gradient_difference": float(np.max(np.abs(gradient - whole[name][1]))),
                "gradient_scale": float(np.max(np.abs(whole[name][1])))}
    return results


def tiny_split(count=64, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (count, 16, 16, 3), dtype=np.uint8),
                 (np.arange(count) % 4).astype(np.int64))


def keras_arithmetic(model):
    """Puts every BatchNorm of `model` on Keras's path, the one training takes under several
    replicas. On one device the fused kernel rounds differently, and a ReLU input that the
    rounding moves across zero changes the gradients by far more than rounding (one such
    value moved them by 0.4% here; models/fused_batchnorm.py); tests/fused_batchnorm_test.py
    compares the two paths layer by layer."""
    for layer in model.encoder.layers:
        if isinstance(layer, FusedBatchNormalization):
            layer.fused = False


def train_pretrain(strategy, config, initial_weights, workdir):
    """Weights and model after config.train.epochs x steps_per_epoch steps under `strategy`."""
    spec = specs.PRETRAIN
    split = tiny_split()
    with run_context(config.seed, "float32"), strategy.scope():
        info = builders.DataInfo((16, 16, 3), 4, (0.5,) * 3, (0.25,) * 3)
        inputs = builders.build_distributed_inputs(strategy, config, spec, split)
        model = builders.compile_model(builders.build_model(config, spec, info), config, spec,
                                       inputs.steps_per_epoch)
        keras_arithmetic(model)
        if initial_weights is not None:
            model.set_weights(initial_weights)
        start = [w.copy() for w in model.get_weights()]
        fit_lib.fit(model, inputs, config.train.epochs, workdir, "pretrain", verbose=0)
    return start, model


def moving_statistics_spread(strategy, model):
    """The largest difference between replicas' copies of any BatchNorm moving statistic."""
    spread = 0.0
    for layer in model.encoder.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            for variable in (layer.moving_mean, layer.moving_variance):
                copies = [v.numpy() for v in strategy.experimental_local_results(variable.value)]
                spread = max(spread, max(float(np.max(np.abs(c - copies[0]))) for c in copies))
    return spread


def check_adversarial_training():
    """Pretrain with N-FGSM adversarial training (its images join the contrast set) on two
    replicas and on one device: each replica crafts its share, from the noise of the
    global batch, so the weights must agree as for clean training."""
    config = demo.get_config("smoke")
    config.data.image_size = 16
    config.train.update(batch_size=16, epochs=1, steps_per_epoch=3, learning_rate=0.05)
    config.adversarial.method = "n_fgsm"
    with tempfile.TemporaryDirectory() as workdir:
        start, one = train_pretrain(ONE, config, None, os.path.join(workdir, "one"))
        _, two = train_pretrain(TWO, config, start, os.path.join(workdir, "two"))
        results = {"weights_difference": max(float(np.max(np.abs(a - b)))
                                             for a, b in zip(one.get_weights(), two.get_weights())),
                   "weights_moved": max(float(np.max(np.abs(a - b)))
                                        for a, b in zip(start, one.get_weights()))}
    # The images themselves, crafted by the two replicas' model from the same weights, against
    # one device on the concatenated batch.
    adversary = two.adversary
    rng = np.random.default_rng(1)
    images = tf.constant(rng.uniform(0, 1, (16, 2, 16, 16, 3)), tf.float32)
    labels = tf.constant(rng.integers(0, 4, 16))
    step = tf.constant(3, tf.int64)
    whole = adversary(two, images, labels, step).numpy()
    shares = TWO.experimental_distribute_values_from_function(
        lambda context: (images[8 * context.replica_id_in_sync_group:][:8],
                         labels[8 * context.replica_id_in_sync_group:][:8]))
    crafted = TWO.run(tf.function(lambda share: adversary(two, share[0], share[1], step)),
                      args=(shares,))
    split = np.concatenate([t.numpy() for t in TWO.experimental_local_results(crafted)])
    results["crafted_difference"] = float(np.max(np.abs(whole - split)))
    return results


def check_training():
    config = demo.get_config("smoke")
    config.data.image_size = 16
    config.train.update(batch_size=16, epochs=1, steps_per_epoch=3, learning_rate=0.05)
    results = {}
    with tempfile.TemporaryDirectory() as workdir:
        start, one = train_pretrain(ONE, config, None, os.path.join(workdir, "one"))
        _, two = train_pretrain(TWO, config, start, os.path.join(workdir, "two"))
        difference = max(float(np.max(np.abs(a - b)))
                         for a, b in zip(one.get_weights(), two.get_weights()))
        moved = max(float(np.max(np.abs(a - b))) for a, b in zip(start, one.get_weights()))
        results["weights_difference"] = difference
        results["weights_moved"] = moved
        results["moving_statistics_spread_synchronised"] = moving_statistics_spread(TWO, two)
        # What BackupAndRestore saves on two replicas, restored on one device.
        path = os.path.join(workdir, "two.weights.h5")
        two.save_weights(path)
        restored = restore_on_one_device(config, path)
        results["restored_difference"] = max(
            float(np.max(np.abs(a - b))) for a, b in zip(restored, two.get_weights()))
    return results


def restore_on_one_device(config, path):
    spec = specs.PRETRAIN
    with run_context(config.seed, "float32"):
        info = builders.DataInfo((16, 16, 3), 4, (0.5,) * 3, (0.25,) * 3)
        model = builders.compile_model(builders.build_model(config, spec, info), config, spec, 1)
        model.optimizer.build(model.trainable_variables)
        model.load_weights(path)
        return model.get_weights()


if __name__ == "__main__":
    measured = {"terms": check_terms(), "training": check_training(),
                "adversarial_training": check_adversarial_training()}
    with open(sys.argv[1], "w") as f:
        json.dump(measured, f, indent=2)
    print(json.dumps(measured, indent=2))
