"""bench/torch_peer.py computes what the project computes: the peer's claim of equivalence, proven.

The PyTorch peer that bench/peer_bench.py times against the project's training step is
built here next to the project's own model (the one peer_bench times: bench/training_bench's
`project_model`, through training/builders.py) at width 1/16 on 8 x 8 images, with every
weight copied from Keras to torch (`copy_weights`). On one fixed batch, in float32, for both
workloads ("plain": one view, CE; "contrastive": two views stacked view-major, CE + SupCon
+ margin), both must give:

- the same logits in inference mode (BatchNorm with its moving statistics) and in training
  mode (the batch's statistics), and the same moving statistics after a training-mode pass;
- the same projection-head embeddings;
- the same losses (cross-entropy, SupCon, margin, and their total), on identical embeddings
  and end to end through the copied networks;
- the same gradients of the total loss with respect to every weight, and after one training
  step (`ContrastiveModel.train_step` against `PeerStep`) the same weights and moving
  statistics. One step only: both optimisers are SGD with momentum 0.9 at learning rate 0.1
  and decay 5e-4 on the kernels, but PyTorch adds the decay to the gradient (where it then
  runs through the momentum) while Keras takes lr * decay * w off the weight directly. From
  zero momentum both give w - lr * (g + decay * w); from the second step on they differ by
  design, as torch_peer's docstring says. The first step is also checked alone, on given
  gradients, to a few units in the last place;
- the same initialisers (the same distributions, not the same draws).

Tolerances are relative to the largest magnitude of what is compared: both sides compute in
float32 with kernels that sum in different orders, so they agree to rounding (about 1e-7
per operation), amplified through 20 layers and BatchNorm's division by batch variances.
The largest errors measured were 5e-6 (forward), 1e-6 (losses) and 2e-5 (gradients and
updates), 10 to 40 times below the bounds. Gradients have the widest bound: a ReLU input
within rounding of zero may fall on the other side in one framework, which moved a
gradient by 3e-4 on 32 x 32 images (one of 900,000 ReLU inputs); 8 x 8 images make that
16 times rarer, and the test faster.

torch lives only in bench/.peer-venv (`make bench-peer` makes it; `make bench` runs this test
there). Without torch, as in .venv and under Bazel, the whole file is skipped.
"""

import dataclasses
import importlib.util
import sys

import pytest

if __name__ == "__main__":
    # Bazel's py_test runs this file as a script. Without torch pytest skips the whole module
    # and, having collected no test, exits with 5: that is a skip here, not a failure.
    code = pytest.main([__file__, "-q", "-rs"])
    if code == pytest.ExitCode.NO_TESTS_COLLECTED and importlib.util.find_spec("torch") is None:
        code = pytest.ExitCode.OK
    sys.exit(code)

torch = pytest.importorskip(
    "torch", reason="torch is only in bench/.peer-venv: `make bench-peer` makes it, `make bench` "
                    "runs this test there")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bench import torch_peer  # noqa: E402
from bench import training_bench  # noqa: E402
from models.contrastive_model import flatten_views  # noqa: E402
from models.margin_loss import MarginContrastiveLoss  # noqa: E402
from models.supcon_loss import SupConLoss  # noqa: E402

WIDTH = 1 / 16
BATCH = 8  # Images per view: 8 (plain) or 16 (contrastive) a step.
# The bench's data (CIFAR-10's statistics, 10 classes) in 8 x 8 images: every stride-2
# convolution still meets an even size (8, 4, 2), where the padding is asymmetric.
IMAGE_SHAPE = (8, 8, 3)
DATA_INFO = dataclasses.replace(training_bench.DATA_INFO, image_shape=IMAGE_SHAPE)
WORKLOADS = {"plain": ("baseline", 1), "contrastive": ("pretrain", 2)}  # (project stage, views)

# Largest error / largest magnitude of the reference.
FORWARD_TOLERANCE = 1e-4  # Logits, embeddings, moving statistics.
LOSS_TOLERANCE = 1e-5  # Losses: scalars of order 1.
GRADIENT_TOLERANCE = 1e-3  # Gradients and one step's update, per weight tensor.
OPTIMISER_ULPS = 4  # One optimiser step on given gradients, in float32 units of the weights.

