"""Architectures as data: the block language and the V1/V2 variant tables.

Block language
--------------
Each stage of a network is one string of underscore-separated tokens::

    <type>_r<repeats>_k<kernel>_s<stride>_e<expand>_c<channels>[_se<ratio>]

* ``type``: ``fused`` (Fused-MBConv: one kxk conv replaces the 1x1 expansion and
  the depthwise conv) or ``mb`` (MBConv: 1x1 expand, kxk depthwise, 1x1 project).
* ``r``: number of blocks in the stage before depth scaling.
* ``k``: kernel size of the spatial conv.
* ``s``: stride of the stage's first block (the others have stride 1).
* ``e``: expansion ratio (``e1`` means no expansion conv).
* ``c``: output channels before width scaling.
* ``se``: squeeze-and-excite ratio, relative to the block's INPUT channels.
  Omitted means no squeeze-and-excite.

Tokens must appear in exactly this order and unknown tokens are rejected, so
``encode_stage(decode_stage(s)) == s`` for every valid string.

Example:
    >>> stage = decode_stage("mb_r6_k3_s2_e4_c128_se0.25")
    >>> stage.repeats, stage.channels, stage.se_ratio
    (6, 128, 0.25)
    >>> encode_stage(stage)
    'mb_r6_k3_s2_e4_c128_se0.25'
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from typing import Dict, Optional, Tuple

BLOCK_TYPES = ("fused", "mb")

_STAGE_RE = re.compile(
    r"^(?P<type>[a-z]+)_r(?P<r>\d+)_k(?P<k>\d+)_s(?P<s>\d+)"
    r"_e(?P<e>\d+(?:\.\d+)?)_c(?P<c>\d+)(?:_se(?P<se>\d+(?:\.\d+)?))?$"
)


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage of blocks, before width/depth scaling."""

    block: str
    repeats: int
    kernel: int
    stride: int
    expand: float
    channels: int
    se_ratio: Optional[float] = None


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def decode_stage(text: str) -> StageSpec:
    """Parses one stage string of the block language (see the module docstring)."""
    match = _STAGE_RE.match(text)
    if not match or match["type"] not in BLOCK_TYPES:
        raise ValueError(
            f"Invalid stage string {text!r}: expected "
            "'<fused|mb>_r<repeats>_k<kernel>_s<stride>_e<expand>_c<channels>[_se<ratio>]', "
            "e.g. 'mb_r6_k3_s2_e4_c128_se0.25'."
        )
    expand = float(match["e"])
    stage = StageSpec(
        block=match["type"],
        repeats=int(match["r"]),
        kernel=int(match["k"]),
        stride=int(match["s"]),
        expand=int(expand) if expand.is_integer() else expand,
        channels=int(match["c"]),
        se_ratio=float(match["se"]) if match["se"] else None,
    )
    if stage.repeats < 1 or stage.kernel < 1 or stage.stride not in (1, 2):
        raise ValueError(f"Invalid stage string {text!r}: repeats >= 1, kernel >= 1, stride 1 or 2.")
    if stage.se_ratio is not None and not 0 < stage.se_ratio <= 1:
        raise ValueError(f"Invalid stage string {text!r}: se ratio must be in (0, 1].")
    return stage


def encode_stage(stage: StageSpec) -> str:
    """Writes a StageSpec back as a stage string; the inverse of ``decode_stage``."""
    text = (
        f"{stage.block}_r{stage.repeats}_k{stage.kernel}_s{stage.stride}"
        f"_e{_number(stage.expand)}_c{stage.channels}"
    )
    if stage.se_ratio is not None:
        text += f"_se{_number(stage.se_ratio)}"
    return text


@dataclasses.dataclass(frozen=True)
class Family:
    """Rules shared by every variant of one family (V1 or V2)."""

    name: str
    bn_momentum: float
    # Minimum fraction of the scaled width that rounding may keep (V1 adds a
    # divisor when rounding down loses more than 10%; V2 never does).
    round_limit: float
    # Layer-name suffix of the depthwise conv, kept equal to keras.applications
    # so weight files map by name.
    dwconv_name: str
    divisor: int = 8
    bn_epsilon: float = 1e-3
    head_channels: int = 1280


