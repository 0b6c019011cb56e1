"""One builder: turns a variant-table row (plus overrides) into a Keras functional model.

All derived bookkeeping lives here and only here: width/depth scaling and
rounding, the per-block drop-path rate (counted over the SCALED block list),
strides, residual placement and the head width. Weight files are not its
concern: ``constructors.build_model`` loads them into what this builds.
"""

from __future__ import annotations

import sys
from typing import List, Optional, Sequence

import keras
from keras import layers

from effv2_keras.models import blocks
from effv2_keras.models.arch import ModelSpec, get_spec, list_models, round_channels, round_repeats
from effv2_keras.models.blocks import BlockArgs
from effv2_keras.models.naming import HEAD, block_prefix

MIN_INPUT_SIZE = 32
POOLING_MODES = (None, "avg", "max")
# Layers after the last BN run in float32 under mixed precision, so logits,
# probabilities and pooled features come out float32 (softmax in float16 is a
# classic source of NaNs and of "predictions come out float16" reports).
HEAD_DTYPE = "float32"


def scaled_blocks(spec: ModelSpec, width: Optional[float] = None, depth: Optional[float] = None,
                  drop_path_rate: float = 0.2) -> List[BlockArgs]:
    """Expands a variant's stage strings into the list of blocks the model is built from.

    Drop-path rate of block i (0-based) of N blocks AFTER depth scaling is
    ``drop_path_rate * i / N`` (keras.applications divides by the unscaled count).

    >>> from effv2_keras.models.arch import get_spec
    >>> blocks = scaled_blocks(get_spec("efficientnetv2-b1"))
    >>> len(blocks), blocks[0].name, round(blocks[-1].drop_path, 4)
    (27, 'block1a_', 0.1926)
    """
    width = spec.width if width is None else width
    depth = spec.depth if depth is None else depth
    family = spec.family
    stages = spec.stage_specs
    repeats = [round_repeats(stage.repeats, depth) for stage in stages]
    total = sum(repeats)
    in_channels = round_channels(spec.stem_channels, width, family)
    result, index = [], 0
    for stage_number, (stage, count) in enumerate(zip(stages, repeats), start=1):
        out_channels = round_channels(stage.channels, width, family)
        for j in range(count):
            result.append(BlockArgs(
                name=block_prefix(stage_number, j),
                block=stage.block,
                in_channels=in_channels,
                out_channels=out_channels,
                kernel=stage.kernel,
                stride=stage.stride if j == 0 else 1,
                expand=stage.expand,
                se_ratio=stage.se_ratio,
                drop_path=drop_path_rate * index / total,
            ))
            in_channels = out_channels
            index += 1
    return result


def build_network(
    spec,
    include_top: bool = True,
    input_tensor=None,
    input_shape: Optional[Sequence[Optional[int]]] = None,
    pooling: Optional[str] = None,
    classes: int = 1000,
    classifier_activation="softmax",
    include_preprocessing: bool = True,
    dropout_rate: Optional[float] = None,
    drop_path_rate: float = 0.2,
    width: Optional[float] = None,
    depth: Optional[float] = None,
    name: Optional[str] = None,
) -> keras.Model:
    """Builds a variant as a Keras functional model with freshly initialized weights.

    ``effv2_keras.build`` (``models.constructors.build_model``) is this plus ``weights``.

    Args:
        spec: a registered name (see ``list_models()``) or a ``ModelSpec``.
        include_top: add global pooling, dropout and the ``predictions`` Dense layer.
        input_tensor: optional Keras tensor to build the model on.
        input_shape: (height, width, 3). Defaults to the variant's eval size
            with ``include_top``, else (None, None, 3). Height and width may be
            None (any size) without a top, or with a top and ``pooling`` given.
        pooling: None, "avg" or "max". Without a top, the pooling of the output
            features; with a top, the pooling before the classifier (default "avg").
        classes: number of classes of the top.
        classifier_activation: activation of the top; None returns logits.
        include_preprocessing: take 0-255 RGB pixels and normalize inside the model.
        dropout_rate: head dropout; None uses the variant's own.
        drop_path_rate: stochastic-depth rate of the last block.
        width, depth: override the variant's width/depth multipliers.
        name: model name (never changes the architecture).

    Returns:
        A ``keras.Model``.

    Example:
        >>> model = build_network("efficientnetv2-b0", input_shape=(64, 64, 3), classes=10,
        ...                       width=0.25, depth=0.25)
        >>> model.output_shape
        (None, 10)
    """
    spec = get_spec(spec)
    dropout_rate = spec.dropout if dropout_rate is None else dropout_rate
    _check_rates(dropout_rate, drop_path_rate, width, depth)
    _check_head(include_top, pooling, classes)
    input_shape = _resolve_input_shape(spec, input_shape, input_tensor, include_top, pooling)
    _check_channels(input_shape, include_preprocessing)

    if input_tensor is None:
        inputs = img_input = layers.Input(shape=input_shape, name="input_layer")
    elif keras.backend.is_keras_tensor(input_tensor):
        img_input = input_tensor
        inputs = keras.utils.get_source_inputs(input_tensor)
    else:
        inputs = img_input = layers.Input(tensor=input_tensor, shape=input_shape)

    x = img_input
    if include_preprocessing:
        x = blocks.preprocessing(x, spec.preprocessing)
    family = spec.family
    w = spec.width if width is None else width
    x = blocks.conv_bn(x, round_channels(spec.stem_channels, w, family), 3, family, "stem", stride=2)
    block_list = scaled_blocks(spec, width, depth, drop_path_rate)
    allow_deep_graph(len(block_list))
    for args in block_list:
        x = blocks.BLOCKS[args.block](x, args, family)
    x = blocks.conv_bn(x, round_channels(family.head_channels, w, family), 1, family, "top", activate=False)
    x = layers.Activation(blocks.ACTIVATION, dtype=HEAD_DTYPE, name="top_activation")(x)
    x = _head(x, include_top, pooling, classes, classifier_activation, dropout_rate)
    return keras.Model(inputs, x, name=name or spec.name)


