"""The staged training loop: the paper's Algorithm 1, resumable and distributed.

``Trainer.fit`` reads top-down as Algorithm 1::

    for stage in schedule.stages:                  # S_i, RandAugment_i, Mixup_i, dropout_i
        begin_stage(stage)                         # new tf.data pipeline at S_i and the stage's
                                                   # augmentation strength; head dropout
                                                   # rate := dropout_i (a variable in the one
                                                   # traced step; --nofast_step: a new trace)
        for epoch in stage's epochs:
            train_epoch(stage, epoch)              # same optimizer state; lr(global step)
            end_epoch(stage, epoch)                # validate on EMA weights, metrics, best,
                                                   # checkpoint (every N steps and stage end)
    finish()                                       # selected weights -> model.keras (softmax),
                                                   # run.json, test

The config is resolved once, before anything is built (``TrainConfig.resolve`` with
the data's facts), and the schedule comes from it (``schedule.from_config``); the
trainer never changes either. What the run writes and prints lives in
``train.outputs``, how checkpoints are packed in ``train.checkpoint``, the traced train
and eval steps in ``train.step``, and how a ``--time_budget`` is measured and planned in
``train.budget`` and ``train.plan``.

The step trains ``train_model``: with ``--fast_step`` (the default) a twin over the
model's own layers and variables with faster training kernels (``train.fast``); the
model that is evaluated, checkpointed and saved is ``model``, stock Keras layers.

Callbacks are ``keras.callbacks.Callback`` objects, driven through
``keras.callbacks.CallbackList`` as ``model.fit`` drives them (``logs`` use Keras'
names too: ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``), and
``model.stop_training`` ends the run. ``Callback`` (a subclass) adds the stage hook
``on_stage_begin(stage)`` and ``on_train_batch_inputs(step, images, labels)``.

Distribution: ``config.batch_size`` is the GLOBAL batch. Each input pipeline reads
its own shard of the training examples (``Dataset.shard`` by pipeline id) and
batches ``batch_size / replicas`` per replica; gradients are summed across
replicas by the optimizer (each replica's loss is divided by the global batch),
BN moving statistics are averaged across replicas after every step so all
replicas hold identical weights, and evaluation pads the last batches with
zero-weight examples so every worker runs the same number of steps.

Resume: a checkpoint stores the global step; the run continues at
``epoch = step // steps_per_epoch`` in the stage that epoch belongs to, with the
optimizer (and so the learning rate), EMA and metrics restored, every variable
matched by its path. The data order after a mid-epoch resume comes from a freshly
seeded pipeline (seeded by the resume step) rather than replaying the skipped
batches; the number of steps, epochs and stages is exactly that of an
uninterrupted run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import tempfile
import time
import zlib
from typing import Dict, List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from effv2_keras import data, run_dir, schedule as schedule_lib
from effv2_keras.models import build_model, get_spec
from effv2_keras.train import checkpoint as ckpt_lib
from effv2_keras.train import budget, optim, outputs, recipes
from effv2_keras.train import plan as plan_lib
from effv2_keras.train.config import (EVAL_CROP_FRACTIONS, RESUME_KEYS, TrainConfig, choose_precision,
                                      eval_size_candidates)
from effv2_keras.train.ema import ExponentialMovingAverage
from effv2_keras.train.fast import make_twin, set_head_dropout
from effv2_keras.train.progressive import stage_dataset
from effv2_keras.train.step import Steps
from effv2_keras.train.strategy import accelerator, make_strategy, worker_info



class ConfigError(ValueError):
    """A bad option or an option that does not fit the data; the message names the flag."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss (or weights); the message says where and what to do."""


class Callback(keras.callbacks.Callback):
    """A Keras callback with two more hooks; ``self.trainer`` is the running ``Trainer``.

    Every ``keras.callbacks.Callback`` works with ``train(..., callbacks=[...])``; subclass
    this one for the stage hook or to see the batches the step trains on.

    Example:
        >>> class Stages(Callback):
        ...     def on_stage_begin(self, stage, logs=None):
        ...         print(f"stage {stage.index + 1}: {stage.image_size} px")
    """

    trainer: Optional["Trainer"] = None

    def on_stage_begin(self, stage, logs=None) -> None:
        """Called when a stage's pipeline and dropout are in place (``stage``: a ``schedule.Stage``)."""

    def on_train_batch_inputs(self, step: int, images, labels) -> None:
        """Called with each batch before the step trains on it (``step``: the global step)."""


@dataclasses.dataclass
class TrainResult:
    """What a finished run returns (also in ``metrics.json``)."""

    out: str
    config: TrainConfig
    schedule: schedule_lib.ProgressiveSchedule
    rows: List[dict]
    global_step: int
    selected_epoch: Optional[int]
    val: Optional[Dict[str, float]]
    test: Optional[Dict[str, float]]
    model_path: Optional[str]
    seconds: float
    stopped_early: bool = False
    eval_size: Optional[int] = None
    eval_crop_fraction: Optional[float] = None
    model: keras.Model = dataclasses.field(repr=False, default=None)


def train(config: TrainConfig, splits: Optional[data.DatasetSplits] = None,
          callbacks: Sequence[keras.callbacks.Callback] = ()) -> TrainResult:
    """Trains a model as ``config`` says and returns the result (see ``Trainer``).

    Example:
        >>> from effv2_keras.train import TrainConfig
        >>> config = TrainConfig(width=0.25, depth=0.25, epochs=2, out="runs/doc")
        >>> result = train(config, callbacks=[keras.callbacks.CSVLogger("log.csv")])  # doctest: +SKIP
    """
    return Trainer(config, splits=splits, callbacks=callbacks).fit()


