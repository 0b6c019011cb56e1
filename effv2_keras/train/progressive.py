"""Progressive learning for a Keras user's own ``model.fit``: ``fit_progressive``.

For those who keep their compiled model, optimizer and callbacks: one ``model.fit``
per stage of a ``schedule.ProgressiveSchedule``, each on the package's pipeline at the
stage's image size, RandAugment magnitude and Mixup/CutMix alphas, with the head
Dropout's rate set to the stage's; epochs and the optimizer's state run on across
stages (``initial_epoch``, the same compiled optimizer). ``stage_dataset`` is that
pipeline, which ``Trainer`` trains on too.

How it differs from ``effv2 train`` / ``Trainer``: no EMA of the weights or BN
statistics, no checkpoints or resume, no best-epoch selection, no run directory; the
learning rate is whatever the user compiled; the train step is Keras' own (no fused
twin), retraced per stage (so the Dropout rate of each stage is the one traced).

Example:
    >>> import keras
    >>> from effv2_keras import build, data, schedule
    >>> splits = data.load("digits")
    >>> model = build("efficientnetv2-b0", input_shape=(None, None, 3), pooling="avg", classes=10,
    ...               width=0.25, depth=0.25)  # any input size: the head pools first
    >>> model.compile("adam", keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    >>> plan = schedule.make_schedule("efficientnetv2-b0", epochs=3, stages=3, image_size=(32, 48))
    >>> history = fit_progressive(model, splits.train, plan, validation_data=splits.val,
    ...                           verbose=0)  # doctest: +SKIP
    >>> history.history["image_size"]  # doctest: +SKIP
    [32, 40, 48]
"""

from __future__ import annotations

from typing import Optional, Sequence

import keras
import tensorflow as tf

from effv2_keras import augment, data
from effv2_keras.data import ops

RANDAUGMENT_NUM_OPS = 2  # ops applied to each image (the official N; not augment.RANDAUGMENT_OPS, the op list)
HEAD_DROPOUT = "top_dropout"


def stage_dataset(source: data.ImageSource, stage, batch_size: int, num_classes: int, seed: int,
                  randaug_probability: float = 1.0, label_smoothing: float = 0.0, flip: bool = True,
                  crop_scale: Sequence[float] = ops.INCEPTION_CROP_SCALE) -> tf.data.Dataset:
    """Training batches of ``stage``: its size, RandAugment magnitude, Mixup and CutMix alphas.

    ``(images float32 [B, S, S, 3] in 0-255, labels [B, C])``; labels are one-hot, softened
    by Mixup/CutMix and ``label_smoothing``: train with ``CategoricalCrossentropy``.
    """
    image_aug = None
    if stage.randaug_magnitude > 0 and randaug_probability > 0:
        image_aug = augment.make_image_augmenter(stage.randaug_magnitude, RANDAUGMENT_NUM_OPS, seed=seed,
                                                 probability=randaug_probability)
    batch_aug = augment.make_batch_augmenter(num_classes, stage.mixup_alpha, stage.cutmix_alpha,
                                             label_smoothing, seed=seed + 1)
    # Plain TF code: AutoGraph conversion would only warn about their closures.
    no_autograph = tf.autograph.experimental.do_not_convert
    return data.make_pipeline(
        source, stage.image_size, batch_size, num_classes, training=True,
        image_augment=None if image_aug is None else no_autograph(image_aug),
        batch_augment=no_autograph(batch_aug), seed=seed, drop_remainder=True, flip=flip,
        crop_scale=tuple(crop_scale))