# The standard deviation of a unit normal truncated at +-2 (Keras' he_normal divides by it).
TRUNCATED_NORMAL_STD = 0.87962566103423978


# --- The mapping of weights -----------------------------------------------------------------


def conv_bn_pairs(peer_encoder):
    """(Keras layer-name prefix, the peer's conv + BN) for every convolution of the ResNet."""
    pairs = [("stem", peer_encoder.stem)]
    for index, block in enumerate(peer_encoder.blocks):
        prefix = f"stage{index // 2 + 1}_block{index % 2 + 1}"
        pairs += [(prefix + "_1", block.conv1), (prefix + "_2", block.conv2)]
        if not isinstance(block.shortcut, torch.nn.Identity):
            pairs.append((prefix + "_shortcut", block.shortcut))
    return pairs


def layer_pairs(model, peer):
    """(Keras layer, torch module) for every layer with weights, Keras' name -> the peer's place."""
    pairs = []
    for prefix, (conv, batchnorm) in conv_bn_pairs(peer.encoder):
        pairs += [(model.encoder.get_layer(prefix + "_conv"), conv),
                  (model.encoder.get_layer(prefix + "_bn"), batchnorm)]
    pairs.append((model.classifier, peer.classifier))
    if peer.projection_head is not None:
        head = model.projection_head
        pairs += [(head.get_layer("projection_head_hidden"), peer.projection_head.hidden),
                  (head.get_layer("projection_head_out"), peer.projection_head.out)]
    return pairs


def as_torch(layer):
    """A Keras layer's weights as {torch name: array in torch's layout}.

    Conv kernels HWIO -> OIHW, Dense kernels [in, out] -> [out, in], BatchNorm's gamma, beta,
    moving mean and variance -> weight, bias, running_mean, running_var.
    """
    if isinstance(layer, keras.layers.Conv2D):
        return {"weight": layer.kernel.numpy().transpose(3, 2, 0, 1)}
    if isinstance(layer, keras.layers.BatchNormalization):
        return {"weight": layer.gamma.numpy(), "bias": layer.beta.numpy(),
                "running_mean": layer.moving_mean.numpy(),
                "running_var": layer.moving_variance.numpy()}
    if isinstance(layer, keras.layers.Dense):
        return {"weight": layer.kernel.numpy().T, "bias": layer.bias.numpy()}
    raise TypeError(f"no mapping for {type(layer).__name__} {layer.name}")


def peer_parameters(model, peer):
    """{(Keras layer name, torch name): the peer's parameter}, keyed as the Keras weights."""
    return {(layer.name, name): parameter for layer, module in layer_pairs(model, peer)
            for name, parameter in module.named_parameters(recurse=False)}


def module_arrays(module, names):
    """Copies (a tensor's .numpy() shares its memory, which the optimiser updates in place)."""
    return {name: getattr(module, name).detach().numpy().copy() for name in names}


def copy_weights(model, peer):
    """Every weight of the Keras model into the peer (which must have the same architecture)."""
    with torch.no_grad():
        for layer, module in layer_pairs(model, peer):
            for name, value in as_torch(layer).items():
                target = getattr(module, name)
                assert tuple(target.shape) == value.shape, (layer.name, name)
                target.copy_(torch.from_numpy(np.ascontiguousarray(value)))


def paired_arrays(model, peer, which):
    """{(Keras layer, torch name): (Keras array, torch array)}, both in torch's layout.

    which: "trainable" (kernels, biases, gamma, beta) or "moving" (BN moving statistics).
    """
    moving = ("running_mean", "running_var")
    pairs = {}
    for layer, module in layer_pairs(model, peer):
        arrays = as_torch(layer)
        names = [name for name in arrays if (name in moving) == (which == "moving")]
        for name, value in module_arrays(module, names).items():
            pairs[(layer.name, name)] = (arrays[name], value)
    return pairs


