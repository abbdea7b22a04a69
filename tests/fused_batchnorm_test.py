"""FusedBatchNormalization against Keras's BatchNormalization and the formulas, at tiny sizes.

Under several replicas the layer takes Keras's path with the two-pass global moments;
tests/distribute_test.py covers that (it needs two logical CPUs, hence its own process).
"""

import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import demo
from models import precision
from models import resnet
from models.fused_batchnorm import FusedBatchNormalization
from training import builders

CHANNELS = 6
TINY_DATA = builders.DataInfo((8, 8, 3), 4, (0.5,) * 3, (0.25,) * 3)


@pytest.fixture
def policy():
    """Sets the global dtype policy for one test and puts the previous one back."""
    previous = keras.config.dtype_policy()
    yield keras.config.set_dtype_policy
    keras.config.set_dtype_policy(previous)


def batch(shape=(4, 3, 3, CHANNELS), seed=0):
    """Channels with means far from 0 and unequal spreads, as after a convolution."""
    rng = np.random.default_rng(seed)
    return tf.constant(rng.normal(rng.normal(0, 3, CHANNELS), rng.uniform(0.5, 3, CHANNELS),
                                  shape).astype(np.float32))


def keras_and_fused(input_shape, synchronized=False):
    """Keras's layer and the fused one, built with the same weights (not the initial ones)."""
    rng = np.random.default_rng(1)
    weights = [rng.uniform(0.5, 1.5, CHANNELS), rng.normal(0, 0.5, CHANNELS),
               rng.normal(0, 2, CHANNELS), rng.uniform(0.5, 4, CHANNELS)]
    layers = (keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5),
              FusedBatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=synchronized))
    for layer in layers:
        layer.build(input_shape)
        layer.set_weights([w.astype(np.float32) for w in weights])
    return layers


def output_and_gradients(layer, x, training):
    """The layer's output, and the gradients of a weighted sum of it w.r.t. x, gamma and beta."""
    weights = tf.sin(tf.reshape(tf.range(tf.size(x), dtype=tf.float32), x.shape))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=training)
        loss = tf.reduce_sum(tf.cast(y, tf.float32) * weights)
    return [y] + tape.gradient(loss, [x, layer.gamma, layer.beta])


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("synchronized", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 3, CHANNELS), (8, CHANNELS)], ids=["4-D", "2-D"])
def test_outputs_and_gradients_equal_keras(training, synchronized, shape):
    # On one replica `synchronized` changes nothing; a 2-D input takes Keras's own path.
    x = batch(shape)
    reference, fused = keras_and_fused(shape, synchronized)
    for expected, got, name in zip(output_and_gradients(reference, x, training),
                                   output_and_gradients(fused, x, training),
                                   ("output", "d/dx", "d/dgamma", "d/dbeta")):
        np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=2e-5, err_msg=name)


def test_fused_false_is_keras_arithmetic_to_the_bit():
    x = batch()
    reference, layer = keras_and_fused(x.shape)
    layer.fused = False
    for training in (True, False, True):
        np.testing.assert_array_equal(layer(x, training=training).numpy(),
                                      reference(x, training=training).numpy())
    for got, expected in zip(layer.get_weights(), reference.get_weights()):
        np.testing.assert_array_equal(got, expected)


