"""``--time_budget``: measure the run's real costs, then plan it (``train.plan``).

The measuring uses a throwaway ``Trainer`` built from the same config (same model, optimizer,
fast step, data pipeline and evaluation), so what it times is what the run will do: a few
training steps at each stage's size after a warm-up, two epoch ends (evaluation, metrics,
best-weights file, checkpoint; the first one traces), and the final save. The time spent
measuring, and the real trainer's own build and first trace, count against the budget.

A resumed run reads its ``plan.json`` back and measures nothing: it continues the same plan.
"""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import tempfile
import time
from typing import Dict, Sequence

from effv2_keras import run_dir
from effv2_keras import schedule as schedule_lib
from effv2_keras.train import plan as plan_lib

# Timed steps per size, after WARMUP_STEPS untimed ones (the first traces or compiles the new
# shape; the next fill the input pipeline). With 5 timed steps and their median, two 5-minute
# runs on the same machine measured 0.30 and 0.38 s/step for the same 0.30 s/step training
# (signdigits100, 96 px): the second plan left 18% of its budget unused. Ten steps, timed as one
# span (stalls of the input pipeline included, as in training), smooth that out.
WARMUP_STEPS = 3
TIMED_STEPS = 10
NEVER = 2 ** 31 - 1


def plan_for(config, splits, started: float) -> plan_lib.BudgetPlan:
    """The plan of a ``--time_budget`` run: ``plan.json`` of the run being resumed, else measured
    now. ``started``: ``time.time()`` when the run began (the budget's clock)."""
    path = os.path.join(config.out, run_dir.RUN_FILES["plan"])
    if config.resume and os.path.exists(path):
        return read(path)
    provisional = config.replace(time_budget=None, resume=False).resolve(splits)
    sizes = [stage.image_size for stage in schedule_lib.from_config(provisional).stages]
    with tempfile.TemporaryDirectory(prefix="effv2_budget_") as scratch:
        # No checkpoint inside the timed epoch ends: it is timed on its own.
        costs = measure(provisional.replace(out=scratch, verbose=0, checkpoint_every=NEVER), splits, sizes)
    spent = time.time() - started + costs["startup_seconds"]
    return plan_lib.plan_budget(
        config.budget_seconds(), costs["step_seconds"], sizes,
        data_steps=max(1, splits.train.num_examples // config.batch_size),
        eval_seconds=costs["epoch_end_seconds"], checkpoint_seconds=costs["checkpoint_seconds"],
        final_seconds=costs["final_seconds"], spent_seconds=spent)


def measure(config, splits, sizes: Sequence[int]) -> Dict[str, object]:
    """Seconds per training step at each size, per epoch end, for the final evaluation and save,
    and the start-up a trainer pays before its first step (build, first trace, first evaluation)."""
    from effv2_keras.train.trainer import Trainer  # the trainer imports this module

    began = time.perf_counter()
    probe = Trainer(config, splits)
    built = time.perf_counter() - began
    stage = probe.schedule.stages[-1]
    step_seconds, tracing = {}, 0.0
    for size in sorted(set(sizes), reverse=True):
        first, per_step = probe.time_steps(dataclasses.replace(stage, image_size=size),
                                           WARMUP_STEPS, TIMED_STEPS)
        step_seconds[size] = per_step
        tracing += max(0.0, first - per_step)  # a new size may trace or compile again (XLA, --nofast_step)
    cold_end, warm_end, checkpoint, final = probe.time_epoch_ends_and_final()
    del probe
    gc.collect()  # the probe's model and optimizer, before the real run builds its own
    return {"step_seconds": step_seconds, "epoch_end_seconds": warm_end, "checkpoint_seconds": checkpoint,
            "final_seconds": final, "startup_seconds": built + tracing + (cold_end - warm_end)}


def read(path: str) -> plan_lib.BudgetPlan:
    with open(path) as f:
        return plan_lib.BudgetPlan.from_dict(json.load(f))
