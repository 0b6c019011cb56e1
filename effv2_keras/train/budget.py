"""``--time_budget``: measure the run's real costs, then plan it (``train.plan``).

The trainer measures on itself (``Trainer._measure_and_plan``), built from a provisional config
(the same model, optimizer, fast step, data pipeline and evaluation as the planned run; only
the step counts differ, and the learning-rate schedule reads those from variables): a few
training steps at each stage's size after a warm-up, two epoch ends (evaluation, metrics,
best-weights file; the first one traces), a checkpoint, and the run's end (the evaluation-size
search and model.keras). Then it puts every variable back and trains with what it traced, so
the measuring is paid once and the run pays no second build or trace. Everything since the
trainer was constructed counts against the budget.

A resumed run reads its ``plan.json`` back and measures nothing: it continues the same plan.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Dict, Optional, Sequence

from effv2_keras import run_dir
from effv2_keras.train import plan as plan_lib

# Timed steps per size, after WARMUP_STEPS untimed ones (the first traces or compiles the new
# shape; the next fill the input pipeline). With 5 timed steps and their median, two 5-minute
# runs on the same machine measured 0.30 and 0.38 s/step for the same 0.30 s/step training
# (signdigits100, 96 px): the second plan left 18% of its budget unused. Ten steps, timed as one
# span (stalls of the input pipeline included, as in training), smooth that out.
WARMUP_STEPS = 3
TIMED_STEPS = 10
NEVER = 2 ** 31 - 1


def saved_plan(config) -> Optional[plan_lib.BudgetPlan]:
    """The ``plan.json`` of the run being resumed (None when not resuming or not yet planned)."""
    path = os.path.join(config.out, run_dir.RUN_FILES["plan"])
    if config.resume and os.path.exists(path):
        return read(path)
    return None


def provisional_config(config, splits, device: str):
    """The config the measuring builds and runs: the planned run's, without a budget (so with
    --epochs' count), with its learning-rate schedule, silent, and no checkpoint inside the timed
    epoch ends (a checkpoint is timed on its own)."""
    return config.with_budget_schedule().replace(time_budget=None, resume=False, checkpoint_every=NEVER,
                                                 verbose=0).resolve(splits, device=device)


def measure(trainer, sizes: Sequence[int]) -> Dict[str, object]:
    """Seconds per training step at each size, of the first step's tracing beyond a step, per
    epoch end (and the first one's extra, its trace), per checkpoint, and of the run's end, timed
    on ``trainer`` (its state is the caller's to put back)."""
    stage = trainer.schedule.stages[-1]
    step_seconds, tracing = {}, 0.0
    for size in sorted(set(sizes), reverse=True):
        first, per_step = trainer.time_steps(dataclasses.replace(stage, image_size=size),
                                             WARMUP_STEPS, TIMED_STEPS)
        step_seconds[size] = per_step
        tracing += max(0.0, first - per_step)  # a new size may trace or compile again (XLA, --nofast_step)
    cold_end, warm_end, checkpoint, final = trainer.time_epoch_ends_and_final()
    return {"sizes": tuple(sizes), "step_seconds": step_seconds, "tracing_seconds": tracing,
            "epoch_end_seconds": warm_end, "first_epoch_end_extra_seconds": max(0.0, cold_end - warm_end),
            "checkpoint_seconds": checkpoint, "final_seconds": final}


def make_plan(config, splits, costs: Dict[str, object], spent_seconds: float) -> plan_lib.BudgetPlan:
    """The plan for ``config``'s budget from measured ``costs``, ``spent_seconds`` already used."""
    return plan_lib.plan_budget(
        config.budget_seconds(), costs["step_seconds"], costs["sizes"],
        data_steps=max(1, splits.train.num_examples // config.batch_size),
        eval_seconds=costs["epoch_end_seconds"], checkpoint_seconds=costs["checkpoint_seconds"],
        final_seconds=costs["final_seconds"], spent_seconds=spent_seconds)


def read(path: str) -> plan_lib.BudgetPlan:
    with open(path) as f:
        return plan_lib.BudgetPlan.from_dict(json.load(f))