def allow_deep_graph(num_blocks: Optional[int] = None) -> None:
    """Raises Python's recursion limit for very deep graphs.

    Keras maps a functional graph recursively, one Python frame per layer of
    depth: XL (100+ blocks, 1,330 layers) exceeds the default limit of 1,000
    while building, in get_config/from_config and in keras.models.load_model.
    ``num_blocks`` None means the deepest built-in variant (for loading a file
    whose architecture is not known yet).

    >>> allow_deep_graph(); sys.getrecursionlimit() >= 1000 + 50 * 100
    True
    """
    if num_blocks is None:
        num_blocks = max(len(scaled_blocks(get_spec(name))) for name in list_models())
    needed = 1000 + 50 * num_blocks
    if sys.getrecursionlimit() < needed:
        sys.setrecursionlimit(needed)


def _head(x, include_top, pooling, classes, classifier_activation, dropout_rate):
    if pooling == "max":
        x = layers.GlobalMaxPooling2D(dtype=HEAD_DTYPE, name="max_pool")(x)
    elif pooling == "avg" or include_top:
        x = layers.GlobalAveragePooling2D(dtype=HEAD_DTYPE, name="avg_pool")(x)
    if not include_top:
        return x
    if dropout_rate > 0:
        x = layers.Dropout(dropout_rate, dtype=HEAD_DTYPE, name="top_dropout")(x)
    return layers.Dense(
        classes,
        activation=classifier_activation,
        kernel_initializer=blocks.DENSE_INIT,
        bias_initializer="zeros",
        dtype=HEAD_DTYPE,
        name=HEAD,
    )(x)


def _check_rates(dropout_rate, drop_path_rate, width, depth):
    for label, value in (("dropout_rate", dropout_rate), ("drop_path_rate", drop_path_rate)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{label} must be in [0, 1); got {value}.")
    for label, value in (("width", width), ("depth", depth)):
        if value is not None and not value > 0:
            raise ValueError(f"{label} multiplier must be > 0; got {value}.")


def _check_head(include_top, pooling, classes):
    if pooling not in POOLING_MODES:
        raise ValueError(f"pooling must be None, 'avg' or 'max'; got {pooling!r}.")
    if include_top and (not isinstance(classes, int) or classes < 1):
        raise ValueError(
            f"classes must be a positive integer when include_top=True; got {classes!r}. "
            "For a feature extractor pass include_top=False."
        )


def _resolve_input_shape(spec, input_shape, input_tensor, include_top, pooling):
    if input_shape is None and input_tensor is not None:
        input_shape = tuple(input_tensor.shape[1:])
    if input_shape is None:
        size = spec.eval_size if include_top and pooling is None else None
        input_shape = (size, size, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3:
        raise ValueError(
            f"input_shape must be (height, width, channels) in channels_last order; got {input_shape}."
        )
    height, width_px, _ = input_shape
    dynamic = height is None or width_px is None
    if include_top and dynamic and pooling is None:
        raise ValueError(
            f"include_top=True needs a fixed input_shape, got {input_shape}. Pass e.g. "
            f"input_shape=({spec.eval_size}, {spec.eval_size}, 3), or pooling='avg' to keep a "
            "classification head that accepts any image size (as progressive learning does)."
        )
    for size in (height, width_px):
        if size is not None and size < MIN_INPUT_SIZE:
            raise ValueError(
                f"input_shape {input_shape} is too small: height and width must be >= "
                f"{MIN_INPUT_SIZE} (the network downsamples by 32)."
            )
    return input_shape


def _check_channels(input_shape, include_preprocessing):
    channels = input_shape[-1]
    if channels is None:
        raise ValueError(f"The channel count of input_shape {input_shape} must be known.")
    if include_preprocessing and channels != 3:
        raise ValueError(
            f"include_preprocessing=True normalizes RGB images, but input_shape {input_shape} has "
            f"{channels} channel(s). Convert the images to RGB (e.g. tf.image.grayscale_to_rgb), "
            "or pass include_preprocessing=False and normalize them yourself."
        )

