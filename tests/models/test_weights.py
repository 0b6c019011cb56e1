"""Weight import: our own files, keras.applications .h5 files, errors, the convert tool.

Numerical equivalence with keras.applications and timm (real images) is in test_parity.py;
here every check is exact (equal arrays), since a file round trip must not change a bit.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import time
import urllib.request
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest
from keras.src.legacy.saving import legacy_h5_format

import effv2_keras
from effv2_keras.models import weights as weights_lib

TOOL = Path(__file__).resolve().parents[2] / "tools" / "convert_weights.py"
TINY = dict(width=0.25, depth=0.25, input_shape=(32, 32, 3), classes=5)


def tiny(seed=None, **overrides):
    model = effv2_keras.build("efficientnetv2-b0", **{**TINY, **overrides})
    if seed is not None:
        randomize(model, seed)
    return model


def randomize(model, seed):
    """Every variable random (BN variances positive), so a round trip that drops a tensor shows."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        value = rng.normal(0, 0.3, variable.shape)
        if variable.path.endswith("moving_variance"):
            value = np.abs(value) + 0.5
        variable.assign(value.astype(variable.dtype))


def save_legacy_h5(model, path):
    """Writes the legacy layout of keras.applications' downloaded files (layer groups + weight_names)."""
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def layer_weights(model):
    return {layer.name: [np.asarray(w) for w in layer.weights] for layer in model.layers if layer.weights}


def assert_same_weights(model, reference, skip=("normalization",)):
    ours, theirs = layer_weights(model), layer_weights(reference)
    compared = 0
    for name, arrays in ours.items():
        if name in skip:
            continue
        assert len(arrays) == len(theirs[name]), name
        for a, b in zip(arrays, theirs[name]):
            np.testing.assert_array_equal(a, b, err_msg=name)
            compared += 1
    return compared


def infer(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))  # eager: no tf.function to trace


