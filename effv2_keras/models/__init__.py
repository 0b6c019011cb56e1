"""EfficientNet V1/V2 architectures, builder, FLOPs counting and weight import."""

from effv2_keras.models.arch import ModelSpec, get_spec, list_models, register_model
from effv2_keras.models.builder import build_network, scaled_blocks
from effv2_keras.models.constructors import CONSTRUCTORS, build_model
from effv2_keras.models.constructors import *  # noqa: F401,F403  (EfficientNetV2B0 ...)
from effv2_keras.models.flops import count_flops