def keras_gradients_as_torch(model, gradients):
    """{(Keras layer name, torch name): gradient in torch's layout} of model.trainable_variables."""
    by_variable = {id(v): np.asarray(g) for v, g in zip(model.trainable_variables, gradients)}
    as_torch_names = {"kernel": "weight", "gamma": "weight", "bias": "bias", "beta": "bias"}
    result = {}
    for layer in all_layers(model):
        for variable in layer.trainable_weights:
            gradient = by_variable[id(variable)]
            if variable.name == "kernel":
                gradient = gradient.transpose(3, 2, 0, 1) if gradient.ndim == 4 else gradient.T
            result[(layer.name, as_torch_names[variable.name])] = gradient
    return result


def all_layers(model):
    """The layers with weights of a model and its nested models."""
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if layer.weights and not isinstance(layer, keras.Model):
            yield layer


# --- The two networks and the batch ---------------------------------------------------------


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """At this size a step is milliseconds on one thread; torch_peer's threads (one per core)
    spin while they wait, which on a busy machine made each step seconds."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def float32_policy():
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    yield
    keras.config.set_dtype_policy(previous)


def project_model(workload):
    """The project's model that peer_bench times for `workload`, compiled with its optimizer,
    with BatchNorm parameters, moving statistics and biases moved off their initial values
    (1, 0, 0, 1 and 0 would let a mix-up of them pass)."""
    keras.utils.set_random_seed(0)
    model = training_bench.project_model(WORKLOADS[workload][0], WIDTH, DATA_INFO)
    rng = np.random.default_rng(1)
    batchnorms = []
    for layer in all_layers(model):
        if isinstance(layer, keras.layers.BatchNormalization):
            size = layer.gamma.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 1.5, size).astype(np.float32))
            layer.beta.assign(rng.normal(0.0, 0.2, size).astype(np.float32))
            batchnorms.append(layer)
        elif isinstance(layer, keras.layers.Dense):
            layer.bias.assign(rng.normal(0.0, 0.1, layer.bias.shape).astype(np.float32))
    # Moving statistics of another batch (momentum 0: the batch's own), so that inference
    # mode normalises by statistics unlike the test batch's.
    for layer in batchnorms:
        layer.momentum = 0.0
    model(tf.random.stateless_uniform((16,) + IMAGE_SHAPE, [7, 7]), training=True)
    for layer in batchnorms:
        layer.momentum = 0.9
    return model


def peer_network(model, workload, channels_last=False):
    """The peer at the same width with the Keras model's weights."""
    torch.manual_seed(0)
    peer = torch_peer.PeerNetwork(WIDTH, contrastive=workload == "contrastive")
    copy_weights(model, peer)
    if channels_last:
        peer = peer.to(memory_format=torch.channels_last)
    return peer


def batch(workload):
    """The peer's batch (torch_peer.synthetic_batch: [V*B, 3, H, W] view-major, labels [V*B])
    and the same batch as the project takes it ([B, V, H, W, 3], or [B, H, W, 3], labels [B])."""
    views = WORKLOADS[workload][1]
    images, labels = torch_peer.synthetic_batch(BATCH, views=views, seed=3, image_shape=IMAGE_SHAPE)
    height, width, depth = IMAGE_SHAPE
    per_view = images.numpy().reshape(views, BATCH, depth, height, width).transpose(1, 0, 3, 4, 2)
    keras_images = tf.constant(per_view if views > 1 else per_view[:, 0])
    keras_labels = tf.constant(labels.numpy()[:BATCH])
    return (images, labels), (keras_images, keras_labels)


def keras_flat_batch(workload):
    """The project's batch after ContrastiveModel's flatten_views, which must be the peer's."""
    (images, labels), keras_batch = batch(workload)
    flat_images, flat_labels = flatten_views(*keras_batch)
    np.testing.assert_array_equal(flat_images.numpy().transpose(0, 3, 1, 2), images.numpy())
    np.testing.assert_array_equal(flat_labels.numpy(), labels.numpy())
    return (images, labels), (flat_images, flat_labels)


def relative_error(actual, expected):
    """max |actual - expected| / max |expected|."""
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = np.abs(expected).max()
    return np.abs(actual - expected).max() / scale if scale > 0 else np.abs(actual).max()


def assert_close(actual, expected, tolerance, what):
    error = relative_error(actual, expected)
    assert error <= tolerance, f"{what}: error {error:.2e} of the scale, more than {tolerance:.0e}"


