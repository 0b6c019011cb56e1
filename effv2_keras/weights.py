"""Weight import and transfer (see effv2_keras.models.weights).

Example:
    >>> import keras, effv2_keras
    >>> src = keras.applications.EfficientNetV2B0(weights=None)
    >>> dst = effv2_keras.EfficientNetV2B0()
    >>> effv2_keras.weights.transfer(src, dst)  # doctest: +SKIP
"""

from effv2_keras.models.weights import *  # noqa: F401,F403
