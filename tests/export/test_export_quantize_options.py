"""The full-integer options beyond plain int8: ``quantize="int16x8"`` (int16
activations, int8 weights) and int8 with ops kept in float (``float_fallback``,
CLI ``--int8_float_fallback``), on the tiny trained model and real photos.

Each file must run in ``ai_edge_litert`` (the public loader, not effv2_keras'
predictor), have the tensor types its flag asked for, and agree with the Keras
model on the real test photos: int16x8 >= 97% top-1 (the issue's int8 target;
16-bit activations leave only weight rounding), float fallback >= 90% (the
full-int8 tolerance of this 5-epoch model, see test_export_formats.py), and so
is percentile calibration. The
clothing160 numbers are in docs/EXPORT.md.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from effv2_keras.export import verification as verify_lib

FALLBACK_MIN_AGREEMENT = 0.90


def run_litert(path, images):
    """Runs a .tflite file with ai_edge_litert only (float input/output expected).

    Returns a second, never-allocated interpreter of the file for inspecting op
    and tensor types (allocation hands ops to the XNNPACK delegate, which hides them).
    """
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.resize_tensor_input(inp["index"], list(images.shape))
    interpreter.allocate_tensors()
    interpreter.set_tensor(inp["index"], images.astype(np.float32))
    interpreter.invoke()
    return Interpreter(model_path=str(path)), interpreter.get_tensor(out["index"])


def model_ops(interpreter, path):
    """[(op type, output tensor details)] of the file's ops (ops from its flatbuffer,
    tensors from the interpreter; both index tensors alike)."""
    from effv2_keras.export.tflite import ops_of

    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    return [(op, tensors[outputs[0]]) for op, outputs in ops_of(Path(path).read_bytes()) if outputs]


def op_output_types(interpreter, path):
    """Counter of (op type, output dtype name) over the model's ops."""
    return Counter((op, tensor["dtype"].__name__) for op, tensor in model_ops(interpreter, path))


def agreement(a, b):
    return float(np.mean(np.argmax(a, -1) == np.argmax(b, -1)))


@pytest.fixture(scope="module")
def int16x8(tiny_run, tmp_path_factory):
    from effv2_keras.export import export_tflite

    return export_tflite(tiny_run.path, tmp_path_factory.mktemp("int16x8"), quantize="int16x8",
                         representative_images=tiny_run.train.images[:100])


def test_int16x8_runs_in_litert_with_int16_activations(int16x8, tiny_run, reference):
    interpreter, out = run_litert(int16x8, tiny_run.test.images)
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert interpreter.get_output_details()[0]["dtype"] == np.float32
    types = op_output_types(interpreter, int16x8)
    for op in ("CONV_2D", "DEPTHWISE_CONV_2D", "LOGISTIC", "MUL", "SOFTMAX"):
        assert types[(op, "int16")] > 0 and types[(op, "int8")] == 0 and types[(op, "float32")] == 0, types
    assert np.all(np.isfinite(out)) and out.shape == reference.shape
    assert agreement(out, reference) >= verify_lib.INT8_MIN_AGREEMENT
    metadata = json.loads((int16x8.parent / "effv2_export.json").read_text())
    assert metadata["quantize"] == "int16x8" and metadata["representative_images"] == 100


def test_int16x8_is_held_to_the_int8_tolerances(int16x8, tiny_run, reference):
    from effv2_keras.export import verify

    result = verify(tiny_run.model, int16x8, tiny_run.test.images, tiny_run.test.labels, reference=reference)
    assert result.precision == "int16x8"
    assert result.passed, verify_lib.format_table([result])
    result.top1_agreement = 0.5  # the int8 rules apply to this precision
    assert any("agreement" in f for f in result.failures())


def test_int8_float_fallback_keeps_the_chosen_ops_in_float(tiny_run, tmp_path, reference):
    from effv2_keras.export import export_tflite

    path = export_tflite(tiny_run.path, tmp_path / "se", quantize="int8", float_fallback=("se",),
                         representative_images=tiny_run.train.images[:100])
    interpreter, out = run_litert(path, tiny_run.test.images)
    se_types, other_types = Counter(), Counter()
    for op, tensor in model_ops(interpreter, path):
        if op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        if tensor["dtype"] == np.int32:
            continue  # shape arithmetic
        (se_types if "_se_" in tensor["name"] else other_types)[tensor["dtype"].__name__] += 1
    assert se_types and set(se_types) == {"float32"}, se_types  # squeeze-excite: float
    assert set(other_types) == {"int8"}, other_types  # everything else: int8
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    assert np.all(np.isfinite(out))
    assert agreement(out, reference) >= FALLBACK_MIN_AGREEMENT
    metadata = json.loads((path.parent / "effv2_export.json").read_text())
    assert metadata["quantize"] == "int8" and metadata["float_fallback"] == ["se"]
    assert metadata["float_fallback_matched"]["nodes"] > 0