V1 = Family("efficientnet", bn_momentum=0.99, round_limit=0.9, dwconv_name="dwconv")
# BN momentum 0.9 as the official V2 code and keras.applications use (the paper says 0.99).
V2 = Family("efficientnetv2", bn_momentum=0.9, round_limit=0.0, dwconv_name="dwconv2")

# Preprocessing modes. All take 0-255 RGB pixels.
#   "inception":      (x - 128) / 128 (V2 S/M/L/XL).
#   "imagenet":       ImageNet mean/std on [0, 1], as constants (V2 B0-B3).
#   "imagenet_stats": the same, held as non-trainable Normalization weights
#                     (V1, so parameter counts and weight files match keras.applications).
PREPROCESSING_MODES = ("inception", "imagenet", "imagenet_stats")


@dataclasses.dataclass(frozen=True)
class Progressive:
    """Progressive-learning defaults of a variant: (min, max) of each quantity."""

    image_size: Tuple[int, int]
    randaug_magnitude: Tuple[float, float]
    mixup_alpha: Tuple[float, float]
    dropout: Tuple[float, float]


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One row of a variant table: everything that defines a network."""

    name: str
    family: Family
    stages: Tuple[str, ...]
    stem_channels: int
    width: float
    depth: float
    train_size: int
    eval_size: int
    dropout: float
    preprocessing: str
    progressive: Progressive

    @property
    def stage_specs(self) -> Tuple[StageSpec, ...]:
        return tuple(decode_stage(s) for s in self.stages)

    def replace(self, **changes) -> "ModelSpec":
        return dataclasses.replace(self, **changes)


def round_channels(channels: float, width: float, family: Family) -> int:
    """Scales a channel count by ``width`` and rounds it to the family's divisor.

    >>> round_channels(1280, 1.1, V2), round_channels(1280, 1.2, V2)
    (1408, 1536)
    """
    scaled = channels * width
    divisor = family.divisor
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < family.round_limit * scaled:
        rounded += divisor
    return int(rounded)


def round_repeats(repeats: int, depth: float) -> int:
    """Scales a stage's block count: ceil(depth * repeats)."""
    return int(math.ceil(depth * repeats))


# --- EfficientNetV2 (paper Table 4 and the official configs) -----------------

V2_BASE = (
    "fused_r1_k3_s1_e1_c16",
    "fused_r2_k3_s2_e4_c32",
    "fused_r2_k3_s2_e4_c48",
    "mb_r3_k3_s2_e4_c96_se0.25",
    "mb_r5_k3_s1_e6_c112_se0.25",
    "mb_r8_k3_s2_e6_c192_se0.25",
)
V2_S = (
    "fused_r2_k3_s1_e1_c24",
    "fused_r4_k3_s2_e4_c48",
    "fused_r4_k3_s2_e4_c64",
    "mb_r6_k3_s2_e4_c128_se0.25",
    "mb_r9_k3_s1_e6_c160_se0.25",
    "mb_r15_k3_s2_e6_c256_se0.25",
)
V2_M = (
    "fused_r3_k3_s1_e1_c24",
    "fused_r5_k3_s2_e4_c48",
    "fused_r5_k3_s2_e4_c80",
    "mb_r7_k3_s2_e4_c160_se0.25",
    "mb_r14_k3_s1_e6_c176_se0.25",
    "mb_r18_k3_s2_e6_c304_se0.25",
    "mb_r5_k3_s1_e6_c512_se0.25",
)
V2_L = (
    "fused_r4_k3_s1_e1_c32",
    "fused_r7_k3_s2_e4_c64",
    "fused_r7_k3_s2_e4_c96",
    "mb_r10_k3_s2_e4_c192_se0.25",
    "mb_r19_k3_s1_e6_c224_se0.25",
    "mb_r25_k3_s2_e6_c384_se0.25",
    "mb_r7_k3_s1_e6_c640_se0.25",
)
V2_XL = (
    "fused_r4_k3_s1_e1_c32",
    "fused_r8_k3_s2_e4_c64",
    "fused_r8_k3_s2_e4_c96",
    "mb_r16_k3_s2_e4_c192_se0.25",
    "mb_r24_k3_s1_e6_c256_se0.25",
    "mb_r32_k3_s2_e6_c512_se0.25",
    "mb_r8_k3_s1_e6_c640_se0.25",
)


