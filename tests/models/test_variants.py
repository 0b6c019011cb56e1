"""Every variant against the official parameter counts and multiply-adds (REFERENCE.md section 1)."""

import gc

import keras
import pytest

import effv2_keras

# Official parameter counts with a 1000-class head, BN statistics included.
# V2: the official tests (keras.applications gives the same for B0-L).
# V1: as keras.applications builds them (7 more than the official count: the
# Normalization layer's mean, variance and count).
PARAMS = {
    "efficientnetv2-b0": 7_200_312, "efficientnetv2-b1": 8_212_124,
    "efficientnetv2-b2": 10_178_374, "efficientnetv2-b3": 14_467_622,
    "efficientnetv2-s": 21_612_360, "efficientnetv2-m": 54_431_388,
    "efficientnetv2-l": 119_027_848, "efficientnetv2-xl": 208_896_832,
    "efficientnet-b0": 5_330_571, "efficientnet-b1": 7_856_239,
    "efficientnet-b2": 9_177_569, "efficientnet-b3": 12_320_535,
    "efficientnet-b4": 19_466_823, "efficientnet-b5": 30_562_527,
    "efficientnet-b6": 43_265_143, "efficientnet-b7": 66_658_687,
}

# Multiply-adds per image at the eval size (conv + dense), REFERENCE.md section 1.
MADDS = {
    "efficientnetv2-b0": 0.72e9, "efficientnetv2-s": 8.4e9, "efficientnetv2-m": 24.6e9,
    "efficientnet-b0": 0.39e9, "efficientnet-b4": 4.4e9,
}
# The reference numbers are quoted to 2-3 significant digits; 2% covers that
# rounding and nothing more (a wrong stage or head width moves them by > 5%).
MADDS_RTOL = 0.02

HEAD_WIDTH = {"efficientnetv2-b2": 1408, "efficientnetv2-b3": 1536, "efficientnetv2-s": 1280, "efficientnet-b7": 2560}


@pytest.fixture(autouse=True)
def _free_memory():
    yield
    keras.backend.clear_session()
    gc.collect()


@pytest.mark.parametrize("name", list(PARAMS))
def test_parameter_count_and_madds(name):
    constructor = effv2_keras.CONSTRUCTORS[effv2_keras.models.constructors.constructor_name(name)]
    model = constructor()
    spec = effv2_keras.get_spec(name)
    assert model.name == name
    assert model.input_shape == (None, spec.eval_size, spec.eval_size, 3)
    assert model.output_shape == (None, 1000)
    assert model.count_params() == PARAMS[name]
    if name in HEAD_WIDTH:
        assert model.get_layer("top_conv").filters == HEAD_WIDTH[name]
    if name in MADDS:
        assert effv2_keras.count_flops(model) == pytest.approx(MADDS[name], rel=MADDS_RTOL)


def test_count_flops_by_name_at_another_size():
    at_224 = effv2_keras.count_flops("efficientnetv2-b0", 224)
    at_448 = effv2_keras.count_flops("efficientnetv2-b0", 448)
    # Convolutions scale with the pixel count; the 1.3M of the dense head and
    # SE layers do not, which keeps the ratio within 1% of 4.
    assert at_448 == pytest.approx(4 * at_224, rel=0.01)


def test_count_flops_of_a_dynamic_model_needs_a_size():
    model = effv2_keras.build("efficientnetv2-b0", include_top=False, width=0.25, depth=0.25)
    with pytest.raises(ValueError, match="image_size"):
        effv2_keras.count_flops(model)
    assert effv2_keras.count_flops(model, 64) > 0
