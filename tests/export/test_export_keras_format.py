"""The .keras exporter and run directories: EMA weights, class names, image size."""

from __future__ import annotations

import json

import numpy as np


def small_model(classes=3):
    import effv2_keras

    return effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(32, 32, 3),
                             classes=classes)


def test_keras_export_writes_the_ema_weights(tmp_path):
    """A compiled model whose optimizer keeps an EMA exports the averages, not
    the raw weights, and without optimizer state."""
    import keras

    from effv2_keras.export import export_keras

    keras.utils.set_random_seed(0)
    model = small_model()
    model.compile(keras.optimizers.SGD(0.5, use_ema=True), "sparse_categorical_crossentropy")
    optimizer = model.optimizer
    optimizer.build(model.trainable_variables)
    averages = {}
    for variable in model.trainable_variables:  # stand-in for averages accumulated in training
        average = optimizer._model_variables_moving_average[optimizer._get_variable_index(variable)]
        average.assign(variable * 0.5 + 0.25)
        averages[variable.path] = average.numpy()
    reloaded = keras.saving.load_model(export_keras(model, tmp_path / "ema", class_names=["a", "b", "c"]))
    differs = 0
    for raw, exported in zip(model.trainable_variables, reloaded.trainable_variables):
        np.testing.assert_array_equal(exported.numpy(), averages[raw.path])
        differs += not np.array_equal(exported.numpy(), raw.numpy())
    assert differs == len(averages)
    moving = [(r, e) for r, e in zip(model.non_trainable_variables, reloaded.non_trainable_variables)
              if "moving" in r.path]
    assert len(moving) > 10
    for raw, exported in moving:
        np.testing.assert_array_equal(exported.numpy(), raw.numpy())  # BN statistics as trained
    assert getattr(reloaded, "optimizer", None) is None
    metadata = json.loads((tmp_path / "ema" / "effv2_export.json").read_text())
    assert metadata["ema"] is True and metadata["class_names"] == ["a", "b", "c"]
    assert json.loads((tmp_path / "ema" / "class_names.json").read_text()) == ["a", "b", "c"]

    raw_copy = keras.saving.load_model(export_keras(model, tmp_path / "raw", use_ema=False))
    for raw, exported in zip(model.trainable_variables, raw_copy.trainable_variables):
        np.testing.assert_array_equal(exported.numpy(), raw.numpy())


def test_run_directory_conventions(tmp_path):
    """model_ema.keras wins over model.keras; class names from a folder data spec;
    the image size of a size-free model from config.json's eval_size."""
    import effv2_keras

    from effv2_keras.export.common import load_source, resolve_image_size

    data = tmp_path / "data"
    for split, names in (("train", ["cat", "dog", "emu"]), ("test", ["cat"])):
        for name in names:
            (data / split / name).mkdir(parents=True)
    run = tmp_path / "run"
    run.mkdir()
    plain, ema = small_model(), small_model()
    plain.save(run / "model.keras")
    ema.save(run / "model_ema.keras")
    (run / "config.json").write_text(json.dumps({"data": f"folder:{data}", "eval_size": 48}))
    source = load_source(run)
    assert source.ema and source.path.name == "model_ema.keras"
    assert source.class_names == ["cat", "dog", "emu"]
    np.testing.assert_array_equal(source.model.get_layer("predictions").get_weights()[0],
                                  ema.get_layer("predictions").get_weights()[0])
    assert load_source(run, use_ema=False).path.name == "model.keras"

    free = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(None, None, 3),
                             pooling="avg", classes=3)
    assert resolve_image_size(free, None, source.image_size) == (48, 48)
    assert resolve_image_size(free) == (224, 224)  # the variant's eval size
    assert resolve_image_size(plain) == (32, 32)
