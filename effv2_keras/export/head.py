"""The model's shape and its classifier: input size and channels, the final Dense head
(softmax, sigmoid or logits), pooled features and reference probabilities.

Every exporter finds the head the same way, so a model that ends in a softmax (what
``effv2 train`` writes, keras.applications' convention) and one that ends in logits
(older files, user models) both export to probabilities:

    >>> import effv2_keras
    >>> model = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25,
    ...                           input_shape=(32, 32, 3), classes=3)
    >>> head = split_head(model)
    >>> head.activation, head.num_classes, static_image_size(model)
    ('softmax', 3, (32, 32))
"""

from __future__ import annotations

import dataclasses
from typing import List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from effv2_keras.export.errors import ExportError


def input_channels(model: keras.Model) -> Optional[int]:
    return model.inputs[0].shape[-1]


def static_image_size(model: keras.Model) -> Optional[Tuple[int, int]]:
    """(height, width) of a fixed-size model, None when it takes any size."""
    height, width = model.inputs[0].shape[1:3]
    return (int(height), int(width)) if height and width else None


def pair(size) -> Tuple[int, int]:
    """``224`` or ``(224, 224)`` -> ``(224, 224)``."""
    if isinstance(size, (int, np.integer)):
        return (int(size), int(size))
    height, width = size
    return (int(height), int(width))


def resolve_image_size(model: keras.Model, image_size=None, default=None) -> Tuple[int, int]:
    """The (height, width) a fixed-size artifact uses: the model's own, the
    argument, ``default`` (a run's eval size), or the registered variant's
    eval size (by model name)."""
    static = static_image_size(model)
    if image_size is None and static is None and default is not None:
        image_size = default
    if image_size is not None:
        size = pair(image_size)
        if static is not None and size != static:
            raise ExportError(f"{{image_size}} {size} differs from the model's fixed input size {static}.",
                              "image_size")
        return size
    if static is not None:
        return static
    from effv2_keras.models.arch import get_spec  # architecture tables only, no training code

    try:
        eval_size = get_spec(model.name).eval_size
    except ValueError:
        raise ExportError(f"model {model.name!r} accepts any image size: pass {{image_size}} to fix "
                          "the size of this artifact.", "image_size") from None
    return (eval_size, eval_size)


def check_rgb_model(model: keras.Model, what: str) -> None:
    channels = input_channels(model)
    if channels != 3:
        raise ExportError(f"{what} decodes RGB images, but model {model.name!r} takes "
                          f"{channels}-channel inputs.")


@dataclasses.dataclass
class Head:
    """The model split at its classifier: ``features(x)`` then a Dense ``kernel``/``bias``.

    ``dense`` is None for models without a Dense top (feature extractors):
    their outputs are the features.
    """

    features: keras.Model
    dense: Optional[keras.layers.Dense]
    activation: str  # "softmax", "sigmoid" or "linear" (logits; probabilities by softmax)

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.dense is None else int(self.dense.units)

    def logits(self, features):
        features = tf.cast(features, tf.float32)
        kernel = tf.cast(self.dense.kernel, tf.float32)
        return tf.matmul(features, kernel) + tf.cast(self.dense.bias, tf.float32)

    def probabilities(self, logits):
        return tf.sigmoid(logits) if self.activation == "sigmoid" else tf.nn.softmax(logits, axis=-1)


def split_head(model: keras.Model) -> Head:
    """Finds the classifier (a final Dense with softmax, sigmoid or no activation)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense) and len(model.outputs) == 1:
        activation = getattr(last.activation, "__name__", str(last.activation))
        if activation not in ("softmax", "sigmoid", "linear"):
            raise ExportError(f"unsupported classifier activation {activation!r} on layer {last.name!r}.")
        if not last.use_bias:
            raise ExportError(f"classifier layer {last.name!r} has no bias; expected a standard Dense head.")
        features = keras.Model(model.inputs, last.input, name=f"{model.name}_features")
        return Head(features, last, activation)
    return Head(model, None, "linear")


def check_class_names(class_names: Optional[Sequence[str]], head: Head) -> Optional[List[str]]:
    """The class names to embed, checked against the classifier's width (None when unknown)."""
    if not class_names or head.dense is None:
        return None
    if len(class_names) != head.num_classes:
        raise ExportError(f"{len(class_names)} {{class_names}} given for a model with "
                          f"{head.num_classes} outputs.", "class_names")
    return [str(n) for n in class_names]


def pooled_features(head: Head, images):
    """[batch, channels] features: the classifier's input, or the global
    average of a feature map when the model has neither top nor pooling."""
    features = tf.cast(head.features(images, training=False), tf.float32)
    if features.shape.rank == 4:
        features = tf.reduce_mean(features, axis=[1, 2])
    return features


def keras_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Reference probabilities of a Keras classifier in inference mode."""
    head = split_head(model)
    if head.dense is None:
        raise ExportError(f"model {model.name!r} has no classifier head: no probabilities to compare.")
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        out = tf.cast(model(batch, training=False), tf.float32)
        if head.activation == "linear":
            out = tf.nn.softmax(out, axis=-1)
        outputs.append(out.numpy())
    return np.concatenate(outputs, axis=0)