def pixels(n=2, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


# --- our own files -------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_round_trip_of_our_files(tmp_path, suffix):
    source = tiny(seed=1)
    path = str(tmp_path / f"model{suffix}")
    source.save(path) if suffix == ".keras" else source.save_weights(path)
    # A different model name must not matter; the builder's weights= goes through load_weights.
    loaded = effv2_keras.build("efficientnetv2-b0", **TINY, weights=path, name="renamed")
    assert assert_same_weights(loaded, source, skip=()) == len(source.weights)
    np.testing.assert_array_equal(infer(loaded, pixels()), infer(source, pixels()))


def test_keras_file_into_a_model_without_top(tmp_path):
    source = tiny(seed=2)
    source.save(tmp_path / "top.keras")
    backbone = tiny(include_top=False)
    weights_lib.load_weights(backbone, tmp_path / "top.keras")
    assert assert_same_weights(backbone, source) == len(source.weights) - 2  # all but the head


# --- keras.applications .h5 ----------------------------------------------------


@pytest.fixture(scope="module")
def keras_v2b0_files(tmp_path_factory):
    """A randomized keras.applications EfficientNetV2B0, and its weights in the layout keras downloads."""
    folder = tmp_path_factory.mktemp("keras_h5")
    reference = keras.applications.EfficientNetV2B0(weights=None, input_shape=(64, 64, 3))
    randomize(reference, 3)
    top = save_legacy_h5(reference, folder / "efficientnetv2-b0.h5")
    # keras' *_notop.h5 is the same network without the head: save the headless sub-model.
    backbone = keras.Model(reference.input, reference.get_layer("top_activation").output)
    notop = save_legacy_h5(backbone, folder / "efficientnetv2-b0_notop.h5")
    with h5py.File(top, "r") as f:  # the layout the loader relies on
        assert "layer_names" in f.attrs
        assert weights_lib._h5_attr_list(f["block4a_dwconv2"], "weight_names") == ["block4a_dwconv2/kernel"]
    return reference, str(top), str(notop)


def test_keras_applications_h5_loads_by_name(keras_v2b0_files):
    reference, top, _ = keras_v2b0_files
    model = effv2_keras.EfficientNetV2B0(weights=top, input_shape=(64, 64, 3))
    assert assert_same_weights(model, reference) == len(reference.weights)
    x = pixels(size=64)
    np.testing.assert_array_equal(infer(model, x), infer(reference, x))


def test_notop_h5_into_a_model_with_top_warns_and_keeps_the_head(keras_v2b0_files):
    reference, _, notop = keras_v2b0_files
    model = effv2_keras.EfficientNetV2B0(input_shape=(64, 64, 3))
    head_before = [np.asarray(w) for w in model.get_layer("predictions").weights]
    with pytest.warns(UserWarning, match="no classification head"):
        weights_lib.load_weights(model, notop)
    assert assert_same_weights(model, reference, skip=("normalization", "predictions")) == len(reference.weights) - 2
    for before, after in zip(head_before, model.get_layer("predictions").weights):
        np.testing.assert_array_equal(before, np.asarray(after))


def test_convert_tool_writes_a_file_that_loads(keras_v2b0_files, tmp_path, capsys):
    reference, top, _ = keras_v2b0_files
    spec = importlib.util.spec_from_file_location("convert_weights", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)

    assert tool.main(["convert_weights.py", "--helpfull"]) == 0
    assert "--include_top" in capsys.readouterr().out
    assert tool.main(["convert_weights.py", "--model=efficientnetv2-b0"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1 and "--src" in error  # one line naming the missing flag
    out = str(tmp_path / "v2b0.weights.h5")
    assert tool.main(["convert_weights.py", "--model=efficientnetv2-b0", f"--src={top}", f"--out={out}"]) == 0
    converted = effv2_keras.EfficientNetV2B0(weights=out)  # 224 px: weights do not depend on size
    assert assert_same_weights(converted, reference) == len(reference.weights)
    assert tool.main(["convert_weights.py", "--model=efficientnetv2-b0", f"--src={top}", "--out=v2b0.h5"]) == 2
    assert "--out must end with .weights.h5 or .keras" in capsys.readouterr().err


@pytest.mark.parametrize("fmt", ["legacy .h5", ".weights.h5", ".keras"])
def test_preprocessing_statistics_are_never_copied(tmp_path, fmt):
    """keras' V1 holds mean 0 / variance 1 (weights=None) or std as "variance" (its ImageNet file)."""
    source = effv2_keras.build("efficientnet-b0", **TINY)
    randomize(source, 7)  # the Normalization statistics too
    path = str(tmp_path / ("v1.h5" if fmt == "legacy .h5" else f"v1{fmt}"))
    if fmt == "legacy .h5":
        save_legacy_h5(source, path)
    else:
        source.save(path) if fmt == ".keras" else source.save_weights(path)
    model = effv2_keras.build("efficientnet-b0", **TINY)
    statistics = [np.asarray(w) for w in model.get_layer("normalization").weights]
    weights_lib.load_weights(model, path)
    assert assert_same_weights(model, source) == len(source.weights) - 3  # all but mean, variance, count
    for kept, variable in zip(statistics, model.get_layer("normalization").weights):
        np.testing.assert_array_equal(kept, np.asarray(variable))
    np.testing.assert_allclose(statistics[1], np.array([0.229, 0.224, 0.225]) ** 2, rtol=1e-6)


# --- errors ----------------------------------------------------------------------


def test_shape_mismatch_names_the_layer_and_both_shapes(tmp_path):
    path = save_legacy_h5(tiny(seed=4), tmp_path / "tiny.h5")
    wider = tiny(width=0.5)
    before = [np.asarray(w) for w in wider.weights]
    with pytest.raises(ValueError, match=r"'stem_conv'.*\(3, 3, 3, 8\) in the file but \(3, 3, 3, 16\) in the model"):
        weights_lib.load_weights(wider, path)
    for value, variable in zip(before, wider.weights):  # nothing was written
        np.testing.assert_array_equal(value, np.asarray(variable))


def test_other_head_or_depth_is_a_clear_error(tmp_path):
    path = save_legacy_h5(tiny(seed=5), tmp_path / "tiny.h5")
    with pytest.raises(ValueError, match=r"'predictions'.*\(320, 5\) in the file but \(320, 7\).*include_top=False"):
        weights_lib.load_weights(tiny(classes=7), path)
    with pytest.raises(ValueError, match=r"not in it: 'block4b_expand_conv'"):
        weights_lib.load_weights(tiny(depth=0.5), path)


def test_our_weights_h5_mismatch_is_a_value_error(tmp_path):
    path = str(tmp_path / "tiny.weights.h5")
    tiny(seed=6).save_weights(path)
    with pytest.raises(ValueError, match=r"(?s)does not match model.*stem_conv.*\(3, 3, 3, 16\).*\(3, 3, 3, 8\)"):
        weights_lib.load_weights(tiny(width=0.5), path)


def test_unknown_file_is_rejected(tmp_path):
    path = tmp_path / "weights.txt"
    path.write_text("not weights")
    with pytest.raises(ValueError, match="Unsupported weights file"):
        weights_lib.load_weights(tiny(), path)


def test_torch_checkpoint_without_torch_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "tf_efficientnetv2_b0.pth"
    path.write_bytes(b"\x80\x02}q\x00.")  # a pickled empty dict, as an old torch.save writes
    model = tiny()
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"needs torch.*pip install torch==2\.13\.0"):
        weights_lib.load_weights(model, path)


# --- "imagenet" ----------------------------------------------------------------------


def test_imagenet_files_are_keras_own():
    from keras.src.applications import efficientnet, efficientnet_v2

    name, url, md5 = weights_lib.imagenet_source("efficientnetv2-s", include_top=False)
    assert (name, url, md5) == ("efficientnetv2-s_notop.h5", efficientnet_v2.BASE_WEIGHTS_PATH + name,
                                efficientnet_v2.WEIGHTS_HASHES["-s"][1])
    name, url, md5 = weights_lib.imagenet_source("efficientnet-b3", include_top=True)
    assert (name, url, md5) == ("efficientnetb3.h5", efficientnet.BASE_WEIGHTS_PATH + name,
                                efficientnet.WEIGHTS_HASHES["b3"][0])
    with pytest.raises(ValueError, match="no ImageNet-1k weights for efficientnetv2-xl"):
        weights_lib.imagenet_source("efficientnetv2-xl", include_top=True)


def test_imagenet_with_another_head_fails_before_downloading():
    with pytest.raises(ValueError, match="1000-class head, but model .* has 5 classes: build it with include_top=False"):
        weights_lib.load_weights(tiny(), "imagenet", spec="efficientnetv2-b0")


def test_imagenet_offline_fails_fast_with_instructions(tmp_path, monkeypatch):
    """Really tries the network (nothing patched but an empty Keras cache)."""
    _, url, _ = weights_lib.imagenet_source("efficientnetv2-b0", include_top=False)
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5).close()
        pytest.skip("this machine can reach keras' weights server; the offline path cannot be exercised")
    except (OSError, socket.timeout):
        pass
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no cached copy to fall back on
    start = time.monotonic()
    expected = r"cannot download https://storage\.googleapis\.com/.*/efficientnetv2-b0_notop\.h5 .*curl -LO.*weights="
    with pytest.raises(ValueError, match=expected):
        effv2_keras.EfficientNetV2B0(include_top=False, weights="imagenet", input_shape=(32, 32, 3))
    assert time.monotonic() - start < 30
