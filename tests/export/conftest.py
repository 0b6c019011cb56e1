"""Shared fixtures of the exporter tests: real photos, a briefly trained tiny
model saved as a run directory, every artifact exported from it once, and one
fresh process that reloads them all with the public loaders.

The real photos live outside the repository (../shared/data from the checkout,
or $EFFV2_SHARED_DATA); tests that need them skip with the path they looked at.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from export_testlib import (ARTIFACTS, DIGIT_WORDS, SIZE, build_tiny, export_all, reload_in_fresh_process,
                            shared_dataset)


@pytest.fixture(scope="session")
def digits_dir() -> Path:
    return shared_dataset("signdigits100")


@pytest.fixture(scope="session")
def clothing_dir() -> Path:
    return shared_dataset("clothing160")


@pytest.fixture(scope="session")
def words_dir(digits_dir, tmp_path_factory) -> Path:
    """The sign-digit photos with class folders named by word (``sign_zero`` ...), linked:
    class names a reader can only get from the run's manifest, never guess from 0-9."""
    root = tmp_path_factory.mktemp("signwords")
    for split in ("train", "test"):
        for digit, word in enumerate(DIGIT_WORDS):
            (root / split).mkdir(exist_ok=True)
            (root / split / word).symlink_to(digits_dir / split / str(digit), target_is_directory=True)
    return root


@pytest.fixture
def tiny_model():
    """An untrained tiny V2-B0 at 64 px (for error paths)."""
    return build_tiny()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, words_dir):
    """A tiny V2-B0 (64 px) trained for 8 epochs on 800 sign-digit photos, as a run directory
    (model.keras + run.json, as effv2 train writes it) whose classes are ``sign_zero`` ...

    Brief training gives it real, confident predictions (~55-60% test accuracy),
    which the quantized-agreement checks need; an untrained model's near-uniform
    outputs make top-1 agreement meaningless.
    """
    import keras

    from effv2_keras import run_dir
    from effv2_keras.export import sample_folder

    keras.utils.set_random_seed(0)
    train = sample_folder(words_dir, SIZE, 800, "train", seed=0)
    test = sample_folder(words_dir, SIZE, 192, "test", seed=0)
    model = build_tiny()
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(train.images, train.labels, batch_size=32, epochs=8, verbose=0)
    run = tmp_path_factory.mktemp("run")
    model.save(run / "model.keras")
    run_dir.write(run, run_dir.RunManifest(model="efficientnetv2-b0", num_classes=10, width=0.25, depth=0.25,
                                           class_names=train.class_names, eval_size=SIZE[0],
                                           data=f"folder:{words_dir}"))
    return SimpleNamespace(path=run, model=model, train=train, test=test, class_names=train.class_names)


@pytest.fixture(scope="session")
def artifacts(tiny_run, tmp_path_factory):
    names = [n for n in ARTIFACTS if n != "tflite_int8_io"]  # int8 I/O: test_export_cli.py
    return export_all(tiny_run.path, tmp_path_factory.mktemp("artifacts"), tiny_run.train.images[:200],
                      names=names, in_helper=("onnx", "tfhub", "tfhub_fv"))


@pytest.fixture(scope="session")
def jpegs(clothing_dir):
    """Real, non-square clothing JPEGs (one per class) for the serving_bytes check."""
    return [sorted((clothing_dir / "test" / c).glob("*.jpg"))[0] for c in sorted(
        p.name for p in (clothing_dir / "test").iterdir() if p.is_dir())]


@pytest.fixture(scope="session")
def reloaded(artifacts, tiny_run, jpegs, tmp_path_factory):
    from effv2_keras.export import load_image_files

    pixels = load_image_files(jpegs, SIZE)
    return reload_in_fresh_process(artifacts, tiny_run.test.images, tmp_path_factory.mktemp("reload"),
                                   jpegs, pixels)


@pytest.fixture(scope="session")
def reference(tiny_run):
    """The Keras model's probabilities on the test photos."""
    from effv2_keras.export.head import keras_probabilities

    return keras_probabilities(tiny_run.model, tiny_run.test.images)
