"""TrainConfig: defaults, one-line errors naming the flag, serialization, resolution."""

import dataclasses
import json

import pytest

from effv2_keras import cpu_kernels
from effv2_keras.train.config import TrainConfig, choose_precision
from effv2_keras.train.recipes import BASE_LR as DEFAULT_LR
from effv2_keras.train.recipes import WEIGHT_DECAY as DEFAULT_WEIGHT_DECAY


def test_defaults_validate_and_round_trip(tmp_path):
    config = TrainConfig().validate()
    assert TrainConfig.from_dict(config.to_dict()) == config
    assert TrainConfig.from_json(config.to_json()) == config
    path = tmp_path / "config.json"
    config.save(str(path))
    assert TrainConfig.load(str(path)) == config
    assert set(json.loads(path.read_text())) == set(TrainConfig.field_names())


def test_every_field_documents_itself():
    for field in dataclasses.fields(TrainConfig):
        assert field.metadata.get("help"), field.name


def test_unknown_keys_are_rejected():
    with pytest.raises(ValueError, match="Unknown TrainConfig keys: colour"):
        TrainConfig.from_dict({**TrainConfig().to_dict(), "colour": "red"})


@pytest.mark.parametrize("changes, flag", [
    (dict(lr=-1.0), "--lr"),
    (dict(lr=0.0), "--lr"),
    (dict(epochs=0), "--epochs"),
    (dict(stages=5, epochs=4), "--stages"),
    (dict(batch_size=0), "--batch_size"),
    (dict(optimizer="adam"), "--optimizer"),
    (dict(lr_decay="step"), "--lr_decay"),
    (dict(time_budget="soon"), "--time_budget"),
    (dict(mixed_precision="fp16"), "--mixed_precision"),
    (dict(jit_compile="yes"), "--jit_compile"),
    (dict(strategy="horovod"), "--strategy"),
    (dict(min_size=16), "--min_size"),
    (dict(min_size=64, max_size=48), "--min_size"),
    (dict(dropout_max=1.0), "--dropout_max"),
    (dict(dropout_min=0.5, dropout_max=0.2), "--dropout_min"),
    (dict(mixup_min=-0.1), "--mixup_min"),
    (dict(randaug_min=12.0, randaug_max=6.0), "--randaug_min"),
    (dict(label_smoothing=1.0), "--label_smoothing"),
    (dict(ema_decay=1.0), "--ema_decay"),
    (dict(warmup_epochs=50.0, epochs=10), "--warmup_epochs"),
    (dict(steps_per_epoch=0), "--steps_per_epoch"),
    (dict(checkpoint_every=-5), "--checkpoint_every"),
    (dict(keep_checkpoints=0), "--keep_checkpoints"),
    (dict(width=0.0), "--width"),
    (dict(crop_scale_min=0.0), "--crop_scale_min"),
    (dict(regularization_scale=1.5), "--regularization_scale"),
    (dict(stages=0), "--stages"),
    (dict(randaug_probability=-0.1), "--randaug_probability"),
    (dict(lr_decay_epochs=0.0), "--lr_decay_epochs"),
    (dict(select="worst"), "--select"),
    (dict(tpu="grpc://1.2.3.4:8470"), "--tpu"),
    (dict(epochs=2.5), "--epochs"),
])
def test_bad_values_give_one_line_naming_the_flag(changes, flag):
    with pytest.raises(ValueError) as info:
        TrainConfig(**changes).validate()
    message = str(info.value)
    assert message.startswith(flag + ":"), message
    assert "\n" not in message


def test_resolve_fills_optimizer_defaults():
    for name in ("rmsprop", "sgd", "adamw"):
        resolved = TrainConfig(optimizer=name, epochs=30).resolve()
        assert resolved.lr == DEFAULT_LR[name]
        assert resolved.weight_decay == (0.01 if name == "adamw" else DEFAULT_WEIGHT_DECAY[name])
        paper = TrainConfig(optimizer=name, epochs=30, recipe="paper").resolve()
        assert paper.weight_decay == DEFAULT_WEIGHT_DECAY[name]
        assert resolved.warmup_epochs == 0.0  # the short recipe: no warm-up
        assert TrainConfig(optimizer=name, epochs=30, recipe="paper").resolve().warmup_epochs == 3.0
    assert TrainConfig(epochs=350).resolve().warmup_epochs == 5.0  # the paper's 5
    explicit = TrainConfig(lr=0.5, weight_decay=0.0, warmup_epochs=0.0).resolve()
    assert (explicit.lr, explicit.weight_decay, explicit.warmup_epochs) == (0.5, 0.0, 0.0)


