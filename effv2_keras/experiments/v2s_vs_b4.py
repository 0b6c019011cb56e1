"""EfficientNetV2-S against EfficientNet-B4, trained the same way: time, speed, size and accuracy.

The seed report trained both from scratch on EMNIST-Letters (26 classes) at 224 px, batch 64, 10 epochs, Adam
1e-3: both about 95% test accuracy, V2-S in 66 minutes against B4's 80 on an A100 (../shared/REFERENCE.md
section 4); the paper's claim is V2-S's faster training at B4-level accuracy. Here both train through the
package's trainer with one recipe (its short recipe, batch 64, one size, no progressive stages), each selects
its epoch on a validation slice carved from train and reports test once. Each row: parameters, FLOPs at the
training size, seconds per epoch and images/s (epochs after the first, which holds the trace), training
seconds, validation and test top-1.

Command (full settings: the seed's 224 px and 10 epochs, full-size networks: many hours on 2 CPU cores for
EMNIST-Letters' 88,800 images; a GPU runs it in about the seed's times)::

    effv2 reproduce v2s_vs_b4

On a smaller folder (estimated from the trainer's step rates at 224 px: about 3 hours on 2 CPU cores for
signdigits100 at the full settings)::

    effv2 reproduce v2s_vs_b4 --data folder:../shared/data/signdigits100

``--quick`` (both networks at width and depth 0.25, 32 px, 2 epochs; about a minute)::

    effv2 reproduce v2s_vs_b4 --quick --data folder:../shared/data/signdigits100

Default data: ``tfds:emnist:letters`` (prepared offline beforehand; the loader never downloads). TFDS's
EMNIST-Letters has 88,800 training and 14,800 test images; torchvision's has 124,800 and 20,800 (its
``letters`` split keeps every writer's samples): numbers on the two are not the same experiment.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from effv2_keras.experiments.runner import Candidate, NetworkSettings, Options, load_splits, steady_mean

DEFAULT_DATA = "tfds:emnist:letters"
MODELS = {"efficientnetv2_s": "efficientnetv2-s", "efficientnet_b4": "efficientnet-b4"}
SEED_REPORT_MINUTES_A100 = {"efficientnetv2_s": 66, "efficientnet_b4": 80}  # both about 95% test
COLUMNS = (("candidate", "candidate"), ("parameters", "parameters"), ("gflops", "GFLOPs"),
           ("epoch_seconds", "s per epoch"), ("images_per_sec", "trained img/s"), ("train_seconds", "training s"),
           ("val_top1", "validation top-1"), ("test_top1", "test top-1"),
           ("seed_report_minutes_a100", "seed report: minutes on an A100"))
BATCH = 64


FULL = NetworkSettings(width=1.0, depth=1.0, size=224, epochs=10)
QUICK = NetworkSettings(width=0.25, depth=0.25, size=32, epochs=2)


def settings_of(options: Options) -> NetworkSettings:
    return QUICK if options.quick else FULL


def candidates(options: Options):
    s = settings_of(options)
    return [Candidate(name, {"model": model, "width": s.width, "depth": s.depth, "size": s.size, "epochs": s.epochs})
            for name, model in MODELS.items()]


@dataclasses.dataclass
class Context:
    data: str
    seed: int
    splits: object  # effv2_keras.data.DatasetSplits, loaded once for both


def prepare(options: Options) -> Context:
    return Context(options.data, options.seed, load_splits(options))


def run(candidate: Candidate, context: Context, workdir: Path) -> dict:
    from effv2_keras.models import count_flops, get_spec
    from effv2_keras.train import TrainConfig, train

    s = candidate.settings
    config = TrainConfig(model=s["model"], width=s["width"], depth=s["depth"], data=context.data,
                         epochs=s["epochs"], stages=1, min_size=s["size"], max_size=s["size"], batch_size=BATCH,
                         seed=context.seed, out=str(workdir), resume=True, verbose=0)
    result = train(config, context.splits)
    spec = get_spec(s["model"]).replace(width=s["width"], depth=s["depth"])
    return {"parameters": int(result.model.count_params()), "gflops": count_flops(spec, s["size"]) / 1e9,
            "epoch_seconds": steady_mean(result.rows, "epoch_seconds"),
            "images_per_sec": steady_mean(result.rows, "images_per_sec"),
            "train_seconds": result.seconds, "val_top1": result.val["top1"], "test_top1": result.test["top1"],
            "epochs": len(result.rows), "seed_report_minutes_a100": SEED_REPORT_MINUTES_A100[candidate.name]}
