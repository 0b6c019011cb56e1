"""effv2_keras: EfficientNetV2 (and V1) for Keras 3 on TensorFlow.

Example:
    >>> import effv2_keras
    >>> model = effv2_keras.EfficientNetV2B0(input_shape=(64, 64, 3), classes=10)
    >>> tiny = effv2_keras.build("efficientnetv2-s", width=0.25, depth=0.25,
    ...                          input_shape=(32, 32, 3), classes=10)
"""

from effv2_keras import weights
from effv2_keras.models import CONSTRUCTORS, ModelSpec, count_flops, get_spec, list_models
from effv2_keras.models import build_model as build
from effv2_keras.models.constructors import *  # noqa: F401,F403

__version__ = "0.1.0"
__all__ = ["build", "count_flops", "get_spec", "list_models", "ModelSpec", "weights", *CONSTRUCTORS]