def assert_all_close(pairs, tolerance, what):
    """pairs: {key: (expected, actual)}; every pair within the tolerance."""
    errors = {key: relative_error(actual, expected) for key, (expected, actual) in pairs.items()}
    worst = max(errors, key=errors.get)
    assert errors[worst] <= tolerance, (
        f"{what}: {worst} differs by {errors[worst]:.2e} of its scale, more than {tolerance:.0e}")


def assert_step(before, after, expected, what):
    """after - before is `expected` up to float32 rounding: a few units in the last place of
    the weights (each optimiser rounds w, the step and their sum). A decay of lr * 5e-4 * w
    is 400 to 800 such units of w: a wrong decay rule cannot pass."""
    error = np.abs(after.astype(np.float64) - before - expected)
    ulp = np.spacing(np.maximum(np.abs(before), np.abs(after))).astype(np.float64)
    worst = np.max(error / (ulp + 1e-6 * np.abs(expected)))
    assert worst <= OPTIMISER_ULPS, f"{what}: the step is {worst:.1f} units in the last place off"


# --- The tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_the_mapping_covers_every_weight_and_the_normalisation_is_the_same(workload):
    model = project_model(workload)
    peer = peer_network(model, workload)
    mapped = {layer.name for layer, _ in layer_pairs(model, peer)}
    assert mapped == {layer.name for layer in all_layers(model)}
    assert sum(int(np.prod(w.shape)) for w in model.weights) == sum(
        t.numel() for name, t in peer.state_dict().items()
        if not name.endswith("num_batches_tracked") and name not in ("encoder.mean", "encoder.std"))
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == sum(
        p.numel() for p in peer.parameters())
    normalize = model.encoder.get_layer("normalize").get_config()
    np.testing.assert_allclose(peer.encoder.mean.flatten().numpy(), normalize["mean"], rtol=1e-6)
    np.testing.assert_allclose(peer.encoder.std.flatten().numpy() ** 2, normalize["variance"],
                               rtol=1e-6)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_same_logits_and_embeddings_in_inference_mode(workload, channels_last):
    model = project_model(workload)
    peer = peer_network(model, workload, channels_last).eval()
    (images, _), (keras_images, _) = keras_flat_batch(workload)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    expected = model(keras_images, training=False)
    with torch.no_grad():
        logits, z = peer(images)
    assert_close(logits.numpy(), expected["logits"].numpy(), FORWARD_TOLERANCE, "logits")
    assert (z is None) == ("embedding" not in expected)
    if z is not None:
        assert_close(z.numpy(), expected["embedding"].numpy(), FORWARD_TOLERANCE, "embeddings")


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_same_logits_embeddings_and_moving_statistics_in_training_mode(workload):
    model = project_model(workload)
    peer = peer_network(model, workload).train()
    (images, _), (keras_images, _) = keras_flat_batch(workload)
    expected = model(keras_images, training=True)
    with torch.no_grad():
        logits, z = peer(images)
    assert_close(logits.numpy(), expected["logits"].numpy(), FORWARD_TOLERANCE, "logits")
    if z is not None:
        assert_close(z.numpy(), expected["embedding"].numpy(), FORWARD_TOLERANCE, "embeddings")
    # Both moved their statistics by one batch: Keras with the biased batch variance.
    assert_all_close(paired_arrays(model, peer, "moving"), FORWARD_TOLERANCE, "moving statistics")


def test_same_losses_on_the_same_embeddings_and_logits():
    rng = np.random.default_rng(5)
    # Classes 4 and 5 have one image each: anchors without positives (they add 0 to SupCon).
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0, 4, 5, 1], np.int64)
    embeddings = rng.normal(size=(len(labels), 8)).astype(np.float32)  # Not normalised: both do it.
    logits = rng.normal(0.0, 3.0, size=(len(labels), 10)).astype(np.float32)
    z, y = torch.from_numpy(embeddings), torch.from_numpy(labels)
    ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(labels, logits)
    assert_close(F.cross_entropy(torch.from_numpy(logits), y).item(), float(ce), LOSS_TOLERANCE,
                 "CE")
    for temperature in (torch_peer.TEMPERATURE, 0.5):
        assert_close(torch_peer.supcon_loss(y, z, temperature).item(),
                     float(SupConLoss(temperature)(labels, embeddings)), LOSS_TOLERANCE,
                     f"SupCon at temperature {temperature}")
    for margin in (torch_peer.MARGIN, 0.5, 2.0):
        assert_close(torch_peer.margin_loss(y, z, margin).item(),
                     float(MarginContrastiveLoss(margin)(labels, embeddings)), LOSS_TOLERANCE,
                     f"margin loss at margin {margin}")
    # Two identical embeddings of one class: the floor under the squared distance on both sides.
    same = np.repeat(embeddings[:1], 2, axis=0)
    assert_close(torch_peer.margin_loss(torch.tensor([1, 1]), torch.from_numpy(same)).item(),
                 float(MarginContrastiveLoss(1.0)(np.array([1, 1]), same)), LOSS_TOLERANCE,
                 "margin loss of identical embeddings")