def fit_progressive(model: keras.Model, train_data, schedule, validation_data=None, *,
                    batch_size: int = 64, eval_size: Optional[int] = None, randaug_probability: float = 1.0,
                    label_smoothing: float = 0.0, flip: bool = True,
                    crop_scale: Sequence[float] = ops.INCEPTION_CROP_SCALE, seed: int = 0,
                    callbacks: Sequence[keras.callbacks.Callback] = (), **fit_kwargs) -> keras.callbacks.History:
    """Trains a compiled ``model`` through every stage of ``schedule`` with ``model.fit``.

    Args:
        model: a compiled Keras classifier taking float RGB in [0, 255] of any size
            (``input_shape=(None, None, 3)``), e.g. ``effv2_keras.build(...)``; compile it
            with ``CategoricalCrossentropy`` (labels are one-hot, Mixup makes them soft).
        train_data: a ``data.ImageSource`` (``data.load(...).train``, ``data.from_numpy``) or
            a ``data.DatasetSplits`` (its ``val`` becomes the default ``validation_data``).
        schedule: a ``schedule.ProgressiveSchedule`` (``schedule.make_schedule(...)``).
        validation_data: a ``data.ImageSource`` (center-cropped at ``eval_size``) or anything
            ``model.fit`` accepts.
        batch_size, randaug_probability, label_smoothing, flip, crop_scale, seed: the
            training pipeline (``stage_dataset``).
        eval_size: validation image size (default: the last stage's).
        callbacks: Keras callbacks, given to every stage's ``fit`` (so ``on_train_begin``/
            ``end`` run once per stage); those with ``on_stage_begin(stage)`` hear each stage.
        **fit_kwargs: the rest of ``model.fit``'s arguments (``verbose``, ``class_weight`` ...).

    Returns:
        One ``keras.callbacks.History`` over all stages; its ``history`` also holds each
        epoch's ``image_size`` and ``dropout``.
    """
    splits = train_data if isinstance(train_data, data.DatasetSplits) else None
    source = splits.train if splits is not None else train_data
    if not isinstance(source, data.ImageSource):
        raise TypeError("train_data: expected a data.ImageSource or data.DatasetSplits (data.load(...), "
                        f"data.from_numpy(...)), got {type(train_data).__name__}.")
    if validation_data is None and splits is not None:
        validation_data = splits.val
    for reserved in ("epochs", "initial_epoch", "x", "y", "batch_size", "validation_data"):
        if reserved in fit_kwargs:
            raise TypeError(f"{reserved}: set by fit_progressive from the schedule and its arguments; "
                            "leave it out.")
    _check_model(model, schedule)
    num_classes = int(model.output_shape[-1])
    eval_size = eval_size or schedule.stages[-1].image_size
    if isinstance(validation_data, data.ImageSource):
        validation_data = data.make_pipeline(validation_data, eval_size, batch_size, num_classes,
                                             training=False, drop_remainder=False)
    dropout = _head_dropout(model)
    combined = keras.callbacks.History()
    combined.set_model(model)
    combined.epoch = []
    fit_kwargs.setdefault("shuffle", False)  # the pipeline shuffles; Keras warns on a Dataset otherwise
    for stage in schedule.stages:
        first = schedule.first_epoch(stage.index)
        if dropout is not None:
            dropout.rate = stage.dropout
        model.make_train_function(force=True)  # trace the stage's Dropout rate into the step
        for callback in callbacks:
            if hasattr(callback, "on_stage_begin"):
                callback.on_stage_begin(stage)
        dataset = stage_dataset(source, stage, batch_size, num_classes, seed=seed + 1000 * stage.index,
                                randaug_probability=randaug_probability, label_smoothing=label_smoothing,
                                flip=flip, crop_scale=crop_scale)
        history = model.fit(dataset, epochs=first + stage.epochs, initial_epoch=first,
                            validation_data=validation_data, callbacks=list(callbacks), **fit_kwargs)
        _append(combined, history, stage)
        if model.stop_training:
            break
    return combined


def _check_model(model, schedule) -> None:
    if getattr(model, "optimizer", None) is None or not getattr(model, "compiled", True):
        raise ValueError("model: compile it first, e.g. model.compile('adam', "
                         "keras.losses.CategoricalCrossentropy(), metrics=['accuracy']).")
    height, width = model.input_shape[1:3]
    sizes = sorted({stage.image_size for stage in schedule.stages})
    if (height is not None or width is not None) and any((height, width) != (s, s) for s in sizes):
        raise ValueError(f"model: its input is fixed at {height}x{width} but the schedule trains at "
                         f"{sizes}; build it with input_shape=(None, None, 3).")


def _head_dropout(model):
    try:
        return model.get_layer(HEAD_DROPOUT)
    except ValueError:
        return None


def _append(combined: keras.callbacks.History, history: keras.callbacks.History, stage) -> None:
    combined.epoch.extend(history.epoch)
    for key, values in history.history.items():
        combined.history.setdefault(key, []).extend(values)
    combined.history.setdefault("image_size", []).extend([stage.image_size] * len(history.epoch))
    combined.history.setdefault("dropout", []).extend([stage.dropout] * len(history.epoch))