def test_percentile_calibration_narrows_the_ranges(tiny_run, tmp_path, reference):
    from effv2_keras.export import export_tflite

    common = dict(quantize="int8", representative_images=tiny_run.train.images[:100])
    minmax = export_tflite(tiny_run.path, tmp_path / "minmax", **common)
    p90 = export_tflite(tiny_run.path, tmp_path / "p90", calibration_percentile=90, **common)
    scales = {}
    for name, path in (("minmax", minmax), ("p90", p90)):
        interpreter, out = run_litert(path, tiny_run.test.images)
        assert interpreter.get_input_details()[0]["dtype"] == np.float32
        types = op_output_types(interpreter, path)
        assert types[("CONV_2D", "int8")] > 0 and types[("CONV_2D", "float32")] == 0, types
        assert np.all(np.isfinite(out))
        assert agreement(out, reference) >= FALLBACK_MIN_AGREEMENT, name
        scales[name] = {t["name"]: t["quantization"][0] for t in interpreter.get_tensor_details()
                        if t["dtype"] == np.int8 and t["quantization"][0] > 0}
    shared = [n for n in scales["minmax"] if n in scales["p90"]]
    assert len(shared) > 50
    narrower = sum(scales["p90"][n] < scales["minmax"][n] for n in shared)
    wider = sum(scales["p90"][n] > scales["minmax"][n] * 1.0001 for n in shared)
    assert narrower > len(shared) // 2 and wider == 0, (narrower, wider, len(shared))
    metadata = json.loads((p90.parent / "effv2_export.json").read_text())
    assert metadata["calibration_percentile"] == 90 and metadata["quantize"] == "int8"


def test_float_fallback_and_int16x8_from_the_cli(tiny_run, words_dir, tmp_path, capsys):
    from effv2_keras.cli import export as cli
    from test_export_cli import run_cli

    rc, out, err = run_cli(cli, ["--model", tiny_run.path, "--format", "tflite", "--quantize", "int8",
                                 "--int8_float_fallback", "sigmoid,head", "--representative_data", words_dir,
                                 "--representative_count", 32, "--out", tmp_path / "fallback"], capsys)
    assert rc == 0, err
    interpreter, _ = run_litert(tmp_path / "fallback" / "model.tflite", tiny_run.test.images[:4])
    types = op_output_types(interpreter, tmp_path / "fallback" / "model.tflite")
    assert types[("LOGISTIC", "float32")] > 0 and types[("LOGISTIC", "int8")] == 0, types
    assert types[("SOFTMAX", "float32")] == 1 and types[("CONV_2D", "int8")] > 0, types
    metadata = json.loads((tmp_path / "fallback" / "effv2_export.json").read_text())
    assert metadata["float_fallback"] == ["sigmoid", "head"]

    rc, out, err = run_cli(cli, ["--model", tiny_run.path, "--format", "tflite", "--quantize", "int16x8",
                                 "--representative_data", words_dir, "--representative_count", 32,
                                 "--out", tmp_path / "i16", "--verify", words_dir, "--verify_count", 0], capsys)
    # The flags reach the converter and --verify scores the int16x8 file. Whether it passes the
    # 1-point accuracy-drop tolerance is the model's (this tiny fixture measured a 1.2-1.6 point
    # drop; issue 12): a miss must be exit 1 with the tolerance named, never a crash.
    assert "exported tflite (int16x8)" in out and "| int16x8 |" in out
    assert rc == 0 or (rc == 1 and "verification failed" in err and err.count("\n") == 1), err


def test_quantize_option_errors(tmp_path, tiny_model, capsys):
    from effv2_keras.cli import export as cli
    from effv2_keras.export import ExportError, export_tflite
    from test_export_cli import run_cli

    images = np.full((4, 64, 64, 3), 128.0, np.float32)
    with pytest.raises(ExportError, match="int16x8 quantization needs representative images"):
        export_tflite(tiny_model, tmp_path / "a", quantize="int16x8")
    with pytest.raises(ExportError, match="float_fallback needs quantize int8"):
        export_tflite(tiny_model, tmp_path / "b", quantize="int16x8", float_fallback=("se",),
                      representative_images=images)
    with pytest.raises(ExportError, match="drop int8_io"):
        export_tflite(tiny_model, tmp_path / "c", quantize="int8", int8_io=True, float_fallback=("se",),
                      representative_images=images)
    with pytest.raises(ExportError, match="calibration_percentile needs quantize int8"):
        export_tflite(tiny_model, tmp_path / "f", quantize="int16x8", calibration_percentile=90,
                      representative_images=images)
    with pytest.raises(ExportError, match=r"must be in \[50, 100\]"):
        export_tflite(tiny_model, tmp_path / "g", quantize="int8", calibration_percentile=30,
                      representative_images=images)
    with pytest.raises(ExportError, match="matches no op"):
        export_tflite(tiny_model, tmp_path / "d", quantize="int8", float_fallback=("no_such_layer",),
                      representative_images=images)
    model_file = tmp_path / "tiny.keras"
    tiny_model.save(model_file)
    rc, _, err = run_cli(cli, ["--model", model_file, "--format", "onnx", "--int8_float_fallback", "se",
                               "--out", tmp_path / "e"], capsys)
    assert rc == 2 and "apply to --format tflite only" in err and err.count("\n") == 1
