"""Re-scores finished runs' model.keras on every evaluation size x crop the trainer's end-of-run search
considers: validation and test top-1 and loss for each, and the pair ``Trainer.final_evaluation`` picks
(the lowest validation loss). Shows what another selection rule would have given on the same models
(docs/PROGRESSIVE.md, third round); one JSON line per run.

``--sizes 80,96,100``: instead, validation top-1 and loss of the whole photo resized to each size (how far a
model trained at one size carries to others); ``--via 96`` resizes every photo to that size first (so a
size change and a sharpness change can be told apart).

Example:
    python tools/rescore_run.py /tmp/benchmark_budget/effv2_max_size_96_seed0
    python tools/rescore_run.py --sizes 80,88,92,96,100,128 /tmp/benchmark_budget/effv2_max_size_96_seed0
    python tools/rescore_run.py --sizes 100 --via 96 /tmp/benchmark_budget/effv2_max_size_96_seed0
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import effv2_keras  # noqa: E402,F401  (first: it picks TensorFlow's CPU kernels)
import keras  # noqa: E402
import numpy as np  # noqa: E402

from effv2_keras import data  # noqa: E402
from effv2_keras.data import ops  # noqa: E402
from effv2_keras.train.config import EVAL_CROP_FRACTIONS, eval_size_candidates  # noqa: E402


def scores(model, source, size: int, crop: float, num_classes: int) -> dict:
    """Top-1 and mean cross-entropy of ``model`` (softmax outputs) on ``source`` at ``size``/``crop``."""
    correct = count = 0
    nll = 0.0
    for images, labels in data.make_pipeline(source, size, 64, num_classes, training=False,
                                             eval_crop_fraction=crop):
        probabilities = model.predict(images, verbose=0)
        truth = labels.numpy().argmax(-1)
        correct += int((probabilities.argmax(-1) == truth).sum())
        count += len(truth)
        nll += float(-np.log(np.clip(probabilities[np.arange(len(truth)), truth], 1e-7, 1.0)).sum())
    return {"top1": correct / count, "loss": nll / count}


def rescore(run: str) -> dict:
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    splits = data.load(config["data"], seed=config["seed"], val_fraction=config["val_fraction"])
    candidates = [(size, crop) for size in eval_size_candidates(config["max_size"], splits.image_size)
                  for crop in EVAL_CROP_FRACTIONS]
    n = splits.num_classes
    by_pair = {pair: {"val": scores(model, splits.val, *pair, n), "test": scores(model, splits.test, *pair, n)}
               for pair in candidates}
    chosen = min(candidates, key=lambda pair: (by_pair[pair]["val"]["loss"], pair[0],
                                               EVAL_CROP_FRACTIONS.index(pair[1])))
    return {"run": run, "by_eval_size": {f"{s}@{c:g}": v for (s, c), v in by_pair.items()},
            "chosen": f"{chosen[0]}@{chosen[1]:g}", "val": by_pair[chosen]["val"], "test": by_pair[chosen]["test"]}


def by_size(run: str, sizes, via=None) -> dict:
    """Validation top-1 and loss of the whole photo resized to each of ``sizes`` (first to ``via``)."""
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    splits = data.load(config["data"], seed=config["seed"], val_fraction=config["val_fraction"])
    out = {}
    for size in sizes:
        def resized(image, label, size=size):
            image = ops.resize(image, via) if via else image
            return ops.resize(image, size), label
        source = data.ImageSource(splits.val.dataset.map(resized), splits.val.num_examples)
        out[str(size)] = scores(model, source, size, 1.0, splits.num_classes)
    return {"run": run, "via": via, "val_by_size": out}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--sizes", help="comma-separated sizes: validation by input size instead")
    parser.add_argument("--via", type=int, help="with --sizes: resize every photo to this size first")
    args = parser.parse_args()
    for path in args.runs:
        if args.sizes:
            print(json.dumps(by_size(path, [int(s) for s in args.sizes.split(",")], args.via)))
        else:
            print(json.dumps(rescore(path)))
