"""Fused-MBConv ablation: all-MBConv, the V2 mix and all-Fused, and V1 against V2 at matched FLOPs.

The paper (section 3.2, Table 3 and Figure 3) replaces the depthwise 3x3 + 1x1 expansion of MBConv by one
regular 3x3 convolution (Fused-MBConv) in the early stages, where depthwise convolutions cannot use modern
accelerators: fused in stages 1-3 trains faster at the same accuracy, fused everywhere adds parameters and
FLOPs and slows down. The seed reports compared V1 and V2 accuracy against training step time. Candidates,
all V2-B0's channels and depths, each trained by the package's own trainer at one image size:

* ``all_mbconv``: every stage MBConv (with squeeze-excite 0.25);
* ``v2_mix``: V2-B0 as the paper builds it (Fused-MBConv in stages 1-3, MBConv after);
* ``all_fused``: every stage Fused-MBConv (no squeeze-excite, as V2's fused stages);
* ``v1_b0``: EfficientNet-B0 (V1) at the experiment's size;
* ``v2_mix_matched_flops``: V2-B0 at the size (a multiple of 8) whose FLOPs are closest to ``v1_b0``'s.

Each row: parameters, FLOPs at the training size, the trained images/s and step time (the epochs after the
first, as the trainer timed them), training seconds, validation top-1 (which selects the epoch) and test
top-1 (once). The plot is the paper's Figure 3 style: test top-1 against training time.

Command (full settings: full-width networks, 96 px, 15 epochs, batch 32; estimated from the trainer's step
rates, about 20 minutes on 2 CPU cores for signdigits100)::

    effv2 reproduce fused_ablation --data folder:../shared/data/signdigits100

``--quick`` (width and depth 0.25, 48 px, 3 epochs; about a minute)::

    effv2 reproduce fused_ablation --quick --data folder:../shared/data/signdigits100

The variants exist in this process only (``effv2_keras.models.register_model``): their ``model.keras`` files
load anywhere (stock Keras layers), but ``effv2 export``/``predict`` on their run folders need the same
registration first. Default data: the embedded digits.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import Tuple

from effv2_keras.experiments.runner import Candidate, NetworkSettings, Options, load_splits, steady_mean

DEFAULT_DATA = "digits"
COLUMNS = (("candidate", "candidate"), ("blocks", "blocks by stage"), ("image_size", "px"),
           ("parameters", "parameters"), ("mflops", "MFLOPs"), ("images_per_sec", "trained img/s"),
           ("step_ms", "step ms"), ("train_seconds", "training s"), ("val_top1", "validation top-1"),
           ("test_top1", "test top-1"))
V2_BASE_MODEL, V1_BASE_MODEL = "efficientnetv2-b0", "efficientnet-b0"
BATCH = 32


FULL = NetworkSettings(width=1.0, depth=1.0, size=96, epochs=15)
QUICK = NetworkSettings(width=0.25, depth=0.25, size=48, epochs=3)  # 48: room for a smaller V2 at >= 32 px


def settings_of(options: Options) -> NetworkSettings:
    return QUICK if options.quick else FULL


def _restage(stages: Tuple[str, ...], block: str) -> Tuple[str, ...]:
    from effv2_keras.models.arch import decode_stage, encode_stage

    se = 0.25 if block == "mb" else None
    return tuple(encode_stage(dataclasses.replace(decode_stage(s), block=block, se_ratio=se)) for s in stages)


def variants() -> dict:
    """Name -> the stage strings of the three block mixes (V2-B0's channels, depths and strides)."""
    from effv2_keras.models import get_spec

    mix = get_spec(V2_BASE_MODEL).stages
    return {"all_mbconv": _restage(mix, "mb"), "v2_mix": mix, "all_fused": _restage(mix, "fused")}


def _model_name(candidate: str) -> str:
    return f"fused-ablation-{candidate.replace('_', '-')}"


def register(candidate: str, stages: Tuple[str, ...], base: str) -> str:
    """The candidate's architecture as a variant the trainer builds (this process)."""
    from effv2_keras.models import get_spec, register_model

    return register_model(get_spec(base).replace(name=_model_name(candidate), stages=tuple(stages)))


@functools.lru_cache(maxsize=None)
def flops(model: str, width: float, depth: float, size: int) -> int:
    from effv2_keras.models import count_flops, get_spec

    return count_flops(get_spec(model).replace(width=width, depth=depth), size)


def matched_size(settings: NetworkSettings) -> int:
    """The multiple of 8 at which V2-B0's FLOPs are closest to V1-B0's at ``settings.size``."""
    target = flops(V1_BASE_MODEL, settings.width, settings.depth, settings.size)
    from effv2_keras.models.builder import MIN_INPUT_SIZE

    sizes = range(MIN_INPUT_SIZE, 2 * settings.size + 1, 8)
    return min(sizes, key=lambda s: abs(flops(V2_BASE_MODEL, settings.width, settings.depth, s) - target))


def candidates(options: Options):
    s = settings_of(options)
    common = {"width": s.width, "depth": s.depth, "epochs": s.epochs}
    rows = [Candidate(name, {"stages": list(stages), "base": V2_BASE_MODEL, "size": s.size, **common})
            for name, stages in variants().items()]
    rows.append(Candidate("v1_b0", {"base": V1_BASE_MODEL, "size": s.size, **common}))
    rows.append(Candidate("v2_mix_matched_flops", {"stages": list(variants()["v2_mix"]), "base": V2_BASE_MODEL,
                                                   "size": matched_size(s), **common}))
    return rows


@dataclasses.dataclass
class Context:
    data: str
    seed: int
    splits: object  # effv2_keras.data.DatasetSplits, loaded once for every candidate


def prepare(options: Options) -> Context:
    return Context(options.data, options.seed, load_splits(options))


def model_of(candidate: Candidate) -> str:
    s = candidate.settings
    if "stages" not in s:
        return s["base"]
    return register(candidate.name, tuple(s["stages"]), s["base"])


def run(candidate: Candidate, context: Context, workdir: Path) -> dict:
    from effv2_keras.models import get_spec
    from effv2_keras.train import TrainConfig, train

    s = candidate.settings
    model = model_of(candidate)
    config = TrainConfig(model=model, width=s["width"], depth=s["depth"], data=context.data, epochs=s["epochs"],
                         stages=1, min_size=s["size"], max_size=s["size"], batch_size=BATCH, seed=context.seed,
                         out=str(workdir), resume=True, verbose=0)
    result = train(config, context.splits)
    images_per_sec = steady_mean(result.rows, "images_per_sec")
    blocks = "".join("F" if stage.block == "fused" else "M" for stage in get_spec(model).stage_specs)
    return {"blocks": blocks, "image_size": s["size"], "parameters": int(result.model.count_params()),
            "mflops": flops(model, s["width"], s["depth"], s["size"]) / 1e6, "images_per_sec": images_per_sec,
            "step_ms": 1000.0 * BATCH / images_per_sec, "train_seconds": result.seconds,
            "val_top1": result.val["top1"], "test_top1": result.test["top1"], "epochs": len(result.rows)}
