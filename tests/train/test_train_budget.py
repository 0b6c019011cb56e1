"""--time_budget end to end: a real budgeted run on digits fills its budget and ends with the
learning rate at zero; an interrupted budgeted run resumes the same plan without measuring."""

import dataclasses
import json
import time

import keras
import pytest

from effv2_keras.train import ConfigError, TrainConfig, Trainer, budget, train
from effv2_keras.train import plan as plan_lib
from train_helpers import tiny_config

BUDGET = 30.0


@pytest.fixture(scope="module")
def budget_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("budget")
    config = tiny_config(out, min_size=None, max_size=None, time_budget=f"{BUDGET:g}s", batch_size=32)
    began = time.time()
    trainer = Trainer(config)
    result = trainer.fit()
    return trainer, result, time.time() - began, out


def test_a_budgeted_run_fills_its_budget_and_ends_at_lr_zero(budget_run):
    trainer, result, elapsed, out = budget_run
    plan = trainer.plan
    # The plan, corrected at every epoch end from the trained speed, fills the budget to within one
    # of its last stage's epochs (whole epochs). It passes the budget only when the machine slowed so
    # much that the epochs already begun outlast it (a correction never drops them): 10% allowed.
    last_epoch = (plan.steps_per_epoch * plan.step_seconds[plan.sizes[-1]] + plan.eval_seconds
                  + plan.checkpoint_seconds)
    assert BUDGET - last_epoch < plan.predicted_seconds <= BUDGET * 1.1
    # ... and the run, measured from the Trainer's construction (measuring, build, training,
    # evaluations, checkpoints, final evaluation and save), ends near it. Generous bounds: step
    # times on this shared 2-core machine move by a third between the probe and the run.
    assert BUDGET * 0.5 <= elapsed <= BUDGET * 1.5, elapsed
    assert result.global_step == plan.total_steps == trainer.total_steps
    assert trainer.config.lr_decay == "linear" and trainer.config.epochs == plan.epochs
    assert [s.epochs for s in trainer.schedule.stages] == [s.epochs for s in plan.stages]
    # A slow machine may plan a single epoch, whose row shows the last step's rate: check the
    # first step's rate on the schedule itself.
    assert result.rows[-1]["lr"] == 0.0 and trainer.lr_schedule.value(0) > 0
    assert trainer.lr_schedule.value(plan.total_steps - 1) == 0.0
    # Measured on itself: the run trained with the one trace the measuring made, from step 0.
    assert sum(trainer.trace_counts.values()) == 1
    assert [row["epoch"] for row in result.rows] == list(range(1, plan.epochs + 1))
    saved = json.loads((out / "plan.json").read_text())
    assert plan_lib.BudgetPlan.from_dict(saved) == plan
    assert json.loads((out / "run.json").read_text())


