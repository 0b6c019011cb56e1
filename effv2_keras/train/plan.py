"""Training to a wall-clock budget: stages, sizes and steps from measured speeds.

``effv2 train --time_budget 10m`` measures how long one training step takes at each stage's
image size (and one evaluation, one checkpoint and the run's final evaluation and save), then
``plan_budget`` -- a pure function of those numbers, the budget and the data's size -- decides
how many epochs each stage gets and how long an epoch is, so that the whole run, evaluations
and checkpoints included, ends when the budget does. The learning rate then decays to zero at
the plan's last step (``--lr_decay linear`` by default under a budget; Li, Yumer & Ramanan,
"Budgeted Training", ICLR 2020).

How the time is shared: every stage gets the same share of the training time (``shares``
changes that), so a small early stage, being faster per step, gets more steps than the last,
largest one. An *epoch* of a budget run is its evaluation period: about one pass over the
training data, stretched or shortened (``steps_per_epoch``) so that whole epochs fill the
budget, and never so short that evaluating and checkpointing take more than
``MAX_EVAL_FRACTION`` of the budget.

    >>> plan = plan_budget(600, step_seconds={64: 0.1, 128: 0.3}, sizes=(64, 128),
    ...                    data_steps=50, eval_seconds=2.0, checkpoint_seconds=0.5, final_seconds=10)
    >>> [(s.image_size, s.epochs) for s in plan.stages], plan.steps_per_epoch
    ([(64, 18), (128, 6)], 147)
    >>> round(plan.predicted_seconds), plan.total_steps, [round(s.seconds) for s in plan.stages]
    (599, 3528, [265, 265])
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Dict, Optional, Sequence, Tuple

# Evaluating and checkpointing once an epoch may take at most this share of the budget; past
# it, epochs get longer (fewer evaluations) instead.
MAX_EVAL_FRACTION = 0.1
_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*$")


class BudgetError(ValueError):
    """The budget cannot hold the run (one line naming the flag)."""


def parse_duration(value) -> float:
    """Seconds in ``value``: a number of seconds, or ``1h30m``, ``10m``, ``90s``, ``2m30s``.

    >>> parse_duration("10m"), parse_duration("1h30m"), parse_duration("45"), parse_duration(90)
    (600.0, 5400.0, 45.0, 90.0)
    """
    if isinstance(value, bool):
        raise BudgetError(f"--time_budget: expected a duration such as 10m, 1h30m or 600, got {value!r}.")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match or not any(match.groups()):
            raise BudgetError(f"--time_budget: expected a duration such as 10m, 1h30m or 600, got {value!r}.")
        hours, minutes, secs = (float(g) if g else 0.0 for g in match.groups())
        seconds = hours * 3600 + minutes * 60 + secs
    if not math.isfinite(seconds) or seconds <= 0:
        raise BudgetError(f"--time_budget: must be a positive duration, got {value!r}.")
    return seconds


@dataclasses.dataclass(frozen=True)
class StagePlan:
    """One stage of a budget plan: its size, whole epochs, and predicted training seconds."""

    image_size: int
    epochs: int
    steps: int
    seconds: float


@dataclasses.dataclass(frozen=True)
class BudgetPlan:
    """What ``plan_budget`` decided, and the measurements it decided from (``plan.json``)."""

    budget_seconds: float
    stages: Tuple[StagePlan, ...]
    steps_per_epoch: int
    step_seconds: Dict[int, float]
    eval_seconds: float
    checkpoint_seconds: float
    final_seconds: float
    spent_seconds: float
    predicted_seconds: float
    # Trained seconds per step over the measured ones, when the first epoch corrected the plan
    # (``corrected``); 1.0 for a plan as measured.
    slowdown: float = 1.0
    # The epochs the recipe's epoch-dependent values (regularization scale, warm-up) were resolved
    # with: the measured plan's, kept through a correction (None: ``epochs``).
    recipe_epochs: Optional[int] = None

    @property
    def epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    @property
    def sizes(self) -> Tuple[int, ...]:
        return tuple(stage.image_size for stage in self.stages)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["step_seconds"] = {str(k): v for k, v in self.step_seconds.items()}
        d["epochs"], d["total_steps"] = self.epochs, self.total_steps
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "BudgetPlan":
        d = dict(d)
        d.pop("epochs", None), d.pop("total_steps", None)
        d["stages"] = tuple(StagePlan(**stage) for stage in d["stages"])
        d["step_seconds"] = {int(k): float(v) for k, v in d["step_seconds"].items()}
        return cls(**d)

    def table(self) -> str:
        """The lines printed before training."""
        lines = [f"time budget {clock(self.budget_seconds)}: {len(self.stages)} stage(s), {self.epochs} epochs x "
                 f"{self.steps_per_epoch} steps = {self.total_steps} steps; predicted {clock(self.predicted_seconds)} "
                 f"(measuring {clock(self.spent_seconds)}, training + {self.epochs} evaluations and checkpoints, "
                 f"final evaluation and save {clock(self.final_seconds)})"]
        for i, stage in enumerate(self.stages):
            lines.append(f"  stage {i + 1}: {stage.image_size} px, {stage.epochs} epochs, {stage.steps} steps at "
                         f"{self.step_seconds[stage.image_size]:.3f} s/step = {clock(stage.seconds)}")
        return "\n".join(lines)


def plan_budget(budget_seconds: float, step_seconds: Dict[int, float], sizes: Sequence[int], data_steps: int,
                eval_seconds: float, checkpoint_seconds: float, final_seconds: float, spent_seconds: float = 0.0,
                shares: Optional[Sequence[float]] = None) -> BudgetPlan:
    """The plan that fills ``budget_seconds`` (see the module docstring).

    Args:
        budget_seconds: the whole run's wall-clock budget.
        step_seconds: seconds per training step at each image size (measured).
        sizes: the stages' image sizes, in order (the last is the largest).
        data_steps: steps in one pass over the training data.
        eval_seconds, checkpoint_seconds: cost of one epoch-end evaluation and checkpoint.
        final_seconds: the run's end: final validation and test evaluation, model.keras.
        spent_seconds: already used of the budget (the measuring itself).
        shares: the fraction of training time each stage gets (default: equal).
    """
    sizes = tuple(int(s) for s in sizes)
    if not sizes:
        raise BudgetError("plan_budget: needs at least one stage size.")
    missing = [s for s in sizes if s not in step_seconds]
    if missing:
        raise BudgetError(f"plan_budget: no measured step time at {missing} px.")
    shares = tuple(float(s) for s in (shares or [1.0] * len(sizes)))
    if len(shares) != len(sizes) or min(shares) <= 0:
        raise BudgetError(f"plan_budget: shares must be {len(sizes)} positive numbers, got {shares}.")
    shares = tuple(s / sum(shares) for s in shares)
    per_epoch = eval_seconds + checkpoint_seconds
    available = budget_seconds - spent_seconds - final_seconds
    times = [step_seconds[s] for s in sizes]
    least = spent_seconds + final_seconds + len(sizes) * (per_epoch + min(times))
    if available <= 0 or least > budget_seconds:
        raise BudgetError(
            f"--time_budget: {clock(budget_seconds)} cannot hold this run: measuring took "
            f"{clock(spent_seconds)} and the final evaluation and save take {clock(final_seconds)}, and each of "
            f"the {len(sizes)} stage(s) needs an epoch; give at least {clock(least * 1.5)} or a smaller model.")
    # Epochs from the data passes each stage's share of the time buys, then whole epochs of a
    # common length that fill the time left after evaluations; repeated because the number of
    # evaluations depends on the number of epochs.
    train_seconds = available
    epochs = [1] * len(sizes)
    for _ in range(4):
        passes = [share * train_seconds / (t * data_steps) for share, t in zip(shares, times)]
        epochs = [max(1, round(p)) for p in passes]
        most = max(len(sizes), int(MAX_EVAL_FRACTION * budget_seconds / per_epoch) if per_epoch > 0 else 10 ** 9)
        if sum(epochs) > most:  # too many evaluations: fewer, longer epochs, in the same proportions
            scale = most / sum(passes)
            epochs = [max(1, math.floor(p * scale)) for p in passes]
        train_seconds = available - sum(epochs) * per_epoch
    step_cost = sum(e * t for e, t in zip(epochs, times))  # seconds of one step in every epoch
    steps_per_epoch = max(1, math.floor(train_seconds / step_cost))
    stages = tuple(StagePlan(image_size=s, epochs=e, steps=e * steps_per_epoch, seconds=e * steps_per_epoch * t)
                   for s, e, t in zip(sizes, epochs, times))
    predicted = (spent_seconds + final_seconds + sum(epochs) * per_epoch
                 + sum(stage.seconds for stage in stages))
    if predicted > budget_seconds:
        raise BudgetError(
            f"--time_budget: {clock(budget_seconds)} cannot hold this run: one step of every epoch, the "
            f"{sum(epochs)} evaluations and the start take {clock(predicted)}; give more time or a smaller model.")
    return BudgetPlan(budget_seconds=float(budget_seconds), stages=stages, steps_per_epoch=steps_per_epoch,
                      step_seconds={int(k): float(v) for k, v in step_seconds.items()},
                      eval_seconds=float(eval_seconds), checkpoint_seconds=float(checkpoint_seconds),
                      final_seconds=float(final_seconds), spent_seconds=float(spent_seconds),
                      predicted_seconds=float(predicted))


def corrected(plan: BudgetPlan, epochs_done: int, elapsed_seconds: float, slowdown: float) -> BudgetPlan:
    """The plan with its last stage's epochs recounted from what training showed (``slowdown``
    against the times measured before training, also when ``plan`` was corrected before).

    The measuring times a few steps; a whole epoch also waits on the input pipeline, which shares
    the CPU with the step (measured: 0.255 s/step timed against 0.31 trained, bf16 at 96 px on 2
    cores, a 17% overrun). After every epoch the trainer knows ``slowdown`` (trained seconds per
    step over the measured ones, latest epochs) and calls this with ``epochs_done`` epochs trained and
    ``elapsed_seconds`` of the budget gone (the last epoch's evaluation still to come): every step
    time is scaled by ``slowdown`` and the last stage gets the whole epochs that end by the
    budget (at least one, never fewer than it has begun). The epoch length stays, so the steps
    and checkpoints done so far keep their meaning.

    >>> plan = plan_budget(300, {96: 0.25}, (96,), data_steps=46, eval_seconds=1.0,
    ...                    checkpoint_seconds=0.2, final_seconds=7.0, spent_seconds=36.0)
    >>> plan.epochs, plan.steps_per_epoch
    (20, 46)
    >>> corrected(plan, 1, 36.0 + 46 * 0.25, slowdown=1.0).epochs  # trained as measured: unchanged
    20
    >>> slow = corrected(plan, 1, 36.0 + 14.3, slowdown=14.3 / (46 * 0.25))  # 1.24x slower
    >>> slow.epochs, round(slow.predicted_seconds), round(slow.slowdown, 2)
    (16, 291, 1.24)
    """
    per_epoch = plan.eval_seconds + plan.checkpoint_seconds
    # From the measured times (a corrected plan's are already scaled by its own slowdown).
    times = {size: t / plan.slowdown * slowdown for size, t in plan.step_seconds.items()}
    fixed = plan.stages[:-1]
    last = plan.stages[-1]
    before_last = sum(stage.epochs for stage in fixed)
    future_fixed = 0.0  # epochs of earlier stages still to train
    epoch = 0
    for stage in fixed:
        for _ in range(stage.epochs):
            if epoch >= epochs_done:
                future_fixed += plan.steps_per_epoch * times[stage.image_size] + per_epoch
            epoch += 1
    left = plan.budget_seconds - elapsed_seconds - per_epoch - plan.final_seconds - future_fixed
    last_epoch = plan.steps_per_epoch * times[last.image_size] + per_epoch
    done_in_last = max(0, epochs_done - before_last)
    more = max(0, math.floor(left / last_epoch))
    epochs = max(1, done_in_last, done_in_last + more if done_in_last else more)
    stages = fixed + (dataclasses.replace(last, epochs=epochs, steps=epochs * plan.steps_per_epoch,
                                          seconds=epochs * plan.steps_per_epoch * times[last.image_size]),)
    predicted = (elapsed_seconds + per_epoch + future_fixed + (epochs - done_in_last) * last_epoch
                 + plan.final_seconds)
    return dataclasses.replace(plan, stages=stages, step_seconds=times, slowdown=float(slowdown),
                               predicted_seconds=float(predicted), recipe_epochs=plan.recipe_epochs or plan.epochs)


def clock(seconds: float) -> str:
    """``4m58s``, ``30s``."""
    seconds = int(round(seconds))
    minutes, secs = divmod(seconds, 60)
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"
