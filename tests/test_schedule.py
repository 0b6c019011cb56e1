"""Tests for effv2_keras.schedule: Algorithm 1 against the paper's Table 6."""

import json

import pytest

from effv2_keras.schedule import ProgressiveSchedule, Stage, make_schedule

# Table 6 of the paper, 4 stages, worked out by hand:
#   S_i = S_0 + (S_e - S_0) * i / 3, intermediate sizes to the nearest multiple of 8
#   (endpoints exactly as in the table), every regularizer linear in i / 3.
# S: size 128..300 -> 128, 185.33 (184), 242.67 (240), 300; RandAug 5..15; Mixup 0; dropout 0.1..0.3
# M: size 128..380 -> 128, 212 (216, tie rounds up), 296, 380; RandAug 5..20; Mixup 0..0.2;
#    dropout 0.1..0.4
# L: size 128..380 -> as M; RandAug 5..25; Mixup 0..0.4; dropout 0.1..0.5
TABLE6 = {
    "efficientnetv2-s": dict(
        image_size=[128, 184, 240, 300],
        randaug_magnitude=[5.0, 8.3333, 11.6667, 15.0],
        mixup_alpha=[0.0, 0.0, 0.0, 0.0],
        dropout=[0.1, 0.1667, 0.2333, 0.3],
    ),
    "efficientnetv2-m": dict(
        image_size=[128, 216, 296, 380],
        randaug_magnitude=[5.0, 10.0, 15.0, 20.0],
        mixup_alpha=[0.0, 0.0667, 0.1333, 0.2],
        dropout=[0.1, 0.2, 0.3, 0.4],
    ),
    "efficientnetv2-l": dict(
        image_size=[128, 216, 296, 380],
        randaug_magnitude=[5.0, 11.6667, 18.3333, 25.0],
        mixup_alpha=[0.0, 0.1333, 0.2667, 0.4],
        dropout=[0.1, 0.2333, 0.3667, 0.5],
    ),
}


@pytest.mark.parametrize("model", sorted(TABLE6))
def test_table6_per_stage_values(model):
    schedule = make_schedule(model, epochs=350, stages=4)
    expected = TABLE6[model]
    assert [s.index for s in schedule.stages] == [0, 1, 2, 3]
    assert [s.image_size for s in schedule.stages] == expected["image_size"]
    for field in ("randaug_magnitude", "mixup_alpha", "dropout"):
        got = [getattr(s, field) for s in schedule.stages]
        assert got == pytest.approx(expected[field], abs=1e-4), field
    assert [s.cutmix_alpha for s in schedule.stages] == [0.0] * 4  # Table 6 has no CutMix


@pytest.mark.parametrize("model", sorted(TABLE6))
def test_endpoints_are_exact(model):
    schedule = make_schedule(model)
    first, last = schedule.stages[0], schedule.stages[-1]
    assert (first.randaug_magnitude, first.dropout, first.mixup_alpha) == (5.0, 0.1, 0.0)
    assert last.image_size in (300, 380)
    # Exactly the table's numbers, not 0.30000000000000004.
    assert last.dropout in (0.3, 0.4, 0.5)
    assert last.randaug_magnitude in (15.0, 20.0, 25.0)


def test_unrounded_sizes_with_size_multiple_1():
    schedule = make_schedule("efficientnetv2-s", size_multiple=1)
    # 185.33 and 242.67 round half up to integers.
    assert [s.image_size for s in schedule.stages] == [128, 185, 243, 300]


def test_rounded_sizes_stay_within_range():
    schedule = make_schedule(image_size=(128, 135), stages=4, epochs=4)
    sizes = [s.image_size for s in schedule.stages]
    assert sizes == sorted(sizes) and min(sizes) == 128 and max(sizes) == 135


def test_single_stage_uses_max_values():
    schedule = make_schedule("efficientnetv2-m", epochs=10, stages=1)
    (stage,) = schedule.stages
    assert (stage.epochs, stage.image_size, stage.randaug_magnitude, stage.mixup_alpha,
            stage.dropout) == (10, 380, 20.0, 0.2, 0.4)


def test_explicit_ranges_override_defaults():
    schedule = make_schedule("efficientnetv2-b0", epochs=6, stages=3,
                             image_size=(96, 160), randaug_magnitude=(0, 10),
                             mixup_alpha=(0.0, 0.2), cutmix_alpha=(0.0, 1.0), dropout=(0.0, 0.2))
    assert [s.image_size for s in schedule.stages] == [96, 128, 160]
    assert [s.randaug_magnitude for s in schedule.stages] == [0.0, 5.0, 10.0]
    assert [s.cutmix_alpha for s in schedule.stages] == [0.0, 0.5, 1.0]
    assert [s.mixup_alpha for s in schedule.stages] == pytest.approx([0.0, 0.1, 0.2])
    assert [s.dropout for s in schedule.stages] == pytest.approx([0.0, 0.1, 0.2])


