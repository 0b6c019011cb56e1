"""TF Serving readiness without a server: `saved_model_cli show --all` reports
the two signatures with the right names, dtypes and shapes (what TF Serving
reads), and the TF-Hub module loads with hub.load and fine-tunes."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


def parse_saved_model_cli(text: str) -> dict:
    """{signature: {"inputs"|"outputs": {name: (dtype, shape)}, "method": str}}."""
    signatures = {}
    for block in re.split(r"\nsignature_def\['", text)[1:]:
        name = block.split("'", 1)[0]
        entry = {"inputs": {}, "outputs": {}, "method": None}
        for kind, tensor, dtype, shape in re.findall(
                r"(inputs|outputs)\['([^']+)'\] tensor_info:\s+dtype: (\w+)\s+shape: ([^\n]+)", block):
            entry[kind][tensor] = (dtype, shape.strip())
        method = re.search(r"Method name is: ([^\n]*)", block)
        entry["method"] = method.group(1).strip() if method else None
        signatures[name] = entry
    return signatures


def test_saved_model_cli_show_all(artifacts):
    cli = shutil.which("saved_model_cli") or str(Path(sys.executable).with_name("saved_model_cli"))
    result = subprocess.run([cli, "show", "--dir", str(artifacts["saved_model"][1]), "--all"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    signatures = parse_saved_model_cli(result.stdout)
    assert {"serving_default", "serving_bytes"} <= set(signatures)
    outputs = {
        "probabilities": ("DT_FLOAT", "(-1, 10)"), "logits": ("DT_FLOAT", "(-1, 10)"),
        "top_k_classes": ("DT_INT32", "(-1, 5)"), "top_k_scores": ("DT_FLOAT", "(-1, 5)"),
        "top_k_class_names": ("DT_STRING", "(-1, 5)"),
    }
    default, from_bytes = signatures["serving_default"], signatures["serving_bytes"]
    assert default["inputs"] == {"images": ("DT_FLOAT", "(-1, 64, 64, 3)")}
    assert from_bytes["inputs"] == {"image_bytes": ("DT_STRING", "(-1)")}
    assert default["outputs"] == outputs
    assert from_bytes["outputs"] == outputs
    assert default["method"] == from_bytes["method"] == "tensorflow/serving/predict"


def test_size_free_model_keeps_a_free_input_size(tmp_path, clothing_dir):
    """A classifier built with pooling='avg' and no fixed size serves any size;
    serving_bytes crops to the size given at export."""
    import effv2_keras
    import tensorflow as tf

    from effv2_keras.export import export_saved_model, load_image_files
    from effv2_keras.export.head import keras_probabilities

    model = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(None, None, 3),
                              pooling="avg", classes=4)
    path = export_saved_model(model, tmp_path / "sm", image_size=96)
    loaded = tf.saved_model.load(str(path))
    serve = loaded.signatures["serving_default"]
    assert serve.structured_input_signature[1]["images"].shape.as_list() == [None, None, None, 3]
    jpeg = sorted((clothing_dir / "test" / "hat").glob("*.jpg"))[0]
    for size in (64, 96):
        pixels = load_image_files([jpeg], (size, size))
        got = serve(images=tf.constant(pixels))["probabilities"].numpy()
        assert np.max(np.abs(got - keras_probabilities(model, pixels))) <= 1e-4
    from_bytes = loaded.signatures["serving_bytes"](image_bytes=tf.constant([jpeg.read_bytes()]))
    expected = keras_probabilities(model, load_image_files([jpeg], (96, 96)))
    assert np.max(np.abs(from_bytes["probabilities"].numpy() - expected)) <= 1e-4


def test_crop_matches_the_data_pipeline(clothing_dir):
    """serving_bytes / predict crop exactly as effv2_keras.data evaluates."""
    data_ops = pytest.importorskip("effv2_keras.data.ops")
    import tensorflow as tf

    from effv2_keras.export import images

    assert images.DEFAULT_CROP_FRACTION == data_ops.EVAL_CROP_FRACTION
    jpeg = sorted((clothing_dir / "test" / "dress").glob("*.jpg"))[0]
    decoded = tf.io.decode_image(jpeg.read_bytes(), channels=3, expand_animations=False)
    ours = images.center_crop_resize(decoded, (64, 64)).numpy()
    theirs = data_ops.center_crop_resize(decoded, 64).numpy()
    np.testing.assert_allclose(ours, np.clip(theirs, 0, 255), atol=1e-4)


def test_hub_module_loads_and_fine_tunes(artifacts, tiny_run):
    """hub.load works; gradients reach every trainable variable of the reloaded
    module; a Keras 3 model with the module as a trainable layer fine-tunes."""
    import keras
    import tensorflow as tf
    import tensorflow_hub as hub

    from effv2_keras.export import HubLayer

    path = str(artifacts["tfhub_fv"][1])
    module = hub.load(path)
    images = tiny_run.train.images[:32]
    labels = tiny_run.train.labels[:32]
    assert len(module.trainable_variables) > 0 and len(module.regularization_losses) == 0
    with tf.GradientTape() as tape:
        features = module(tf.constant(images / 255.0, tf.float32), training=True)
        loss = tf.reduce_mean(tf.square(features))
    gradients = tape.gradient(loss, module.trainable_variables)
    assert all(g is not None for g in gradients), "silently-None gradients after reload"
    assert features.shape == (32, 320)

    keras.utils.set_random_seed(1)
    layer = HubLayer(path, trainable=True)
    inputs = keras.Input((64, 64, 3))
    outputs = keras.layers.Dense(10, activation="softmax")(layer(inputs))
    model = keras.Model(inputs, outputs)
    model.compile(keras.optimizers.Adam(1e-3), "sparse_categorical_crossentropy")
    backbone_before = [w.numpy().copy() for w in layer.trainable_weights]
    x = images / 255.0
    def loss():
        return float(np.mean(keras.losses.sparse_categorical_crossentropy(labels, model(x))))

    start = loss()
    model.fit(x, labels, batch_size=32, epochs=4, verbose=0)
    end = loss()
    assert end < start - 0.05, (start, end)
    assert len(layer.trainable_weights) == len(module.trainable_variables)
    changed = [not np.array_equal(a, w.numpy()) for a, w in zip(backbone_before, layer.trainable_weights)]
    assert sum(changed) >= 0.9 * len(changed), "fine-tuning did not reach the module's variables"
