"""Progressive learning ablation: fixed size, progressive resizing, and with adaptive regularization.

The paper's Table 8 style: the same network and epochs trained three ways, per seed: ``fixed`` (every
epoch at the last size, with the last stage's regularization), ``progressive`` (Algorithm 1's image sizes,
small to large over the stages, with that same regularization throughout) and ``progressive_adaptive``
(Algorithm 1 whole: sizes and regularization, RandAugment magnitude and head dropout, ramped together).
Every candidate trains through the package's trainer, selects its epoch on the validation slice and
reports test once; the table gives accuracy against wall-clock, the paper's claim being that
progressive learning trains faster and that adaptive regularization wins back the accuracy small images
lose.

The project's own earlier number (docs/PROGRESSIVE.md, clothing160, full-width V2-B0, 10 epochs, 3 seeds):
4 stages 64 -> 128 px reached 51.4% validation top-1 against fixed 128 px's 58.7%, in 0.73-0.86x the time.

Command (full settings: full-width V2-B0, 20 epochs, 4 stages 64 -> 128 px, regularization scale 0.25, 3
seeds: 9 runs; estimated from the trainer's step rates, about 2 hours on 2 CPU cores for clothing160)::

    effv2 reproduce progressive_ablation --data folder:../shared/data/clothing160

``--quick`` (V2-B0 at width and depth 0.25, 4 epochs, 2 stages 32 -> 48 px, 1 seed; about a minute)::

    effv2 reproduce progressive_ablation --quick --data folder:../shared/data/signdigits100

Default data: the embedded digits (scikit-learn's, 8x8 scans: every size here is an upsampling, so use
``--data`` with real photos for numbers that mean something).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Tuple

from effv2_keras.experiments.runner import Candidate, Options, load_splits

DEFAULT_DATA = "digits"
MODEL = "efficientnetv2-b0"
VARIANTS = ("fixed", "progressive", "progressive_adaptive")
COLUMNS = (("candidate", "candidate"), ("seed", "seed"), ("sizes", "image sizes"),
           ("val_top1", "validation top-1"), ("test_top1", "test top-1"), ("train_seconds", "training s"),
           ("epochs", "epochs"))


@dataclasses.dataclass(frozen=True)
class Settings:
    width: float
    depth: float
    epochs: int
    stages: int
    sizes: Tuple[int, int]  # (first stage, last stage) px
    seeds: int  # candidates per variant: options.seed, options.seed + 1, ...
    # The short recipe scales the paper's regularization by (epochs / 100) ** 2, almost none at 20 epochs:
    # a quarter of it is enough for adaptive and constant regularization to differ while a short run learns.
    regularization_scale: float


FULL = Settings(width=1.0, depth=1.0, epochs=20, stages=4, sizes=(64, 128), seeds=3, regularization_scale=0.25)
QUICK = Settings(width=0.25, depth=0.25, epochs=4, stages=2, sizes=(32, 48), seeds=1, regularization_scale=0.25)


def settings_of(options: Options) -> Settings:
    return QUICK if options.quick else FULL


def candidates(options: Options):
    s = settings_of(options)
    return [Candidate(f"{variant}_seed{seed}", {"variant": variant, "seed": seed, "epochs": s.epochs,
                                                  "stages": 1 if variant == "fixed" else s.stages,
                                                  "sizes": list(s.sizes), "width": s.width, "depth": s.depth,
                                                  "regularization_scale": s.regularization_scale})
            for seed in range(options.seed, options.seed + s.seeds) for variant in VARIANTS]


@dataclasses.dataclass
class Context:
    data: str
    splits: object  # effv2_keras.data.DatasetSplits, loaded once for every candidate


def prepare(options: Options) -> Context:
    return Context(options.data, load_splits(options))


def config_of(candidate: Candidate, data: str, workdir: Path):
    """The candidate's TrainConfig: the variant decides the stages and whether the regularization ramps."""
    from effv2_keras import schedule
    from effv2_keras.train import TrainConfig

    s = candidate.settings
    variant, (first, last) = s["variant"], s["sizes"]
    ranges = schedule.default_ranges(MODEL, s["regularization_scale"])
    held = {}  # the last stage's regularization, every stage (no adaptation)
    if variant != "progressive_adaptive":
        randaug, dropout = ranges["randaug_magnitude"][1], ranges["dropout"][1]
        mixup = ranges["mixup_alpha"][1]
        held = dict(randaug_min=randaug, randaug_max=randaug, dropout_min=dropout, dropout_max=dropout,
                    mixup_min=mixup, mixup_max=mixup)
    return TrainConfig(model=MODEL, width=s["width"], depth=s["depth"], data=data, epochs=s["epochs"],
                       stages=s["stages"], min_size=last if variant == "fixed" else first, max_size=last,
                       regularization_scale=s["regularization_scale"], batch_size=32, seed=s["seed"],
                       out=str(workdir), resume=True, verbose=0, **held)


def run(candidate: Candidate, context: Context, workdir: Path) -> dict:
    from effv2_keras.train import train

    result = train(config_of(candidate, context.data, workdir), context.splits)
    return {"seed": candidate.settings["seed"], "val_top1": result.val["top1"], "test_top1": result.test["top1"],
            "train_seconds": result.seconds, "epochs": len(result.rows),
            "sizes": "-".join(str(stage.image_size) for stage in result.schedule.stages),
            "dropout": [stage.dropout for stage in result.schedule.stages],
            "randaug": [stage.randaug_magnitude for stage in result.schedule.stages]}