def test_scaled_lr_is_linear_in_batch():
    assert TrainConfig(optimizer="rmsprop", batch_size=4096).scaled_lr() == pytest.approx(0.256)
    assert TrainConfig(optimizer="sgd", lr=0.1, batch_size=64).scaled_lr() == pytest.approx(0.025)


def test_adamw_scales_lr_by_the_square_root_of_the_batch():
    # Linear scaling starved small AdamW batches (0.002 per 256 -> 2.5e-4 at batch 32).
    assert TrainConfig(optimizer="adamw", batch_size=256).scaled_lr() == pytest.approx(0.003)
    assert TrainConfig(optimizer="adamw", batch_size=32).scaled_lr() == pytest.approx(0.003 / 8**0.5)
    assert TrainConfig(optimizer="adamw", lr=0.004, batch_size=1024).scaled_lr() == pytest.approx(0.008)
    assert TrainConfig(optimizer="sgd", lr=0.1, batch_size=32).scaled_lr() == pytest.approx(0.1 / 8)


@pytest.mark.parametrize("epochs, scale", [(1, 0.0001), (10, 0.01), (30, 0.09), (50, 0.25), (99, 0.9801),
                                           (100, 1.0), (350, 1.0)])
def test_regularization_grows_with_the_length_of_the_run(epochs, scale):
    c = TrainConfig(epochs=epochs, stages=1).resolve()
    assert c.regularization_scale == pytest.approx(scale)
    assert c.randaug_probability == pytest.approx(scale)
    assert c.crop_scale_min == pytest.approx(1.0 - 0.92 * scale)  # 0.08 (Inception) at full scale


def test_explicit_regularization_flags_win_over_the_scale():
    c = TrainConfig(epochs=10, regularization_scale=1.0).resolve()
    assert (c.regularization_scale, c.randaug_probability, c.crop_scale_min) == (1.0, 1.0, pytest.approx(0.08))
    c = TrainConfig(epochs=10, randaug_probability=0.5, crop_scale_min=0.25).resolve()
    assert (c.regularization_scale, c.randaug_probability, c.crop_scale_min) == (0.01, 0.5, 0.25)


@pytest.mark.parametrize("epochs, stages", [(10, 1), (30, 1), (50, 2), (99, 3), (100, 4), (350, 4)])
def test_default_number_of_stages_gives_each_stage_25_epochs(epochs, stages):
    assert TrainConfig(epochs=epochs).resolve().stages == stages
    assert TrainConfig(epochs=epochs, stages=1).resolve().stages == 1  # a flag wins


def test_default_mixup_is_scaled_but_a_given_one_is_not():
    from effv2_keras.schedule import from_config

    # EfficientNetV2-M's Table 6 Mixup is 0 -> 0.2; a 30-epoch run gets (30 / 100) ** 2 of it.
    short = from_config(TrainConfig(model="efficientnetv2-m", epochs=30, stages=2).resolve())
    assert [s.mixup_alpha for s in short.stages] == [0.0, pytest.approx(0.018)]
    assert [s.randaug_magnitude for s in short.stages] == [5.0, 20.0]  # magnitudes stay Table 6's
    full = from_config(TrainConfig(model="efficientnetv2-m", epochs=10, stages=2,
                                      regularization_scale=1.0).resolve())
    assert [s.mixup_alpha for s in full.stages] == [0.0, pytest.approx(0.2)]
    given = from_config(TrainConfig(model="efficientnetv2-m", epochs=10, stages=2,
                                       mixup_min=0.1, mixup_max=0.3).resolve())
    assert [s.mixup_alpha for s in given.stages] == [pytest.approx(0.1), pytest.approx(0.3)]


# -- recipes -------------------------------------------------------------------------------------

from effv2_keras.train import recipes  # noqa: E402


def test_a_short_run_gets_the_short_recipe():
    c = TrainConfig(epochs=30).resolve()
    short = recipes.defaults("short", 30)
    assert c.recipe == "short"
    assert {k: getattr(c, k) for k in recipes.FIELDS} == pytest.approx(short)
    assert TrainConfig(epochs=30).recipe_sources()["optimizer"] == "short recipe (auto: 30 epochs < 100)"
    # the short recipe is scaled to the run: regularization and stages grow with its length
    assert recipes.defaults("short", 10)["regularization_scale"] == pytest.approx(0.01)
    assert short["optimizer"] == "adamw" and short["lr_decay"] == "constant"
    assert (short["warmup_epochs"], short["ema_decay"], short["label_smoothing"]) == (0.0, 0.0, 0.0)
    assert c.scaled_lr() == pytest.approx(0.003 * (64 / 256) ** 0.5)  # 1.5e-3 at the default batch 64
    assert recipes.defaults("short", 50)["stages"] == 2


