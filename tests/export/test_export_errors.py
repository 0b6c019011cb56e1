"""Bad input gives one clear line, from the library and from the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from effv2_keras.export import ExportError


def one_line(error) -> str:
    text = str(error.value if hasattr(error, "value") else error)
    assert "\n" not in text.strip(), text
    return text


def test_never_built_model(tmp_path):
    import keras

    from effv2_keras.export import export_saved_model

    model = keras.Sequential([keras.layers.Dense(3)])
    with pytest.raises(ExportError, match="never built") as error:
        export_saved_model(model, tmp_path / "out")
    one_line(error)


def test_tflite_given_where_a_keras_model_is_needed(tmp_path):
    from effv2_keras.export import export_keras, export_saved_model

    fake = tmp_path / "model.tflite"
    fake.write_bytes(b"TFL3")
    for exporter in (export_keras, export_saved_model):
        with pytest.raises(ExportError, match="TFLite flatbuffer, not a Keras model") as error:
            exporter(str(fake), tmp_path / "out")
        one_line(error)


def test_saved_model_given_where_a_keras_model_is_needed(tmp_path):
    from effv2_keras.export import load_source

    (tmp_path / "saved_model.pb").write_bytes(b"")
    with pytest.raises(ExportError, match="is a SavedModel"):
        load_source(tmp_path)
    with pytest.raises(ExportError, match="no such file"):
        load_source(tmp_path / "missing.keras")
    with pytest.raises(ExportError, match="not a run directory"):
        load_source(tmp_path.parent)


def test_int8_without_representative_data(tmp_path, tiny_model):
    from effv2_keras.export import export_tflite

    with pytest.raises(ExportError, match="representative images") as error:
        export_tflite(tiny_model, tmp_path / "out", quantize="int8")
    one_line(error)
    with pytest.raises(ExportError, match="int8_io\\) needs quantize int8") as error:
        export_tflite(tiny_model, tmp_path / "out", quantize="fp16", int8_io=True)
    assert error.value.render(lambda name: "--" + name).endswith("(--int8_io) needs --quantize int8.")
    with pytest.raises(ExportError, match="quantize must be"):
        export_tflite(tiny_model, tmp_path / "out", quantize="int4")


def test_corrupt_and_missing_images(tmp_path, digits_dir):
    from effv2_keras.export import load_image_files

    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    good = sorted((digits_dir / "test" / "3").glob("*.jpg"))[0]
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[:200])
    for bad in (garbage, truncated):
        with pytest.raises(ExportError, match="cannot decode image") as error:
            load_image_files([good, bad], (64, 64))
        assert str(bad) in one_line(error)
    with pytest.raises(ExportError, match="no such image file"):
        load_image_files([tmp_path / "nope.jpg"], (64, 64))


def test_wrong_channel_count(tmp_path, tiny_model):
    import effv2_keras

    from effv2_keras.export import export_saved_model, load_predictor

    predictor = load_predictor(tiny_model)
    with pytest.raises(ExportError, match="wrong channel count") as error:
        predictor.predict(np.zeros((2, 64, 64, 1), np.float32))
    one_line(error)
    grey = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(64, 64, 1), classes=3,
                             include_preprocessing=False)
    with pytest.raises(ExportError, match="1-channel inputs") as error:
        export_saved_model(grey, tmp_path / "out")
    one_line(error)


def test_wrong_image_size_and_class_names(tmp_path, tiny_model):
    from effv2_keras.export import export_saved_model, load_predictor

    model = tiny_model
    with pytest.raises(ExportError, match="64x64"):
        load_predictor(model).predict(np.zeros((1, 32, 32, 3), np.float32))
    with pytest.raises(ExportError, match="3 class_names given for a model with 10 outputs"):
        export_saved_model(model, tmp_path / "out", class_names=["a", "b", "c"])
