"""tf.data input: image folders, TFDS, the embedded digits set and numpy arrays.

Every source decodes each image once and caches it at its stored size
(:class:`ImageSource`); :func:`make_pipeline` then crops and resizes per
training stage, so progressive learning changes the image size without
decoding again.

>>> from effv2_keras import data
>>> splits = data.load("digits")
>>> train = data.make_pipeline(splits.train, image_size=32, batch_size=64,
...                            num_classes=splits.num_classes, training=True, flip=False)
>>> images, labels = next(iter(train))
>>> images.shape, labels.shape
(TensorShape([64, 32, 32, 3]), TensorShape([64, 10]))
"""

from effv2_keras.data.arrays import from_numpy
from effv2_keras.data.core import DatasetSplits, ImageSource
from effv2_keras.data.digits import digits_arrays, load_digits
from effv2_keras.data.ops import (EVAL_CROP_FRACTION, INCEPTION_CROP_RATIO, INCEPTION_CROP_SCALE,
                                  center_crop_resize, random_flip, random_resized_crop, resize)
from effv2_keras.data.pipeline import make_pipeline, measure_throughput
from effv2_keras.data.sources import load

__all__ = [
    "DatasetSplits", "ImageSource", "load", "from_numpy", "load_digits", "digits_arrays", "make_pipeline",
    "measure_throughput", "random_resized_crop", "center_crop_resize", "random_flip", "resize",
    "INCEPTION_CROP_SCALE", "INCEPTION_CROP_RATIO", "EVAL_CROP_FRACTION",
]
