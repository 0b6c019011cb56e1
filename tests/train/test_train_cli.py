"""`effv2 train`: flags -> TrainConfig -> train, in-process."""

import json
import runpy

import pytest
from absl import flags

from effv2_keras.cli import train as cli_train
from effv2_keras.train import NonFiniteLossError, TrainConfig

from train_helpers import REPO, tiny_flags


@pytest.fixture
def cli(absl_cli):
    """Runs `effv2 train FLAGS...` in-process; returns (exit code, stdout, stderr)."""
    return absl_cli(cli_train, "effv2 train")


def test_every_config_field_is_a_flag_with_the_same_default():
    for name in TrainConfig.field_names():
        assert cli_train.FLAGS[name].default == getattr(TrainConfig(), name), name


@pytest.mark.parametrize("argv, flag", [
    (["--lr=-1"], "--lr"),
    (["--optimizer=adam"], "--optimizer"),
    (["--mixed_precision=fp8"], "--mixed_precision"),
    (["--min_size=64", "--max_size=48"], "--min_size"),
    (["--stages=5", "--epochs=3"], "--stages"),
    (["--dropout_max=1.5"], "--dropout_max"),
    (["--model=efficientnetv2-q9"], "--model"),  # checked before any data is loaded
])
def test_bad_flag_values_are_one_line_errors(cli, argv, flag):
    code, out, err = cli(*argv)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"effv2 train: error: {flag}:"), err


def test_tools_train_is_the_same_tool(capsys, monkeypatch):
    cli_train.FLAGS.unparse_flags()
    monkeypatch.setattr("sys.argv", ["tools/train.py", "--batch_size=0"])
    with pytest.raises(SystemExit) as info:
        runpy.run_path(str(REPO / "tools" / "train.py"), run_name="__main__")
    cli_train.FLAGS.unparse_flags()
    assert info.value.code == 2
    assert capsys.readouterr().err.strip() == "effv2 train: error: --batch_size: must be >= 1, got 0."


def test_non_finite_loss_is_a_one_line_error_with_exit_code_1(cli, monkeypatch, tmp_path):
    def diverge(config):
        raise NonFiniteLossError("Non-finite training loss nan at stage 2/3 (48 px), epoch 5, "
                                 "global step 81; training stopped. Last good checkpoint: X")

    monkeypatch.setattr("effv2_keras.train.train", diverge)
    code, _, err = cli(f"--out={tmp_path}")
    assert code == 1 and err.count("\n") == 1 and "Last good checkpoint: X" in err


def test_existing_run_without_resume_is_refused(cli, tmp_path):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "ckpt-000000004.npz").write_bytes(b"")
    code, _, err = cli(*tiny_flags(tmp_path / "run", epochs=1, stages=1, steps_per_epoch=1))
    assert code == 2 and "--out:" in err and "--resume" in err and err.count("\n") == 1


def test_one_tiny_training_in_process(cli, tmp_path):
    out = tmp_path / "run"
    code, stdout, err = cli(*tiny_flags(out, epochs=1, stages=1, max_size=32, steps_per_epoch=2, verbose=1,
                                        optimizer="sgd", lr=0.05, mixed_precision="mixed_bfloat16"))
    assert code == 0, err
    config = TrainConfig.load(str(out / "config.json"))
    assert (config.optimizer, config.lr, config.steps_per_epoch, config.mixed_precision) == \
        ("sgd", 0.05, 2, "mixed_bfloat16")
    # not a terminal: no live bar, one line per epoch with the run's ETA
    assert "Stage 1/1: 32 px" in stdout and "epoch 1/1: loss" in stdout and "img/s - run ETA" in stdout
    assert "Done: 1 epochs, 2 steps" in stdout and "test       top-1" in stdout
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["final"]["global_step"] == 2 and metrics["final"]["test"]["examples"] == 359
    for name in ("model.keras", "schedule.json", "metrics.csv", "curves.png"):
        assert (out / name).is_file(), name
