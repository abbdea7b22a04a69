"""tf.data pipelines from a `Split` in memory to training and evaluation batches.

Images leave as float32 in [0, 1]; normalisation by the data set's mean and standard
deviation happens inside the model, so attack epsilons stay in [0, 1] pixel units.

Training batches are `(images, labels)` with images [B, V, H, W, C] when `views` V > 1
(the V augmented views of each image side by side, so that a distribution strategy that
splits the batch keeps the views of an image together) and [B, H, W, C] when V == 1.
"""

import tensorflow as tf

from common.errors import UserError
from pipeline import augment as augment_lib


def _to_float(images):
    return tf.cast(images, tf.float32) / 255.0


def train_dataset(split, batch_size, seed, views=2, augmentation=None, repeat=False,
                  input_context=None):
    """Shuffled, augmented batches, reshuffled each epoch (the last partial batch is dropped).

    `augmentation` holds keyword arguments of `pipeline.augment.augment`. The seed fixes
    the order and the augmentations of every epoch, so a run can be repeated exactly.
    `repeat` makes it endless, epoch after epoch, without restarting the parallel map.

    `batch_size` is the global batch. With a `tf.distribute.InputContext` this input
    pipeline (one per worker) makes only its replicas' shares of each global batch, one
    per-replica batch after another: every pipeline shuffles alike (same seed), takes its
    rows of the global batch and augments just those, with the randomness the whole batch
    would get (`augment`'s `first` and `total`). The replicas together then see exactly
    the images and augmentations of an undistributed run.
    """
    if batch_size > len(split):
        raise UserError(f"batch size {batch_size} is larger than the {len(split)} training "
                        "images; lower --config.train.batch_size.")
    replicas, pipelines, pipeline_id = 1, 1, 0
    if input_context is not None:
        replicas = input_context.num_replicas_in_sync
        pipelines = input_context.num_input_pipelines
        pipeline_id = input_context.input_pipeline_id
    if batch_size % replicas:
        raise UserError(f"batch size {batch_size} does not split evenly over {replicas} replicas; "
                        f"make --config.train.batch_size a multiple of {replicas}.")
    per_replica = batch_size // replicas
    replicas_here = replicas // pipelines
    first = pipeline_id * replicas_here * per_replica
    rows = replicas_here * per_replica
    augmentation = dict(augmentation or {})
    if input_context is not None:
        augmentation.update(first=first, total=batch_size)
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
        if input_context is not None:
            batch_indices = batch_indices[first:first + rows]
        batch = tf.gather(images, batch_indices)
        view_seeds = tf.random.experimental.stateless_split(batch_seed, views)
        augmented = [augment_lib.augment(batch, view_seeds[v], **augmentation) for v in range(views)]
        stacked = augmented[0] if views == 1 else tf.stack(augmented, axis=1)
        batch_labels = tf.gather(labels, batch_indices)
        if replicas_here > 1:  # [replicas here, per-replica batch, ...], unbatched below.
            return (tf.reshape(stacked, [replicas_here, per_replica, *stacked.shape[1:]]),
                    tf.reshape(batch_labels, [replicas_here, per_replica]))
        return stacked, batch_labels

    dataset = tf.data.Dataset.zip(indices, seeds).map(make_views, num_parallel_calls=tf.data.AUTOTUNE)
    if replicas_here > 1:
        dataset = dataset.flat_map(lambda x, y: tf.data.Dataset.from_tensor_slices((x, y)))
    return dataset.prefetch(tf.data.AUTOTUNE)


def eval_dataset(split, batch_size):
    """Un-augmented batches in order, images float32 [B, H, W, C] in [0, 1]; keeps the last partial batch."""
    dataset = split.as_dataset().batch(batch_size)
    return dataset.map(lambda x, y: (_to_float(x), y), num_parallel_calls=tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE)