def test_a_long_run_and_recipe_paper_get_the_papers_recipe():
    paper = dict(optimizer="rmsprop", lr=0.016, weight_decay=1e-5, lr_decay="exponential",
                 lr_decay_epochs=2.4, ema_decay=0.9999, label_smoothing=0.1, regularization_scale=1.0)
    for config in (TrainConfig(epochs=350), TrainConfig(epochs=10, recipe="paper")):
        c = config.resolve()
        assert c.recipe == "paper"
        assert {k: getattr(c, k) for k in paper} == pytest.approx(paper)
        assert c.crop_scale_min == pytest.approx(0.08) and c.randaug_probability == 1.0
    assert TrainConfig(epochs=350).resolve().stages == 4
    assert TrainConfig(epochs=350).resolve().warmup_epochs == 5.0
    assert TrainConfig(epochs=2, recipe="paper").resolve().stages == 2  # a stage needs an epoch
    assert TrainConfig(epochs=10, recipe="paper").recipe_sources()["stages"] == "paper recipe"


@pytest.mark.parametrize("recipe", ["auto", "short", "paper"])
def test_given_flags_win_over_every_recipe(recipe):
    given = dict(optimizer="sgd", lr=0.05, weight_decay=0.0, warmup_epochs=0.0, lr_decay="constant",
                 lr_decay_epochs=1.0, ema_decay=0.0, label_smoothing=0.0, regularization_scale=0.5,
                 stages=2)
    c = TrainConfig(epochs=20, recipe=recipe, **given).resolve()
    assert {k: getattr(c, k) for k in given} == given
    assert set(TrainConfig(epochs=20, recipe=recipe, **given).recipe_sources().values()) == {
        f"--{k}" for k in given}
    # an optimizer flag alone takes that optimizer's learning rate and decay from the recipe
    c = TrainConfig(epochs=20, recipe=recipe, optimizer="rmsprop").resolve()
    assert (c.lr, c.weight_decay) == (0.016, 1e-5)


def test_resolution_is_idempotent_and_saved_with_its_recipe(tmp_path):
    c = TrainConfig(epochs=30).resolve()
    assert c.resolve() == c
    c.save(str(tmp_path / "config.json"))
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["recipe"] == "short" and saved["optimizer"] == c.optimizer
    assert all(saved[k] is not None for k in recipes.FIELDS)


def test_a_bad_recipe_names_the_flag():
    with pytest.raises(ValueError, match=r"^--recipe: must be one of auto, short, paper"):
        TrainConfig(recipe="fast").validate()


@pytest.mark.parametrize("requested, device, size, bf16, expected", [
    ("auto", "cpu", 96, True, "mixed_bfloat16"),
    ("auto", "cpu", 64, True, "none"),       # per-op costs dominate below 96 px: float32 measured faster
    ("auto", "cpu", 128, False, "none"),     # no bf16 hardware: oneDNN would emulate it
    ("auto", "gpu", 128, True, "none"),
    ("mixed_float16", "gpu", 64, False, "mixed_float16"),  # a given policy always wins
    ("none", "cpu", 128, True, "none"),
])
def test_auto_precision_follows_the_hardware_and_the_size(requested, device, size, bf16, expected):
    policy, reason = choose_precision(requested, device, size, bf16_hardware=bf16)
    assert policy == expected and reason


def test_resolve_fills_the_precision_once(monkeypatch):
    monkeypatch.setattr(cpu_kernels, "bf16_hardware", lambda flags=None: True)
    assert TrainConfig().mixed_precision == "auto"
    assert TrainConfig(max_size=128).resolve().mixed_precision == "mixed_bfloat16"
    assert TrainConfig(max_size=64).resolve().mixed_precision == "none"
    assert TrainConfig(max_size=128).resolve(device="gpu").mixed_precision == "none"
    resolved = TrainConfig(max_size=128, mixed_precision="none").resolve()
    assert resolved.mixed_precision == "none" and resolved.resolve() == resolved
    monkeypatch.setattr(cpu_kernels, "bf16_hardware", lambda flags=None: False)
    assert TrainConfig(max_size=128).resolve().mixed_precision == "none"


def test_config_module_examples_run():
    import doctest

    from effv2_keras.train import config as config_module
    result = doctest.testmod(config_module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 10 and result.failed == 0
