"""Per-image ops of the input pipeline. Each works eagerly and inside ``tf.data.Dataset.map``.

Inputs are images ``[h, w, 3]`` of any real dtype holding 0-255 values (the
decoded uint8 images of a source); outputs are float32 ``[size, size, 3]``
in 0-255. Randomness is stateless: each op takes a ``seed`` tensor of shape
``[2]``, so a pipeline that draws per-element seeds from a seeded stream is
reproducible whatever the parallelism.

Resizing is bilinear with antialiasing (a triangle filter widened when
shrinking, so large photos shrunk to the small early-stage sizes of
progressive learning do not alias; it never overshoots 0-255).
"""

from __future__ import annotations

from typing import Sequence

import tensorflow as tf

INCEPTION_CROP_SCALE = (0.08, 1.0)  # area fraction range of the random crop (Inception, official V2)
INCEPTION_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)  # aspect ratio range of the random crop
EVAL_CROP_FRACTION = 0.875  # center crop side / shorter image side at evaluation (224 / 256)


def resize(image: tf.Tensor, size: int) -> tf.Tensor:
    """Any ``[h, w, 3]`` image to float32 ``[size, size, 3]`` (aspect not kept)."""
    image = tf.image.resize(tf.cast(image, tf.float32), [size, size], method="bilinear", antialias=True)
    return tf.ensure_shape(image, [size, size, 3])


def random_resized_crop(image: tf.Tensor, size: int, seed: tf.Tensor,
                        scale: Sequence[float] = INCEPTION_CROP_SCALE,
                        ratio: Sequence[float] = INCEPTION_CROP_RATIO) -> tf.Tensor:
    """Inception-style crop: a random box covering ``scale`` of the area with aspect in ``ratio``, resized.

    The box comes from ``tf.image.stateless_sample_distorted_bounding_box``
    (10 attempts; if none fits, the whole image is used).
    """
    if not 0.0 < scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"crop scale must satisfy 0 < min <= max <= 1, got {tuple(scale)}")
    begin, box_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        tf.shape(image), bounding_boxes=tf.constant([[[0.0, 0.0, 1.0, 1.0]]]), seed=seed,
        min_object_covered=scale[0], aspect_ratio_range=tuple(ratio), area_range=tuple(scale),
        max_attempts=10, use_image_if_no_bounding_boxes=True)
    return resize(tf.slice(image, begin, box_size), size)


def center_crop_resize(image: tf.Tensor, size: int, crop_fraction: float = EVAL_CROP_FRACTION) -> tf.Tensor:
    """The central square of side ``crop_fraction * min(h, w)``, resized to ``size``."""
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    side = tf.cast(tf.cast(tf.minimum(height, width), tf.float32) * crop_fraction, tf.int32)
    side = tf.maximum(side, 1)
    top, left = (height - side) // 2, (width - side) // 2
    return resize(image[top:top + side, left:left + side], size)


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Horizontal flip with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)
