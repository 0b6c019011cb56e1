"""The two containers every data source returns, and the helpers they share.

An :class:`ImageSource` is one split decoded once: a ``tf.data.Dataset`` of
``(image uint8 [h, w, 3] at its stored size, label int64 scalar)`` whose
cardinality is known (``len(source.dataset) == source.num_examples``), so
anything built on it by :func:`effv2_keras.data.make_pipeline` knows its
number of batches too. Resizing and cropping to the training size happen
later, per stage, in the pipeline.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

logger = logging.getLogger("effv2_keras.data")

MAX_NAMED_SKIPS = 10  # skipped files named in the warning; the rest are counted


@dataclasses.dataclass
class ImageSource:
    """One split, decoded once.

    Attributes:
        dataset: elements ``(image uint8 [h, w, 3], label int64 [])``, images at
            their stored size; decoded and cached (memory, or a file under
            ``cache_dir``), cardinality asserted to ``num_examples``.
        num_examples: number of elements (readable files only).
    """

    dataset: tf.data.Dataset
    num_examples: int


@dataclasses.dataclass
class DatasetSplits:
    """Train / validation / test splits of one labelled image data set.

    ``val`` is either the data set's own validation split or a seeded slice
    carved from train (never from test); ``test`` is None when the data set
    has no test split. ``skipped_files`` counts corrupt, truncated, empty or
    non-image files that were left out (reported once with a logging warning).

    What the source knows about its images, for the trainer's data-aware defaults:
    ``image_size`` is the typical stored size (the median shorter side; None when
    unknown) and ``flip_invariant`` says whether a horizontal flip keeps an image's
    label (not for digits or text).
    """

    train: ImageSource
    val: Optional[ImageSource]
    test: Optional[ImageSource]
    class_names: list[str]
    skipped_files: int = 0
    image_size: Optional[int] = None
    flip_invariant: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> str:
        """One line for logs: ``10 classes; train 1486, val 165, test 411; 0 skipped``."""
        parts = [f"{name} {src.num_examples}" for name, src in
                 (("train", self.train), ("val", self.val), ("test", self.test)) if src is not None]
        return f"{self.num_classes} classes; {', '.join(parts)}; {self.skipped_files} skipped"


def check_val_fraction(val_fraction: float) -> float:
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction!r}")
    return float(val_fraction)


def stratified_split(labels: Sequence[int], fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of indices ``0..N-1`` into (keep, take).

    Per class, ``round(fraction * n_c)`` indices are taken at random, at least
    one when ``fraction > 0`` and the class has two or more examples, and never
    all of them (every class keeps one example). Both outputs are sorted.

    >>> keep, take = stratified_split([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], 0.5, seed=0)
    >>> len(keep), len(take), sorted(set(keep) | set(take)) == list(range(10))
    (5, 5, True)
    """
    labels = np.asarray(labels)
    if fraction <= 0.0:
        return np.arange(len(labels)), np.zeros([0], np.int64)
    rng = np.random.default_rng(seed)
    take = []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n = len(members)
        k = int(round(fraction * n))
        k = min(max(k, 1 if n >= 2 else 0), n - 1)
        take.append(rng.permutation(members)[:k])
    take = np.sort(np.concatenate(take)).astype(np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), take).astype(np.int64)
    return keep, take


def random_split_mask(n: int, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of length ``n`` selecting ``round(fraction * n)`` indices at random (seeded)."""
    k = max(0, min(int(round(fraction * n)), n - 1)) if fraction > 0 else 0
    mask = np.zeros([n], bool)
    mask[np.random.default_rng(seed).choice(n, size=k, replace=False)] = True
    return mask


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> np.ndarray:
    """Integer labels in ``[0, num_classes)`` as int64, else a ValueError naming ``where``."""
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise ValueError(f"{where}: labels must be a 1-D array of class ids, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or np.any(labels != np.round(labels)):
            raise ValueError(f"{where}: labels must be integer class ids, got dtype {labels.dtype}")
    if labels.size:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= num_classes:
            raise ValueError(f"{where}: labels must be in [0, {num_classes}) for {num_classes} classes, "
                             f"got values from {low} to {high}")
    return labels.astype(np.int64)


def with_cardinality(dataset: tf.data.Dataset, n: int) -> tf.data.Dataset:
    return dataset.apply(tf.data.experimental.assert_cardinality(n))


def log_skipped(where: str, skipped: Sequence[str], total: int) -> None:
    """The one warning a load emits about unreadable files."""
    if not skipped:
        return
    named = ", ".join(skipped[:MAX_NAMED_SKIPS])
    more = f" and {len(skipped) - MAX_NAMED_SKIPS} more" if len(skipped) > MAX_NAMED_SKIPS else ""
    logger.warning("%s: skipped %d of %d files that could not be decoded as images "
                   "(corrupt, truncated, empty or not an image): %s%s",
                   where, len(skipped), total, named, more)


SIZE_SAMPLE = 32  # files whose header is read to estimate a folder's typical image size


def typical_image_size(files: Sequence[str], seed: int = 0) -> Optional[int]:
    """The median shorter side of up to ``SIZE_SAMPLE`` of ``files`` (seeded pick), from their
    decoded shapes; None when none of them decodes."""
    if not files:
        return None
    rng = np.random.default_rng(seed)
    picked = rng.choice(len(files), size=min(SIZE_SAMPLE, len(files)), replace=False)
    sides = []
    for i in sorted(picked):
        try:
            shape = tf.io.decode_image(tf.io.read_file(files[i]), channels=3,
                                       expand_animations=False).shape
        except (tf.errors.OpError, ValueError):
            continue
        sides.append(min(int(shape[0]), int(shape[1])))
    return int(np.median(sides)) if sides else None
