"""The contrastive losses against values worked out by hand, and their edge cases."""

import math
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from models.margin_loss import MarginContrastiveLoss
from models.margin_loss import make_margin_loss
from models.margin_loss import simplex_distance
from models.supcon_loss import SupConLoss


def supcon_reference(labels, embeddings, temperature, margin=0.0):
    """SupCon L_out written as the formula reads, one anchor at a time, in float64."""
    z = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    losses = []
    for i in range(len(labels)):
        positives = [p for p in range(len(labels)) if p != i and labels[p] == labels[i]]
        if not positives:
            losses.append(0.0)
            continue
        logit = {a: (z[i] @ z[a] - margin * (labels[a] == labels[i])) / temperature
                 for a in range(len(labels)) if a != i}
        denominator = sum(math.exp(v) for v in logit.values())
        losses.append(-np.mean([math.log(math.exp(logit[p]) / denominator) for p in positives]))
    return float(np.mean(losses))


def value(loss, labels, embeddings):
    return float(loss(tf.constant(labels), tf.constant(embeddings, tf.float32)))


def test_supcon_identical_embeddings_one_class_is_log_three():
    # Four identical embeddings: every anchor has 3 positives and 3 equal terms in the
    # denominator, so each log-probability is log(1/3).
    assert value(SupConLoss(temperature=1.0), [0, 0, 0, 0], np.ones((4, 3))) == pytest.approx(math.log(3), abs=1e-6)


def test_supcon_anchor_without_positive_counts_as_zero_in_the_mean():
    # Anchors 0 and 1 each have one positive among 2 equal candidates (loss log 2);
    # anchor 2 has no positive: it adds 0 but still counts, so the mean is 2 log 2 / 3.
    got = value(SupConLoss(temperature=1.0), [0, 0, 1], np.ones((3, 2)))
    assert got == pytest.approx(2 * math.log(2) / 3, abs=1e-6)


def test_supcon_batch_without_any_positive_is_zero_not_nan():
    assert value(SupConLoss(), [0, 1, 2], np.eye(3)) == 0.0


def test_supcon_orthogonal_negative_closed_form():
    # z0 = z1 orthogonal to z2, t = 1: anchors 0 and 1 lose log(1 + e^-1) each.
    embeddings = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    got = value(SupConLoss(temperature=1.0), [0, 0, 1], embeddings)
    assert got == pytest.approx(2 / 3 * math.log(1 + math.exp(-1)), abs=1e-6)


@pytest.mark.parametrize("temperature", [0.07, 0.1, 0.5])
@pytest.mark.parametrize("margin", [0.0, 0.3])
def test_supcon_matches_reference_on_random_batches(temperature, margin):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 24)
    embeddings = rng.normal(size=(24, 8))
    got = value(SupConLoss(temperature, additive_margin=margin), labels, embeddings)
    assert got == pytest.approx(supcon_reference(labels, embeddings, temperature, margin), rel=1e-5)


def test_additive_margin_raises_the_loss():
    rng = np.random.default_rng(1)
    labels, embeddings = rng.integers(0, 3, 16), rng.normal(size=(16, 4))
    assert value(SupConLoss(0.1, additive_margin=0.2), labels, embeddings) > value(
        SupConLoss(0.1), labels, embeddings)


def test_supcon_is_scale_invariant_because_it_normalises():
    rng = np.random.default_rng(2)
    labels, embeddings = rng.integers(0, 3, 12), rng.normal(size=(12, 5))
    assert value(SupConLoss(), labels, embeddings) == pytest.approx(
        value(SupConLoss(), labels, 7.0 * embeddings), rel=1e-6)


# Two unit vectors at distance exactly 1: their dot product is 0.5.
_UNIT_DISTANCE_PAIR = np.array([[1.0, 0.0], [0.5, math.sqrt(3) / 2]])


def test_margin_same_class_is_squared_distance():
    assert value(MarginContrastiveLoss(1.5), [3, 3], _UNIT_DISTANCE_PAIR) == pytest.approx(1.0, abs=1e-6)


def test_margin_different_classes_inside_the_margin():
    assert value(MarginContrastiveLoss(1.5), [0, 1], _UNIT_DISTANCE_PAIR) == pytest.approx(0.25, abs=1e-6)


def test_margin_boundary_and_beyond_cost_nothing():
    assert value(MarginContrastiveLoss(1.0), [0, 1], _UNIT_DISTANCE_PAIR) == 0.0
    assert value(MarginContrastiveLoss(0.5), [0, 1], _UNIT_DISTANCE_PAIR) == 0.0


def test_margin_is_the_mean_over_ordered_pairs():
    # Three points: pairs (0,1) same class at d = 1, (0,2) and (1,2) different classes
    # at d = 0 (z2 equals z0) and d = 1. With margin 1.5, the six ordered pairs cost
    # 1, 1 (same class), 1.5^2, 1.5^2 (d = 0) and 0.25, 0.25: mean 6.5 / 6.
    embeddings = np.concatenate([_UNIT_DISTANCE_PAIR, _UNIT_DISTANCE_PAIR[:1]])
    got = value(MarginContrastiveLoss(1.5), [0, 0, 1], embeddings)
    assert got == pytest.approx((1 + 1 + 2.25 + 2.25 + 0.25 + 0.25) / 6, abs=1e-5)


