"""Multiply-add counting for convolution and dense layers (the convention of the papers)."""

from __future__ import annotations

import math
from typing import Union

import keras
from keras import layers

from effv2_keras.models.arch import get_spec
from effv2_keras.models.builder import build_network


def _layer_madds(layer, input_shape, output_shape) -> int:
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return math.prod(output_shape[1:]) * kh * kw
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        in_channels = input_shape[-1] // layer.groups
        return math.prod(output_shape[1:]) * kh * kw * in_channels
    if isinstance(layer, layers.Dense):
        return input_shape[-1] * output_shape[-1]
    return 0


def count_flops(model_or_name: Union[str, keras.Model], image_size: int = None) -> int:
    """Multiply-adds of one image through every Conv2D, DepthwiseConv2D and Dense layer.

    Args:
        model_or_name: a Keras model, or a registered name (built with a
            1000-class head, as the papers count).
        image_size: square input size. Defaults to the model's own fixed input
            size, or the variant's eval size for a name. Required for a model
            whose input size is dynamic.

    Returns:
        Multiply-adds per image (an int; the papers' "FLOPs").

    Example:
        >>> round(count_flops("efficientnetv2-b0", 224) / 1e9, 2)
        0.72
    """
    if isinstance(model_or_name, keras.Model):
        model = model_or_name
        size = image_size or model.input_shape[1]
        if size is None:
            raise ValueError(
                f"Model {model.name!r} takes images of any size: pass image_size= to count_flops."
            )
        if model.input_shape[1:3] != (size, size):
            model = keras.models.clone_model(model, input_tensors=keras.Input((size, size, model.input_shape[-1])))
    else:
        size = image_size or get_spec(model_or_name).eval_size
        model = build_network(model_or_name, input_shape=(size, size, 3))
    total = 0
    for layer in model.layers:
        for node_index in range(len(layer._inbound_nodes)):
            node = layer._inbound_nodes[node_index]
            if not node.input_tensors:
                continue
            total += _layer_madds(layer, node.input_tensors[0].shape, node.output_tensors[0].shape)
    return int(total)
