"""Helpers of the exporter tests (a uniquely named module: pytest puts this
folder on sys.path, and every test folder has its own conftest.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

SHARED_DATA = Path(os.environ.get("EFFV2_SHARED_DATA")
                   or Path(__file__).resolve().parents[2].parent / "shared" / "data")
TINY = dict(width=0.25, depth=0.25, input_shape=(64, 64, 3), classes=10)
SIZE = (64, 64)
RELOAD_SCRIPT = Path(__file__).with_name("reload_artifacts.py")
DIGIT_WORDS = [f"sign_{w}" for w in ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight",
                                     "nine")]


def shared_dataset(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real photos not found at {path} (set EFFV2_SHARED_DATA to the folder holding {name})")
    return path


def build_tiny():
    import effv2_keras

    return effv2_keras.build("efficientnetv2-b0", **TINY)


ARTIFACTS = {  # name -> (format, options)
    "keras": ("keras", {}),
    "saved_model": ("saved_model", {}),
    "tfhub": ("tfhub", {}),
    "tfhub_fv": ("tfhub", {"flavour": "feature_vector"}),
    "tflite_fp32": ("tflite", {}),
    "tflite_fp16": ("tflite", {"quantize": "fp16"}),
    "tflite_dynamic": ("tflite", {"quantize": "dynamic"}),
    "tflite_int8": ("tflite", {"quantize": "int8"}),
    "tflite_int8_io": ("tflite", {"quantize": "int8", "int8_io": True}),  # the B0 sweep's int8
    "onnx": ("onnx", {}),
}


def export_all(model_or_run, out_root: Path, representative, names=ARTIFACTS, in_helper=()):
    """Exports artifacts from a run directory or a model; returns {name: (format, path, seconds)}.

    ``in_helper`` names are exported meanwhile by a second Python process from
    the run directory (a Path is then required): tracing is single-threaded, so
    two processes use the two cores. The helper's exports are the same calls.
    """
    helper = None
    in_helper = [n for n in in_helper if n in names]
    if in_helper:
        assert isinstance(model_or_run, Path), "a helper process needs the run directory"
        out_root.mkdir(parents=True, exist_ok=True)
        spec = {"run": str(model_or_run), "out": str(out_root), "names": in_helper}
        if representative is not None:
            np.save(out_root / "representative.npy", representative)
            spec["representative"] = str(out_root / "representative.npy")
        log = open(out_root / "helper.log", "w")
        helper = subprocess.Popen([sys.executable, __file__, json.dumps(spec)], stdout=log,
                                  stderr=subprocess.STDOUT)
    done = _export(model_or_run, out_root, representative, [n for n in names if n not in in_helper])
    if helper is not None:
        assert helper.wait(timeout=900) == 0, (out_root / "helper.log").read_text()[-3000:]
        for name, (fmt, path, seconds) in json.loads((out_root / "helper.json").read_text()).items():
            done[name] = (fmt, Path(path), seconds)
    return done


def _export(model_or_run, out_root: Path, representative, names):
    from effv2_keras import export

    done = {}
    for name in names:
        fmt, options = ARTIFACTS[name]
        if fmt == "onnx" and not export.onnx_available():
            continue
        options = dict(options)
        if options.get("quantize") == "int8":
            options["representative_images"] = representative
        start = time.perf_counter()
        source = model_or_run if not isinstance(model_or_run, Path) else str(model_or_run)
        path = export.export(source, fmt, out_root / name, **options)
        done[name] = (fmt, Path(path), time.perf_counter() - start)
    return done


def reload_in_fresh_process(artifacts, images, workdir: Path, jpegs=(), jpeg_pixels=None, skip=("tfhub_fv",)):
    """Runs reload_artifacts.py in a new interpreter; returns its outputs (dict of arrays)."""
    np.save(workdir / "images.npy", images)
    spec = {"images": str(workdir / "images.npy"), "jpegs": [str(p) for p in jpegs], "artifacts": {
        name: {"format": fmt, "path": str(path)}
        for name, (fmt, path, _) in artifacts.items() if name not in skip}}
    if jpeg_pixels is not None:
        np.save(workdir / "jpeg_pixels.npy", jpeg_pixels)
        spec["jpeg_pixels"] = str(workdir / "jpeg_pixels.npy")
    (workdir / "spec.json").write_text(json.dumps(spec))
    result = subprocess.run([sys.executable, str(RELOAD_SCRIPT), str(workdir / "spec.json"),
                             str(workdir / "out.npz")], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "effv2_keras imported: False" in result.stdout  # the artifacts stand on their own
    with np.load(workdir / "out.npz") as data:
        return {key: data[key] for key in data.files}


if __name__ == "__main__":  # the helper process of export_all
    _spec = json.loads(sys.argv[1])
    _rep = np.load(_spec["representative"]) if "representative" in _spec else None
    _done = _export(Path(_spec["run"]), Path(_spec["out"]), _rep, _spec["names"])
    (Path(_spec["out"]) / "helper.json").write_text(json.dumps(
        {name: [fmt, str(path), seconds] for name, (fmt, path, seconds) in _done.items()}))