def regular_simplex(num_classes):
    """C unit vectors in R^C, the vertices of a regular simplex centred at the origin."""
    vertices = np.eye(num_classes) - 1.0 / num_classes
    return vertices / np.linalg.norm(vertices, axis=1, keepdims=True)


def test_simplex_distance_closed_form():
    assert simplex_distance(2) == pytest.approx(2.0)  # Two antipodal points.
    assert simplex_distance(3) == pytest.approx(math.sqrt(3.0))  # An equilateral triangle.
    assert simplex_distance(10) == pytest.approx(1.4907, abs=1e-4)
    assert simplex_distance(100) == pytest.approx(math.sqrt(200 / 99))
    edges = regular_simplex(10)[:, None, :] - regular_simplex(10)[None, :, :]
    lengths = np.linalg.norm(edges, axis=-1)[~np.eye(10, dtype=bool)]
    np.testing.assert_allclose(lengths, simplex_distance(10))
    with pytest.raises(ValueError, match="at least two classes"):
        simplex_distance(1)


def test_the_simplex_keeps_any_margin_up_to_its_edge_and_none_beyond():
    # One embedding per class: every pair is a negative one. Below the edge the simplex
    # costs nothing; above it every pair costs (m - d_max)^2, and by Jensen (the mean
    # squared distance of C unit vectors is at most d_max^2) no arrangement costs less.
    labels, simplex, edge = list(range(10)), regular_simplex(10), simplex_distance(10)
    assert value(MarginContrastiveLoss(edge - 1e-3), labels, simplex) == pytest.approx(0.0, abs=1e-6)
    beyond = 1.759  # The margin results/robust_photos' search chose, for 10 classes.
    floor = (beyond - edge) ** 2
    assert value(MarginContrastiveLoss(beyond), labels, simplex) == pytest.approx(floor, rel=1e-4)
    others = np.random.default_rng(0).normal(size=(200, 10, 10))
    assert min(value(MarginContrastiveLoss(beyond), labels, z) for z in others) > floor


def test_identical_embeddings():
    same = np.ones((2, 4))
    assert value(MarginContrastiveLoss(1.0), [0, 0], same) == pytest.approx(0.0, abs=1e-6)
    assert value(MarginContrastiveLoss(1.0), [0, 1], same) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("loss", [SupConLoss(0.1), SupConLoss(0.1, additive_margin=0.5),
                                  MarginContrastiveLoss(1.0)], ids=["supcon", "additive", "pairwise"])
def test_gradients_are_finite_everywhere_including_zero_distance(loss):
    # Duplicated rows (d = 0 exactly), a zero vector and ordinary points together.
    embeddings = tf.Variable(np.array([[1.0, 2.0, 0.0], [1.0, 2.0, 0.0], [0.0, 0.0, 0.0],
                                       [-1.0, 0.5, 3.0], [1.0, 2.0, 0.0]], np.float32))
    for labels in ([0, 0, 1, 1, 2], [0, 1, 0, 1, 0]):
        with tf.GradientTape() as tape:
            result = loss(tf.constant(labels), embeddings)
        gradient = tape.gradient(result, embeddings)
        assert np.isfinite(float(result))
        assert np.all(np.isfinite(gradient.numpy()))


@pytest.mark.parametrize("loss", [SupConLoss(0.1), MarginContrastiveLoss(1.0)], ids=["supcon", "pairwise"])
def test_output_is_float32_under_a_mixed_policy(loss):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_bfloat16")
    try:
        embeddings = tf.cast(tf.random.stateless_normal((8, 4), (0, 1)), tf.bfloat16)
        result = loss(tf.constant([0, 1] * 4), embeddings)
    finally:
        keras.config.set_dtype_policy(previous)
    assert result.dtype == tf.float32


@pytest.mark.parametrize("loss", [SupConLoss(0.2, additive_margin=0.1), MarginContrastiveLoss(0.7)],
                         ids=["supcon", "pairwise"])
def test_serialisation_round_trip(loss):
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert type(restored) is type(loss)
    assert restored.get_config() == loss.get_config()
    rng = np.random.default_rng(3)
    labels, embeddings = rng.integers(0, 3, 10), rng.normal(size=(10, 4))
    assert value(restored, labels, embeddings) == value(loss, labels, embeddings)


def test_invalid_parameters_are_refused():
    with pytest.raises(ValueError, match="temperature"):
        SupConLoss(temperature=0.0)
    with pytest.raises(ValueError, match="margin"):
        MarginContrastiveLoss(margin=2.5)
    with pytest.raises(ValueError, match="margin form"):
        make_margin_loss("cosine", 0.5, 0.1)


def test_make_margin_loss_builds_both_forms():
    assert isinstance(make_margin_loss("pairwise", 0.5, 0.1), MarginContrastiveLoss)
    additive = make_margin_loss("additive", 0.2, 0.1)
    assert isinstance(additive, SupConLoss) and additive.additive_margin == 0.2


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