# Every row ends with its progressive-learning defaults, the (min, max) of four
# quantities: image size, RandAugment magnitude, Mixup alpha and dropout.
# S, M and L are the paper's Table 6; XL follows L up to its own train size.
# B0-B3 are small networks that overfit less: image size ramps from 128 to the
# train size, RandAugment 5 -> 10, no Mixup, and dropout 0.1 -> the variant's
# head dropout (the official B0-B3 recipe uses light augmentation and no Mixup).
def _v2(name, stages, stem, width, depth, train, eval_, dropout, prep, image_size, randaug, mixup, dropouts):
    return ModelSpec(
        f"efficientnetv2-{name}", V2, stages, stem, width, depth, train, eval_, dropout, prep,
        Progressive(image_size, randaug, mixup, dropouts),
    )


V2_TABLE = (
    #   name stages stem width depth train eval dropout preprocessing | progressive: image size,
    #                                                                     RandAugment, Mixup, dropout
    _v2("b0", V2_BASE, 32, 1.0, 1.0, 192, 224, 0.2, "imagenet", (128, 192), (5, 10), (0.0, 0.0), (0.1, 0.2)),
    _v2("b1", V2_BASE, 32, 1.0, 1.1, 192, 240, 0.2, "imagenet", (128, 192), (5, 10), (0.0, 0.0), (0.1, 0.2)),
    _v2("b2", V2_BASE, 32, 1.1, 1.2, 208, 260, 0.3, "imagenet", (128, 208), (5, 10), (0.0, 0.0), (0.1, 0.3)),
    _v2("b3", V2_BASE, 32, 1.2, 1.4, 240, 300, 0.3, "imagenet", (128, 240), (5, 10), (0.0, 0.0), (0.1, 0.3)),
    _v2("s", V2_S, 24, 1.0, 1.0, 300, 384, 0.2, "inception", (128, 300), (5, 15), (0.0, 0.0), (0.1, 0.3)),
    _v2("m", V2_M, 24, 1.0, 1.0, 384, 480, 0.3, "inception", (128, 380), (5, 20), (0.0, 0.2), (0.1, 0.4)),
    _v2("l", V2_L, 32, 1.0, 1.0, 384, 480, 0.4, "inception", (128, 380), (5, 25), (0.0, 0.4), (0.1, 0.5)),
    _v2("xl", V2_XL, 32, 1.0, 1.0, 384, 512, 0.4, "inception", (128, 384), (5, 25), (0.0, 0.4), (0.1, 0.5)),
)

# --- EfficientNet (V1), for comparison --------------------------------------

V1_BASE = (
    "mb_r1_k3_s1_e1_c16_se0.25",
    "mb_r2_k3_s2_e6_c24_se0.25",
    "mb_r2_k5_s2_e6_c40_se0.25",
    "mb_r3_k3_s2_e6_c80_se0.25",
    "mb_r3_k5_s1_e6_c112_se0.25",
    "mb_r4_k5_s2_e6_c192_se0.25",
    "mb_r1_k3_s1_e6_c320_se0.25",
)


# V1 trains and evaluates at one size. Its progressive defaults (the last four
# columns, as in V2_TABLE) ramp the size from half the native size (at least 128)
# and keep the V1 recipe's light regularization.
def _v1(name, width, depth, size, dropout, image_size, randaug, mixup, dropouts):
    return ModelSpec(
        f"efficientnet-{name}", V1, V1_BASE, 32, width, depth, size, size, dropout,
        "imagenet_stats", Progressive(image_size, randaug, mixup, dropouts),
    )


