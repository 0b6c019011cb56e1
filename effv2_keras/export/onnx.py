"""ONNX through tf2onnx (an optional extra: ``pip install tf2onnx onnxruntime``).

The model's inference function is saved as a one-signature SavedModel and
converted with the tf2onnx command line, the route that works with Keras 3
(``model.export(format="onnx")`` turns the preprocessing constants into
required graph inputs). Input float32 [batch, H, W, 3] 0-255 named ``images``,
output ``probabilities``; validated with onnxruntime by ``verify``.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from effv2_keras.export.artifacts import prepare_out_dir, read_metadata, write_labels, write_metadata
from effv2_keras.export.errors import ExportError
from effv2_keras.export.graph import save_probabilities_model
from effv2_keras.export.source import load_source

FILENAME = "model.onnx"
DEFAULT_OPSET = 17


def onnx_available() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("tf2onnx", "onnxruntime"))


def export_onnx(model, out_dir, *, image_size=None, opset: int = DEFAULT_OPSET, use_ema: bool = True,
                class_names=None, timeout_s: int = 1800) -> Path:
    """Converts a model to ``out_dir/model.onnx`` (plus labels.txt and metadata).

    ``model`` is a Keras model, a ``.keras`` file or run directory, or a SavedModel
    directory written by ``export_saved_model``. From a SavedModel, tf2onnx runs alone
    (no TensorFlow model in this process): the route for XL, whose conversion needs a
    20.5 GB process (docs/EXPORT.md). Its ``serving_default`` becomes the ONNX graph:
    outputs ``logits``, ``probabilities``, ``top_k_classes``, ``top_k_scores`` (and
    ``top_k_class_names`` when the model has class names).

        >>> export_onnx("runs/pets", "exported/onnx")  # doctest: +SKIP
    """
    if not onnx_available():
        raise ExportError("ONNX export needs the optional extra: pip install tf2onnx onnxruntime.")
    start = time.perf_counter()
    if is_serving_saved_model(model):
        return _from_saved_model(Path(model), out_dir, opset, timeout_s, start)
    source = load_source(model, class_names, use_ema)
    head, names, size = source.classifier("ONNX export"), source.class_names, source.fixed_size(image_size)
    metadata = dict(model=source.model.name, num_classes=head.num_classes, activation=head.activation,
                    ema=source.ema)
    out = prepare_out_dir(out_dir)
    path = out / FILENAME
    with tempfile.TemporaryDirectory(prefix="effv2_onnx_") as tmp:
        save_probabilities_model(source.model, head, size, tmp, "ONNX export")
        # tf2onnx runs in a child process that loads the SavedModel again. When this call
        # loaded the model from a file, nothing else holds it: let it go first, so parent
        # and child do not hold two copies (for L/XL that is the difference between fitting
        # in 24 GB or not; docs/EXPORT.md).
        del source, head, model
        gc.collect()
        _run_tf2onnx(tmp, path, opset, timeout_s)
    write_labels(out, names)
    write_metadata(
        out, format="onnx", file=FILENAME, opset=opset, image_size=list(size), input_range="0-255",
        class_names=names, seconds=round(time.perf_counter() - start, 2), **metadata)
    return path


def is_serving_saved_model(model) -> bool:
    """True for a directory written by ``export_saved_model`` (its metadata says so)."""
    if not isinstance(model, (str, os.PathLike)):
        return False
    path = Path(model)
    return (path / "saved_model.pb").is_file() and read_metadata(path).get("format") == "saved_model"


def _from_saved_model(source: Path, out_dir, opset: int, timeout_s: int, start: float) -> Path:
    metadata = read_metadata(source)
    out = prepare_out_dir(out_dir)
    path = out / FILENAME
    _run_tf2onnx(str(source), path, opset, timeout_s)
    names = metadata.get("class_names")
    write_labels(out, names)
    write_metadata(
        out, format="onnx", file=FILENAME, opset=opset, source=str(source), model=metadata.get("model"),
        image_size=metadata.get("image_size"), input_range="0-255", class_names=names,
        num_classes=metadata.get("num_classes"), ema=metadata.get("ema"), seconds=round(time.perf_counter() - start, 2))
    return path


def _run_tf2onnx(saved_model_dir: str, path: Path, opset: int, timeout_s: int) -> None:
    command = [sys.executable, "-m", "tf2onnx.convert", "--saved-model", saved_model_dir, "--output",
               str(path), "--signature_def", "serving_default", "--opset", str(opset)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    if result.returncode != 0 or not path.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()
        reason = tail[-1] if tail else "no output"
        raise ExportError(f"tf2onnx failed ({reason}); command: {' '.join(command)}")
