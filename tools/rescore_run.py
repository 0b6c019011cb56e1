"""Re-scores a finished run's model.keras as ``Trainer.final_evaluation`` now does: every
evaluation size x crop on the validation split, test once with the best. For runs trained before
the crop search existed (the seed-0 rows of docs/bench/budget_signdigits100_5m.json).

Example:
    python tools/rescore_run.py /tmp/benchmark_budget/effv2_max_size_96_seed0
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import effv2_keras  # noqa: E402,F401  (first: it picks TensorFlow's CPU kernels)
import keras  # noqa: E402

from effv2_keras import data  # noqa: E402
from effv2_keras.train.config import EVAL_CROP_FRACTIONS, eval_size_candidates  # noqa: E402


def top1(model, source, size: int, crop: float, num_classes: int) -> float:
    correct = count = 0
    for images, labels in data.make_pipeline(source, size, 32, num_classes, training=False,
                                             eval_crop_fraction=crop):
        predicted = model.predict(images, verbose=0).argmax(-1)
        correct += int((predicted == labels.numpy().argmax(-1)).sum())
        count += len(predicted)
    return correct / count


def rescore(run: str) -> dict:
    with open(os.path.join(run, "config.json")) as f:
        config = json.load(f)
    model = keras.models.load_model(os.path.join(run, "model.keras"))
    splits = data.load(config["data"], seed=config["seed"], val_fraction=config["val_fraction"])
    candidates = [(size, crop) for size in eval_size_candidates(config["max_size"], splits.image_size)
                  for crop in EVAL_CROP_FRACTIONS]
    val = {pair: top1(model, splits.val, *pair, splits.num_classes) for pair in candidates}
    best = max(candidates, key=lambda pair: (val[pair], -pair[0], -EVAL_CROP_FRACTIONS.index(pair[1])))
    return {"run": run, "val_top1_by_eval_size": {f"{s}@{c:g}": v for (s, c), v in val.items()},
            "chosen": f"{best[0]}@{best[1]:g}", "val_top1": val[best],
            "test_top1": top1(model, splits.test, *best, splits.num_classes)}


if __name__ == "__main__":
    for path in sys.argv[1:]:
        print(json.dumps(rescore(path)))