def test_the_measuring_puts_every_variable_back(tmp_path):
    import numpy as np

    from effv2_keras.train import optim

    measured = Trainer(tiny_config(tmp_path / "budget", min_size=None, max_size=None, time_budget="60s"))
    fresh = Trainer(tiny_config(tmp_path / "epochs", min_size=None, max_size=None))
    # The same seeded initial weights, BN statistics and random-seed states as a run that measured nothing.
    for a, b in zip(measured.model.variables, fresh.model.variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert all(not np.any(v.numpy()) for v in optim.inner_optimizer(measured.optimizer).variables
               if "iteration" in v.path or "momentum" in v.path or "velocity" in v.path)
    assert measured.global_step == 0 and measured.rows == [] and measured.best is None
    assert measured.lr_schedule.total_steps == measured.plan.total_steps == measured.total_steps
    assert not list((tmp_path / "budget").glob("checkpoints/*"))  # the measuring wrote elsewhere


def test_a_resumed_budget_run_keeps_its_plan_and_measures_nothing(budget_run, monkeypatch):
    trainer, _, _, out = budget_run

    def no_measuring(*args, **kwargs):
        raise AssertionError("a resumed run must not measure again")

    monkeypatch.setattr(budget, "measure", no_measuring)
    again = Trainer(trainer.config.replace(resume=True))
    assert again.plan == trainer.plan and again.config == trainer.config.replace(resume=True)
    assert again.schedule == trainer.schedule


class _StopAfterSteps(keras.callbacks.Callback):
    def __init__(self, steps):
        super().__init__()
        self.steps, self.seen = steps, 0

    def on_train_batch_end(self, batch, logs=None):
        self.seen += 1
        if self.seen == self.steps:
            self.model.stop_training = True


def test_an_interrupted_budget_run_continues_the_same_plan_to_lr_zero(tmp_path):
    # Stopped mid-plan by steps, not epochs: a loaded machine may plan a single epoch. A checkpoint
    # every 4 steps gives the stopped run something to continue from.
    config = tiny_config(tmp_path, min_size=None, max_size=None, time_budget="35s", batch_size=32,
                         checkpoint_every=4)
    first = Trainer(config, callbacks=[_StopAfterSteps(6)])
    stopped = first.fit()
    assert stopped.stopped_early and stopped.global_step < first.plan.total_steps
    counter = _StopAfterSteps(10 ** 6)
    resumed = Trainer(config.replace(resume=True), callbacks=[counter])
    assert resumed.plan == first.plan
    result = resumed.fit()
    # It continued from the step-4 checkpoint to the last step of its plan (which the epochs' trained
    # speed may have corrected since).
    final = plan_lib.BudgetPlan.from_dict(json.loads((tmp_path / "plan.json").read_text()))
    assert final == resumed.plan and final.steps_per_epoch == first.plan.steps_per_epoch
    assert result.global_step == final.total_steps and counter.seen == final.total_steps - 4
    assert result.rows[-1]["lr"] == 0.0 and len(result.rows) == final.epochs


def test_an_epoch_that_trains_faster_than_measured_lengthens_the_plan(tmp_path, monkeypatch):
    corrected = plan_lib.corrected
    calls = []

    def one_more_epoch(plan, epochs_done, elapsed_seconds, slowdown):
        calls.append((epochs_done, slowdown))
        new = corrected(plan, epochs_done, elapsed_seconds, slowdown)
        if len(calls) > 1:
            return new
        last = plan.stages[-1]  # the first correction: as if the machine had freed up
        extra = dataclasses.replace(last, epochs=last.epochs + 1, steps=last.steps + plan.steps_per_epoch)
        return dataclasses.replace(new, stages=plan.stages[:-1] + (extra,))

    monkeypatch.setattr(plan_lib, "corrected", one_more_epoch)
    trainer = Trainer(tiny_config(tmp_path, min_size=None, max_size=None, time_budget="40s", batch_size=32))
    measured = trainer.plan
    result = trainer.fit()
    assert calls and calls[0][0] == 1 and all(s > 0 for _, s in calls)
    # Every epoch end corrected the plan from the epochs' trained speed, and the run followed it.
    saved = plan_lib.BudgetPlan.from_dict(json.loads((tmp_path / "plan.json").read_text()))
    assert saved == trainer.plan and result.global_step == saved.total_steps == trainer.total_steps
    assert len(calls) == len(result.rows) and trainer.config.epochs == saved.epochs
    assert saved.recipe_epochs in (None, measured.epochs) and len(result.rows) == saved.epochs
    assert result.rows[-1]["lr"] == 0.0 and trainer.lr_schedule.value(saved.total_steps - 1) == 0.0
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == saved.epochs


def test_budget_errors_name_the_flag(tmp_path):
    with pytest.raises(ValueError, match="^--time_budget: expected a duration"):
        TrainConfig(time_budget="soon").validate()
    with pytest.raises(ConfigError, match="^--time_budget: 2s cannot hold this run"):
        train(tiny_config(tmp_path, time_budget="2s"))


def test_the_evaluation_size_is_chosen_on_validation_and_recorded(tmp_path):
    from effv2_keras import run_dir

    trainer = Trainer(tiny_config(tmp_path, epochs=1, steps_per_epoch=3))
    assert trainer.config.choose_eval_size and trainer.eval_sizes == (48,)  # digits are stored at 32 px
    assert trainer.eval_crops == (0.875, 1.0)
    trainer.eval_sizes = (40, 48, 56)  # as a folder of larger photos would give
    result = trainer.fit()
    final = json.loads((tmp_path / "metrics.json").read_text())["final"]
    scores, losses = final["val_top1_by_eval_size"], final["val_loss_by_eval_size"]
    assert sorted(scores) == sorted(losses) == sorted(f"{s}@{c:g}" for s in (40, 48, 56) for c in (0.875, 1.0))
    chosen = f"{result.eval_size}@{result.eval_crop_fraction:g}"
    # The lowest validation loss wins (ties: the smaller size), and its top-1 is the run's validation top-1.
    assert losses[chosen] == min(losses.values()) == result.val["loss"] and scores[chosen] == result.val["top1"]
    assert all(losses[f"{s}@{c:g}"] > losses[chosen] for s in (40, 48, 56) for c in (0.875, 1.0) if s < result.eval_size)
    manifest = run_dir.read(tmp_path)
    assert (manifest.eval_size, manifest.crop_fraction) == (result.eval_size, result.eval_crop_fraction)
    # The test split is scored once, with the chosen size and crop.
    again = trainer.evaluate(trainer.splits.test, image_size=result.eval_size, raw=True,
                             crop_fraction=result.eval_crop_fraction)
    assert result.test == pytest.approx(again)


def test_eval_size_choice_survives_resolving_twice_and_yields_to_a_given_size():
    assert TrainConfig().resolve().resolve().choose_eval_size is True
    assert TrainConfig(eval_size=64).resolve().choose_eval_size is False
    assert TrainConfig(eval_size=64, choose_eval_size=True).resolve().resolve().choose_eval_size is True


def test_a_budget_is_refused_where_workers_would_plan_apart():
    with pytest.raises(ValueError, match="^--time_budget: is planned by one process"):
        TrainConfig(time_budget="10m", strategy="multiworker").validate()


def test_the_recipe_is_the_one_the_plan_was_measured_with():
    plan = plan_lib.plan_budget(3600, {96: 0.01}, (96,), 10, 0.1, 0.0, 1.0)
    assert plan.epochs >= 100  # "auto" would pick the paper's recipe for this many epochs
    resolved = TrainConfig(time_budget="1h", max_size=96).resolve(plan=plan)
    assert resolved.recipe == "short" and resolved.epochs == plan.epochs and resolved.lr_decay == "linear"
    # A rate that decays to zero gets twice the short recipe's constant peak; a given --lr wins.
    assert resolved.lr == 2 * TrainConfig(max_size=96).resolve().lr
    assert TrainConfig(time_budget="1h", max_size=96, lr=0.001).resolve(plan=plan).lr == 0.001


def test_a_plan_with_other_step_counts_keeps_the_measured_build():
    """The plan nearly always sets another steps_per_epoch than the measuring's data pass (45 of 46
    on signdigits100): the learning-rate schedule takes new step counts in place, so the model and
    its traced step stay (a rebuild cost a second trace, 20 s of a 5-minute budget)."""
    from effv2_keras import schedule as schedule_lib
    from effv2_keras.train.trainer import build_key

    measured = TrainConfig(max_size=96, epochs=30, steps_per_epoch=46).resolve()
    planned = measured.replace(epochs=14, steps_per_epoch=45)
    key = build_key(measured, schedule_lib.from_config(measured))
    assert build_key(planned, schedule_lib.from_config(planned)) == key
    assert build_key(measured.replace(batch_size=measured.batch_size * 2), schedule_lib.from_config(measured)) != key
