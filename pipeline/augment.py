"""Random augmentations of whole batches, for the contrastive views.

Every function takes images [B, H, W, C] and a stateless seed (an int [2] tensor) and
draws independent randomness per image; the colour changes need float32 in [0, 1], the
crop and flip take any dtype (on uint8 they move four times fewer bytes). Working on the batch, not
on one image at a time, is what lets two CPU cores produce tens of thousands of views a
second. The same seed gives the same output, which makes runs repeatable.

The default is SupCon's CIFAR recipe without colour: a random crop after 4-pixel
reflect padding and a horizontal flip. Colour jitter and random grayscale, the rest of
SupCon's recipe (Khosla et al., 2020, after SimCLR), are options.

Under tf.distribute each replica augments only its share of the global batch: `first`
and `total` say that the images are rows first..first+B-1 of a batch of `total`. The
random numbers are drawn for all `total` rows and these rows taken, so every image gets
exactly the augmentation it would get in the undistributed batch, whatever the replica
count. Left out, they mean the images are the whole batch.
"""

import tensorflow as tf


def per_image_uniform(images, seed, shape=(), minval=0, maxval=None, dtype=tf.float32, first=0,
                      total=None):
    """Uniform random numbers [B, *shape] for `images` [B, ...], rows first..first+B-1 of `total`."""
    batch = tf.shape(images)[0]
    rows = batch if total is None else total
    drawn = tf.random.stateless_uniform(tf.concat([[rows], tf.constant(shape, tf.int32)], 0), seed,
                                        minval, maxval, dtype)
    return drawn[first:first + batch]


def random_crop(images, seed, padding=4, first=0, total=None):
    """Pads each side by `padding` pixels (reflected) and crops back at a random offset."""
    if padding == 0:
        return images
    height, width = images.shape[1], images.shape[2]
    padded = tf.pad(images, [[0, 0], [padding, padding], [padding, padding], [0, 0]], "REFLECT")
    offsets = per_image_uniform(images, seed, [2], 0, 2 * padding + 1, tf.int32, first, total)
    rows = offsets[:, :1] + tf.range(height)[None, :]
    columns = offsets[:, 1:] + tf.range(width)[None, :]
    cropped = tf.gather(padded, rows, axis=1, batch_dims=1)
    return tf.gather(cropped, columns, axis=2, batch_dims=1)


def random_flip(images, seed, first=0, total=None):
    """Mirrors each image left-right with probability 1/2."""
    flip = per_image_uniform(images, seed, [1, 1, 1], first=first, total=total) < 0.5
    return tf.where(flip, tf.reverse(images, axis=[2]), images)


def color_jitter(images, seed, strength=0.4, probability=0.8, first=0, total=None):
    """Jitters brightness, contrast and saturation by up to `strength` and hue by strength/4.

    Applied to each image with `probability`, as SimCLR and SupCon do. Needs 3 channels.
    """
    seeds = tf.random.experimental.stateless_split(seed, 5)

    def factor(i, low, high):
        return per_image_uniform(images, seeds[i], [1, 1, 1], low, high, first=first, total=total)

    jittered = images * factor(0, 1 - strength, 1 + strength)
    mean = tf.reduce_mean(jittered, axis=[1, 2, 3], keepdims=True)
    jittered = tf.clip_by_value((jittered - mean) * factor(1, 1 - strength, 1 + strength) + mean, 0, 1)
    gray = tf.image.rgb_to_grayscale(jittered)
    jittered = tf.clip_by_value((jittered - gray) * factor(2, 1 - strength, 1 + strength) + gray, 0, 1)
    hsv = tf.image.rgb_to_hsv(jittered)
    hue = tf.math.floormod(hsv[..., :1] + factor(3, -strength / 4, strength / 4), 1.0)
    jittered = tf.image.hsv_to_rgb(tf.concat([hue, hsv[..., 1:]], axis=-1))
    apply = per_image_uniform(images, seeds[4], [1, 1, 1], first=first, total=total) < probability
    return tf.where(apply, jittered, images)


def random_grayscale(images, seed, probability=0.2, first=0, total=None):
    """Replaces each image by its luminance (kept as 3 channels) with `probability`."""
    gray = tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(images))
    apply = per_image_uniform(images, seed, [1, 1, 1], first=first, total=total) < probability
    return tf.where(apply, gray, images)


def augment(images, seed, padding=4, flip=True, jitter_strength=0.0, grayscale_probability=0.0,
            first=0, total=None):
    """One random view of uint8 images: crop, flip, then the optional colour changes.

    Returns float32 images in [0, 1]. `first`, `total`: see the module docstring.
    """
    rows = dict(first=first, total=total)
    seeds = tf.random.experimental.stateless_split(seed, 4)
    images = random_crop(images, seeds[0], padding, **rows)
    if flip:
        images = random_flip(images, seeds[1], **rows)
    images = tf.cast(images, tf.float32) / 255.0
    if jitter_strength > 0:
        images = color_jitter(images, seeds[2], jitter_strength, **rows)
    if grayscale_probability > 0:
        images = random_grayscale(images, seeds[3], grayscale_probability, **rows)
    return images
