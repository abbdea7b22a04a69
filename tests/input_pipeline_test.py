"""Augmentations alone and inside tf.data, the training and evaluation pipelines, the splits."""

import sys

import numpy as np
import pytest
import tensorflow as tf

from common.errors import UserError
from pipeline import augment
from pipeline import datasets
from pipeline import input_pipeline
from pipeline.split import Split


def toy_split(count=40, size=8, classes=4, seed=0):
    rng = np.random.default_rng(seed)
    return Split(rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8),
                 np.arange(count, dtype=np.int64) % classes)


def test_random_crop_is_a_shifted_window_of_the_reflect_padded_image():
    images = tf.constant(np.arange(2 * 6 * 6 * 1, dtype=np.float32).reshape(2, 6, 6, 1))
    cropped = augment.random_crop(images, tf.constant([3, 4], tf.int64), padding=2).numpy()
    padded = np.pad(images.numpy(), [(0, 0), (2, 2), (2, 2), (0, 0)], mode="reflect")
    for image, crop in zip(padded, cropped):
        windows = [image[r:r + 6, c:c + 6] for r in range(5) for c in range(5)]
        assert any(np.array_equal(crop, window) for window in windows)


def test_flip_mirrors_or_keeps_each_image_and_twice_is_identity():
    images = tf.constant(np.random.default_rng(0).random((16, 5, 5, 3)), tf.float32)
    seed = tf.constant([1, 2], tf.int64)
    flipped = augment.random_flip(images, seed).numpy()
    for original, result in zip(images.numpy(), flipped):
        assert np.array_equal(result, original) or np.array_equal(result, original[:, ::-1])
    assert 0 < sum(not np.array_equal(a, b) for a, b in zip(images.numpy(), flipped)) < 16
    np.testing.assert_array_equal(augment.random_flip(flipped, seed).numpy(), images.numpy())


def test_colour_options_stay_in_range_and_grayscale_has_equal_channels():
    images = tf.constant(np.random.default_rng(1).random((32, 6, 6, 3)), tf.float32)
    jittered = augment.color_jitter(images, tf.constant([0, 1], tf.int64), strength=0.4).numpy()
    assert jittered.min() >= 0.0 and jittered.max() <= 1.0 + 1e-6
    gray = augment.random_grayscale(images, tf.constant([0, 2], tf.int64), probability=1.0).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-6)


def test_augment_is_the_same_alone_and_inside_tf_data():
    # big_vision's warning: ops can behave differently eagerly and traced inside tf.data.
    images = tf.constant(np.random.default_rng(2).integers(0, 256, (8, 8, 8, 3)), tf.uint8)
    seed = tf.constant([5, 6], tf.int64)
    options = dict(padding=2, jitter_strength=0.3, grayscale_probability=0.5)
    alone = augment.augment(images, seed, **options).numpy()
    inside = next(iter(tf.data.Dataset.from_tensors((images, seed)).map(
        lambda x, s: augment.augment(x, s, **options)))).numpy()
    np.testing.assert_allclose(alone, inside, atol=1e-6)
    assert alone.dtype == np.float32 and alone.min() >= 0.0 and alone.max() <= 1.0


def test_train_batches_hold_two_different_views_of_the_same_image_in_unit_range():
    split = toy_split()
    images, labels = next(iter(input_pipeline.train_dataset(split, 8, seed=0, views=2)))
    assert images.shape == (8, 2, 8, 8, 3) and images.dtype == tf.float32
    assert labels.shape == (8,) and labels.dtype == tf.int64
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 1.0
    assert not np.array_equal(images[:, 0].numpy(), images[:, 1].numpy())
    # With neither crop nor flip both views are the image itself, scaled to [0, 1].
    plain = input_pipeline.train_dataset(split, 8, seed=0, views=2,
                                         augmentation=dict(padding=0, flip=False))
    images, labels = next(iter(plain))
    for views, label in zip(images.numpy(), labels.numpy()):
        np.testing.assert_array_equal(views[0], views[1])
        matches = [i for i in range(len(split))
                   if np.allclose(split.images[i] / np.float32(255), views[0], atol=1e-6)]
        assert matches and split.labels[matches[0]] == label


def epoch(dataset):
    return [(x.numpy(), y.numpy()) for x, y in dataset]


def test_seed_fixes_order_and_augmentation_and_epochs_differ():
    split = toy_split()
    first = epoch(input_pipeline.train_dataset(split, 8, seed=3, views=1))
    again = epoch(input_pipeline.train_dataset(split, 8, seed=3, views=1))
    assert len(first) == 5
    for (a, la), (b, lb) in zip(first, again):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(la, lb)
    dataset = input_pipeline.train_dataset(split, 8, seed=3, views=1)
    one, two = epoch(dataset), epoch(dataset)
    assert not all(np.array_equal(a[1], b[1]) for a, b in zip(one, two))
    repeated = input_pipeline.train_dataset(split, 8, seed=3, views=1, repeat=True)
    assert len(list(repeated.take(12))) == 12


def test_eval_batches_are_in_order_and_keep_the_last_partial_batch():
    split = toy_split(count=10)
    batches = epoch(input_pipeline.eval_dataset(split, 4))
    assert [len(y) for _, y in batches] == [4, 4, 2]
    np.testing.assert_allclose(np.concatenate([x for x, _ in batches]), split.images / 255.0, atol=1e-6)


def test_batch_larger_than_the_data_is_a_user_error():
    with pytest.raises(UserError, match="batch_size"):
        input_pipeline.train_dataset(toy_split(count=4), 8, seed=0)


def test_validation_split_is_stratified_seeded_and_disjoint():
    split = toy_split(count=100, classes=4)
    split.images[:, 0, 0, 0] = np.arange(100)  # A mark to tell the images apart.
    train, validation = datasets.split_validation(split, 0.2, seed=7)
    assert (len(train), len(validation)) == (80, 20)
    assert np.bincount(validation.labels).tolist() == [5, 5, 5, 5]
    assert not set(train.images[:, 0, 0, 0]) & set(validation.images[:, 0, 0, 0])
    again = datasets.split_validation(split, 0.2, seed=7)[1]
    np.testing.assert_array_equal(again.images, validation.images)
    assert datasets.split_validation(split, 0.0, seed=7) == (split, None)
    with pytest.raises(UserError, match="validation_fraction"):
        datasets.split_validation(split, 1.0, seed=7)


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
