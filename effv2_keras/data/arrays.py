"""In-memory arrays as a data set: ``from_numpy``.

Images: ``[N, H, W]`` (gray), ``[N, H, W, 1]`` or ``[N, H, W, 3]``; uint8, or
any integer or float type holding values in 0-255 (rounded to uint8). Float
arrays whose maximum is at most 1 are accepted but trigger a warning: they
look like [0, 1] images, and the models take 0-255 pixels. Labels: integer
class ids ``[N]`` (or ``[N, 1]``) in ``[0, num_classes)``; ``num_classes`` is
``len(class_names)`` when names are given, else the largest label + 1.
The arrays themselves are the cache (no copy through ``Dataset.cache``).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from effv2_keras.data.core import (DatasetSplits, ImageSource, check_labels, check_val_fraction,
                                   logger, stratified_split, with_cardinality)


def from_numpy(x_train, y_train, x_val=None, y_val=None, x_test=None, y_test=None,
               class_names: Optional[Sequence[str]] = None, val_fraction: float = 0.1,
               seed: int = 0, flip_invariant: bool = True) -> DatasetSplits:
    """Wraps numpy arrays as :class:`DatasetSplits`.

    Without ``x_val`` a stratified, seeded ``val_fraction`` slice of the train
    arrays becomes the validation split (``val_fraction=0``: no validation).
    ``flip_invariant=False`` declares that a mirrored image is another class (digits,
    text): the trainer then leaves horizontal flips off by default.

    >>> import numpy as np
    >>> x = np.zeros([20, 8, 8], np.uint8); y = np.arange(20) % 2
    >>> splits = from_numpy(x, y, val_fraction=0.2)
    >>> splits.class_names, splits.train.num_examples, splits.val.num_examples
    (['0', '1'], 16, 4)
    """
    val_fraction = check_val_fraction(val_fraction)
    pairs = {"train": (x_train, y_train), "val": (x_val, y_val), "test": (x_test, y_test)}
    for split, (x, y) in pairs.items():
        if (x is None) != (y is None):
            raise ValueError(f"from_numpy: x_{split} and y_{split} must be given together")
    given = {split: (np.asarray(x), np.asarray(y)) for split, (x, y) in pairs.items() if x is not None}

    if class_names is None:
        highest = max((int(np.max(y)) for _, y in given.values() if np.size(y)), default=-1)
        class_names = [str(i) for i in range(highest + 1)]
    class_names = [str(name) for name in class_names]
    if len(class_names) < 2:
        raise ValueError(f"from_numpy: a classification data set needs at least 2 classes, got {class_names}")

    arrays = {}
    for split, (x, y) in given.items():
        labels = check_labels(y, len(class_names), f"from_numpy y_{split}")
        images = _to_uint8_rgb(x, f"from_numpy x_{split}")
        if len(images) != len(labels):
            raise ValueError(f"from_numpy: x_{split} has {len(images)} images but y_{split} has {len(labels)} labels")
        arrays[split] = (images, labels)

    if "val" not in arrays and val_fraction > 0:
        images, labels = arrays["train"]
        keep, take = stratified_split(labels, val_fraction, seed)
        if len(take):
            arrays["train"] = (images[keep], labels[keep])
            arrays["val"] = (images[take], labels[take])

    sources = {split: _source(*arrays[split]) if split in arrays else None for split in ("train", "val", "test")}
    height, width = arrays["train"][0].shape[1:3]
    return DatasetSplits(train=sources["train"], val=sources["val"], test=sources["test"],
                         class_names=class_names, skipped_files=0, image_size=int(min(height, width)),
                         flip_invariant=flip_invariant)


def _source(images: np.ndarray, labels: np.ndarray) -> ImageSource:
    dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    return ImageSource(dataset=with_cardinality(dataset, len(labels)), num_examples=len(labels))


def _to_uint8_rgb(x: np.ndarray, where: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3):
        raise ValueError(f"{where}: images must be [N, H, W], [N, H, W, 1] or [N, H, W, 3], got shape {x.shape}")
    if x.dtype != np.uint8:
        if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
            raise ValueError(f"{where}: images must be uint8, integer or float, got dtype {x.dtype}")
        if x.size:
            low, high = x.min(), x.max()
            if not (np.isfinite(low) and np.isfinite(high)) or low < 0 or high > 255:
                raise ValueError(f"{where}: pixel values must be in 0-255, got {low} to {high}")
            if np.issubdtype(x.dtype, np.floating) and high <= 1.0:
                logger.warning("%s: float images with maximum %s look like [0, 1] data; "
                               "this package expects 0-255 pixels (multiply by 255)", where, high)
        x = np.rint(x).astype(np.uint8)
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return x
