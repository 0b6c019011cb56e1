"""The .keras exporter and run directories: EMA weights, class names, image size."""

from __future__ import annotations

import json

import numpy as np
import pytest


def small_model(classes=3):
    import effv2_keras

    return effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(32, 32, 3),
                             classes=classes)


def test_keras_export_writes_the_ema_weights(tmp_path):
    """A compiled model whose optimizer keeps an EMA exports the averages, not
    the raw weights, and without optimizer state."""
    import keras

    from effv2_keras import run_dir
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
    manifest = run_dir.find(tmp_path / "ema" / "model.keras")  # the .keras carries its run.json
    assert manifest.class_names == ["a", "b", "c"] and manifest.eval_size == 32 and manifest.num_classes == 3

    raw_copy = keras.saving.load_model(export_keras(model, tmp_path / "raw", use_ema=False))
    for raw, exported in zip(model.trainable_variables, raw_copy.trainable_variables):
        np.testing.assert_array_equal(exported.numpy(), raw.numpy())


def test_run_directory_is_read_from_its_manifest_only(tmp_path):
    """Class names, eval size and crop come from run.json, never from the data folder it
    names, a config.json or other files beside it; no run.json, no run directory."""
    import effv2_keras

    from effv2_keras import run_dir
    from effv2_keras.export import ExportError, load_predictor, load_source

    data = tmp_path / "data"
    for name in ("cat", "dog", "emu"):
        (data / "train" / name).mkdir(parents=True)
    run = tmp_path / "run"
    free = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(None, None, 3),
                             pooling="avg", classes=3)
    run.mkdir()
    free.save(run / "weights.keras")
    (run / "config.json").write_text(json.dumps({"class_names": ["x", "y", "z"], "eval_size": 99}))
    (run / "labels.txt").write_text("p\nq\nr\n")
    with pytest.raises(ExportError, match="holds no run.json"):
        load_source(run)
    manifest = run_dir.RunManifest(model="efficientnetv2-b0", num_classes=3, class_names=["ant", "bee", "cow"],
                                   eval_size=48, crop_fraction=0.9, data=f"folder:{data}",
                                   files={"model": "weights.keras"})
    run_dir.write(run, manifest)
    for path in (run, run / "weights.keras"):
        source = load_source(path)
        assert source.path == run / "weights.keras" and source.manifest == manifest
        assert source.class_names == ["ant", "bee", "cow"]
        assert source.fixed_size() == (48, 48) and source.crop_fraction == 0.9
    predictor = load_predictor(run)
    assert predictor.image_size == (48, 48) and predictor.class_name(2) == "cow"

    other = tmp_path / "other.keras"  # a bare .keras: just a model
    free.save(other)
    bare = load_source(other)
    assert bare.class_names is None and bare.manifest is None and bare.fixed_size() == (224, 224)
    assert load_predictor(other).class_name(1) == "class_1"
    (run / "weights.keras").rename(run / "gone.keras")
    with pytest.raises(ExportError, match="names model file 'weights.keras', which is missing"):
        load_source(run)


def test_a_keras_file_exported_alone_carries_its_manifest(tmp_path):
    """export_keras of a run writes run.json beside model.keras; copied elsewhere with it,
    the file still has its class names and size, and predict uses them."""
    import shutil

    from effv2_keras import run_dir
    from effv2_keras.export import export_keras, load_predictor

    model = small_model()
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    run_dir.write(run, run_dir.RunManifest(model="efficientnetv2-b0", num_classes=3, eval_size=32,
                                           class_names=["hat", "shoe", "bag"], data="folder:/somewhere"))
    path = export_keras(run, tmp_path / "exported")
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    shutil.copy(path, moved / "model.keras")
    shutil.copy(path.parent / run_dir.MANIFEST_FILE, moved / run_dir.MANIFEST_FILE)
    manifest = run_dir.find(moved / "model.keras")
    assert manifest.class_names == ["hat", "shoe", "bag"] and manifest.data == "folder:/somewhere"
    assert manifest.files == {"model": "model.keras"} and manifest.classifier_activation == "softmax"
    predictor = load_predictor(moved / "model.keras")
    assert [predictor.class_name(i) for i in range(3)] == ["hat", "shoe", "bag"]
    scores = predictor.predict(np.full((2, 32, 32, 3), 128.0, np.float32))
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)


def test_logits_model_exports_probabilities(tmp_path):
    """A model ending in logits (older files, user models) still exports probabilities."""
    import effv2_keras

    from effv2_keras import run_dir
    from effv2_keras.export import load_predictor
    from effv2_keras.export.head import keras_probabilities, resolve_image_size

    logits = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(32, 32, 3),
                               classes=3, classifier_activation=None)
    from effv2_keras.export import export_keras

    path = export_keras(logits, tmp_path / "logits")
    assert run_dir.find(path).classifier_activation == "linear"
    assert run_dir.find(path).class_names == ["class_0", "class_1", "class_2"]
    images = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    scores = load_predictor(path).predict(images)
    np.testing.assert_allclose(scores.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(scores, keras_probabilities(logits, images), atol=1e-6)
    assert resolve_image_size(logits) == (32, 32)
