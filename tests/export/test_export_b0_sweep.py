"""EfficientNetV2B0 at 224: every format exports, reloads in a fresh process and
matches the Keras model on real clothing photos (slow: about 2 minutes).

No ImageNet weights are available offline, so the backbone is randomly
initialised; its classifier is fitted (ridge regression on the pooled features
of 96 real photos) so that the top-1 decisions have real margins. With a fully
random head every probability is ~0.1 +- 1e-3: fp16 top-1 then flips on ties
and full-int8 outputs (steps of 1/256) are all equal, so agreement would
measure nothing. Full-int8 agreement of this random backbone is recorded, not
held to 97%: that target is measured on a trained model (docs/EXPORT.md).
"""

from __future__ import annotations

import numpy as np
import pytest

from export_testlib import export_all, reload_in_fresh_process

SIZE = (224, 224)
SWEEP = ["keras", "saved_model", "tfhub", "tflite_fp32", "tflite_fp16", "tflite_int8_io", "onnx"]


def fit_head(model, images, labels, classes=10, ridge=1e-2, scale=8.0):
    """Least-squares classifier on the pooled features (a stand-in for training)."""
    import keras

    features = keras.Model(model.inputs, model.get_layer("avg_pool").output).predict(images, verbose=0)
    mean, std = features.mean(0), features.std(0) + 1e-6
    x = np.c_[(features - mean) / std, np.ones(len(features))]
    y = np.eye(classes)[labels] * scale
    w = np.linalg.solve(x.T @ x + ridge * len(x) * np.eye(x.shape[1]), x.T @ y)
    kernel = w[:-1] / std[:, None]
    bias = w[-1] - (mean / std) @ w[:-1]
    model.get_layer("predictions").set_weights([kernel.astype(np.float32), bias.astype(np.float32)])


@pytest.mark.slow
def test_b0_224_every_format(clothing_dir, jpegs, tmp_path):
    import effv2_keras

    from effv2_keras import run_dir
    from effv2_keras.export import load_image_files, sample_folder
    from effv2_keras.export.head import keras_probabilities

    import keras

    keras.utils.set_random_seed(0)  # the same random backbone on every run
    model = effv2_keras.EfficientNetV2B0(input_shape=(224, 224, 3), classes=10)
    fit = sample_folder(clothing_dir, SIZE, 96, "train", seed=0)
    test = sample_folder(clothing_dir, SIZE, 32, "test", seed=0)
    fit_head(model, fit.images, fit.labels)
    reference = keras_probabilities(model, test.images)
    assert np.mean(reference.max(-1)) > 0.3  # decisions with real margins

    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "model.keras")
    run_dir.write(run, run_dir.RunManifest(model=model.name, num_classes=10, class_names=fit.class_names,
                                           eval_size=SIZE[0]))
    artifacts = export_all(run, tmp_path / "artifacts", fit.images[:24], names=SWEEP,
                           in_helper=("onnx", "tfhub", "tflite_fp16"))
    pixels = load_image_files(jpegs, SIZE)
    out = reload_in_fresh_process(artifacts, test.images, tmp_path, jpegs, pixels)

    for name in ("keras", "saved_model", "tfhub", "tflite_fp32", "onnx"):
        if name in out:
            assert np.max(np.abs(out[name] - reference)) <= 1e-4, name
    agreement = lambda a: float(np.mean(a.argmax(-1) == reference.argmax(-1)))  # noqa: E731
    # fp16 may flip only a near-tie: where it disagrees, the reference's top-2 margin is within
    # twice fp16's own error on that image. The issue's 99% is measured on a trained model
    # (docs/EXPORT.md: 100%); on this fitted random head, one flip of 32 is already 97%.
    fp16 = out["tflite_fp16"]
    flips = fp16.argmax(-1) != reference.argmax(-1)
    top2 = np.sort(reference, -1)[:, -2:]
    margin, error = top2[:, 1] - top2[:, 0], np.max(np.abs(fp16 - reference), -1)
    assert np.all(margin[flips] <= 2 * error[flips]), (margin[flips], error[flips])
    assert agreement(fp16) >= 0.9
    int8 = out["tflite_int8_io"]
    assert np.all(np.isfinite(int8)) and np.all((int8 >= 0) & (int8 <= 1))
    print(f"B0 full int8: top-1 agreement {agreement(int8):.3f} (random backbone, not held to 97%)")
    assert list(out["tflite_int8_io:io"]) == [True, True]
    np.testing.assert_array_equal(out["saved_model:bytes"].argmax(-1), out["saved_model:pixels"].argmax(-1))
