"""``load(spec)``: one entry point for every kind of data set.

Specs:
    ``folder:PATH``          class folders (see :mod:`effv2_keras.data.folder`); a relative
                             PATH is taken relative to ``data_dir`` when given.
    ``tfds:NAME[:CONFIG]``   a prepared TensorFlow Datasets data set under ``data_dir``
                             (see :mod:`effv2_keras.data.tfds_source`); never downloads.
    ``digits``               scikit-learn's 1,797 handwritten digits, offline, 32x32 RGB
                             (see :mod:`effv2_keras.data.digits`).
"""

from __future__ import annotations

import os
from typing import Optional

from effv2_keras.data.core import DatasetSplits, logger

SPEC_FORMS = "folder:PATH, tfds:NAME[:CONFIG] or digits"


def load(spec: str, data_dir: Optional[str] = None, val_fraction: float = 0.1, seed: int = 0,
         cache_dir: Optional[str] = None) -> DatasetSplits:
    """Loads a data set as train / val / test splits of decoded images.

    Args:
        spec: ``folder:PATH``, ``tfds:NAME[:CONFIG]`` or ``digits``.
        data_dir: tfds data directory; base of a relative folder PATH.
        val_fraction: share of train carved out (seeded, stratified where the
            labels are known up front) as validation when the data set has no
            validation split; 0 for none. Test is never used for it.
        seed: seeds that carving.
        cache_dir: cache decoded images in files there instead of in memory
            (for data sets larger than RAM; a later run with the same files reuses them).

    >>> splits = load("digits")
    >>> splits.num_classes, splits.train.num_examples, splits.val.num_examples, splits.test.num_examples
    (10, 1295, 143, 359)
    """
    kind, _, rest = str(spec).partition(":")
    if kind == "folder" and rest:
        from effv2_keras.data.folder import load_folder

        path = os.path.join(data_dir, rest) if data_dir and not os.path.isabs(rest) else rest
        splits = load_folder(path, val_fraction=val_fraction, seed=seed, cache_dir=cache_dir)
    elif kind == "tfds" and rest:
        from effv2_keras.data.tfds_source import load_tfds

        name, _, config = rest.partition(":")
        splits = load_tfds(name, config or None, data_dir=data_dir, val_fraction=val_fraction,
                           seed=seed, cache_dir=cache_dir)
    elif spec == "digits":
        from effv2_keras.data.digits import load_digits

        splits = load_digits(val_fraction=val_fraction, seed=seed)
    else:
        raise ValueError(f"unknown data set spec {spec!r}: use {SPEC_FORMS}")
    logger.info("loaded %s: %s", spec, splits.summary())
    return splits
