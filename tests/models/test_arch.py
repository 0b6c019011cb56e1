"""The tables and the derived bookkeeping, pinned against the official numbers."""

import doctest

import pytest

from effv2_keras.models import arch, builder
from effv2_keras.models.arch import V1, V2, decode_stage, encode_stage, get_spec, round_channels


@pytest.mark.parametrize("name", arch.list_models())
def test_every_stage_string_round_trips(name):
    for text in get_spec(name).stages:
        assert encode_stage(decode_stage(text)) == text


@pytest.mark.parametrize("text", [
    "fused_r1_k3_s1_e1_c16", "mb_r15_k3_s2_e6_c256_se0.25", "mb_r1_k5_s1_e2.5_c40_se0.5",
])
def test_block_language_round_trips_arbitrary_stages(text):
    stage = decode_stage(text)
    assert encode_stage(stage) == text
    assert decode_stage(encode_stage(stage)) == stage


@pytest.mark.parametrize("bad", [
    "conv_r1_k3_s1_e1_c16",        # unknown block type
    "mb_r1_k3_s1_e1_c16_x2",       # unknown token
    "mb_k3_r1_s1_e1_c16",          # tokens out of order
    "mb_r0_k3_s1_e1_c16",          # zero repeats
    "mb_r1_k3_s3_e1_c16",          # stride 3
    "mb_r1_k3_s1_e1_c16_se1.5",    # se ratio above 1
])
def test_block_language_rejects_bad_strings(bad):
    with pytest.raises(ValueError, match="stage string"):
        decode_stage(bad)


def test_channel_rounding_matches_official_rule():
    # V2: max(8, int(f*w + 4) // 8 * 8); head 1408 for B2 and 1536 for B3.
    assert round_channels(1280, 1.1, V2) == 1408
    assert round_channels(1280, 1.2, V2) == 1536
    assert round_channels(16, 1.1, V2) == 16
    assert round_channels(48, 1.1, V2) == 56
    # V1 adds a divisor when rounding down loses more than 10%: 16 * 1.4 = 22.4 -> 24.
    assert round_channels(16, 1.4, V1) == 24
    assert round_channels(3, 1.0, V1) == 8


@pytest.mark.parametrize("name, expected_blocks", [
    ("efficientnetv2-b0", 21), ("efficientnetv2-b1", 27), ("efficientnetv2-b3", 32),
    ("efficientnetv2-s", 40), ("efficientnetv2-xl", 100), ("efficientnet-b0", 16), ("efficientnet-b7", 55),
])
def test_drop_path_counted_over_scaled_block_list(name, expected_blocks):
    blocks = builder.scaled_blocks(get_spec(name))
    assert len(blocks) == expected_blocks
    rates = [b.drop_path for b in blocks]
    assert rates == pytest.approx([0.2 * i / expected_blocks for i in range(expected_blocks)])
    assert max(rates) < 0.2  # keras.applications' V2 B1-B3 overshoot (0.248 / 0.257 / 0.295)


def test_strides_and_residuals_follow_the_table():
    blocks = builder.scaled_blocks(get_spec("efficientnetv2-s"))
    first_of_stage = [b for b in blocks if b.name.endswith("a_")]
    assert [b.stride for b in first_of_stage] == [1, 2, 2, 2, 1, 2]
    assert all(b.stride == 1 for b in blocks if not b.name.endswith("a_"))
    # stage 1 keeps 24 channels from the stem, so its first block is residual too
    assert first_of_stage[0].has_residual and not first_of_stage[1].has_residual
    assert sum(b.has_residual for b in blocks) == len(blocks) - 5


def test_se_width_comes_from_block_input():
    block = builder.scaled_blocks(get_spec("efficientnetv2-b0"))[5]  # block4a: 48 -> 96, e4
    assert (block.name, block.in_channels, block.expanded_channels, block.se_ratio) == ("block4a_", 48, 192, 0.25)


def test_xl_block_names_stay_alphabetic_past_26():
    names = [b.name for b in builder.scaled_blocks(get_spec("efficientnetv2-xl")) if b.name.startswith("block6")]
    assert len(names) == 32 and names[25:27] == ["block6z_", "block6aa_"]
    assert all(n[6:-1].isalpha() for n in names)


def test_progressive_defaults_are_paper_table_6():
    s, m, l = (get_spec(f"efficientnetv2-{v}").progressive for v in "sml")
    assert (s.image_size, s.randaug_magnitude, s.mixup_alpha, s.dropout) == ((128, 300), (5, 15), (0, 0), (0.1, 0.3))
    assert (m.image_size, m.randaug_magnitude, m.mixup_alpha, m.dropout) == ((128, 380), (5, 20), (0, 0.2), (0.1, 0.4))
    assert (l.image_size, l.randaug_magnitude, l.mixup_alpha, l.dropout) == ((128, 380), (5, 25), (0, 0.4), (0.1, 0.5))


def test_per_variant_head_dropout_and_sizes():
    got = {n: (get_spec(n).train_size, get_spec(n).eval_size, get_spec(n).dropout) for n in arch.list_models()}
    assert got["efficientnetv2-b2"] == (208, 260, 0.3)
    assert got["efficientnetv2-m"] == (384, 480, 0.3)
    assert got["efficientnetv2-xl"] == (384, 512, 0.4)
    assert got["efficientnet-b7"] == (600, 600, 0.5)


@pytest.mark.parametrize("alias", ["efficientnetv2-s", "EfficientNetV2S", "efficientnet_v2_s", "EFFICIENTNETV2-S"])
def test_names_are_forgiving(alias):
    assert get_spec(alias).name == "efficientnetv2-s"


def test_unknown_name_suggests_close_matches():
    with pytest.raises(ValueError, match=r"Unknown model 'efficientnetv2-x'.*Did you mean.*efficientnetv2-xl"):
        get_spec("efficientnetv2-x")


def test_docstring_examples_run():
    for module in (arch, builder):
        result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
        assert result.attempted > 0 and result.failed == 0, module.__name__
