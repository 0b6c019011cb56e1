"""The time-budget planner (a pure function): it fills the budget, ends at the largest size,
keeps evaluation overhead bounded, and refuses a budget that cannot hold the run."""

import json

import pytest

from effv2_keras.train import plan as plan_lib

CASES = [
    # budget, step seconds by size, sizes, steps per data pass, eval, checkpoint, final, spent
    (600, {64: 0.1, 96: 0.18, 128: 0.3}, (64, 96, 128), 93, 4.0, 0.6, 12.0, 25.0),
    (600, {128: 0.9}, (128,), 93, 4.0, 0.6, 12.0, 25.0),
    (300, {64: 0.35, 96: 0.7}, (64, 96), 50, 3.0, 0.6, 8.0, 20.0),
    (3600, {128: 0.25, 192: 0.55}, (128, 192), 1000, 30.0, 1.0, 60.0, 40.0),
    (30, {48: 0.05}, (48,), 25, 0.3, 0.1, 3.0, 8.0),
]


@pytest.mark.parametrize("budget, speeds, sizes, data_steps, ev, ck, final, spent", CASES)
def test_the_plan_fills_the_budget(budget, speeds, sizes, data_steps, ev, ck, final, spent):
    plan = plan_lib.plan_budget(budget, speeds, sizes, data_steps, ev, ck, final, spent)
    # Predicted time: within 5% of the budget, and never over it (whole steps are rounded down).
    assert budget * 0.95 <= plan.predicted_seconds <= budget
    # Recomputed independently from the plan's own numbers.
    recomputed = spent + final + plan.epochs * (ev + ck) + sum(
        s.epochs * plan.steps_per_epoch * speeds[s.image_size] for s in plan.stages)
    assert plan.predicted_seconds == pytest.approx(recomputed)
    assert plan.sizes == tuple(sizes) and plan.sizes[-1] == max(sizes)
    assert all(s.epochs >= 1 and s.steps == s.epochs * plan.steps_per_epoch for s in plan.stages)
    assert plan.total_steps == sum(s.steps for s in plan.stages)
    # Evaluating and checkpointing stay a bounded share of the budget.
    assert plan.epochs * (ev + ck) <= plan_lib.MAX_EVAL_FRACTION * budget + len(sizes) * (ev + ck)


def test_equal_time_shares_give_small_stages_more_steps():
    plan = plan_lib.plan_budget(600, {64: 0.1, 128: 0.4}, (64, 128), 50, 1.0, 0.2, 10.0)
    first, last = plan.stages
    assert first.steps > 3 * last.steps  # 4x faster per step, the same share of time
    assert first.seconds == pytest.approx(last.seconds, rel=0.25)  # whole epochs round the shares
    weighted = plan_lib.plan_budget(600, {64: 0.1, 128: 0.4}, (64, 128), 50, 1.0, 0.2, 10.0, shares=(1, 3))
    assert weighted.stages[1].seconds > 2 * weighted.stages[0].seconds


def test_round_trip_through_json():
    plan = plan_lib.plan_budget(*CASES[0])
    assert plan_lib.BudgetPlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    assert "stage 3: 128 px" in plan.table()


def test_a_budget_too_small_names_the_flag():
    with pytest.raises(plan_lib.BudgetError, match=r"^--time_budget: 20s cannot hold this run"):
        plan_lib.plan_budget(20, {128: 0.9}, (128,), 93, 4.0, 0.6, 12.0, spent_seconds=10.0)


@pytest.mark.parametrize("text, seconds", [("10m", 600), ("1h30m", 5400), ("90s", 90), ("2m30s", 150),
                                           ("45", 45), (12.5, 12.5), ("1.5h", 5400)])
def test_durations(text, seconds):
    assert plan_lib.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten minutes", "-5", "0", "5x", True])
def test_bad_durations_name_the_flag(text):
    with pytest.raises(plan_lib.BudgetError, match="^--time_budget: "):
        plan_lib.parse_duration(text)


def test_a_plan_that_would_overrun_is_refused():
    # Each stage needs an epoch of at least one step: here that alone (1 s + 34 s) outlasts
    # what the start, the two evaluations and the end leave of the minute.
    with pytest.raises(plan_lib.BudgetError, match="^--time_budget: 1m00s cannot hold this run: one step"):
        plan_lib.plan_budget(60, {64: 1.0, 128: 34.0}, (64, 128), 100, 1.0, 0.5, 5.0, spent_seconds=20.0)


def _elapsed_after_first_epoch(plan, slowdown):
    first = plan.stages[0].image_size
    return plan.spent_seconds + plan.steps_per_epoch * plan.step_seconds[first] * slowdown


@pytest.mark.parametrize("slowdown", [0.8, 1.0, 1.25, 1.6])
def test_the_first_epoch_corrects_the_last_stage_to_end_by_the_budget(slowdown):
    plan = plan_lib.plan_budget(600, {64: 0.1, 128: 0.3}, (64, 128), 50, 2.0, 0.5, 10.0, spent_seconds=40.0)
    fixed = plan_lib.corrected(plan, 1, _elapsed_after_first_epoch(plan, slowdown), slowdown)
    assert fixed.stages[0] == plan.stages[0] and fixed.steps_per_epoch == plan.steps_per_epoch
    assert fixed.slowdown == slowdown and fixed.recipe_epochs == plan.epochs
    assert fixed.step_seconds == {64: 0.1 * slowdown, 128: 0.3 * slowdown}
    # Whole epochs of the last stage: the run ends by the budget, less than one such epoch early.
    last_epoch = plan.steps_per_epoch * 0.3 * slowdown + 2.5
    assert 600 - last_epoch < fixed.predicted_seconds <= 600
    if slowdown == 1.0:
        assert fixed.stages == plan.stages
    else:
        assert (fixed.epochs < plan.epochs) == (slowdown > 1.0)
    assert plan_lib.BudgetPlan.from_dict(json.loads(json.dumps(fixed.to_dict()))) == fixed


def test_a_correction_keeps_at_least_one_epoch_and_the_epochs_begun():
    plan = plan_lib.plan_budget(300, {96: 0.25}, (96,), 46, 1.0, 0.2, 7.0, spent_seconds=36.0)
    hopeless = plan_lib.corrected(plan, 1, 299.0, 3.0)
    assert hopeless.epochs == 1 and hopeless.predicted_seconds > 300  # said, not hidden
    assert plan_lib.corrected(plan, 3, 299.0, 3.0).epochs == 3


def test_correcting_a_corrected_plan_scales_the_measured_times_not_the_corrected_ones():
    plan = plan_lib.plan_budget(300, {96: 0.25}, (96,), 46, 1.0, 0.2, 7.0, spent_seconds=36.0)
    once = plan_lib.corrected(plan, 1, 50.0, 1.25)
    twice = plan_lib.corrected(once, 2, 65.0, 1.25)
    assert twice.step_seconds == once.step_seconds == {96: 0.25 * 1.25}
    assert twice.recipe_epochs == once.recipe_epochs == plan.epochs
    back = plan_lib.corrected(once, 2, 36.0 + 2 * (46 * 0.25 + 1.2), 1.0)  # the machine sped up again
    assert back.step_seconds == plan.step_seconds and back.epochs > once.epochs
