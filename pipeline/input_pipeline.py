"""tf.data pipelines from a `Split` in memory to training and evaluation batches.

Images leave as float32 in [0, 1]; normalisation by the data set's mean and standard
deviation happens inside the model, so attack epsilons stay in [0, 1] pixel units.

Training batches are `(images, labels)` with images [B, V, H, W, C] when `views` V > 1
(the V augmented views of each image side by side, so that a distribution strategy that
splits the batch keeps the views of an image together) and [B, H, W, C] when V == 1.
"""

import tensorflow as tf

from pipeline import augment as augment_lib
from pipeline.errors import UserError


def _to_float(images):
    return tf.cast(images, tf.float32) / 255.0


def train_dataset(split, batch_size, seed, views=2, augmentation=None, repeat=False):
    """Shuffled, augmented batches, reshuffled each epoch (the last partial batch is dropped).

    `augmentation` holds keyword arguments of `pipeline.augment.augment`. The seed fixes
    the order and the augmentations of every epoch, so a run can be repeated exactly.
    `repeat` makes it endless, epoch after epoch, without restarting the parallel map.
    """
    if batch_size > len(split):
        raise UserError(f"batch size {batch_size} is larger than the {len(split)} training "
                        "images; lower --config.train.batch_size.")
    augmentation = dict(augmentation or {})
    images = tf.constant(split.images)
    labels = tf.constant(split.labels)
    # Shuffling indices, not images, keeps the per-element work of tf.data tiny; the
    # images are then gathered and augmented a whole batch at a time.
    indices = tf.data.Dataset.range(len(split)).shuffle(
        len(split), seed=seed, reshuffle_each_iteration=True).batch(batch_size, drop_remainder=True)
    if repeat:
        indices = indices.repeat()
    seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)

    def make_views(batch_indices, batch_seed):
        batch = tf.gather(images, batch_indices)
        view_seeds = tf.random.experimental.stateless_split(batch_seed, views)
        augmented = [augment_lib.augment(batch, view_seeds[v], **augmentation) for v in range(views)]
        stacked = augmented[0] if views == 1 else tf.stack(augmented, axis=1)
        return stacked, tf.gather(labels, batch_indices)

    dataset = tf.data.Dataset.zip(indices, seeds).map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, batch_size):
    """Un-augmented batches in order, images float32 [B, H, W, C] in [0, 1]; keeps the last partial batch."""
    dataset = split.as_dataset().batch(batch_size)
    return dataset.map(lambda x, y: (_to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)