def test_the_project_uses_the_peers_loss_settings():
    model = project_model("contrastive")
    assert model.supcon_loss.temperature == torch_peer.TEMPERATURE
    assert model.margin_loss.margin == torch_peer.MARGIN
    assert model.weights_by_term == {"ce_loss": 1.0, "supcon_loss": 1.0, "margin_loss": 1.0}
    assert training_bench.project_model("baseline", WIDTH, DATA_INFO).weights_by_term[
        "supcon_loss"] == 0.0
    config = model.optimizer.get_config()
    assert (config["learning_rate"], config["momentum"], config["weight_decay"]) == pytest.approx(
        (torch_peer.LEARNING_RATE, torch_peer.MOMENTUM, torch_peer.WEIGHT_DECAY))
    assert not config["nesterov"]


def test_the_peer_starts_from_the_projects_initial_weights():
    """The same initialisers (not the same draws): he_normal convolutions (a normal truncated
    at 2 standard deviations, scaled to variance 2 / fan_in), glorot_uniform dense kernels,
    zero biases, BatchNorm at gamma 1, beta 0, moving mean 0, moving variance 1."""
    keras.utils.set_random_seed(0)
    model = training_bench.project_model("pretrain", WIDTH, DATA_INFO)
    torch.manual_seed(0)
    peer = torch_peer.PeerNetwork(WIDTH, contrastive=True)
    for layer, module in layer_pairs(model, peer):
        keras_arrays = as_torch(layer)
        for name, torch_array in module_arrays(module, keras_arrays).items():
            keras_array = keras_arrays[name]
            if name != "weight" or keras_array.ndim == 1:
                np.testing.assert_array_equal(torch_array, keras_array, err_msg=layer.name)
                continue
            fan_out, fan_in = keras_array.shape[0], keras_array[0].size
            if keras_array.ndim == 4:
                std = np.sqrt(2.0 / fan_in)
                bound = 2.0 * std / TRUNCATED_NORMAL_STD
            else:
                bound = np.sqrt(6.0 / (fan_in + fan_out))
                std = bound / np.sqrt(3.0)
            for side, array in (("keras", keras_array), ("torch", torch_array)):
                assert np.abs(array).max() <= bound * (1 + 1e-6), (side, layer.name)
                # The smallest kernel has 64 weights: 25% is 3 standard errors of its spread.
                assert array.std() == pytest.approx(std, rel=0.25), (side, layer.name)


def test_the_first_optimiser_step_is_the_same():
    """The project's SGD (models/optimizer.py, as the bench compiles it) and the peer's
    make_optimizer, on the same weights and gradients: -lr * (g + decay * w) on the kernels
    and -lr * g on BatchNorm's gamma and beta and on the biases. Only the first step agrees
    in the decay: PyTorch's passes through the momentum from then on, Keras's (decoupled)
    does not (models/optimizer.py), which changes what is learnt, not what a step costs."""
    model = project_model("contrastive")
    peer = peer_network(model, "contrastive")
    rng = np.random.default_rng(11)
    # Gradients of about 1e-3, so that the decay (5e-4 * w) is a visible part of a kernel's step.
    gradients = [rng.normal(0.0, 1e-3, v.shape).astype(np.float32)
                 for v in model.trainable_variables]
    torch_gradients = keras_gradients_as_torch(model, gradients)
    before = paired_arrays(model, peer, "trainable")

    model.optimizer.apply([tf.constant(g) for g in gradients], model.trainable_variables)
    optimizer = torch_peer.make_optimizer(peer)
    for key, parameter in peer_parameters(model, peer).items():
        parameter.grad = torch.from_numpy(torch_gradients[key].copy())
    optimizer.step()

    after = paired_arrays(model, peer, "trainable")
    for key in after:
        (keras_before, torch_before), (keras_after, torch_after) = before[key], after[key]
        kernel = key[1] == "weight" and keras_before.ndim > 1
        decay = torch_peer.WEIGHT_DECAY if kernel else 0.0
        expected = -torch_peer.LEARNING_RATE * (torch_gradients[key].astype(np.float64)
                                                 + decay * keras_before)
        assert_step(keras_before, keras_after, expected, f"Keras {key}")
        assert_step(torch_before, torch_after, expected, f"torch {key}")


