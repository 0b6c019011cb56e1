"""effv2_keras: EfficientNetV2 (and V1) for Keras 3 on TensorFlow.

Example:
    >>> import effv2_keras
    >>> model = effv2_keras.EfficientNetV2B0(input_shape=(64, 64, 3), classes=10)
    >>> tiny = effv2_keras.build("efficientnetv2-s", width=0.25, depth=0.25,
    ...                          input_shape=(32, 32, 3), classes=10)
"""

import importlib

from effv2_keras import cpu_kernels

# Before anything imports TensorFlow: oneDNN kernels where TensorFlow leaves them off and
# they measured faster (AVX2-only x86); a user's TF_ENABLE_ONEDNN_OPTS wins. See cpu_kernels.
cpu_kernels.apply()

__version__ = "0.1.0"

_MODEL_NAMES = ("CONSTRUCTORS", "ModelSpec", "count_flops", "get_spec", "list_models")


def __getattr__(name):
    # Lazy, so that `effv2 --help` and the CLI's quiet TensorFlow import can run before
    # anything loads TensorFlow (every model name below needs it).
    if name == "build":
        value = importlib.import_module("effv2_keras.models").build_model
    elif name == "weights":
        value = importlib.import_module("effv2_keras.weights")
    elif name in _MODEL_NAMES:
        value = getattr(importlib.import_module("effv2_keras.models"), name)
    elif name == "__all__":
        value = ["build", "count_flops", "get_spec", "list_models", "ModelSpec", "weights",
                 *importlib.import_module("effv2_keras.models").CONSTRUCTORS]
    elif name.startswith("EfficientNet"):
        constructors = importlib.import_module("effv2_keras.models.constructors").CONSTRUCTORS
        if name not in constructors:
            raise AttributeError(f"module 'effv2_keras' has no attribute {name!r}")
        value = constructors[name]
    else:
        raise AttributeError(f"module 'effv2_keras' has no attribute {name!r}")
    globals()[name] = value
    return value
