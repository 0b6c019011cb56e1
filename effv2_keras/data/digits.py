"""The embedded digits set: scikit-learn's ``load_digits``, offline.

1,797 real handwritten digits (UCI optdigits), 8x8 pixels with intensities
0-16, 10 classes. Converted at load to uint8 RGB 0-255 (``v * 255 / 16``,
rounded) and upscaled 4x with bilinear interpolation to 32x32 so that random
crops and resizes have pixels to work with.

Splits (deterministic): a stratified 20% test slice (``round(0.2 * n_c)`` per
class) drawn with a FIXED seed (``TEST_SEED``), so the test set is the same
for every run and every ``seed`` (359 images, 35-37 per class); from the
remaining 1,438 a stratified ``val_fraction`` slice drawn with ``seed``
becomes validation (143 at the default 0.1, leaving 1,295 for training).
Test is a real held-out slice, never used for selection.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from effv2_keras.data.arrays import from_numpy
from effv2_keras.data.core import DatasetSplits, check_val_fraction, stratified_split

IMAGE_SIZE = 32
TEST_FRACTION = 0.2
TEST_SEED = 0


def digits_arrays(image_size: int = IMAGE_SIZE):
    """All 1,797 digits as (uint8 [N, image_size, image_size, 3] in 0-255, int64 labels [N])."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images = bunch.images.astype(np.float32) * (255.0 / 16.0)  # [N, 8, 8], 0-255
    images = tf.image.resize(images[..., None], [image_size, image_size], method="bilinear").numpy()
    images = np.clip(np.rint(images), 0, 255).astype(np.uint8)
    return np.repeat(images, 3, axis=-1), bunch.target.astype(np.int64)


def load_digits(val_fraction: float = 0.1, seed: int = 0) -> DatasetSplits:
    """The digits set as train / val / test (see the module docstring for the split)."""
    val_fraction = check_val_fraction(val_fraction)
    images, labels = digits_arrays()
    pool, test = stratified_split(labels, TEST_FRACTION, TEST_SEED)
    return from_numpy(images[pool], labels[pool], x_test=images[test], y_test=labels[test],
                      class_names=[str(i) for i in range(10)], val_fraction=val_fraction, seed=seed,
                      flip_invariant=False)  # a mirrored digit is another symbol
