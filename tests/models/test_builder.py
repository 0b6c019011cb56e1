"""The keras.applications-compatible API: signatures, serialization, precision, XLA, bad input."""

import inspect
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import effv2_keras

TINY = dict(width=0.25, depth=0.25)


def tiny(variant="efficientnetv2-b0", **kwargs):
    kwargs = {**TINY, "input_shape": (32, 32, 3), "classes": 5, **kwargs}
    return effv2_keras.build(variant, **kwargs)


def pixels(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


def test_public_constructors_cover_both_families():
    expected = [f"EfficientNetV2{v}" for v in ("B0", "B1", "B2", "B3", "S", "M", "L", "XL")]
    expected += [f"EfficientNetB{i}" for i in range(8)]
    assert sorted(effv2_keras.CONSTRUCTORS) == sorted(expected)
    assert all(hasattr(effv2_keras, name) for name in expected)
    assert len(effv2_keras.list_models()) == 16


def test_constructor_signature_matches_keras_applications():
    ours = inspect.signature(effv2_keras.EfficientNetV2S).parameters
    theirs = inspect.signature(keras.applications.EfficientNetV2S).parameters
    shared = [p for p in theirs if p not in ("weights", "name")]
    assert list(ours)[: len(shared) + 1] == ["include_top", "weights", *shared[1:]]
    assert ours["weights"].default is None  # nothing can be downloaded implicitly
    assert {"dropout_rate", "drop_path_rate", "name"} <= set(ours)
    assert effv2_keras.EfficientNetV2S.__doc__ and "Example" in effv2_keras.EfficientNetV2S.__doc__


def test_feature_extractor_accepts_any_size():
    model = tiny(include_top=False, input_shape=None, pooling=None)
    assert model.input_shape == (None, None, None, 3)
    for size in (32, 48, 64):
        grid = -(-size // 32)  # "same" padding: ceil(size / 32)
        assert model.predict(pixels(size=size), verbose=0).shape == (2, grid, grid, 320)


@pytest.mark.parametrize("pooling, layer", [("avg", "avg_pool"), ("max", "max_pool")])
def test_pooling_modes(pooling, layer):
    model = tiny(include_top=False, input_shape=None, pooling=pooling)
    assert model.layers[-1].name == layer
    assert model.predict(pixels(size=40), verbose=0).shape == (2, 320)


def test_classifier_with_pooling_accepts_any_size():
    model = tiny(input_shape=None, pooling="avg")
    assert model.input_shape == (None, None, None, 3)
    for size in (32, 64):
        probs = model.predict(pixels(size=size), verbose=0)
        assert probs.shape == (2, 5)
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_classifier_activation_none_gives_logits():
    model = tiny(classifier_activation=None)
    logits = model.predict(pixels(), verbose=0)
    assert (logits < 0).any()  # a softmax output is never negative


def test_custom_name_never_changes_the_architecture():
    # keras.applications picks preprocessing from the model name; we must not.
    plain, renamed = tiny("efficientnetv2-b0"), tiny("efficientnetv2-b0", name="my-s-model")
    assert renamed.name == "my-s-model"
    assert [type(l).__name__ for l in plain.layers] == [type(l).__name__ for l in renamed.layers]
    assert plain.count_params() == renamed.count_params()
    assert isinstance(renamed.get_layer("normalization"), keras.layers.Normalization)


@pytest.mark.parametrize("name, scale, offset", [("efficientnetv2-s", 1 / 128, -1.0), ("efficientnetv2-b0", 1 / 255, 0.0)])
def test_preprocessing_inside_the_model(name, scale, offset):
    model = tiny(name)
    rescaling = model.get_layer("rescaling")
    assert rescaling.scale == pytest.approx(scale) and rescaling.offset == pytest.approx(offset)
    has_norm = any(isinstance(l, keras.layers.Normalization) for l in model.layers)
    assert has_norm == name.endswith("b0")
    if has_norm:
        probe = keras.Model(model.input, model.get_layer("normalization").output)
        out = probe.predict(np.full((1, 32, 32, 3), 255 * 0.485, "float32"), verbose=0)
        np.testing.assert_allclose(out[0, 0, 0, 0], 0.0, atol=1e-5)  # mean maps to 0


def test_v1_preprocessing_holds_imagenet_statistics_as_weights():
    model = tiny("efficientnet-b0")
    mean, variance, _ = model.get_layer("normalization").get_weights()
    np.testing.assert_allclose(mean, [0.485, 0.456, 0.406])
    np.testing.assert_allclose(variance, np.square([0.229, 0.224, 0.225]), rtol=1e-6)


def test_official_details_bn_initializers_drop_path():
    model = tiny(depth=1.0)
    bns = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    assert bns and all(l.epsilon == 1e-3 and l.momentum == 0.9 for l in bns)
    conv = model.get_layer("stem_conv")
    init = conv.kernel_initializer.get_config()
    assert (init["scale"], init["mode"], init["distribution"]) == (2.0, "fan_out", "untruncated_normal")
    kernel = conv.kernel.numpy()
    fan_out = 3 * 3 * kernel.shape[-1]
    # std of 3*3*3*8 = 216 samples of N(0, sqrt(2/fan_out)): within 20% with overwhelming probability.
    assert kernel.std() == pytest.approx(np.sqrt(2 / fan_out), rel=0.2)
    drops = [l for l in model.layers if l.name.endswith("_drop")]
    assert drops and all(l.noise_shape == (None, 1, 1, 1) for l in drops)
    blocks = effv2_keras.models.scaled_blocks(effv2_keras.get_spec("efficientnetv2-b0"), **{"width": 0.25})
    expected = {b.name + "drop": b.drop_path for b in blocks if b.has_residual and b.drop_path > 0}
    assert {l.name: l.rate for l in drops} == pytest.approx(expected)


def test_head_dropout_is_per_variant_and_overridable():
    assert tiny("efficientnetv2-m").get_layer("top_dropout").rate == 0.3
    assert tiny("efficientnetv2-b0").get_layer("top_dropout").rate == 0.2
    assert tiny("efficientnetv2-m", dropout_rate=0.05).get_layer("top_dropout").rate == 0.05
    assert "top_dropout" not in [l.name for l in tiny(dropout_rate=0.0).layers]


def test_only_stock_keras_layers():
    model = tiny()
    assert all(type(l).__module__.startswith("keras.") for l in model.layers)


def test_get_config_round_trip():
    model = tiny("efficientnetv2-s")
    clone = keras.Model.from_config(model.get_config())
    assert json.dumps(clone.get_config(), sort_keys=True, default=str) == json.dumps(
        model.get_config(), sort_keys=True, default=str)
    clone.set_weights(model.get_weights())
    x = pixels()
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


@pytest.mark.parametrize("name", ["efficientnetv2-b0", "efficientnet-b0"])
def test_keras_file_loads_without_this_package(tmp_path, name):
    model = tiny(name, classifier_activation=None)
    path, data = tmp_path / "model.keras", tmp_path / "x.npy"
    model.save(path)
    x = pixels(3, seed=1)
    np.save(data, x)
    script = textwrap.dedent(f"""
        import sys, numpy as np, keras
        model = keras.models.load_model({str(path)!r})
        np.save({str(tmp_path / 'y.npy')!r}, model.predict(np.load({str(data)!r}), verbose=0))
        assert not any(m.startswith("effv2_keras") for m in sys.modules), "effv2_keras was imported"
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    # Same kernels, same graph: only float32 summation order may differ.
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), model.predict(x, verbose=0), atol=1e-5)


@pytest.mark.parametrize("policy, compute", [("mixed_float16", "float16"), ("mixed_bfloat16", "bfloat16")])
def test_mixed_precision_runs_low_and_outputs_float32(policy, compute):
    keras.mixed_precision.set_global_policy(policy)
    try:
        model = tiny()
        features = tiny(include_top=False, pooling="avg")
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("stem_conv").compute_dtype == compute
    assert model.get_layer("block1a_project_conv").kernel.dtype == "float32"  # master weights
    out = model(pixels(), training=False)
    assert out.dtype == "float32" and features(pixels(), training=False).dtype == "float32"
    assert np.isfinite(out.numpy()).all()
    np.testing.assert_allclose(out.numpy().sum(axis=1), 1.0, rtol=1e-5)


def test_jit_compiled_training_step():
    model = tiny(classifier_activation=None)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=True)
    x, y = pixels(4), np.array([0, 1, 2, 3])
    before = model.get_layer("stem_conv").kernel.numpy().copy()
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"])
    assert not np.allclose(before, model.get_layer("stem_conv").kernel.numpy())


@pytest.mark.parametrize("kwargs, message", [
    (dict(variant="efficientnetv2-q"), "Unknown model"),
    (dict(input_shape=(32, 32, 1)), "1 channel"),
    (dict(classes=0), "classes must be a positive integer"),
    (dict(input_shape=(None, None, 3)), "include_top=True needs a fixed input_shape"),
    (dict(input_shape=(32, 32)), r"\(height, width, channels\)"),
    (dict(input_shape=(16, 16, 3)), "too small"),
    (dict(pooling="mean"), "pooling must be"),
    (dict(dropout_rate=1.0), "dropout_rate"),
    (dict(weights="no/such/file.h5"), "weights must be None"),
])
def test_bad_input_gives_a_clear_value_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(**kwargs)


def test_gray_input_is_fine_without_preprocessing():
    model = tiny(input_shape=(32, 32, 1), include_preprocessing=False)
    assert model.predict(np.zeros((1, 32, 32, 1), "float32"), verbose=0).shape == (1, 5)