@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_same_losses_and_gradients_end_to_end(workload):
    """The peer's total_loss (and each term) against ContrastiveModel.compute_loss, and the
    gradients of the total with respect to every weight, through the copied networks."""
    contrastive = workload == "contrastive"
    model = project_model(workload)
    peer = peer_network(model, workload).train()
    (images, labels), (keras_images, keras_labels) = keras_flat_batch(workload)
    with tf.GradientTape() as tape:
        outputs = model(keras_images, training=True)
        keras_total = model.compute_loss(y=keras_labels, y_pred=outputs, training=True)
    keras_gradients = keras_gradients_as_torch(
        model, tape.gradient(keras_total, model.trainable_variables))

    total = torch_peer.total_loss(peer, images, labels, contrastive)
    total.backward()
    assert_close(total.item(), float(keras_total), LOSS_TOLERANCE, "total loss")
    parameters = peer_parameters(model, peer)
    assert len(parameters) == len(list(peer.parameters()))  # Every parameter has a Keras twin.
    torch_gradients = {key: parameter.grad.numpy() for key, parameter in parameters.items()}
    assert torch_gradients.keys() == keras_gradients.keys()
    assert_all_close({key: (keras_gradients[key], torch_gradients[key]) for key in keras_gradients},
                     GRADIENT_TOLERANCE, "gradients")

    # Each term, from the same networks (outputs of the forward passes above).
    logits, z = peer(images)
    terms = {"ce_loss": (model.cross_entropy(keras_labels, outputs["logits"]),
                         F.cross_entropy(logits, labels))}
    if contrastive:
        terms["supcon_loss"] = (model.supcon_loss(keras_labels, outputs["embedding"]),
                                torch_peer.supcon_loss(labels, z))
        terms["margin_loss"] = (model.margin_loss(keras_labels, outputs["embedding"]),
                                torch_peer.margin_loss(labels, z))
    assert set(terms) == {term for term, weight in model.weights_by_term.items() if weight}
    for name, (expected, actual) in terms.items():
        assert_close(actual.item(), float(expected), LOSS_TOLERANCE, name)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_one_training_step_gives_the_same_weights(workload, channels_last):
    """The project's train_step (the pretrain stage's, or the baseline's) against the peer's
    PeerStep, the step peer_bench times: the same loss, update and moving statistics."""
    model = project_model(workload)
    step = torch_peer.make_step(workload, WIDTH, BATCH, channels_last=channels_last)
    copy_weights(model, step.network)
    (images, labels), keras_batch = batch(workload)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    step.images, step.labels = images.contiguous(memory_format=memory_format), labels
    before = paired_arrays(model, step.network, "trainable")

    keras_loss = float(model.train_step(keras_batch)["loss"])
    torch_loss = step()

    assert_close(torch_loss, keras_loss, LOSS_TOLERANCE, "loss")
    after = paired_arrays(model, step.network, "trainable")
    updates = {key: (after[key][0] - before[key][0], after[key][1] - before[key][1])
               for key in after}
    assert all(np.abs(keras_update).max() > 0 for keras_update, _ in updates.values())
    assert_all_close(updates, GRADIENT_TOLERANCE, "weight updates")
    assert_all_close(paired_arrays(model, step.network, "moving"), FORWARD_TOLERANCE,
                     "moving statistics")

