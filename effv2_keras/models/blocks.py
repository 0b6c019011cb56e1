"""Blocks of EfficientNet V1/V2, built from stock Keras layers.

Layer names follow keras.applications (``block2a_expand_conv``, ``stem_bn``,
``top_conv`` ...), so weight files map by name and features can be tapped by name.
Every layer is a stock Keras layer: a saved ``.keras`` file loads without this package.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
from keras import layers

from effv2_keras.models.arch import Family

# Official initializers: conv weights ~ N(0, sqrt(2 / fan_out)); dense weights
# ~ U(-1/sqrt(units), 1/sqrt(units)), i.e. VarianceScaling(1/3, fan_out, uniform).
CONV_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 2.0, "mode": "fan_out", "distribution": "untruncated_normal"},
}
DENSE_INIT = {
    "class_name": "VarianceScaling",
    "config": {"scale": 1.0 / 3.0, "mode": "fan_out", "distribution": "uniform"},
}
ACTIVATION = "silu"
CHANNELS_LAST = "channels_last"


@dataclass(frozen=True)
class BlockArgs:
    """One block after width/depth scaling: what the builder hands a block function."""

    name: str
    block: str
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    expand: float
    se_ratio: Optional[float]
    drop_path: float

    @property
    def has_residual(self) -> bool:
        return self.stride == 1 and self.in_channels == self.out_channels

    @property
    def expanded_channels(self) -> int:
        return int(self.in_channels * self.expand)


def conv(x, filters, kernel, name, stride=1, use_bias=False, activation=None):
    return layers.Conv2D(
        filters,
        kernel,
        strides=stride,
        padding="same",
        use_bias=use_bias,
        activation=activation,
        kernel_initializer=CONV_INIT,
        data_format=CHANNELS_LAST,
        name=name,
    )(x)


def batch_norm(x, family: Family, name):
    return layers.BatchNormalization(
        axis=-1, momentum=family.bn_momentum, epsilon=family.bn_epsilon, name=name
    )(x)


def conv_bn(x, filters, kernel, family, prefix, stride=1, activate=True):
    """Conv (no bias) + BN [+ SiLU], named ``{prefix}_conv``, ``{prefix}_bn``, ``{prefix}_activation``."""
    x = conv(x, filters, kernel, f"{prefix}_conv", stride=stride)
    x = batch_norm(x, family, f"{prefix}_bn")
    if activate:
        x = layers.Activation(ACTIVATION, name=f"{prefix}_activation")(x)
    return x


def squeeze_excite(x, args: BlockArgs):
    """SE whose bottleneck width comes from the block's INPUT channels."""
    squeezed = max(1, int(args.in_channels * args.se_ratio))
    channels = x.shape[-1]
    se = layers.GlobalAveragePooling2D(data_format=CHANNELS_LAST, name=f"{args.name}se_squeeze")(x)
    se = layers.Reshape((1, 1, channels), name=f"{args.name}se_reshape")(se)
    se = conv(se, squeezed, 1, f"{args.name}se_reduce", use_bias=True, activation=ACTIVATION)
    se = conv(se, channels, 1, f"{args.name}se_expand", use_bias=True, activation="sigmoid")
    return layers.multiply([x, se], name=f"{args.name}se_excite")


def residual(x, inputs, args: BlockArgs):
    """Drop path (per-sample, rescaled) + identity shortcut, on residual blocks only."""
    if not args.has_residual:
        return x
    if args.drop_path > 0:
        x = layers.Dropout(args.drop_path, noise_shape=(None, 1, 1, 1), name=f"{args.name}drop")(x)
    return layers.add([x, inputs], name=f"{args.name}add")


def mbconv(inputs, args: BlockArgs, family: Family):
    """MBConv: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project (linear)."""
    x = inputs
    if args.expand != 1:
        x = conv_bn(x, args.expanded_channels, 1, family, f"{args.name}expand")
    x = layers.DepthwiseConv2D(
        args.kernel,
        strides=args.stride,
        padding="same",
        use_bias=False,
        depthwise_initializer=CONV_INIT,
        data_format=CHANNELS_LAST,
        name=f"{args.name}{family.dwconv_name}",
    )(x)
    x = batch_norm(x, family, f"{args.name}bn")
    x = layers.Activation(ACTIVATION, name=f"{args.name}activation")(x)
    if args.se_ratio:
        x = squeeze_excite(x, args)
    x = conv_bn(x, args.out_channels, 1, family, f"{args.name}project", activate=False)
    return residual(x, inputs, args)


def fused_mbconv(inputs, args: BlockArgs, family: Family):
    """Fused-MBConv: kxk expand conv -> [SE] -> 1x1 project; with e=1 one kxk conv + BN + SiLU."""
    x = inputs
    if args.expand != 1:
        x = conv_bn(x, args.expanded_channels, args.kernel, family, f"{args.name}expand", stride=args.stride)
        x = squeeze_excite(x, args) if args.se_ratio else x
        x = conv_bn(x, args.out_channels, 1, family, f"{args.name}project", activate=False)
    else:
        x = squeeze_excite(x, args) if args.se_ratio else x
        x = conv_bn(x, args.out_channels, args.kernel, family, f"{args.name}project", stride=args.stride)
    return residual(x, inputs, args)


BLOCKS = {"mb": mbconv, "fused": fused_mbconv}


def preprocessing(x, mode: str):
    """Turns 0-255 RGB pixels into what the network was trained on (inside the model)."""
    mean = [0.485, 0.456, 0.406]
    variance = [0.229**2, 0.224**2, 0.225**2]
    if mode == "inception":
        return layers.Rescaling(1.0 / 128.0, offset=-1.0, name="rescaling")(x)
    x = layers.Rescaling(1.0 / 255.0, name="rescaling")(x)
    if mode == "imagenet":
        return layers.Normalization(axis=-1, mean=mean, variance=variance, name="normalization")(x)
    # "imagenet_stats": statistics held as non-trainable weights, as keras.applications' V1 does.
    norm = layers.Normalization(axis=-1, name="normalization")
    x = norm(x)
    norm.set_weights([np.array(mean, "float32"), np.array(variance, "float32"), np.array(0, "int64")])
    norm.finalize_state()  # Normalization reads its statistics into constants here.
    return x
