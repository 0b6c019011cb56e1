"""Numerical parity on real photos: keras.applications (by transfer) and timm (by state dict).

Networks start from random weights with random BN statistics, gamma and beta, so every
tensor and every BN term matters, and predictions are compared in inference mode.

Where ours and keras.applications differ ON PURPOSE (training-time only, so inference
parity holds):
* drop-path schedule: keras' V2 divides the block index by the UNSCALED block count (21 for
  B0-B3), so B1-B3 overshoot the 0.2 target (last block 0.248 for B1, 0.257 for B2); ours
  divides by the scaled count (0.193 at the last block of both). keras' V1 uses the scaled
  count, as we do.
* head dropout: keras' V2 constructors use 0.2 for every variant; ours use the official
  per-variant rate (B2/B3 0.3, M 0.3, L 0.4).
test_training_regularization_differs_from_keras_on_purpose pins both.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import keras
import numpy as np
import pytest

import effv2_keras
from effv2_keras.models import weights as weights_lib
from effv2_keras.models.builder import scaled_blocks

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], "float32")
IMAGENET_STD = np.array([0.229, 0.224, 0.225], "float32")
SIZE = 128  # modest, real photos resized; parity does not depend on the size
TIMM_IMPORT = Path(__file__).resolve().parents[2] / "tools" / "timm_import.py"


def infer(model, x):
    return keras.ops.convert_to_numpy(model(x, training=False))


def softmax(logits):
    return keras.ops.convert_to_numpy(keras.activations.softmax(keras.ops.convert_to_tensor(logits)))


def randomize_batch_norm(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c),
                               rng.normal(0, 0.2, c), rng.uniform(0.5, 2.0, c)])


# --- keras.applications -----------------------------------------------------------


@pytest.mark.parametrize("name", ["EfficientNetV2B0", "EfficientNetV2S", "EfficientNetB0"])
def test_transfer_from_keras_applications_matches(name, real_images):
    images = real_images(4, SIZE)
    reference = getattr(keras.applications, name)(
        weights=None, input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    randomize_batch_norm(reference, seed=len(name))
    normalization = [l for l in reference.layers if isinstance(l, keras.layers.Normalization) and l.weights]
    if normalization:
        # keras' V1 built with weights=None holds mean 0 / variance 1 (it only gets statistics
        # from its ImageNet file, stored there as std with an extra Rescaling). Ours holds the
        # ImageNet statistics and transfer never copies preprocessing, so give keras' model the
        # same (x/255 - mean) / std: variance = std**2.
        (layer,) = normalization
        layer.set_weights([IMAGENET_MEAN, IMAGENET_STD**2, np.array(0, "int64")])
        layer.finalize_state()
    ours = getattr(effv2_keras, name)(input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    before = infer(ours, images)

    copied = weights_lib.transfer(reference, ours)

    expected = len(reference.weights) - sum(len(l.weights) for l in normalization)
    assert copied == expected
    logits, reference_logits = infer(ours, images), infer(reference, images)
    assert np.ptp(reference_logits) > 0.1  # the comparison below is not between near-constants
    assert np.abs(before - reference_logits).max() > 0.01  # and the transfer is what made them equal
    # Same framework, same kernels: differences are float32 rounding only.
    np.testing.assert_allclose(logits, reference_logits, rtol=0, atol=1e-5)
    np.testing.assert_allclose(softmax(logits), softmax(reference_logits), rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant, keras_last, ours_last, keras_head, ours_head", [
    pytest.param("B1", 0.2 * 26 / 21, 0.2 * 26 / 27, 0.2, 0.2, id="B1"),  # 27 blocks, keras counts 21
    pytest.param("B2", 0.2 * 27 / 21, 0.2 * 27 / 28, 0.2, 0.3, id="B2"),  # 28 blocks
])
def test_training_regularization_differs_from_keras_on_purpose(variant, keras_last, ours_last,
                                                              keras_head, ours_head):
    reference = getattr(keras.applications, f"EfficientNetV2{variant}")(weights=None, input_shape=(32, 32, 3))
    keras_rates = {l.name[: -len("drop")]: l.rate for l in reference.layers if l.name.endswith("_drop")}
    ours = {b.name: b.drop_path for b in scaled_blocks(effv2_keras.get_spec(f"efficientnetv2-{variant}"))
            if b.has_residual}
    assert set(keras_rates) == set(ours)  # same blocks carry drop path
    last = max(ours)
    assert keras_rates[last] == pytest.approx(keras_last) and ours[last] == pytest.approx(ours_last)
    assert keras_rates[last] > 0.24 and ours[last] < 0.2  # keras overshoots the 0.2 target
    assert reference.get_layer("top_dropout").rate == pytest.approx(keras_head)
    assert effv2_keras.get_spec(f"efficientnetv2-{variant}").dropout == pytest.approx(ours_head)


# --- timm ------------------------------------------------------------------------


def import_timm():
    """timm (imported with torchvision placeholders where needed), or a skip."""
    pytest.importorskip("torch", reason="torch is not installed (pip install torch==2.13.0, the CPU build)")
    spec = importlib.util.spec_from_file_location("timm_import", TIMM_IMPORT)
    timm_import = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(timm_import)
    timm = timm_import.import_timm()
    if timm is None:
        pytest.skip("timm is not installed (pip install --no-deps timm==1.0.31)")
    return timm


@pytest.mark.parametrize("timm_name, ours_name, suffix", [
    ("tf_efficientnetv2_b0", "EfficientNetV2B0", ".pth"),
    ("tf_efficientnet_b0", "EfficientNetB0", ".safetensors"),
])
def test_timm_state_dict_matches(timm_name, ours_name, suffix, tmp_path, real_images):
    timm = import_timm()
    import torch

    torch.manual_seed(0)
    net = timm.create_model(timm_name, pretrained=False).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.normal_(0, 0.2, generator=generator)
                module.running_mean.normal_(0, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 2.0, generator=generator)
    ours = getattr(effv2_keras, ours_name)(input_shape=(SIZE, SIZE, 3), classifier_activation=None)
    # A state dict does not carry the BN epsilon: timm's tf_ ports use TF's 1e-3, as we do.
    assert {m.eps for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)} == {1e-3}
    assert {l.epsilon for l in ours.layers if isinstance(l, keras.layers.BatchNormalization)} == {1e-3}

    path = str(tmp_path / f"{timm_name}{suffix}")
    if suffix == ".pth":
        torch.save(net.state_dict(), path)
    else:
        import safetensors.torch

        safetensors.torch.save_file(net.state_dict(), path)
    weights_lib.load_weights(ours, path)

    images = real_images(4, SIZE)
    # timm takes NCHW, normalized as its pretrained_cfg says; ours takes 0-255 NHWC and
    # normalizes inside the model, so this also checks that our preprocessing is timm's.
    mean, std = (np.array(net.pretrained_cfg[k], "float32") for k in ("mean", "std"))
    normalized = (images / 255.0 - mean) / std
    with torch.no_grad():
        reference = net(torch.from_numpy(normalized.transpose(0, 3, 1, 2).copy())).numpy()
    logits = infer(ours, images)
    assert np.ptp(reference) > 0.1
    # Two frameworks, different conv kernels and summation orders over ~70 float32 layers:
    # about 1e-6 relative each; measured max 8e-7 here (2e-6 on random inputs) on logits
    # spanning ~2.5. 1e-4 leaves margin and is far below what a wrong transpose or a
    # swapped BN statistic gives (>= 1e-2).
    np.testing.assert_allclose(logits, reference, rtol=0, atol=1e-4)
