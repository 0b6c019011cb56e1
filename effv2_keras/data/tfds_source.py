"""TensorFlow Datasets: ``tfds:NAME[:CONFIG]``, read from prepared data only.

This loader never downloads. ``tfds.builder`` only reads code and local
metadata; if the data set is not prepared under ``data_dir`` (default: tfds'
own, ``~/tensorflow_datasets`` or ``$TFDS_DATA_DIR``) a FileNotFoundError says
so at once and shows the command that prepares it, instead of
``download_and_prepare``'s minutes of retries offline. (Preparing needs the
network and the ``importlib_resources`` package.)

Splits: ``train``; validation is the data set's ``validation``/``val``/
``valid`` split if it has one, else a seeded random (not stratified: that
would need a pass over every label) ``val_fraction`` slice of train selected by
example index; ``test`` when present. Images are read with tfds' decoding
skipped and decoded once by ``tf.io.decode_image(channels=3)`` (grayscale and
RGBA become RGB), so each split decodes only its own examples, then cached
(lazily: the first epoch fills the cache). Records in a prepared tfds data set
were validated when it was written: ``skipped_files`` is 0.
"""

from __future__ import annotations

import hashlib
import os
from typing import Optional

import tensorflow as tf

from effv2_keras.data.core import (DatasetSplits, ImageSource, check_val_fraction, random_split_mask,
                                   with_cardinality)

VAL_SPLITS = ("validation", "val", "valid")


def load_tfds(name: str, config: Optional[str] = None, data_dir: Optional[str] = None,
              val_fraction: float = 0.1, seed: int = 0, cache_dir: Optional[str] = None) -> DatasetSplits:
    """Loads a prepared TFDS image-classification data set (see the module docstring)."""
    import tensorflow_datasets as tfds

    val_fraction = check_val_fraction(val_fraction)
    builder = _builder(tfds, name, config, data_dir)
    splits = set(builder.info.splits.keys()) or {"train", "test"}  # mocked builders list no splits
    if "train" not in splits:
        raise ValueError(f"tfds:{name} has no 'train' split (splits: {sorted(splits)})")
    image_key, label_key = _keys(tfds, builder.info, name)
    class_names = list(builder.info.features[label_key].names)
    if len(class_names) < 2:
        raise ValueError(f"tfds:{name}: a classification data set needs at least 2 classes, got {class_names}")

    def source(split, select=None, tag="all"):
        dataset = _read(tfds, builder, split, image_key, label_key)
        n = _count(dataset, builder, split)
        if select is not None:  # a carved slice: keep the examples whose index is selected
            keep = tf.constant(select)

            def selected(index, example):
                return keep[index]

            def drop_index(index, example):
                return example

            dataset = dataset.enumerate().filter(selected).map(drop_index)
            n = int(select.sum())
        dataset = dataset.map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
        key = f"{builder.info.full_name}|{split}|{tag}"
        dataset = dataset.cache(_cache_file(cache_dir, key) if cache_dir else "")
        return ImageSource(dataset=with_cardinality(dataset, n), num_examples=n)

    val_split = next((s for s in VAL_SPLITS if s in splits), None)
    is_val = None
    if val_split is None and val_fraction > 0:
        n_train = _count(_read(tfds, builder, "train", image_key, label_key), builder, "train")
        is_val = random_split_mask(n_train, val_fraction, seed)
    if val_split is not None:
        train, val = source("train"), source(val_split)
    elif is_val is not None and is_val.any():
        tag = f"carved {val_fraction} seed {seed}"
        train, val = source("train", ~is_val, "train " + tag), source("train", is_val, "val " + tag)
    else:
        train, val = source("train"), None
    test = source("test") if "test" in splits else None
    shape = getattr(builder.info.features[image_key], "shape", None) or (None, None)
    stored = [side for side in shape[:2] if side]
    return DatasetSplits(train=train, val=val, test=test, class_names=class_names, skipped_files=0,
                         image_size=min(stored) if len(stored) == 2 else None,
                         flip_invariant=name not in MIRROR_SENSITIVE)


# Data sets whose classes are symbols a horizontal flip changes (digits, letters).
MIRROR_SENSITIVE = frozenset({"mnist", "emnist", "kmnist", "svhn_cropped", "omniglot", "binarized_mnist"})


def _builder(tfds, name, config, data_dir):
    where = data_dir or "tfds' default data_dir"
    try:
        builder = tfds.builder(name, config=config, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(f"tfds: no data set named {name!r} (see tfds.list_builders())") from None
    except (ValueError, AssertionError) as error:  # unknown config or version
        raise ValueError(f"tfds:{name}:{config}: {str(error).splitlines()[0]}") from None
    if builder.is_prepared():
        return builder
    # tfds.testing.mock_data serves data without files; anything else that is
    # not prepared fails here, locally and at once.
    try:
        builder.as_dataset(split="train")
    except Exception:  # noqa: BLE001 - tfds raises AssertionError; any failure means "not here"
        spec = f"{name}:{config}" if config else name
        raise FileNotFoundError(
            f"tfds:{spec} is not prepared in {where} (looked in {builder.data_dir}); this loader never "
            f"downloads. Prepare it once, with network access and importlib_resources installed: "
            f"python -c \"import tensorflow_datasets as tfds; tfds.builder('{name}', config={config!r}, "
            f"data_dir={data_dir!r}).download_and_prepare()\"") from None
    return builder


def _keys(tfds, info, name):
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    if not isinstance(image_key, str) or image_key not in features or label_key not in features:
        raise ValueError(f"tfds:{name} is not an (image, label) data set (features: {list(features.keys())})")
    if not isinstance(features[label_key], tfds.features.ClassLabel):
        raise ValueError(f"tfds:{name}: feature {label_key!r} is not a class label")
    return image_key, label_key


def _count(dataset, builder, split) -> int:
    n = int(dataset.cardinality())
    return n if n >= 0 else builder.info.splits[split].num_examples


def _read(tfds, builder, split, image_key, label_key):
    skip = isinstance(builder.info.features[image_key], tfds.features.Image)
    decoders = {image_key: tfds.decode.SkipDecoding()} if skip else None
    dataset = builder.as_dataset(split=split, decoders=decoders, shuffle_files=False)
    return dataset.map(lambda example: (example[image_key], example[label_key]))


def _decode(image, label):
    if image.dtype == tf.string:
        image = tf.io.decode_image(image, channels=3, expand_animations=False)
    else:  # a plain uint8 tensor feature
        image = tf.cast(image, tf.uint8)
        if image.shape.rank == 2:
            image = image[..., None]
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.image.grayscale_to_rgb(image[..., :1]),
                        lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, 3]), tf.cast(label, tf.int64)


def _cache_file(cache_dir, key):
    os.makedirs(cache_dir, exist_ok=True)
    return os.path.join(cache_dir, "tfds-" + hashlib.sha1(key.encode()).hexdigest()[:16])
