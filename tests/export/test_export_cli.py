"""`effv2 export | predict | evaluate` end to end, in process (flags parsed by the
commands' own parsers, then their `main`), on the real sign-digit photos."""

from __future__ import annotations

import json

import numpy as np
import pytest


def run_cli(module, args, capsys):
    """Parses ``args`` as the command would and runs its main; returns (rc, stdout, stderr)."""
    rest = module.parse([f"effv2 {module.__name__.rsplit('.', 1)[-1]}", *map(str, args)])
    rc = module.main(rest)
    out, err = capsys.readouterr()
    return rc, out, err


def test_export_with_verify(tiny_run, digits_dir, tmp_path, capsys):
    from effv2_keras.cli import export as cli

    out_dir = tmp_path / "fp32"
    rc, out, err = run_cli(cli, ["--model", tiny_run.path, "--format", "tflite", "--out", out_dir,
                                 "--verify", digits_dir, "--verify_count", 64], capsys)
    assert rc == 0, err
    assert (out_dir / "model.tflite").is_file()
    assert "exported tflite (fp32)" in out
    row = [line for line in out.splitlines() if line.startswith(f"| {out_dir}")]
    assert len(row) == 1 and row[0].endswith("| yes |"), out
    cells = [c.strip() for c in row[0].split("|")]
    assert cells[4] == "64" and float(cells[5]) <= 1e-4 and cells[7] == "100.0%"


