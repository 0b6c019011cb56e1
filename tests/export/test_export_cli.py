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


def test_export_with_verify(tiny_run, words_dir, tmp_path, capsys):
    from effv2_keras.cli import export as cli

    out_dir = tmp_path / "fp32"
    rc, out, err = run_cli(cli, ["--model", tiny_run.path, "--format", "tflite", "--out", out_dir,
                                 "--verify", words_dir, "--verify_count", 64], capsys)
    assert rc == 0, err
    assert (out_dir / "model.tflite").is_file()
    assert "exported tflite (fp32)" in out
    row = [line for line in out.splitlines() if line.startswith(f"| {out_dir}")]
    assert len(row) == 1 and row[0].endswith("| yes |"), out
    cells = [c.strip() for c in row[0].split("|")]
    assert cells[4] == "64" and float(cells[5]) <= 1e-4 and cells[7] == "100.0%"


def test_export_int8_tflite_cli(tiny_run, words_dir, tmp_path, capsys, reference):
    """--quantize int8 --int8_io: int8 tensors in and out, and (dequantized) the
    same answers as the float-I/O int8 model within the full-int8 test tolerance."""
    from ai_edge_litert.interpreter import Interpreter

    from effv2_keras.cli import export as cli
    from effv2_keras.export.predictor import TFLitePredictor

    rc, out, err = run_cli(cli, ["--model", tiny_run.path / "model.keras", "--format", "tflite",
                                 "--quantize", "int8", "--int8_io", "--representative_data", words_dir,
                                 "--representative_count", 128, "--out", tmp_path / "int8"], capsys)
    assert rc == 0, err
    interpreter = Interpreter(model_path=str(tmp_path / "int8" / "model.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    metadata = json.loads((tmp_path / "int8" / "effv2_export.json").read_text())
    assert metadata["quantize"] == "int8" and metadata["representative_images"] == 128
    probabilities = TFLitePredictor(tmp_path / "int8" / "model.tflite").predict(tiny_run.test.images)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    # 0.85: the default full-int8 calibration of this tiny model agreed on 0.89 of 192 photos
    # once the fixture trained on word-named classes (another training run than the 0-9 one,
    # which measured >= 0.90); int8 accuracy itself is issue 12's work.
    assert np.mean(probabilities.argmax(-1) == reference.argmax(-1)) >= 0.85


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
    for (args, message), code in zip(cases, (1, 1, 2)):
        rc, out, err = run_cli(cli, args, capsys)
        assert rc == code and message in err and err.count("\n") == 1, err
        assert err.startswith("effv2 export: error: "), err
    rc, _, err = run_cli(cli, cases[1][0], capsys)
    assert "pass --representative_data" in err, err  # the library's argument, named as the flag
    rc, _, err = run_cli(cli, ["--model", tmp_path / "nope", "--out", tmp_path / "d"], capsys)
    assert rc == 2 and "--model" in err and "no such file" in err, err
    with pytest.raises(SystemExit) as exit_info:
        run_cli(cli, ["--format", "saved_model"], capsys)  # --model and --out are required
    assert exit_info.value.code == 2


def test_predict_cli_from_every_kind_of_artifact(tiny_run, artifacts, words_dir, tmp_path, capsys):
    from effv2_keras.cli import predict as cli

    photos = [sorted((words_dir / "test" / d).glob("*.jpg"))[0] for d in ("sign_two", "sign_seven")]
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
    assert all(entry["name"].startswith("sign_") for o in first for entry in o["top_k"])  # from run.json
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
    assert rc == 2 and "no images given" in err  # a command-line error: exit 2 (cli/common.py)


def test_evaluate_cli(tiny_run, artifacts, words_dir, tmp_path, capsys):
    from effv2_keras.cli import evaluate as cli

    results = {}
    for name, model in (("keras", tiny_run.path), ("saved_model", artifacts["saved_model"][1])):
        rc, out, err = run_cli(cli, ["--model", model, "--data", words_dir, "--limit", 96,
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


def test_onnx_from_a_saved_model_with_verify(tiny_run, artifacts, words_dir, tmp_path, capsys):
    """The XL route: tf2onnx converts our SavedModel with no Keras model in the process;
    --verify compares the ONNX file with that SavedModel on real photos."""
    pytest.importorskip("tf2onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    from effv2_keras.cli import export as cli

    saved_model = artifacts["saved_model"][1]
    out_dir = tmp_path / "onnx_from_sm"
    rc, out, err = run_cli(cli, ["--model", saved_model, "--format", "onnx", "--out", out_dir,
                                 "--verify", words_dir, "--verify_count", 64], capsys)
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


def truncated_copy(tiny_run, tmp_path):
    """The run's model.keras cut to half its bytes (a broken download or copy)."""
    data = (tiny_run.path / "model.keras").read_bytes()
    broken = tmp_path / "broken.keras"
    broken.write_bytes(data[:len(data) // 2])
    return broken


@pytest.mark.parametrize("command", ["predict", "export", "evaluate"])
def test_truncated_keras_file_is_named_as_such(command, tiny_run, words_dir, tmp_path, capsys):
    import importlib

    cli = importlib.import_module(f"effv2_keras.cli.{command}")
    broken = truncated_copy(tiny_run, tmp_path)
    photo = sorted((words_dir / "test" / "sign_one").glob("*.jpg"))[0]
    args = {"predict": [photo, "--model", broken],
            "export": ["--model", broken, "--format", "keras", "--out", tmp_path / "out"],
            "evaluate": ["--model", broken, "--data", words_dir, "--limit", 8]}[command]
    rc, _, err = run_cli(cli, args, capsys)
    assert rc == 1, err
    assert err.startswith(f"effv2 {command}: error: {broken} exists but is not a readable Keras archive (")
    assert err.count("\n") == 1 and "File not found" not in err and "Traceback" not in err


def test_manifest_class_names_reach_predict_evaluate_and_export(tiny_run, words_dir, tmp_path, capsys):
    """The run's run.json (classes sign_zero ...) is what every command reads; the exported
    .keras carries it, and evaluate maps the folder's labels to it by name."""
    from effv2_keras import run_dir
    from effv2_keras.cli import evaluate, export, predict

    rc, _, err = run_cli(export, ["--model", tiny_run.path, "--format", "keras", "--out", tmp_path / "k"], capsys)
    assert rc == 0, err
    exported = tmp_path / "k" / "model.keras"
    assert run_dir.find(exported).class_names == tiny_run.class_names
    assert run_dir.read(tiny_run.path).replace(files={"model": "model.keras"}) == run_dir.find(exported)
    photo = sorted((words_dir / "test" / "sign_four").glob("*.jpg"))[0]
    rc, out, err = run_cli(predict, [photo, "--model", exported, "--top_k", 10], capsys)
    assert rc == 0, err
    assert sorted(line.split()[1] for line in out.splitlines()[1:]) == sorted(tiny_run.class_names)
    rc, out, err = run_cli(evaluate, ["--model", exported, "--data", words_dir, "--limit", 40,
                                      "--out", tmp_path / "eval"], capsys)
    assert rc == 0, err
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["class_names"] == tiny_run.class_names and set(metrics["per_class"]) == set(tiny_run.class_names)
    assert "sign_four" in out


def test_flip_tta_averages_each_image_with_its_mirror(tiny_run, words_dir):
    """evaluate(tta="flip") scores the mean of the two predictions, checked against the model
    itself on the same prepared images."""
    from effv2_keras.export import evaluate, load_predictor
    from effv2_keras.export.images import load_split

    plain = evaluate(tiny_run.path, words_dir, count=48)
    flipped = evaluate(tiny_run.path, words_dir, count=48, tta="flip")
    predictor = load_predictor(tiny_run.path)
    size = predictor.image_size
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = load_split(words_dir, size, "test", 48, crop_fraction=predictor.crop_fraction)
    mean = (predictor.predict(batch.images, 32) + predictor.predict(batch.images[:, :, ::-1], 32)) / 2
    labels = np.asarray([tiny_run.class_names.index(batch.class_names[i]) for i in batch.labels])
    assert flipped.tta == "flip" and plain.tta == "none" and flipped.count == plain.count == 48
    assert flipped.top1 == float(np.mean(mean.argmax(-1) == labels))
    with pytest.raises(ValueError, match="tta must be one of none, flip"):
        evaluate(tiny_run.path, words_dir, count=8, tta="rotate")


def test_cli_is_quiet_by_default(tiny_run, words_dir):
    import os
    import subprocess
    import sys

    photo = sorted((words_dir / "test" / "sign_one").glob("*.jpg"))[0]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "EFFV2_TF_LOG")}
    command = [sys.executable, "-m", "effv2_keras.cli.main", "predict", str(photo), "--model", str(tiny_run.path)]
    quiet = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0, quiet.stderr
    assert "oneDNN" not in quiet.stderr and "sign_" in quiet.stdout
    imports = subprocess.run([sys.executable, "-c", "import sys, effv2_keras.cli.main; "
                              "print('tensorflow' in sys.modules)"], capture_output=True, text=True, env=env)
    assert imports.stdout.strip() == "False"