def test_moving_statistics_move_as_keras_moves_them_with_the_biased_variance():
    reference, fused = keras_and_fused((2, 2, 2, CHANNELS))
    mean, variance = [w.copy() for w in fused.get_weights()[2:]]
    unbiased = variance.copy()
    for step in range(4):
        x = batch((2, 2, 2, CHANNELS), seed=step)
        reference(x, training=True)
        fused(x, training=True)
        values = x.numpy().reshape(-1, CHANNELS)
        mean = 0.9 * mean + 0.1 * values.mean(axis=0)
        variance = 0.9 * variance + 0.1 * values.var(axis=0)  # Over n = 8 values per channel.
        unbiased = 0.9 * unbiased + 0.1 * values.var(axis=0, ddof=1)  # The op's own, over n - 1.
    np.testing.assert_allclose(fused.moving_mean.numpy(), mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), variance, rtol=1e-5)
    assert np.all(np.abs(fused.moving_variance.numpy() / unbiased - 1) > 1e-2)
    for got, expected in zip(fused.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_compiled_with_xla_it_computes_the_same():
    # XLA (a GPU's default here) lowers the op to its own batch-norm-training, whose batch
    # variance TensorFlow also hands out unbiased.
    x = batch((2, 2, 2, CHANNELS))
    results = []
    for layer in keras_and_fused(x.shape):
        step = tf.function(lambda inputs, layer=layer: output_and_gradients(layer, inputs, True),
                           jit_compile=True)
        results.append([t.numpy() for t in step(x)] + layer.get_weights()[2:])
    for got, expected in zip(results[1], results[0]):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=2e-5)


def test_only_training_mode_moves_the_statistics():
    x = batch()
    _, fused = keras_and_fused(x.shape)
    before = fused.get_weights()
    fused(x, training=False)
    fused(x)
    for got, expected in zip(fused.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
    # A frozen layer normalises with its moving statistics even in training mode, as Keras's does.
    fused.trainable = False
    np.testing.assert_array_equal(fused(x, training=True).numpy(), fused(x, training=False).numpy())
    for got, expected in zip(fused.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
    fused.trainable = True
    fused(x, training=True)
    assert not np.array_equal(fused.get_weights()[2], before[2])


def fused_ops(layer, x, training):
    """{op type: its T attribute} of the layer's call, traced."""
    graph = tf.function(lambda inputs: layer(inputs, training=training)).get_concrete_function(x).graph
    return {op.type: op.get_attr("T") for op in graph.get_operations()
            if op.type.startswith("FusedBatchNorm")}


@pytest.mark.parametrize("training", [True, False])
def test_under_mixed_bfloat16_it_is_one_bfloat16_op_with_float32_statistics(policy, training,
                                                                           bfloat16_ops):
    policy("mixed_bfloat16")
    x = batch()
    reference, fused = keras_and_fused(x.shape)
    assert all(w.dtype == "float32" for w in fused.weights)
    inputs = tf.cast(x, tf.bfloat16)  # What a Conv2D under this policy hands it.
    assert fused_ops(fused, inputs, training) == {"FusedBatchNormV3": tf.bfloat16}
    expected, got = reference(inputs, training=training), fused(inputs, training=training)
    assert got.dtype == tf.bfloat16
    # Keras's layer computes in float32 and rounds once; the op's output is bfloat16 too.
    np.testing.assert_allclose(tf.cast(got, tf.float32).numpy(), tf.cast(expected, tf.float32).numpy(),
                               rtol=2 ** -7, atol=2 ** -7)
    # Statistics of the bfloat16 batch, kept in float32.
    for got, expected in zip(fused.get_weights(), reference.get_weights()):
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_config_is_complete_and_a_keras_file_round_trips(tmp_path):
    x = batch()
    inputs = keras.Input(x.shape[1:])
    layer = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, synchronized=True, name="bn")
    model = keras.Model(inputs, keras.layers.ReLU()(layer(inputs)))
    model(x, training=True)  # Moves the statistics off their initial values.
    config = layer.get_config()
    assert FusedBatchNormalization.from_config(config).get_config() == config
    assert (config["momentum"], config["epsilon"], config["synchronized"], config["fused"]) == \
        (0.9, 1e-5, True, True)
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded.get_layer("bn")) is FusedBatchNormalization
    assert loaded.get_layer("bn").get_config() == config
    for training in (False, True):
        np.testing.assert_array_equal(loaded(x, training=training).numpy(),
                                      model(x, training=training).numpy())


def test_a_saved_model_round_trips(tmp_path):
    x = batch()
    inputs = keras.Input(x.shape[1:])
    model = keras.Model(inputs, FusedBatchNormalization(momentum=0.9, epsilon=1e-5)(inputs))
    model(x, training=True)
    model.export(str(tmp_path / "saved"), format="tf_saved_model", verbose=False)
    reloaded = tf.saved_model.load(str(tmp_path / "saved"))
    np.testing.assert_array_equal(reloaded.serve(x).numpy(), model(x, training=False).numpy())