def test_export_int8_tflite_cli(tiny_run, digits_dir, tmp_path, capsys, reference):
    """--quantize int8 --int8_io: int8 tensors in and out, and (dequantized) the
    same answers as the float-I/O int8 model within the full-int8 test tolerance."""
    from ai_edge_litert.interpreter import Interpreter

    from effv2_keras.cli import export as cli
    from effv2_keras.export.predictor import TFLitePredictor

    rc, out, err = run_cli(cli, ["--model", tiny_run.path / "model.keras", "--format", "tflite",
                                 "--quantize", "int8", "--int8_io", "--representative_data", digits_dir,
                                 "--representative_count", 64, "--out", tmp_path / "int8"], capsys)
    assert rc == 0, err
    interpreter = Interpreter(model_path=str(tmp_path / "int8" / "model.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    metadata = json.loads((tmp_path / "int8" / "effv2_export.json").read_text())
    assert metadata["quantize"] == "int8" and metadata["representative_images"] == 64
    probabilities = TFLitePredictor(tmp_path / "int8" / "model.tflite").predict(tiny_run.test.images)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    assert np.mean(probabilities.argmax(-1) == reference.argmax(-1)) >= 0.90


def test_export_cli_one_line_errors(tiny_run, tmp_path, capsys):
    from effv2_keras.cli import export as cli

    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"TFL3")
    cases = [
        (["--model", fake, "--format", "saved_model", "--out", tmp_path / "a"], "not a Keras model"),
        (["--model", tiny_run.path, "--format", "tflite", "--quantize", "int8", "--out", tmp_path / "b"],
         "needs representative images"),
        (["--model", tiny_run.path, "--format", "saved_model", "--quantize", "fp16", "--out", tmp_path / "c"],
         "--format tflite only"),
    ]
    for args, message in cases:
        rc, out, err = run_cli(cli, args, capsys)
        assert rc == 1 and message in err and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_info:
        run_cli(cli, ["--format", "saved_model"], capsys)  # --model and --out are required
    assert exit_info.value.code == 2


def test_predict_cli_from_every_kind_of_artifact(tiny_run, artifacts, digits_dir, tmp_path, capsys):
    from effv2_keras.cli import predict as cli

    photos = [sorted((digits_dir / "test" / d).glob("*.jpg"))[0] for d in ("2", "7")]
    outputs = {}
    models = [tiny_run.path, artifacts["saved_model"][1], artifacts["tflite_fp32"][1], artifacts["tfhub"][1]]
    models += [artifacts["onnx"][1]] if "onnx" in artifacts else []
    for model in models:
        rc, out, err = run_cli(cli, [*photos, "--model", model, "--json"], capsys)
        assert rc == 0, err
        outputs[str(model)] = [json.loads(line) for line in out.splitlines()]
    first = next(iter(outputs.values()))
    assert [len(o["top_k"]) for o in first] == [5, 5]
    assert all(entry["name"] in tiny_run.class_names for o in first for entry in o["top_k"])
    for other in outputs.values():  # fp32 artifacts agree on the ranking and the scores
        for a, b in zip(first, other):
            assert [e["class"] for e in a["top_k"]] == [e["class"] for e in b["top_k"]]
            assert np.allclose([e["score"] for e in a["top_k"]], [e["score"] for e in b["top_k"]], atol=1e-4)
    rc, out, _ = run_cli(cli, [photos[0], "--model", artifacts["tflite_int8"][1]], capsys)
    assert rc == 0 and out.count("\n") == 6 and "(tflite)" in out


def test_predict_cli_bad_images(tiny_run, tmp_path, capsys):
    from effv2_keras.cli import predict as cli

    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    rc, _, err = run_cli(cli, [corrupt, "--model", tiny_run.path], capsys)
    assert rc == 1 and "cannot decode image" in err and str(corrupt) in err and err.count("\n") == 1
    rc, _, err = run_cli(cli, ["--model", tiny_run.path], capsys)
    assert rc == 1 and "no images given" in err


def test_evaluate_cli(tiny_run, artifacts, digits_dir, tmp_path, capsys):
    from effv2_keras.cli import evaluate as cli

    results = {}
    for name, model in (("keras", tiny_run.path), ("saved_model", artifacts["saved_model"][1])):
        rc, out, err = run_cli(cli, ["--model", model, "--data", digits_dir, "--limit", 96,
                                     "--out", tmp_path / name], capsys)
        assert rc == 0, err
        results[name] = json.loads((tmp_path / name / "metrics.json").read_text())
        assert (tmp_path / name / "confusion_matrix.png").stat().st_size > 1000
        assert "precision" in (tmp_path / name / "report.txt").read_text()
        assert "top-1" in out
    keras_metrics = results["keras"]
    assert keras_metrics["count"] == 96 and keras_metrics["k"] == 5
    assert 0.0 <= keras_metrics["top1"] <= keras_metrics["topk"] <= 1.0
    assert np.sum(keras_metrics["confusion_matrix"]) == 96
    assert np.trace(keras_metrics["confusion_matrix"]) == round(keras_metrics["top1"] * 96)
    # the same photos through the SavedModel give the same numbers
    assert keras_metrics["top1"] == results["saved_model"]["top1"]
    assert keras_metrics["confusion_matrix"] == results["saved_model"]["confusion_matrix"]


def test_onnx_from_a_saved_model_with_verify(tiny_run, artifacts, digits_dir, tmp_path, capsys):
    """The XL route: tf2onnx converts our SavedModel with no Keras model in the process;
    --verify compares the ONNX file with that SavedModel on real photos."""
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from effv2_keras.cli import export as cli

    saved_model = artifacts["saved_model"][1]
    out_dir = tmp_path / "onnx_from_sm"
    rc, out, err = run_cli(cli, ["--model", saved_model, "--format", "onnx", "--out", out_dir,
                                 "--verify", digits_dir, "--verify_count", 64], capsys)
    assert rc == 0, err
    assert "exported onnx (fp32, from the SavedModel" in out
    session = onnxruntime.InferenceSession(str(out_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == [
        "logits", "probabilities", "top_k_class_names", "top_k_classes", "top_k_scores"]
    row = [line for line in out.splitlines() if line.startswith(f"| {out_dir}")]
    assert len(row) == 1 and row[0].endswith("| yes |"), out
    cells = [c.strip() for c in row[0].split("|")]
    assert cells[4] == "64" and float(cells[5]) <= 1e-4 and cells[7] == "100.0%"
    assert (out_dir / "labels.txt").read_text().split() == list(tiny_run.class_names)