def check_config(config: TrainConfig) -> TrainConfig:
    """``config.validate()`` with its error as a ``ConfigError`` (every flag that needs no data)."""
    try:
        return config.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def load_data(config: TrainConfig) -> data.DatasetSplits:
    """The data ``config`` names (``data.load``), its errors as ``ConfigError`` naming ``--data``."""
    try:
        return data.load(config.data, data_dir=config.data_dir, val_fraction=config.val_fraction,
                         seed=config.seed, cache_dir=config.cache_dir)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        raise ConfigError(f"--data: {e}") from e


class Trainer:
    """One progressive-learning run.

    Args:
        config: the run's options (validated, then resolved once with the data's facts).
        splits: data to train on; default ``data.load(config.data, ...)``.
        callbacks: ``keras.callbacks.Callback`` objects (``Callback`` for the stage hooks).

    With ``config.time_budget`` the run is first measured and planned (``train.budget``):
    ``plan`` is the ``train.plan.BudgetPlan`` the config and schedule were resolved with.

    Attributes of interest after construction: ``model``, ``optimizer``, ``ema``,
    ``schedule``, ``plan``, ``config`` (resolved), ``strategy``, ``steps_per_epoch``,
    ``total_steps``, ``trace_log`` (one entry per traced train step: stage,
    image and label shapes, the head Dropout layer's rate baked into the graph).
    """

    def __init__(self, config: TrainConfig, splits: Optional[data.DatasetSplits] = None,
                 callbacks: Sequence[keras.callbacks.Callback] = ()):
        self.started = time.time()  # a --time_budget counts from here
        check_config(config)
        self.strategy = make_strategy(config.strategy, config.tpu)
        self.distributed = config.strategy != "default"
        self.is_chief, self.worker_index, self.num_workers = worker_info(self.strategy)
        self.replicas = self.strategy.num_replicas_in_sync
        if config.batch_size % self.replicas:
            raise ConfigError(f"--batch_size: must be a multiple of the {self.replicas} replicas, "
                              f"got {config.batch_size}.")
        self.per_replica_batch = config.batch_size // self.replicas
        self.device = accelerator(self.strategy)
        self.jit = {"true": True, "false": False}.get(config.jit_compile, self.device in ("gpu", "tpu"))

        keras.utils.set_random_seed(config.seed)
        self.splits = splits if splits is not None else load_data(config)
        self.num_classes = self.splits.num_classes
        num_train = self.splits.train.num_examples
        if num_train < config.batch_size:
            raise ConfigError(f"--batch_size: {config.batch_size} is larger than the training split "
                              f"({num_train} examples).")
        self.plan = budget.saved_plan(config) if config.time_budget else None
        self._eval_datasets: Dict[tuple, object] = {}
        self._elapsed_before = 0.0
        self.model = None
        if config.time_budget and self.plan is None:
            self._resolve(config)  # a bad flag fails before any measuring
            try:
                self.plan = self._measure_and_plan(config)
            except plan_lib.BudgetError as e:
                raise ConfigError(str(e)) from None
        self._given = config
        self._configure(self._resolve(config, self.plan), config)
        if self.model is None:
            self._build()
        else:  # measured in place: same model, optimizer and traced step; the plan's step counts
            self.lr_schedule.retarget(*optim.step_counts(self.config, self.steps_per_epoch, self.total_steps))
        self._begin_run_state(self.config.out, callbacks)

    def _resolve(self, config: TrainConfig, plan: Optional[plan_lib.BudgetPlan] = None) -> TrainConfig:
        try:
            return config.resolve(self.splits, plan=plan, device=self.device)
        except ValueError as e:  # BudgetError included
            raise ConfigError(str(e)) from None

    def _configure(self, config: TrainConfig, given: TrainConfig) -> None:
        """Takes a resolved config (``given``: the one the user passed) and what follows from it."""
        self.config = config
        try:
            self.schedule = schedule_lib.from_config(config, self.plan)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        self.recipe_reason = recipes.choose(given.recipe, config.epochs)[1]
        self.precision_reason = choose_precision(given.mixed_precision, self.device, config.max_size)[1]
        self.recipe_flags = sorted(k for k, v in given.recipe_sources().items() if v.startswith("--"))
        self.eval_sizes = (eval_size_candidates(config.max_size, self.splits.image_size)
                           if config.choose_eval_size and self.splits.val is not None
                           else (config.eval_size,))
        self.eval_crops = EVAL_CROP_FRACTIONS if config.choose_eval_size else (data.EVAL_CROP_FRACTION,)
        self.steps_per_epoch = config.steps_per_epoch
        self.total_steps = self.steps_per_epoch * self.schedule.epochs

    def _begin_run_state(self, out: str, callbacks=()) -> None:
        """A run's bookkeeping from step 0, writing into ``out`` (a budget's measuring uses a scratch
        folder, then starts again in the run's own)."""
        self.out = out
        self.checkpoints = ckpt_lib.CheckpointManager(
            f"{self.out}/{run_dir.RUN_FILES['checkpoints']}", self.config.keep_checkpoints, write=self.is_chief)
        self.global_step = 0
        self.rows: List[dict] = []
        self.best: Optional[dict] = None
        self._best_arrays: Optional[Dict[str, np.ndarray]] = None
        self.last_checkpoint: Optional[str] = None
        self._partial = _EpochTotals()
        self._ema_in_model = False  # True once finish() put the evaluation weights in the model
        self._stage_images_due = False
        self.model.stop_training = False
        # Until fit() starts: outputs that write nothing, progress that prints nothing (tools
        # drive begin_stage/train_epoch themselves).
        self.outputs = outputs.RunOutputs(self.out, is_chief=False)
        self.progress = outputs.Progress(self.total_steps, verbose=0)
        self.callbacks = self._callback_list(callbacks)

    # -- Algorithm 1 ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Runs (or resumes) the whole schedule and writes every output."""
        self._start_time = time.time()
        self._start()
        self._step_seconds: List[float] = []  # trained seconds per step of each epoch (--time_budget)
        spe = self.steps_per_epoch
        self.callbacks.on_train_begin()
        for index in range(len(self.schedule.stages)):
            # The stage's end is read again after every epoch: a budget's first epoch may correct
            # the plan's last stage (``_correct_plan``).
            if self.global_step >= self._stage_end(index) * spe:
                continue  # finished before a resume
            self.begin_stage(self.schedule.stages[index])
            epoch = max(self.schedule.first_epoch(index), self.global_step // spe)
            while epoch < self._stage_end(index):
                if not self.train_epoch(self.schedule.stages[index], epoch):
                    break
                self.end_epoch(self.schedule.stages[index], epoch)
                epoch += 1
                if self.model.stop_training:
                    break
            if self.model.stop_training:
                break
        return self.finish()

    def _stage_end(self, index: int) -> int:
        return self.schedule.first_epoch(index) + self.schedule.stages[index].epochs

    def begin_stage(self, stage) -> None:
        """New pipeline at the stage's size/augmentation, the stage's dropout; a new train step
        only where the dropout rate is baked into the graph (``--nofast_step``)."""
        self.steps.stage_index = stage.index
        set_head_dropout(self.train_model, stage.dropout)
        self._train_iterator = iter(self._train_dataset(stage, start_step=self.global_step))
        if self._train_fn is None or not self.config.fast_step:
            self._train_fn = self.steps.train_function()
        self._stage_images_due = True
        self._log(outputs.stage_text(stage, len(self.schedule.stages), self.progress.run_eta(self.global_step)))
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "on_stage_begin"):
                callback.on_stage_begin(stage)

    def train_epoch(self, stage, epoch: int) -> bool:
        """The epoch's remaining steps; stops on a non-finite loss; step checkpoints.
        False when a callback stopped the run before the epoch's end.

        The loss is read on the host every ``--log_every`` steps (and after the first
        step, before a checkpoint and at the epoch's end), not after every step: the
        steps in between queue no work for Python. ``on_train_batch_end`` is called for
        every step, in order, when its loss is read.
        """
        spe = self.steps_per_epoch
        done = self.global_step - epoch * spe
        self._partial = totals = self._partial if done > 0 else _EpochTotals()
        if done == 0:
            self.callbacks.on_epoch_begin(epoch)
        self.progress.begin_epoch(spe, done)
        window = _Window(start=time.perf_counter())
        for local in range(done, spe):
            images, labels = next(self._train_iterator)
            self._show_inputs(stage, images, labels)
            self.callbacks.on_train_batch_begin(local)
            loss_sum, correct, iteration = self._train_fn(
                images, labels, tf.constant(self.global_step, tf.int64))
            window.pending.append((self.global_step, loss_sum, correct, iteration))
            self.global_step += 1
            last = local == spe - 1
            checkpoint_now = self.global_step % self.config.checkpoint_every == 0 and not last
            if local == done or last or checkpoint_now or len(window.pending) >= self.config.log_every:
                self._read_steps(stage, epoch, window, totals, local + 1)
                if self.model.stop_training:
                    return False
            if checkpoint_now:
                self._save_checkpoint(stage)
        totals.images_per_sec = window.images_per_sec(totals)
        return True

    def end_epoch(self, stage, epoch: int) -> None:
        """Validation on the EMA weights, metrics/plots, best selection, checkpoint (a budget's
        first epoch corrects the plan first)."""
        if self._corrects_plan(epoch):
            self._correct_plan(stage)
            stage = self.schedule.stages[stage.index]
        totals = self._partial
        val = self.evaluate(self.splits.val) if self.splits.val is not None else None
        row = {
            "epoch": epoch + 1, "stage": stage.index, "image_size": stage.image_size,
            "dropout": stage.dropout, "randaug_magnitude": stage.randaug_magnitude,
            "mixup_alpha": stage.mixup_alpha, "cutmix_alpha": stage.cutmix_alpha,
            "lr": self._lr_of_last_step(), "global_step": self.global_step,
            "train_loss": totals.loss, "train_acc": totals.acc,
            "val_loss": val["loss"] if val else None, "val_top1": val["top1"] if val else None,
            "val_top5": val["top5"] if val else None,
            "images_per_sec": totals.images_per_sec, "epoch_seconds": totals.seconds,
            "wall_seconds": self._wall_seconds(),
        }
        self.rows.append(row)
        self._partial = _EpochTotals()
        if val is not None and (self.best is None or val["top1"] >= self.best["val_top1"]):
            self._save_best(epoch + 1, val["top1"])
        self._write_metrics()
        self.outputs.epoch_scalars(row)
        if self.config.verbose:
            self._log(outputs.epoch_text(row, self.schedule.epochs, self.progress.run_eta(self.global_step)))
        stage_end = epoch + 1 == self.schedule.first_epoch(stage.index) + stage.epochs
        if stage_end or self.global_step % self.config.checkpoint_every == 0:
            self._save_checkpoint(stage)
        self.callbacks.on_epoch_end(epoch, outputs.epoch_logs(row))

    def _corrects_plan(self, epoch: int) -> bool:
        """Whether this epoch end corrects the budget plan: every epoch of a budget run whose steady
        speed this process timed (the epoch's steps after its first)."""
        return self.plan is not None and self._partial.images_per_sec > 0

    def _correct_plan(self, stage) -> None:
        """The last stage's epochs recounted from the trained seconds per step of the latest epochs
        (``plan.corrected``), before anything of this epoch end is written; the learning rate
        still reaches zero at the (new) last step. A loaded machine that frees up later, or the
        other way round, moves the plan back."""
        before = self.plan
        self._step_seconds.append(self.config.batch_size / self._partial.images_per_sec)
        recent = self._step_seconds[-CORRECTION_EPOCHS:]
        trained = sum(recent) / len(recent)
        slowdown = trained / (before.step_seconds[stage.image_size] / before.slowdown)
        epochs_done = self.global_step // self.steps_per_epoch
        self.plan = plan_lib.corrected(before, epochs_done=epochs_done, elapsed_seconds=self._wall_seconds(),
                                       slowdown=slowdown)
        if self.plan.epochs == before.epochs:
            self.plan = before  # nothing changes: plan.json stays what the run follows
            return
        self._configure(self._resolve(self._given, self.plan), self._given)
        self.lr_schedule.retarget(*optim.step_counts(self.config, self.steps_per_epoch, self.total_steps))
        self.progress.total_steps = self.total_steps
        self.callbacks.set_params({**(self.callbacks.params or {}), "epochs": self.schedule.epochs})
        self.outputs.write_config(self.config, self.schedule, self.plan)
        self._log(f"time budget: epochs {max(1, epochs_done - len(recent) + 1)}-{epochs_done} trained at "
                  f"{trained:.3f} s/step against {before.step_seconds[stage.image_size] / before.slowdown:.3f} "
                  f"measured ({slowdown:.2f}x): {before.epochs} -> {self.plan.epochs} epochs, predicted "
                  f"{plan_lib.clock(self.plan.predicted_seconds)}")

    def finish(self) -> TrainResult:
        """Selected weights (best validation epoch, else last EMA) -> model.keras + run.json; test."""
        stopped_early = bool(self.model.stop_training)
        if self.config.select == "best" and self.best is not None:
            arrays = self._best_arrays
            if arrays is None:  # best epoch was before a resume: read the chief's file
                arrays = ckpt_lib.load_best(self.checkpoints.directory, self.best["file"])
            ckpt_lib.restore(arrays, {"model": ckpt_lib.model_variables(self.model)}, self.best["file"])
            selected_epoch = self.best["epoch"]
        else:
            if self.ema is not None:
                self._swap_ema()  # the EMA weights become the model's for good
            selected_epoch = self.rows[-1]["epoch"] if self.rows else None
        self._ema_in_model = True
        eval_size, eval_crop, val, test, scores = self.final_evaluation()
        model_path = self.outputs.write_model(self.probabilities_model()) if self.is_chief else None
        seconds = self._wall_seconds()
        result = TrainResult(out=self.out, config=self.config, schedule=self.schedule, rows=self.rows,
                             global_step=self.global_step, selected_epoch=selected_epoch, val=val,
                             test=test, model_path=model_path, seconds=seconds, stopped_early=stopped_early,
                             eval_size=eval_size, eval_crop_fraction=eval_crop, model=self.model)
        self._write_metrics(final={"selected_epoch": selected_epoch, "val": val, "test": test,
                                   "eval_size": eval_size, "eval_crop_fraction": eval_crop,
                                   "val_top1_by_eval_size": scores and {k: v["top1"] for k, v in scores.items()},
                                   "val_loss_by_eval_size": scores and {k: v["loss"] for k, v in scores.items()},
                                   "global_step": self.global_step, "seconds": seconds,
                                   "stopped_early": stopped_early,
                                   "time_budget_seconds": self.plan.budget_seconds if self.plan else None})
        self.outputs.write_manifest(self.config, self.splits.class_names or
                                    [str(i) for i in range(self.num_classes)], eval_size=eval_size,
                                    crop_fraction=eval_crop)
        self.callbacks.on_train_end(outputs.epoch_logs(self.rows[-1]) if self.rows else None)
        self._log(outputs.summary_text(result, ema=self.ema is not None,
                                       selected_best=self.config.select == "best" and self.best is not None,
                                       eval_scores=scores))
        self.outputs.close()
        return result

    def final_evaluation(self):
        """(evaluation size, crop, validation, test, validation {"loss", "top1"} by "size@crop") of the
        selected weights: size and crop have the lowest validation loss among ``eval_sizes`` x
        ``eval_crops`` (ties: the smaller size, then the first crop); test is evaluated once, with them."""
        size, crop, scores = self.config.eval_size, data.EVAL_CROP_FRACTION, None
        val = None
        if self.splits.val is not None:
            candidates = [(s, c) for s in self.eval_sizes for c in self.eval_crops]
            results = {(s, c): self.evaluate(self.splits.val, image_size=s, raw=True, crop_fraction=c)
                       for s, c in candidates}
            # The loss, not top-1: on a validation slice of a few hundred images top-1 moves by whole
            # images (0.6% each on signdigits100's 164). In 2 of 6 five-minute runs top-1 picked the
            # central crop by one image where the whole image scored 2-3 points higher on test; the
            # loss ranked the whole image first in all 6 (docs/PROGRESSIVE.md, third round).
            size, crop = min(candidates, key=lambda sc: (results[sc]["loss"], sc[0], self.eval_crops.index(sc[1])))
            val = results[(size, crop)]
            scores = {f"{s}@{c:g}": {"loss": r["loss"], "top1": r["top1"]} for (s, c), r in results.items()}
        test = (self.evaluate(self.splits.test, image_size=size, raw=True, crop_fraction=crop)
                if self.splits.test is not None else None)
        return size, crop, val, test, scores

    def probabilities_model(self) -> keras.Model:
        """The model as keras.applications builds it: float32 (a mixed-precision run's variables
        are float32 already; a user sets a policy when loading), ending in a softmax, the trained
        weights (the trainer itself trains and evaluates on logits)."""
        c = self.config
        previous = keras.mixed_precision.global_policy()
        keras.mixed_precision.set_global_policy("float32")
        try:
            copy = build_model(c.model, include_top=True, pooling="avg", input_shape=(None, None, 3),
                               classes=self.num_classes, classifier_activation="softmax",
                               dropout_rate=self.model.get_layer("top_dropout").rate,
                               drop_path_rate=c.drop_path_rate, width=c.width, depth=c.depth)
        finally:
            keras.mixed_precision.set_global_policy(previous)
        copy.set_weights(self.model.get_weights())
        return copy

    def _lr_of_last_step(self) -> float:
        """The learning rate the optimizer used for its latest update (from ITS step counter)."""
        iterations = int(optim.inner_optimizer(self.optimizer).iterations.numpy())
        return self.lr_schedule.value(max(iterations - 1, 0))

    # -- the host side of the steps -----------------------------------------------------------

    def _show_inputs(self, stage, images, labels) -> None:
        """The batch to the callbacks that look at inputs; the stage's first one to TensorBoard."""
        if self._stage_images_due:
            self._stage_images_due = False
            if not self.distributed:
                self.outputs.stage_images(stage, images, self.global_step)
        for callback in self.callbacks.callbacks:
            if hasattr(callback, "on_train_batch_inputs"):
                callback.on_train_batch_inputs(self.global_step, images, labels)

    def _read_steps(self, stage, epoch: int, window: "_Window", totals: "_EpochTotals",
                    position: int) -> None:
        """Reads the queued steps' losses: non-finite check, totals, callbacks, bar, TensorBoard."""
        batch = self.config.batch_size
        values = [(step, float(loss_sum), float(correct), int(iteration))
                  for step, loss_sum, correct, iteration in window.pending]
        now = time.perf_counter()
        lr = 0.0
        for step, loss_sum, correct, iteration in values:
            loss = loss_sum / batch
            if not math.isfinite(loss):
                self.global_step = step
                self._stop_non_finite(stage, epoch, f"training loss {loss}")
            lr = self.lr_schedule.value(iteration)
            totals.add(loss_sum, correct, batch, 0.0)
            self.outputs.scalar("step/loss", loss, step + 1)
            self.outputs.scalar("step/lr", lr, step + 1)
            self.callbacks.on_train_batch_end(step - epoch * self.steps_per_epoch, {
                "loss": loss, "lr": lr, "step": step, "stage": stage.index, "epoch": epoch,
                "image_size": stage.image_size, "images_per_sec": window.speed})
        window.read(len(values), batch, now, totals)
        self.progress.update(position, totals.loss, totals.acc, lr, window.speed)

    @property
    def trace_log(self) -> List[dict]:
        """One entry per traced train step: stage, image and label shapes, the head's dropout rate."""
        return self.steps.trace_log

    @property
    def trace_counts(self) -> Dict[int, int]:
        """Traces of the train step by stage index."""
        return self.steps.trace_counts

    # -- measuring (``--time_budget``: this trainer times itself, then starts from step 0) -----

    def _measure_and_plan(self, given: TrainConfig) -> plan_lib.BudgetPlan:
        """Builds with the provisional config, times the run's parts on this trainer, puts every
        variable back and plans; the model, optimizer and traced steps stay for the run, unless
        the planned config builds differently (then its build and trace are counted too)."""
        self._configure(budget.provisional_config(given, self.splits, self.device), given)
        began = time.perf_counter()
        self._build()
        build_seconds = time.perf_counter() - began
        measured = build_key(self.config, self.schedule)
        initial = self._snapshot()
        with tempfile.TemporaryDirectory(prefix="effv2_budget_") as scratch:
            self._begin_run_state(scratch)
            costs = budget.measure(self, [stage.image_size for stage in self.schedule.stages])
        self._restore_snapshot(initial)
        keras.utils.set_random_seed(given.seed)  # the measuring drew from the seeded streams
        # --nofast_step traces the train step again at every stage's start.
        again = 0.0 if self.config.fast_step else costs["tracing_seconds"]
        plan = budget.make_plan(given, self.splits, costs, time.time() - self.started + again)
        planned = self._resolve(given, plan)
        if build_key(planned, schedule_lib.from_config(planned, plan)) != measured:
            self.model = None  # built again in __init__
            startup = build_seconds + costs["tracing_seconds"] + costs["first_epoch_end_extra_seconds"]
            plan = budget.make_plan(given, self.splits, costs, time.time() - self.started + startup)
        return plan

    def _snapshot(self) -> List[Tuple[object, np.ndarray]]:
        """Every variable the measuring steps move (weights, BN statistics, random-seed states,
        optimizer slots and counter, EMA shadows, the fast twin's own), with its value."""
        variables = list(self.model.variables) + list(self.train_model.variables) + list(self.optimizer.variables)
        if self.ema is not None:
            variables += list(self.ema.shadows)
        unique = {id(v): v for v in variables}
        return [(v, np.array(v.numpy())) for v in unique.values()]

    def _restore_snapshot(self, snapshot) -> None:
        with self.strategy.scope():
            for variable, value in snapshot:
                variable.assign(value)

    def time_steps(self, stage, warmup: int, timed: int) -> Tuple[float, float]:
        """Seconds of the first step at ``stage``'s size (tracing included) and the mean per step
        of ``timed`` steps after ``warmup`` untimed ones, timed as one span with the input
        pipeline inside (as training runs them: the host waits only at the span's end)."""
        self.begin_stage(stage)
        first = timed_from = None
        loss_sum = None
        for i in range(warmup + timed):
            if i == warmup:
                if loss_sum is not None:
                    float(loss_sum)  # the warm-up steps are done
                timed_from = time.perf_counter()
            began = time.perf_counter()
            images, labels = next(self._train_iterator)
            loss_sum, _, _ = self._train_fn(images, labels, tf.constant(self.global_step, tf.int64))
            self.global_step += 1
            if i == 0:
                float(loss_sum)  # waits for the first step (its trace)
                first = time.perf_counter() - began
        float(loss_sum)
        if timed_from is None:
            return first, first
        return first, (time.perf_counter() - timed_from) / timed

    def time_epoch_ends_and_final(self) -> Tuple[float, float, float, float]:
        """Seconds of a first and a second epoch end (evaluation, metrics, plots, best weights),
        of a checkpoint, and of the run's end (the evaluation-size search on validation, test,
        model.keras)."""
        self.outputs = outputs.RunOutputs(self.out, is_chief=self.is_chief, tensorboard=False)
        self._start_time = time.time()
        stage = self.schedule.stages[-1]
        ends = []
        for epoch in range(2):
            began = time.perf_counter()
            self.end_epoch(stage, epoch)
            ends.append(time.perf_counter() - began)
        began = time.perf_counter()
        self._save_checkpoint(stage)
        checkpoint = time.perf_counter() - began
        began = time.perf_counter()
        self.final_evaluation()
        if self.is_chief:
            self.outputs.write_model(self.probabilities_model())
        return ends[0], ends[1], checkpoint, time.perf_counter() - began

    # -- evaluation -------------------------------------------------------------------------

    def evaluate(self, source: data.ImageSource, image_size: Optional[int] = None,
                 raw: bool = False, crop_fraction: Optional[float] = None) -> Dict[str, float]:
        """Loss, top-1 and top-5 on ``source`` with the EMA weights (``raw``: the model's), at
        ``image_size`` (default ``config.eval_size``) after keeping the central ``crop_fraction``
        of each side (default ``data.EVAL_CROP_FRACTION``)."""
        size = image_size or self.config.eval_size
        crop = crop_fraction or data.EVAL_CROP_FRACTION
        key = (id(source), size, crop)
        if key not in self._eval_datasets:
            self._eval_datasets[key] = self._eval_dataset(source, size, crop)
        if self._eval_fn is None:
            self._eval_fn = self.steps.eval_function()
        sums = np.zeros([4], np.float64)
        with self._eval_weights(raw):
            for images, labels, weights in self._eval_datasets[key]:
                sums += np.asarray([float(x) for x in self._eval_fn(images, labels, weights)])
        count = max(sums[3], 1.0)
        return {"loss": sums[0] / count, "top1": sums[1] / count, "top5": sums[2] / count,
                "examples": int(sums[3])}

    @contextlib.contextmanager
    def _eval_weights(self, raw: bool):
        swap = self.ema is not None and not raw and not self._ema_in_model
        if swap:
            self._swap_ema()
        try:
            yield
        finally:
            if swap:
                self._swap_ema()

    def _swap_ema(self):
        if not hasattr(self, "_swap_fn"):
            self._swap_fn = tf.function(self.ema.swap)
        with self.strategy.scope():
            self._swap_fn()

    # -- building -----------------------------------------------------------------------------

    def _build(self) -> None:
        config = self.config
        self._train_fn = self._eval_fn = None  # traced over the previous model, if any
        self.__dict__.pop("_swap_fn", None)
        max_dropout = max(stage.dropout for stage in self.schedule.stages)
        with self.strategy.scope():
            previous = keras.mixed_precision.global_policy()
            keras.mixed_precision.set_global_policy(
                "float32" if config.mixed_precision == "none" else config.mixed_precision)
            try:
                self.model = build_model(
                    config.model, include_top=True, pooling="avg", input_shape=(None, None, 3),
                    classes=self.num_classes, classifier_activation=None, dropout_rate=max_dropout,
                    drop_path_rate=config.drop_path_rate, width=config.width, depth=config.depth)
            finally:
                keras.mixed_precision.set_global_policy(previous)
            self.model.stop_training = False  # what model.fit sets; callbacks may set it True
            self.lr_schedule = optim.make_lr_schedule(config, self.steps_per_epoch, self.total_steps)
            self.optimizer, self.l2 = optim.make_optimizer(
                config.optimizer, self.lr_schedule, self.model, weight_decay=config.weight_decay,
                momentum=config.momentum, loss_scale=config.mixed_precision == "mixed_float16",
                fused=config.fast_step and not self.distributed)
            self.ema = (ExponentialMovingAverage(self.model, config.ema_decay)
                        if config.ema_decay > 0 else None)
            # The twin's layers ARE the model's (same variables): it only changes the kernels.
            self.train_model = make_twin(self.model) if config.fast_step else self.model
        self.steps = Steps(self.model, self.train_model, self.optimizer, self.ema, self.strategy,
                           batch_size=config.batch_size, num_classes=self.num_classes, l2=self.l2,
                           jit_compile=self.jit and self.device != "tpu", fast_step=config.fast_step,
                           distributed=self.distributed)

    def _callback_list(self, callbacks) -> keras.callbacks.CallbackList:
        callbacks = list(callbacks)
        for callback in callbacks:
            if not isinstance(callback, keras.callbacks.Callback):
                raise TypeError(f"callbacks: expected keras.callbacks.Callback objects, got "
                                f"{type(callback).__name__}.")
            if isinstance(callback, Callback):
                callback.trainer = self
        return keras.callbacks.CallbackList(callbacks, model=self.model, epochs=self.schedule.epochs,
                                            steps=self.steps_per_epoch, verbose=0)

    # -- data ----------------------------------------------------------------------------------

    def _train_dataset(self, stage, start_step: int):
        """Infinite per-replica batches of the stage (a distributed dataset when distributed)."""
        config = self.config

        def dataset_fn(context):
            seed = _derive_seed(config.seed, "train", stage.index, start_step, context.input_pipeline_id)
            return stage_dataset(
                _shard(self.splits.train, context), stage, context.get_per_replica_batch_size(config.batch_size),
                self.num_classes, seed=seed, randaug_probability=config.randaug_probability,
                label_smoothing=config.label_smoothing, flip=config.flip,
                crop_scale=(config.crop_scale_min, 1.0)).repeat()

        return self._distribute(dataset_fn)

    def _eval_dataset(self, source: data.ImageSource, size: int, crop: float = None):
        """(images, labels, weights) batches; padded with weight-0 examples to whole steps."""
        num_classes = self.num_classes

        def dataset_fn(context):
            batch = context.get_per_replica_batch_size(self.config.batch_size)
            pipelines = context.num_input_pipelines
            per_pipeline_replicas = max(1, self.replicas // pipelines)
            largest_shard = -(-source.num_examples // pipelines)
            steps = -(-largest_shard // (batch * per_pipeline_replicas))
            ds = data.make_pipeline(_shard(source, context), size, batch, num_classes, training=False,
                                    drop_remainder=False, eval_crop_fraction=crop or data.EVAL_CROP_FRACTION)
            ds = ds.unbatch().map(lambda x, y: (x, y, tf.constant(1.0)))
            pad = tf.data.Dataset.from_tensors(
                (tf.zeros([size, size, 3]), tf.zeros([num_classes]), tf.constant(0.0))).repeat()
            ds = ds.concatenate(pad).batch(batch, drop_remainder=True)
            return ds.take(steps * per_pipeline_replicas).prefetch(tf.data.AUTOTUNE)

        return self._distribute(dataset_fn)

    def _distribute(self, dataset_fn):
        if not self.distributed:
            return dataset_fn(tf.distribute.InputContext(1, 0, 1))
        return self.strategy.distribute_datasets_from_function(dataset_fn)

    # -- run directory, checkpoints, resume ------------------------------------------------

    def _start(self) -> None:
        existing = self.checkpoints.list()
        if existing and not self.config.resume:
            raise ConfigError(f"--out: {self.out} already holds checkpoints of a run; pass --resume to "
                              "continue it, or choose another --out.")
        self.model.stop_training = False
        if self.config.resume:
            self._restore()
        self.outputs = outputs.RunOutputs(self.out, is_chief=self.is_chief)
        self.outputs.write_config(self.config, self.schedule, self.plan)
        self.outputs.hparams(self.config)
        self.progress = outputs.Progress(self.total_steps, self.global_step,
                                         verbose=self.config.verbose if self.is_chief else 0)
        spec = get_spec(self.config.model)
        self.header = outputs.header_text(
            self.config, params=self.model.count_params(), data_summary=self.splits.summary(),
            replicas=self.replicas, device=self.device, workers=self.num_workers, jit=self.jit,
            precision_reason=self.precision_reason, recipe_reason=self.recipe_reason, recipe_flags=self.recipe_flags, variant_width=spec.width,
            variant_depth=spec.depth, schedule=self.schedule, steps_per_epoch=self.steps_per_epoch,
            out=self.out)
        if self.plan is not None:
            self.header += "\n" + self.plan.table()
        self._log(self.header)

    def _checkpoint_groups(self) -> ckpt_lib.Groups:
        """What a checkpoint holds, keyed by variable path: model, optimizer slots, EMA shadows
        (each under the path of the model variable it averages)."""
        groups = {"model": ckpt_lib.model_variables(self.model),
                  "optimizer": ckpt_lib.optimizer_variables(self.optimizer)}
        if self.ema is not None:
            groups["ema"] = [(path, shadow) for (path, _), shadow
                             in zip(ckpt_lib.named(self.ema.variables), self.ema.shadows)]
        return groups

    def _restore(self) -> None:
        found = self.checkpoints.newest_good(check=self._check_checkpoint)
        if found is None:
            self._log(f"--resume: no checkpoint in {self.checkpoints.directory}; starting from scratch.")
            return
        path, arrays, state = found
        ckpt_lib.restore(arrays, self._checkpoint_groups(), path)
        self.global_step = int(state["global_step"])
        self.rows = list(state["rows"])
        self.best = state.get("best")
        self._partial = _EpochTotals(**state["partial"])
        self._elapsed_before = float(state.get("seconds", 0.0))
        self.last_checkpoint = path
        keras.utils.set_random_seed(_derive_seed(self.config.seed, "resume", self.global_step))
        self._log(f"Resumed from {path}: global step {self.global_step}/{self.total_steps}, "
                  f"epoch {self.global_step // self.steps_per_epoch + 1}.")

    def _check_checkpoint(self, arrays, state) -> None:
        saved = state.get("resume_keys", {})
        for key in RESUME_KEYS:
            mine = getattr(self.config, key)
            if key in saved and saved[key] != mine:
                raise ckpt_lib.CheckpointError(
                    f"--{key}: the checkpoints in {self.checkpoints.directory} were made with "
                    f"--{key}={saved[key]!r}, this run has {mine!r}; use the same value or another --out.")
        ckpt_lib.check_fits(arrays, self._checkpoint_groups(), self.checkpoints.directory)

    def _save_checkpoint(self, stage) -> None:
        arrays = ckpt_lib.pack(self._checkpoint_groups())
        bad = ckpt_lib.first_non_finite(arrays)
        if bad is not None:
            self._stop_non_finite(stage, self.global_step // self.steps_per_epoch, f"weights ({bad})")
        state = {
            "global_step": self.global_step, "epoch": self.global_step // self.steps_per_epoch,
            "stage": stage.index, "rows": self.rows, "best": self.best,
            "partial": dataclasses.asdict(self._partial),
            "resume_keys": {k: getattr(self.config, k) for k in RESUME_KEYS},
            "seconds": self._wall_seconds(),
        }
        path = self.checkpoints.save(self.global_step, arrays, state)
        self.last_checkpoint = path or self.checkpoints.path_for(self.global_step)
        if self.is_chief:
            ckpt_lib.prune_best(self.checkpoints.directory, [self.best["file"]] if self.best else [],
                                [p for _, p in self.checkpoints.list()])

    def _save_best(self, epoch: int, val_top1: float) -> None:
        """Keeps the evaluation weights of the best epoch: in memory (every worker) and on disk."""
        with self._eval_weights(raw=False):
            self._best_arrays = ckpt_lib.pack({"model": ckpt_lib.model_variables(self.model)})
        name = ckpt_lib.BEST_PATTERN.format(epoch=epoch)
        if self.is_chief:
            name = ckpt_lib.save_best(self.checkpoints.directory, epoch, val_top1, self._best_arrays)
        self.best = {"epoch": epoch, "val_top1": val_top1, "file": name}

    def _stop_non_finite(self, stage, epoch: int, what: str) -> None:
        last = self.last_checkpoint or "none (no checkpoint was written yet)"
        message = (f"Non-finite {what} at stage {stage.index + 1}/{len(self.schedule.stages)} "
                   f"({stage.image_size} px), epoch {epoch + 1}, global step {self.global_step + 1}; "
                   f"training stopped. Last good checkpoint: {last} (left untouched). "
                   "Lower --lr (or change --mixed_precision) and continue with --resume.")
        self.outputs.close()
        raise NonFiniteLossError(message)

    def _write_metrics(self, final: Optional[dict] = None) -> None:
        self.outputs.write_metrics(
            self.rows, self.schedule.stages, eval_size=(final or {}).get("eval_size") or self.config.eval_size,
            final=final,
            extra={"steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps, "best": self.best})

    def _wall_seconds(self) -> float:
        """Seconds since this run began (``--time_budget``: since the measuring began), earlier
        attempts of a resumed run included."""
        return self._elapsed_before + time.time() - (self.started if self.plan is not None else self._start_time)

    def _log(self, text: str) -> None:
        if self.is_chief and self.config.verbose:
            print(text, flush=True)


# A budget plan is corrected from the mean trained step time of this many latest epochs: recent
# enough to follow a machine that gets slower or faster, more than one to smooth an epoch's noise.
CORRECTION_EPOCHS = 3

# What the trainer's build depends on (model, policy, optimizer and its schedule's shape, EMA,
# step): configs equal on these train with the same model, optimizer and traced step. Not the
# step counts (steps_per_epoch, epochs): the schedule reads them from variables (retarget), and a
# budget's plan nearly always sets another steps_per_epoch than the measuring's data pass.
BUILD_KEYS = ("model", "width", "depth", "drop_path_rate", "mixed_precision", "optimizer", "lr",
              "weight_decay", "momentum", "ema_decay", "lr_decay", "lr_decay_rate", "batch_size",
              "fast_step", "jit_compile", "strategy")


def build_key(config: TrainConfig, schedule) -> tuple:
    """``BUILD_KEYS``' values and the head's largest dropout rate (the model is built with it)."""
    return tuple(getattr(config, k) for k in BUILD_KEYS) + (max(s.dropout for s in schedule.stages),)


class _Window:
    """Steps queued since the last host read, and the epoch's timed throughput."""

    def __init__(self, start: float):
        self.pending = []
        self.last_read, self.timed_from, self.timed_images, self.speed = start, None, 0, 0.0

    def read(self, steps: int, batch: int, now: float, totals: "_EpochTotals") -> None:
        totals.seconds += now - self.last_read
        self.last_read = now
        if self.timed_from is None:
            self.timed_from = now  # the first step of an epoch includes tracing: not timed
        else:
            self.timed_images += steps * batch
            self.speed = self.timed_images / max(now - self.timed_from, 1e-9)
        self.pending = []

    def images_per_sec(self, totals: "_EpochTotals") -> float:
        return self.speed if self.timed_images else totals.examples / max(totals.seconds, 1e-9)


@dataclasses.dataclass
class _EpochTotals:
    loss_sum: float = 0.0
    correct: float = 0.0
    examples: int = 0
    seconds: float = 0.0
    images_per_sec: float = 0.0

    def add(self, loss_sum, correct, examples, seconds):
        self.loss_sum += loss_sum
        self.correct += correct
        self.examples += examples
        self.seconds += seconds

    @property
    def loss(self):
        return self.loss_sum / max(self.examples, 1)

    @property
    def acc(self):
        return self.correct / max(self.examples, 1)


# -- helpers ------------------------------------------------------------------------------------


def _shard(source: data.ImageSource, context) -> data.ImageSource:
    n, i = context.num_input_pipelines, context.input_pipeline_id
    if n == 1:
        return source
    count = len(range(i, source.num_examples, n))
    return data.ImageSource(dataset=source.dataset.shard(n, i), num_examples=count)


def _derive_seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode()) % (2**31 - 2)
