"""Public constructors, one per registered variant, generated from the tables.

``EfficientNetV2S(...)`` is ``build_model("efficientnetv2-s", ...)`` with the
keras.applications signature; there is no per-variant code.
"""

from __future__ import annotations

import re
from typing import Callable, Dict

from effv2_keras.models.arch import REGISTRY, ModelSpec, round_channels
from effv2_keras.models.builder import build_model

_DOC = """Instantiates {title} (trained at {train} px, evaluated at {eval} px).

    Same signature as ``keras.applications.{title}``, plus ``dropout_rate``
    (None = this variant's own, {dropout}) and ``drop_path_rate``. The model takes
    0-255 RGB pixels ({prep}) when ``include_preprocessing`` is True. ``name``
    only renames the model; it never changes the architecture.

    Args:
        include_top, weights, input_tensor, input_shape, pooling, classes,
        classifier_activation, include_preprocessing, dropout_rate,
        drop_path_rate, name: see ``effv2_keras.models.builder.build_model``.

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
