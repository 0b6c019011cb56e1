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
EVAL_CROP_FRACTION = 0.875  # central box side / image side at evaluation (224 / 256)


def resize(image: tf.Tensor, size) -> tf.Tensor:
    """Any ``[h, w, 3]`` image to float32 ``[size, size, 3]`` (or ``size`` = (h, w)); aspect not kept."""
    height, width = (size, size) if isinstance(size, int) else tuple(size)
    image = tf.image.resize(tf.cast(image, tf.float32), [height, width], method="bilinear", antialias=True)
    return tf.ensure_shape(image, [height, width, 3])


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


def center_crop_resize(image: tf.Tensor, size, crop_fraction: float = EVAL_CROP_FRACTION,
                       max_aspect_change: float = INCEPTION_CROP_RATIO[1]) -> tf.Tensor:
    """The central box of ``crop_fraction`` of each side, resized to ``size`` (an int or (h, w)).

    The box keeps the photo's aspect while that is within ``max_aspect_change`` (4/3, the
    training crop's ratio range) of the target's, and is squeezed to the target like the
    training crops are; beyond that its longer side is cut to the limit. So a 160x213
    portrait is evaluated whole (as a full-area training crop shows it), and a square photo
    gets the usual central square of ``crop_fraction`` of its side (224 of 256).

    >>> center_crop_resize(tf.zeros([213, 160, 3]), 64).shape
    TensorShape([64, 64, 3])
    """
    if not 0.0 < crop_fraction <= 1.0:
        raise ValueError(f"crop_fraction must be in (0, 1], got {crop_fraction}")
    target_h, target_w = (size, size) if isinstance(size, int) else tuple(size)
    shape = tf.shape(image)
    height, width = shape[0], shape[1]
    box_h = tf.cast(height, tf.float32) * crop_fraction
    box_w = tf.cast(width, tf.float32) * crop_fraction
    target_aspect = target_w / target_h
    box_w = tf.minimum(box_w, box_h * target_aspect * max_aspect_change)  # too wide: cut the width
    box_h = tf.minimum(box_h, box_w / (target_aspect / max_aspect_change))  # too tall: cut the height
    crop_h = tf.maximum(tf.cast(box_h, tf.int32), 1)
    crop_w = tf.maximum(tf.cast(box_w, tf.int32), 1)
    top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return resize(image[top:top + crop_h, left:left + crop_w], (target_h, target_w))


def random_flip(image: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Horizontal flip with probability 1/2."""
    return tf.image.stateless_random_flip_left_right(image, seed=seed)
