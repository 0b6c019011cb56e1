"""Public constructors: ``build_model`` and one per registered variant, generated from the tables.

``build_model`` composes the builder (the architecture) with the weight importers, so the
builder never imports weights.py. ``EfficientNetV2S(...)`` is
``build_model("efficientnetv2-s", ...)`` with the keras.applications signature; there is
no per-variant code.
"""

from __future__ import annotations

import os
import re
from typing import Callable, Dict, Optional

import keras

from effv2_keras.models.arch import REGISTRY, ModelSpec, get_spec, round_channels
from effv2_keras.models.builder import build_network
from effv2_keras.models.weights import load_weights


def build_model(spec, include_top: bool = True, weights: Optional[str] = None, **network_args) -> keras.Model:
    """Builds a variant (keras.applications arguments) and loads ``weights`` into it.

    Args:
        spec: a registered name (see ``list_models()``) or a ``ModelSpec``.
        include_top: add global pooling, dropout and the ``predictions`` Dense layer.
        weights: None (random init), ``"imagenet"`` (keras.applications' file) or a local
            weights file: ``.weights.h5`` / ``.keras`` of ours, a keras.applications
            ``.h5`` of the same variant, or a timm ``.pth`` / ``.safetensors`` state dict
            (needs torch). See ``effv2_keras.models.weights.load_weights``.
        **network_args: by keyword, every other argument of
            ``effv2_keras.models.builder.build_network`` (input_tensor, input_shape,
            pooling, classes, classifier_activation, include_preprocessing, dropout_rate,
            drop_path_rate, width, depth, name).

    Returns:
        A ``keras.Model``.

    Example:
        >>> model = build_model("efficientnetv2-b0", input_shape=(64, 64, 3), classes=10,
        ...                     width=0.25, depth=0.25)
        >>> model.output_shape
        (None, 10)
    """
    spec = get_spec(spec)
    _check_weights_arg(weights)
    model = build_network(spec, include_top=include_top, **network_args)
    if weights is not None:
        load_weights(model, weights, spec=spec)
    return model


def _check_weights_arg(weights):
    if weights is None or weights == "imagenet":
        return
    if not isinstance(weights, (str, os.PathLike)) or not os.path.exists(weights):
        raise ValueError(
            f"weights must be None, 'imagenet' or the path of an existing weights file; got {weights!r}."
        )


_DOC = """Instantiates {title} (trained at {train} px, evaluated at {eval} px).

    Same signature as ``keras.applications.{title}``, plus ``dropout_rate``
    (None = this variant's own, {dropout}) and ``drop_path_rate``. The model takes
    0-255 RGB pixels ({prep}) when ``include_preprocessing`` is True. ``name``
    only renames the model; it never changes the architecture.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: see ``effv2_keras.models.build_model``.

    Example:
        >>> import effv2_keras
        >>> model = effv2_keras.{title}(include_top=False, pooling="avg", input_shape=(64, 64, 3))
        >>> model.output_shape[-1]
        {features}
    """

_PREPROCESSING_DOC = {
    "inception": "normalized inside the model to (x - 128) / 128",
    "imagenet": "normalized inside the model with the ImageNet mean and std",
    "imagenet_stats": "normalized inside the model with the ImageNet mean and std",
}

def constructor_name(model_name: str) -> str:
    """'efficientnetv2-b0' -> 'EfficientNetV2B0'; 'efficientnet-b4' -> 'EfficientNetB4'."""
    family, variant = model_name.split("-")
    return re.sub("^efficientnet", "EfficientNet", family).replace("v2", "V2") + variant.upper()


def _make(spec: ModelSpec) -> Callable:
    def constructor(include_top=True, weights=None, input_tensor=None, input_shape=None,
                    pooling=None, classes=1000, classifier_activation="softmax",
                    include_preprocessing=True, *, dropout_rate=None, drop_path_rate=0.2, name=None):
        return build_model(
            spec, include_top=include_top, weights=weights, input_tensor=input_tensor,
            input_shape=input_shape, pooling=pooling, classes=classes,
            classifier_activation=classifier_activation, include_preprocessing=include_preprocessing,
            dropout_rate=dropout_rate, drop_path_rate=drop_path_rate, name=name,
        )

    title = constructor_name(spec.name)
    constructor.__name__ = constructor.__qualname__ = title
    constructor.__doc__ = _DOC.format(
        title=title, train=spec.train_size,
        eval=spec.eval_size, dropout=spec.dropout, prep=_PREPROCESSING_DOC[spec.preprocessing],
        features=round_channels(spec.family.head_channels, spec.width, spec.family),
    )
    return constructor


CONSTRUCTORS: Dict[str, Callable] = {constructor_name(n): _make(s) for n, s in REGISTRY.items()}
globals().update(CONSTRUCTORS)
__all__ = list(CONSTRUCTORS)