def trained_encoder():
    """A 1/16-width encoder on 8x8 images after two training-mode passes (moved statistics)."""
    keras.utils.set_random_seed(0)
    encoder = builders.build_encoder(demo.get_config("smoke"), TINY_DATA)
    for seed in range(2):
        encoder(np.random.default_rng(seed).random((8, 8, 8, 3)).astype(np.float32), training=True)
    return encoder


def test_float32_copy_of_a_mixed_bfloat16_model_is_float32_keras_batchnorm(policy, bfloat16_ops):
    policy("mixed_bfloat16")
    encoder = trained_encoder()
    policy("float32")
    same_in_float32 = builders.build_encoder(demo.get_config("smoke"), TINY_DATA)
    same_in_float32.set_weights(encoder.get_weights())
    copy = precision.float32_copy(encoder)
    batchnorms = [layer for layer in copy.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batchnorms) == 20 and all(type(layer) is keras.layers.BatchNormalization
                                         and not layer.synchronized for layer in batchnorms)
    assert all(layer.compute_dtype == "float32" for layer in copy.layers)
    assert all(w.dtype == "float32" for w in copy.weights)
    images = np.random.default_rng(5).random((4, 8, 8, 3)).astype(np.float32)
    # The same weights, the same function: the fused layer in float32 to float32 rounding,
    # the bfloat16 original to bfloat16's rounding through 20 layers (measured 1.2% of the
    # largest feature).
    features = copy(images).numpy()
    np.testing.assert_allclose(features, same_in_float32(images).numpy(), rtol=1e-5, atol=1e-5)
    in_bfloat16 = tf.cast(encoder(images), tf.float32).numpy()
    assert np.max(np.abs(features - in_bfloat16)) <= 0.04 * np.max(np.abs(features))


def test_keras_batchnorm_files_load_into_the_fused_encoder(tmp_path):
    # A model.keras as the stages save it (and saved before this layer): Keras's BatchNormalization.
    trained = precision.float32_copy(trained_encoder())
    classifier = keras.Sequential([trained, keras.layers.Dense(4, name="classifier")])
    images = np.random.default_rng(5).random((4, 8, 8, 3)).astype(np.float32)
    classifier(images)
    path = str(tmp_path / "model.keras")
    classifier.save(path)
    encoder = builders.load_encoder(path, demo.get_config("smoke"), TINY_DATA)
    assert sum(type(layer) is FusedBatchNormalization for layer in encoder.layers) == 20
    for got, expected in zip(encoder.get_weights(), trained.get_weights()):
        np.testing.assert_array_equal(got, expected)
    saved = keras.models.load_model(path).get_layer("encoder")
    np.testing.assert_allclose(encoder(images).numpy(), saved(images).numpy(), rtol=1e-5, atol=1e-5)


def test_in_the_resnet_a_relu_is_the_only_reader_of_a_batchnorm():
    # Grappler's remapper fuses FusedBatchNormV3 + Relu (on a CPU with oneDNN, and on a GPU)
    # only when the Relu is the sole reader of the op's output.
    encoder = resnet.resnet18((8, 8, 3), [0.5] * 3, [0.25] * 3, width=1 / 16)
    assert sum(type(layer) is FusedBatchNormalization for layer in encoder.layers) == 20
    step = tf.function(lambda images: encoder(images, training=True))
    graph = step.get_concrete_function(tf.TensorSpec((2, 8, 8, 3), tf.float32)).graph
    readers = sorted(tuple(reader.type for reader in op.outputs[0].consumers())
                     for op in graph.get_operations() if op.type == "FusedBatchNormV3")
    # The stem and the first convolution of each block; the others meet the residual sum.
    assert readers == [("AddV2",)] * 11 + [("Relu",)] * 9


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