@pytest.mark.parametrize("total,stages,expected", [
    (350, 4, [88, 88, 87, 87]),
    (10, 4, [3, 3, 2, 2]),
    (8, 4, [2, 2, 2, 2]),
    (4, 4, [1, 1, 1, 1]),
    (7, 3, [3, 2, 2]),
])
def test_epoch_split(total, stages, expected):
    schedule = make_schedule(epochs=total, stages=stages)
    assert [s.epochs for s in schedule.stages] == expected
    assert schedule.epochs == total


def test_stage_for_epoch_and_first_epoch_boundaries():
    schedule = make_schedule(epochs=10, stages=4)  # epochs 3, 3, 2, 2
    assert [schedule.first_epoch(i) for i in range(4)] == [0, 3, 6, 8]
    expected = [0, 0, 0, 1, 1, 1, 2, 2, 3, 3]
    assert [schedule.stage_for_epoch(e).index for e in range(10)] == expected
    for i in range(4):
        assert schedule.stage_for_epoch(schedule.first_epoch(i)).index == i
    with pytest.raises(ValueError, match="epoch 10 out of range"):
        schedule.stage_for_epoch(10)
    with pytest.raises(ValueError, match="epoch -1 out of range"):
        schedule.stage_for_epoch(-1)
    with pytest.raises(ValueError, match="stage_index 4 out of range"):
        schedule.first_epoch(4)


def test_dict_round_trip_through_json():
    schedule = make_schedule("efficientnetv2-l", epochs=350, cutmix_alpha=(0.0, 0.4))
    text = json.dumps(schedule.to_dict())
    again = ProgressiveSchedule.from_dict(json.loads(text))
    assert again == schedule
    assert again.to_dict() == schedule.to_dict()
    assert all(isinstance(s, Stage) for s in again.stages)
    assert isinstance(again.stages, tuple)


def test_from_dict_rejects_bad_input():
    d = make_schedule(epochs=8).to_dict()
    with pytest.raises(ValueError, match="Unknown schedule keys"):
        ProgressiveSchedule.from_dict({**d, "lr": 0.1})
    with pytest.raises(ValueError, match="epochs=9"):
        ProgressiveSchedule.from_dict({**d, "epochs": 9})
    bad = json.loads(json.dumps(d))
    bad["stages"][1]["index"] = 5
    with pytest.raises(ValueError, match="index"):
        ProgressiveSchedule.from_dict(bad)
    bad = json.loads(json.dumps(d))
    del bad["stages"][0]["dropout"]
    with pytest.raises(ValueError, match="missing keys \\['dropout'\\]"):
        ProgressiveSchedule.from_dict(bad)


def test_table_lists_every_stage():
    schedule = make_schedule("efficientnetv2-s", epochs=350)
    table = schedule.table()
    lines = table.splitlines()
    assert "image" in lines[0] and "dropout" in lines[0]
    assert len(lines) == 2 + 4 + 1
    assert "263-349" in lines[5] and "300" in lines[5] and "15.00" in lines[5]
    assert lines[-1] == "4 stages, 350 epochs"


@pytest.mark.parametrize("kwargs,match", [
    (dict(epochs=3, stages=4), "epochs \\(3\\) must be >= stages \\(4\\)"),
    (dict(stages=0), "stages"),
    (dict(epochs=0), "epochs"),
    (dict(size_multiple=0), "size_multiple"),
    (dict(image_size=(300, 128)), "image_size.*min <= max"),
    (dict(image_size=(0, 128)), "image_size"),
    (dict(image_size=(128.5, 300)), "image_size.*integers"),
    (dict(image_size=128), "image_size must be a \\(min, max\\) pair"),
    (dict(randaug_magnitude=(-1, 10)), "randaug_magnitude.*non-negative"),
    (dict(randaug_magnitude=(15, 5)), "randaug_magnitude.*min <= max"),
    (dict(mixup_alpha=(0.2, 0.1)), "mixup_alpha.*min <= max"),
    (dict(mixup_alpha=(-0.1, 0.1)), "mixup_alpha"),
    (dict(cutmix_alpha=(0, float("nan"))), "cutmix_alpha"),
    (dict(dropout=(0.1, 1.0)), "dropout must be below 1"),
    (dict(dropout=(0.5, 0.1)), "dropout.*min <= max"),
    (dict(model="efficientnetv2-q"), "Unknown model"),
])
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_schedule(**kwargs)


def test_stage_validates_its_fields():
    with pytest.raises(ValueError, match="Stage.epochs"):
        Stage(0, 0, 128, 5.0, 0.0, 0.0, 0.1)
    with pytest.raises(ValueError, match="Stage.dropout"):
        Stage(0, 1, 128, 5.0, 0.0, 0.0, 1.0)
    with pytest.raises(ValueError, match="at least one stage"):
        ProgressiveSchedule(())