V1_TABLE = (
    #   name width depth size dropout | progressive: image size, RandAugment, Mixup, dropout
    _v1("b0", 1.0, 1.0, 224, 0.2, (128, 224), (5, 10), (0.0, 0.0), (0.1, 0.2)),
    _v1("b1", 1.0, 1.1, 240, 0.2, (128, 240), (5, 10), (0.0, 0.0), (0.1, 0.2)),
    _v1("b2", 1.1, 1.2, 260, 0.3, (130, 260), (5, 10), (0.0, 0.0), (0.1, 0.3)),
    _v1("b3", 1.2, 1.4, 300, 0.3, (150, 300), (5, 10), (0.0, 0.0), (0.1, 0.3)),
    _v1("b4", 1.4, 1.8, 380, 0.4, (190, 380), (5, 10), (0.0, 0.0), (0.1, 0.4)),
    _v1("b5", 1.6, 2.2, 456, 0.4, (228, 456), (5, 10), (0.0, 0.0), (0.1, 0.4)),
    _v1("b6", 1.8, 2.6, 528, 0.5, (264, 528), (5, 10), (0.0, 0.0), (0.1, 0.5)),
    _v1("b7", 2.0, 3.1, 600, 0.5, (300, 600), (5, 10), (0.0, 0.0), (0.1, 0.5)),
)

REGISTRY: Dict[str, ModelSpec] = {spec.name: spec for spec in V2_TABLE + V1_TABLE}


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_BY_CANONICAL = {_canonical(n): spec for n, spec in REGISTRY.items()}


# Variants registered at run time (``register_model``): found by ``get_spec`` like the built-in ones,
# never listed by ``list_models`` (the family's table stays the papers').
_CUSTOM: Dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> str:
    """Makes ``spec`` a variant every name lookup of this process finds (``get_spec``, ``build_model``,
    ``TrainConfig(model=...)``), so an architecture written in the block language trains through the
    package's trainer. Returns its name. A name of another variant is refused; the same spec again is fine.

    >>> spec = get_spec("efficientnetv2-b0").replace(name="b0-all-mbconv-demo",
    ...                                               stages=("mb_r1_k3_s1_e1_c16_se0.25",) + V2_BASE[1:])
    >>> register_model(spec), get_spec("B0-all-MBConv-demo").stage_specs[0].block
    ('b0-all-mbconv-demo', 'mb')
    """
    for stage in spec.stages:
        decode_stage(stage)  # a bad stage string fails here, naming itself
    key = _canonical(spec.name)
    known = _BY_CANONICAL.get(key) or _CUSTOM.get(key)
    if known is not None and known != spec:
        raise ValueError(f"model name {spec.name!r} is taken by another variant: register it under another name.")
    _CUSTOM[key] = spec
    return spec.name


def registered_models() -> Tuple[str, ...]:
    """Names of the variants ``register_model`` added in this process."""
    return tuple(spec.name for spec in _CUSTOM.values())


def list_models() -> Tuple[str, ...]:
    """Names of every registered variant, V2 first.

    >>> list_models()[:2]
    ('efficientnetv2-b0', 'efficientnetv2-b1')
    """
    return tuple(REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """Looks a variant up by name, ignoring case and punctuation.

    "efficientnetv2-s", "EfficientNetV2S" and "efficientnet_v2_s" are the same
    variant. An unknown name raises ValueError listing the close matches.
    """
    if isinstance(name, ModelSpec):
        return name
    key = _canonical(str(name))
    if key in _BY_CANONICAL:
        return _BY_CANONICAL[key]
    if key in _CUSTOM:
        return _CUSTOM[key]
    close = difflib.get_close_matches(str(name).lower(), list(REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown model {name!r}.{hint} Known models: {', '.join(REGISTRY)} "
        "(see effv2_keras.list_models())."
    )
