"""From a decoded source to model batches, per stage: ``make_pipeline``; and ``measure_throughput``.

Training: shuffle (seeded, reshuffled every epoch) the stored-size images,
random-resized crop (Inception-style, ``crop_scale`` area range, default
0.08-1 as in the official V2 code; small low-resolution sets such as the
digits may want a milder range like (0.25, 1)), optional horizontal flip
(``flip=False`` for data that is not mirror-symmetric: digits, hand signs,
text), ``image_augment`` per image, clip to 0-255, batch, one-hot labels,
``batch_augment`` per batch, prefetch.

Evaluation: the central box of ``eval_crop_fraction`` (0.875, as the official
evaluation: 224 of 256) of each side, its aspect kept within the training crop's
4/3 of square, resized (``ops.center_crop_resize``); no shuffle, no flip.

Per-element randomness comes from a seeded ``Dataset.random`` stream that is
re-randomized every epoch, so with a fixed ``seed`` the batches (before any
augment callable with its own RNG) are the same run after run, while epochs
differ. ``seed=None`` gives a nondeterministic pipeline.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import tensorflow as tf

from effv2_keras.data import ops
from effv2_keras.data.core import ImageSource

AUTOTUNE = tf.data.AUTOTUNE


def make_pipeline(source: ImageSource, image_size: int, batch_size: int, num_classes: int, training: bool,
                  image_augment: Optional[Callable] = None, batch_augment: Optional[Callable] = None,
                  seed: Optional[int] = 0, drop_remainder: Optional[bool] = None, shuffle_buffer: int = 10000,
                  flip: bool = True, crop_scale: Sequence[float] = ops.INCEPTION_CROP_SCALE,
                  crop_ratio: Sequence[float] = ops.INCEPTION_CROP_RATIO,
                  eval_crop_fraction: float = ops.EVAL_CROP_FRACTION) -> tf.data.Dataset:
    """Batches ``(images float32 [B, S, S, 3] in 0-255, labels float32 one-hot [B, C])``.

    Args:
        source: a split from :func:`effv2_keras.data.load` or ``from_numpy``.
        image_size: S, the side of the square output images.
        batch_size: B.
        num_classes: C; a label outside ``[0, C)`` fails the pipeline with an
            InvalidArgumentError instead of becoming an all-zero target.
        training: random crop + flip + shuffle (True) or center crop (False).
        image_augment: ``f(image float32 [S, S, 3] 0-255) -> same``, applied per
            image inside the parallel map (e.g. RandAugment); output clipped to 0-255.
            Applied at evaluation too when given (pass None there for plain evaluation).
        batch_augment: ``f(images [B, S, S, 3], labels one-hot [B, C]) -> same``
            (Mixup, CutMix, label smoothing).
        seed: seeds the shuffle and the crops/flips; None: nondeterministic.
        drop_remainder: default: True when training and the split holds at
            least one full batch (no short last batch: one shape per stage);
            False for evaluation (every example counts).
        shuffle_buffer: shuffle buffer in examples (capped at the split size).
        flip: random horizontal flips when training.
        crop_scale, crop_ratio: area and aspect ranges of the training crop.
        eval_crop_fraction: central crop fraction at evaluation (1.0: the whole image; see ops.center_crop_resize).

    The dataset's cardinality is known, so ``len(dataset)`` is the number of batches.
    """
    if image_size < 1 or batch_size < 1 or num_classes < 1:
        raise ValueError(f"image_size, batch_size and num_classes must be positive, "
                         f"got {image_size}, {batch_size}, {num_classes}")
    if drop_remainder is None:
        drop_remainder = bool(training and source.num_examples >= batch_size)
    crop_scale, crop_ratio = tuple(crop_scale), tuple(crop_ratio)
    dataset = source.dataset

    if training:
        dataset = dataset.shuffle(max(1, min(shuffle_buffer, source.num_examples)), seed=seed,
                                  reshuffle_each_iteration=True)
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(4)
        dataset = tf.data.Dataset.zip(dataset, seeds)

        def per_image(example, seeds):
            image, label = example
            image = ops.random_resized_crop(image, image_size, seeds[:2], crop_scale, crop_ratio)
            if flip:
                image = ops.random_flip(image, seeds[2:])
            return _finish_image(image, image_augment, image_size), label
    else:
        def per_image(image, label):
            image = ops.center_crop_resize(image, image_size, eval_crop_fraction)
            return _finish_image(image, image_augment, image_size), label

    dataset = dataset.map(per_image, num_parallel_calls=AUTOTUNE)
    dataset = dataset.batch(batch_size, drop_remainder=drop_remainder, num_parallel_calls=AUTOTUNE)

    def per_batch(images, labels):
        labels = tf.cast(labels, tf.int64)
        checks = [tf.debugging.assert_non_negative(labels, message="negative label"),
                  tf.debugging.assert_less(labels, tf.constant(num_classes, tf.int64),
                                           message=f"label >= num_classes ({num_classes})")]
        with tf.control_dependencies(checks):
            labels = tf.one_hot(labels, num_classes, dtype=tf.float32)
        if batch_augment is not None:
            images, labels = batch_augment(images, labels)
        return images, labels

    dataset = dataset.map(per_batch, num_parallel_calls=AUTOTUNE)
    return dataset.prefetch(AUTOTUNE)


def _finish_image(image, image_augment, image_size):
    if image_augment is not None:
        image = tf.cast(image_augment(image), tf.float32)
    image = tf.clip_by_value(image, 0.0, 255.0)
    return tf.ensure_shape(image, [image_size, image_size, 3])


def measure_throughput(dataset: tf.data.Dataset, batches: int = 50, warmup: int = 2) -> float:
    """Images per second produced by iterating ``dataset`` (CPU input pipeline speed).

    The first ``warmup`` batches (iterator start, autotuning, cache filling
    when not yet filled) are not timed; then up to ``batches`` batches are.
    Images are counted by the leading dimension of each element's first
    tensor, so it works for ``(images, labels)`` batches and bare image batches.
    """
    if batches < 1:
        raise ValueError(f"batches must be positive, got {batches}")
    iterator = iter(dataset)
    for _ in range(warmup):
        if next(iterator, None) is None:
            break
    images, start = 0, time.perf_counter()
    for _ in range(batches):
        element = next(iterator, None)
        if element is None:
            break
        images += int(tf.shape(tf.nest.flatten(element)[0])[0])
    elapsed = time.perf_counter() - start
    if images == 0:
        raise ValueError("measure_throughput: the dataset produced no batch after the warm-up")
    return images / elapsed
