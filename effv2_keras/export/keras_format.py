"""The native ``.keras`` file: the inference copy of a model (EMA weights when
the run has them, no optimizer state), with its class names beside it.

The output directory is itself a valid run directory for the other exporters,
``effv2 predict`` and ``effv2 evaluate``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from effv2_keras.export import common

FILENAME = "model.keras"


def export_keras(model, out_dir, *, use_ema: bool = True, class_names=None) -> Path:
    """Writes ``out_dir/model.keras`` (+ ``class_names.json``); returns the file's path."""
    start = time.perf_counter()
    source = common.load_source(model, class_names, use_ema)
    model = source.model
    if getattr(model, "optimizer", None) is not None:
        model = common.inference_copy(model)  # drop the optimizer state from the deployment file
    head = common.split_head(model)
    names = common.check_class_names(source.class_names, head)
    out = common.prepare_out_dir(out_dir)
    path = out / FILENAME
    model.save(path)
    if names:
        (out / "class_names.json").write_text(json.dumps(names) + "\n")
    common.write_metadata(out, format="keras", file=FILENAME, model=model.name, input_range="0-255",
                          class_names=names, num_classes=head.num_classes, ema=source.ema,
                          seconds=round(time.perf_counter() - start, 2))
    return path
