"""ONNX through tf2onnx (an optional extra: ``pip install tf2onnx onnxruntime``).

The model's inference function is saved as a one-signature SavedModel and
converted with the tf2onnx command line, the route that works with Keras 3
(``model.export(format="onnx")`` turns the preprocessing constants into
required graph inputs). Input float32 [batch, H, W, 3] 0-255 named ``images``,
output ``probabilities``; validated with onnxruntime by ``verify``.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effv2_keras.export import common
from effv2_keras.export.common import ExportError

FILENAME = "model.onnx"
DEFAULT_OPSET = 17


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("tf2onnx", "onnxruntime"))


def export_onnx(model, out_dir, *, image_size=None, opset: int = DEFAULT_OPSET, use_ema: bool = True,
                class_names=None, timeout_s: int = 1800) -> Path:
    """Converts a model to ``out_dir/model.onnx`` (plus labels.txt and metadata)."""
    if not onnx_available():
        raise ExportError("ONNX export needs the optional extra: pip install tf2onnx onnxruntime.")
    start = time.perf_counter()
    loaded = common.load_classifier(model, class_names, use_ema, image_size, "ONNX")
    source, model, head, names, size = loaded.source, loaded.model, loaded.head, loaded.class_names, loaded.image_size
    out = common.prepare_out_dir(out_dir)
    path = out / FILENAME
    with tempfile.TemporaryDirectory(prefix="effv2_onnx_") as tmp:
        common.save_probabilities_model(model, head, size, tmp, "ONNX export")
        command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", tmp, "--output", str(path),
                   "--signature_def", "serving_default", "--opset", str(opset)]
        result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 or not path.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()
        reason = tail[-1] if tail else "no output"
        raise ExportError(f"tf2onnx failed ({reason}); command: {' '.join(command)}")
    common.write_labels(out, names)
    common.write_metadata(
        out, format="onnx", file=FILENAME, model=model.name, opset=opset, image_size=list(size),
        input_range="0-255", class_names=names, num_classes=head.num_classes, activation=head.activation,
        ema=source.ema, seconds=round(time.perf_counter() - start, 2))
    return path
