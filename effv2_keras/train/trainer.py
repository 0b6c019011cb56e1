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
    finish()                                       # selected weights -> model.keras, test

The step trains ``train_model``: with ``--fast_step`` (the default) a twin over the
model's own layers and variables with faster training kernels (``train.fast``); the
model that is evaluated, checkpointed and saved is ``model``, stock Keras layers.

Everything else (strategy, mixed precision, EMA, checkpoints, outputs) is set up
in ``__init__`` and ``_start`` and stays out of the loop's way.

Distribution: ``config.batch_size`` is the GLOBAL batch. Each input pipeline reads
its own shard of the training examples (``Dataset.shard`` by pipeline id) and
batches ``batch_size / replicas`` per replica; gradients are summed across
replicas by the optimizer (each replica's loss is divided by the global batch),
BN moving statistics are averaged across replicas after every step so all
replicas hold identical weights, and evaluation pads the last batches with
zero-weight examples so every worker runs the same number of steps.

Resume: a checkpoint stores the global step; the run continues at
``epoch = step // steps_per_epoch`` in the stage that epoch belongs to, with the
optimizer (and so the learning rate), EMA and metrics restored. The data order
after a mid-epoch resume comes from a freshly seeded pipeline (seeded by the
resume step) rather than replaying the skipped batches; the number of steps,
epochs and stages is exactly that of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import glob
import io
import json
import math
import os
import sys
import time
import zlib
from typing import Dict, List, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from effv2_keras import augment, data, schedule as schedule_lib
from effv2_keras.models import build_model, get_spec
from effv2_keras.train import checkpoint as ckpt_lib
from effv2_keras.train import optim, plots
from effv2_keras.train import recipes
from effv2_keras.train.config import RESUME_KEYS, TrainConfig
from effv2_keras.train.ema import ExponentialMovingAverage
from effv2_keras.train.fast import make_twin, set_head_dropout
from effv2_keras.train.strategy import accelerator, make_strategy, worker_info

RANDAUGMENT_NUM_OPS = 2  # ops applied to each image (the official N; not augment.RANDAUGMENT_OPS, the op list)
METRIC_COLUMNS = (
    "epoch", "stage", "image_size", "dropout", "randaug_magnitude", "mixup_alpha", "cutmix_alpha",
    "lr", "global_step", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
    "images_per_sec", "epoch_seconds",
)


_SCALAR_METADATA = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()


class ConfigError(ValueError):
    """A bad option or an option that does not fit the data; the message names the flag."""


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss (or weights); the message says where and what to do."""


class Callback:
    """Hooks into the loop (for tests and tools); every method is optional."""

    def on_stage_begin(self, trainer: "Trainer", stage) -> None:
        pass

    def on_train_batch_begin(self, trainer: "Trainer", step: int, images, labels) -> None:
        pass

    def on_train_batch_end(self, trainer: "Trainer", step: int, logs: dict) -> None:
        """Called in step order when the loss is read on the host: every ``--log_every``
        steps, so ``trainer.global_step`` and the weights may already be a few steps on."""

    def on_epoch_end(self, trainer: "Trainer", epoch: int, row: dict) -> None:
        pass


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
    model: keras.Model = dataclasses.field(repr=False, default=None)


def train(config: TrainConfig, splits: Optional[data.DatasetSplits] = None,
          callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Trains a model as ``config`` says and returns the result (see ``Trainer``)."""
    return Trainer(config, splits=splits, callbacks=callbacks).fit()


class Trainer:
    """One progressive-learning run.

    Args:
        config: the run's options (validated here; "auto" values resolved).
        splits: data to train on; default ``data.load(config.data, ...)``.
        callbacks: ``Callback`` objects.

    Attributes of interest after construction: ``model``, ``optimizer``, ``ema``,
    ``schedule``, ``config`` (resolved), ``strategy``, ``steps_per_epoch``,
    ``total_steps``, ``trace_log`` (one entry per traced train step: stage,
    image and label shapes, the head Dropout layer's rate baked into the graph).
    """

    def __init__(self, config: TrainConfig, splits: Optional[data.DatasetSplits] = None,
                 callbacks: Sequence[Callback] = ()):
        config = _validated(config)
        self.callbacks = list(callbacks)
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
        self.splits = splits if splits is not None else _load_data(config)
        self.num_classes = self.splits.num_classes
        num_train = self.splits.train.num_examples
        if num_train < config.batch_size:
            raise ConfigError(f"--batch_size: {config.batch_size} is larger than the training split "
                              f"({num_train} examples).")
        resolved = config.resolve()
        self.recipe_reason = recipes.choose(config.recipe, config.epochs)[1]
        self.recipe_flags = sorted(k for k, v in config.recipe_sources().items() if v.startswith("--"))
        self.schedule = _make_schedule(resolved)
        self.steps_per_epoch = config.steps_per_epoch or num_train // config.batch_size
        self.total_steps = self.steps_per_epoch * self.schedule.total_epochs
        first, last = self.schedule.stages[0], self.schedule.stages[-1]
        self.config = resolved.replace(
            min_size=first.image_size, max_size=last.image_size,
            eval_size=config.eval_size or last.image_size,
            randaug_min=first.randaug_magnitude, randaug_max=last.randaug_magnitude,
            mixup_min=first.mixup_alpha, mixup_max=last.mixup_alpha,
            cutmix_min=first.cutmix_alpha, cutmix_max=last.cutmix_alpha,
            dropout_min=first.dropout, dropout_max=last.dropout,
            steps_per_epoch=self.steps_per_epoch,
            checkpoint_every=config.checkpoint_every or self.steps_per_epoch,
        )
        self._build()

        self.out = self.config.out
        self.checkpoints = ckpt_lib.CheckpointManager(
            os.path.join(self.out, "checkpoints"), self.config.keep_checkpoints, write=self.is_chief)
        self.global_step = 0
        self.rows: List[dict] = []
        self.best: Optional[dict] = None
        self._best_values: Optional[list] = None
        self.trace_log: List[dict] = []
        self.trace_counts: Dict[int, int] = {}
        self._train_fn = None
        self._stage_index = 0
        self.last_checkpoint: Optional[str] = None
        self._partial = _EpochTotals()
        self._eval_datasets: Dict[tuple, object] = {}
        self._eval_fn = None
        self._ema_in_model = False  # True once finish() put the evaluation weights in the model
        self._writer = None
        self._elapsed_before = 0.0

    # -- Algorithm 1 ------------------------------------------------------------------------

    def fit(self) -> TrainResult:
        """Runs (or resumes) the whole schedule and writes every output."""
        self._start_time = time.time()
        self._start()
        spe = self.steps_per_epoch
        for stage in self.schedule.stages:
            first = self.schedule.first_epoch(stage.index)
            end = first + stage.epochs
            if self.global_step >= end * spe:
                continue  # finished before a resume
            self.begin_stage(stage)
            for epoch in range(max(first, self.global_step // spe), end):
                self.train_epoch(stage, epoch)
                self.end_epoch(stage, epoch)
        return self.finish()

    def begin_stage(self, stage) -> None:
        """New pipeline at the stage's size/augmentation, the stage's dropout; a new train step
        only where the dropout rate is baked into the graph (``--nofast_step``)."""
        self._stage_index = stage.index
        set_head_dropout(self.train_model, stage.dropout)
        self._train_iterator = iter(self._train_dataset(stage, start_step=self.global_step))
        if self._train_fn is None or not self.config.fast_step:
            self._train_fn = self._make_train_function()
        self._log(f"\nStage {stage.index + 1}/{len(self.schedule.stages)}: {stage.image_size} px, "
                  f"{stage.epochs} epochs, RandAugment {stage.randaug_magnitude:g}, "
                  f"Mixup {stage.mixup_alpha:g}, CutMix {stage.cutmix_alpha:g}, "
                  f"dropout {stage.dropout:g}")
        for cb in self.callbacks:
            cb.on_stage_begin(self, stage)

    def train_epoch(self, stage, epoch: int) -> None:
        """The epoch's remaining steps; stops on a non-finite loss; step checkpoints.

        The loss is read on the host every ``--log_every`` steps (and after the first
        step, before a checkpoint and at the epoch's end), not after every step: the
        steps in between queue no work for Python.
        """
        spe = self.steps_per_epoch
        done = self.global_step - epoch * spe
        self._partial = totals = self._partial if done > 0 else _EpochTotals()
        window = _Window(bar=self._progress_bar(stage, epoch), start=time.perf_counter())
        for local in range(done, spe):
            images, labels = next(self._train_iterator)
            for cb in self.callbacks:
                cb.on_train_batch_begin(self, self.global_step, images, labels)
            loss_sum, correct, iteration = self._train_fn(
                images, labels, tf.constant(self.global_step, tf.int64))
            window.pending.append((self.global_step, loss_sum, correct, iteration))
            self.global_step += 1
            last = local == spe - 1
            checkpoint_now = self.global_step % self.config.checkpoint_every == 0 and not last
            if local == done or last or checkpoint_now or len(window.pending) >= self.config.log_every:
                self._read_steps(stage, epoch, window, totals, local + 1)
            if checkpoint_now:
                self._save_checkpoint(stage)
        totals.images_per_sec = window.images_per_sec(totals)

    def _read_steps(self, stage, epoch: int, window: "_Window", totals: "_EpochTotals",
                    position: int) -> None:
        """Reads the queued steps' losses: non-finite check, totals, logs, bar, TensorBoard."""
        batch = self.config.batch_size
        values = [(step, float(loss_sum), float(correct), int(iteration))
                  for step, loss_sum, correct, iteration in window.pending]
        now = time.perf_counter()
        for step, loss_sum, correct, iteration in values:
            loss = loss_sum / batch
            if not math.isfinite(loss):
                self.global_step = step
                self._stop_non_finite(stage, epoch, f"training loss {loss}")
            lr = self.lr_schedule.value(iteration)
            totals.add(loss_sum, correct, batch, 0.0)
            self._scalar("step/loss", loss, step + 1)
            self._scalar("step/lr", lr, step + 1)
            logs = {"stage": stage.index, "epoch": epoch, "loss": loss, "lr": lr,
                    "image_size": stage.image_size, "images_per_sec": window.speed}
            for cb in self.callbacks:
                cb.on_train_batch_end(self, step, logs)
        window.read(len(values), batch, now, totals)
        if window.bar is not None:
            window.bar.update(position, f"loss {totals.loss:.4f} - acc {totals.acc:.4f} - lr {lr:.3g} - "
                                        f"{window.speed:.1f} img/s")

    def end_epoch(self, stage, epoch: int) -> None:
        """Validation on the EMA weights, metrics/plots, best selection, checkpoint."""
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
        }
        self.rows.append(row)
        self._partial = _EpochTotals()
        if val is not None and (self.best is None or val["top1"] >= self.best["val_top1"]):
            self._save_best(epoch + 1, val["top1"])
        self._write_metrics()
        for key in ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr",
                    "image_size", "dropout", "images_per_sec"):
            if row[key] is not None:
                self._scalar(f"epoch/{key}", row[key], epoch + 1)
        if self.config.verbose:
            val_text = (f" - val_loss {val['loss']:.4f} - val_top1 {val['top1']:.4f} - "
                        f"val_top5 {val['top5']:.4f}" if val else "")
            self._log(f"epoch {epoch + 1}/{self.schedule.total_epochs}: loss {totals.loss:.4f} - "
                      f"acc {totals.acc:.4f}{val_text} - {totals.images_per_sec:.1f} img/s")
        stage_end = epoch + 1 == self.schedule.first_epoch(stage.index) + stage.epochs
        if stage_end or self.global_step % self.config.checkpoint_every == 0:
            self._save_checkpoint(stage)
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch, row)

    def finish(self) -> TrainResult:
        """Selected weights (best validation epoch, else last EMA) -> model.keras; test."""
        selected_epoch = None
        if self.config.select == "best" and self.best is not None:
            values = self._best_values
            if values is None:  # best epoch was before a resume: read the chief's file
                arrays, _ = ckpt_lib.read_npz(os.path.join(self.checkpoints.directory, self.best["file"]))
                values = _take(arrays, "model", len(self.model.variables))
            _assign(self.model.variables, values)
            selected_epoch = self.best["epoch"]
        else:
            if self.ema is not None:
                self._swap_ema()  # the EMA weights become the model's for good
            selected_epoch = self.rows[-1]["epoch"] if self.rows else None
        self._ema_in_model = True
        val = self.evaluate(self.splits.val, raw=True) if self.splits.val is not None else None
        test = self.evaluate(self.splits.test, raw=True) if self.splits.test is not None else None
        model_path = None
        if self.is_chief:
            model_path = os.path.join(self.out, "model.keras")
            tmp = os.path.join(self.out, ".model.tmp.keras")
            self.model.save(tmp)
            os.replace(tmp, model_path)
        seconds = self._elapsed_before + time.time() - self._start_time
        result = TrainResult(out=self.out, config=self.config, schedule=self.schedule, rows=self.rows,
                             global_step=self.global_step, selected_epoch=selected_epoch, val=val,
                             test=test, model_path=model_path, seconds=seconds, model=self.model)
        self._write_metrics(final={"selected_epoch": selected_epoch, "val": val, "test": test,
                                   "global_step": self.global_step, "seconds": seconds})
        self._log(self._summary(result))
        if self._writer is not None:
            self._writer.close()
        return result

    def _lr_of_last_step(self) -> float:
        """The learning rate the optimizer used for its latest update (from ITS step counter)."""
        iterations = int(optim.inner_optimizer(self.optimizer).iterations.numpy())
        return self.lr_schedule.value(max(iterations - 1, 0))

    # -- evaluation -------------------------------------------------------------------------

    def evaluate(self, source: data.ImageSource, image_size: Optional[int] = None,
                 raw: bool = False) -> Dict[str, float]:
        """Loss, top-1 and top-5 on ``source`` with the EMA weights (``raw``: the model's)."""
        size = image_size or self.config.eval_size
        key = (id(source), size)
        if key not in self._eval_datasets:
            self._eval_datasets[key] = self._eval_dataset(source, size)
        if self._eval_fn is None:
            self._eval_fn = self._make_eval_function()
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
        max_dropout = max(stage.dropout for stage in self.schedule.stages)
        with self.strategy.scope():
            previous = keras.mixed_precision.global_policy()
            keras.mixed_precision.set_global_policy(
                "float32" if config.mixed_precision == "none" else config.mixed_precision)
            try:
                self.model = build_model(
                    config.model, include_top=True, pooling="avg", input_shape=(None, None, 3),
                    classes=self.num_classes, classifier_activation=None, dropout_rate=max_dropout,
                    drop_path_rate=config.drop_path, width=config.width, depth=config.depth)
            finally:
                keras.mixed_precision.set_global_policy(previous)
            self.lr_schedule = optim.make_lr_schedule(config, self.steps_per_epoch, self.total_steps)
            self.optimizer, self.l2 = optim.make_optimizer(
                config.optimizer, self.lr_schedule, self.model, weight_decay=config.weight_decay,
                momentum=config.momentum, loss_scale=config.mixed_precision == "mixed_float16",
                fused=config.fast_step and not self.distributed)
            self.ema = (ExponentialMovingAverage(self.model, config.ema_decay)
                        if config.ema_decay > 0 else None)
            # The twin's layers ARE the model's (same variables): it only changes the kernels.
            self.train_model = make_twin(self.model) if config.fast_step else self.model
        self.dropout_layer = _find_layer(self.model, "top_dropout")
        self.decayed = optim.decayed_variables(self.model) if self.l2 else []
        self.bn_statistics = [v for v in self.model.non_trainable_variables
                              if tf.as_dtype(v.dtype).is_floating]

    def _make_train_function(self):
        """The traced train step. With ``fast_step`` (and one replica) it is traced once for
        every image size (None height/width) and reads the dropout rate from a variable;
        otherwise each stage traces its own (its dropout rate baked into the graph)."""
        model, network, optimizer, ema = self.model, self.train_model, self.optimizer, self.ema
        global_batch = float(self.config.batch_size)
        replicas = self.replicas
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def replica_step(images, labels, step):
            self.trace_log.append({
                "stage": self._stage_index, "image_shape": tuple(images.shape),
                "label_shape": tuple(labels.shape),
                "dropout": None if self.dropout_layer is None else float(self.dropout_layer.rate),
                "dropout_variable": self.config.fast_step})
            with tf.GradientTape() as tape:
                logits = network(images, training=True)
                per_example = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
                loss = tf.reduce_sum(per_example) / global_batch
                penalty = optim.l2_penalty(self.decayed, self.l2)
                if penalty is not None:
                    loss += penalty / replicas
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            if loss_scaled and replicas > 1:
                grads = _skip_together(grads)
            optimizer.apply(grads, model.trainable_variables)
            if replicas > 1 and self.bn_statistics:
                context = tf.distribute.get_replica_context()
                # tf.identity gives each read the replica's device (a bare variable read has
                # none, and MultiWorkerMirroredStrategy's all-reduce then has no destination).
                means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                           [tf.identity(v.value) for v in self.bn_statistics])
                for variable, mean in zip(self.bn_statistics, means):
                    variable.assign(mean)
            if ema is not None:
                ema.update(step)
            correct = tf.reduce_sum(tf.cast(
                tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32))
            return tf.reduce_sum(per_example), correct

        if self.jit and self.device != "tpu":
            replica_step = tf.function(replica_step, jit_compile=True)

        counter = optim.inner_optimizer(optimizer).iterations

        def train_step(images, labels, step):
            index = self._stage_index
            self.trace_counts[index] = self.trace_counts.get(index, 0) + 1
            # The optimizer's own step before this update (a loss-scale skip does not advance
            # it), so the rate logged for a step queued between host reads is the one it used.
            iteration = tf.identity(counter)
            loss_sum, correct = self.strategy.run(replica_step, args=(images, labels, step))
            reduce = self.strategy.reduce
            return (reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
                    reduce(tf.distribute.ReduceOp.SUM, correct, axis=None), iteration)

        if not self.config.fast_step or self.distributed:
            return tf.function(train_step)  # distributed inputs: one trace per stage shape
        batch = self.per_replica_batch
        return tf.function(train_step, input_signature=(
            tf.TensorSpec([batch, None, None, 3], tf.float32),
            tf.TensorSpec([batch, self.num_classes], tf.float32),
            tf.TensorSpec([], tf.int64)))

    def _make_eval_function(self):
        model, k = self.model, min(5, self.num_classes)

        def replica_eval(images, labels, weights):
            logits = tf.cast(model(images, training=False), tf.float32)
            target = tf.argmax(labels, -1, output_type=tf.int32)
            loss = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
            top1 = tf.cast(tf.math.in_top_k(target, logits, 1), tf.float32)
            top5 = tf.cast(tf.math.in_top_k(target, logits, k), tf.float32)
            return [tf.reduce_sum(x * weights) for x in (loss, top1, top5)] + [tf.reduce_sum(weights)]

        if self.jit and self.device != "tpu":
            replica_eval = tf.function(replica_eval, jit_compile=True)

        def eval_step(images, labels, weights):
            sums = self.strategy.run(replica_eval, args=(images, labels, weights))
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

        return tf.function(eval_step)

    # -- data ----------------------------------------------------------------------------------

    def _train_dataset(self, stage, start_step: int):
        """Infinite per-replica batches of the stage (a distributed dataset when distributed)."""
        config = self.config

        def dataset_fn(context):
            seed = _derive_seed(config.seed, "train", stage.index, start_step, context.input_pipeline_id)
            image_aug = (augment.make_image_augmenter(stage.randaug_magnitude, RANDAUGMENT_NUM_OPS, seed=seed,
                                                      probability=config.randaug_probability)
                         if stage.randaug_magnitude > 0 and config.randaug_probability > 0 else None)
            batch_aug = augment.make_batch_augmenter(
                self.num_classes, stage.mixup_alpha, stage.cutmix_alpha, config.label_smoothing,
                seed=seed + 1)
            # Plain TF code: AutoGraph conversion would only warn about their closures.
            no_autograph = tf.autograph.experimental.do_not_convert
            image_aug = None if image_aug is None else no_autograph(image_aug)
            batch_aug = no_autograph(batch_aug)
            ds = data.make_pipeline(
                _shard(self.splits.train, context), stage.image_size,
                context.get_per_replica_batch_size(config.batch_size), self.num_classes,
                training=True, image_augment=image_aug, batch_augment=batch_aug, seed=seed,
                drop_remainder=True, flip=config.flip, crop_scale=(config.crop_scale_min, 1.0))
            return ds.repeat()

        return self._distribute(dataset_fn)

    def _eval_dataset(self, source: data.ImageSource, size: int):
        """(images, labels, weights) batches; padded with weight-0 examples to whole steps."""
        num_classes = self.num_classes

        def dataset_fn(context):
            batch = context.get_per_replica_batch_size(self.config.batch_size)
            pipelines = context.num_input_pipelines
            per_pipeline_replicas = max(1, self.replicas // pipelines)
            largest_shard = -(-source.num_examples // pipelines)
            steps = -(-largest_shard // (batch * per_pipeline_replicas))
            ds = data.make_pipeline(_shard(source, context), size, batch, num_classes, training=False,
                                    drop_remainder=False)
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
        if self.is_chief:
            os.makedirs(self.out, exist_ok=True)
        existing = self.checkpoints.list()
        if existing and not self.config.resume:
            raise ConfigError(f"--out: {self.out} already holds checkpoints of a run; pass --resume to "
                              "continue it, or choose another --out.")
        if self.config.resume:
            self._restore()
        if self.is_chief:
            self.config.save(os.path.join(self.out, "config.json"))
            with open(os.path.join(self.out, "schedule.json"), "w") as f:
                json.dump(self.schedule.to_dict(), f, indent=2)
            self._writer = tf.summary.create_file_writer(os.path.join(self.out, "tensorboard"))
        self._log(self._header())

    def _restore(self) -> None:
        found = self.checkpoints.newest_good(check=self._check_checkpoint)
        if found is None:
            self._log(f"--resume: no checkpoint in {self.checkpoints.directory}; starting from scratch.")
            return
        path, arrays, state = found
        _assign(self.model.variables, _take(arrays, "model", len(self.model.variables)))
        _assign(self.optimizer.variables, _take(arrays, "optimizer", len(self.optimizer.variables)))
        if self.ema is not None:
            _assign(self.ema.shadows, _take(arrays, "ema", len(self.ema.shadows)))
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
        for name, variables in (("model", self.model.variables), ("optimizer", self.optimizer.variables),
                                ("ema", self.ema.shadows if self.ema else [])):
            shapes = [tuple(np.shape(arrays[k])) for k in sorted(arrays) if k.startswith(name + ".")]
            if shapes != [tuple(v.shape) for v in variables]:
                raise ckpt_lib.CheckpointError(
                    f"--resume: the {name} variables of the checkpoint do not match this run "
                    f"({len(shapes)} saved vs {len(variables)}); same --model/--width/--depth/--optimizer?")

    def _save_checkpoint(self, stage) -> None:
        arrays = {}
        groups = (("model", self.model.variables), ("optimizer", self.optimizer.variables),
                  ("ema", self.ema.shadows if self.ema else []))
        for name, variables in groups:
            for i, v in enumerate(variables):
                value = np.asarray(v.numpy())
                if value.dtype.kind == "f" and not np.all(np.isfinite(value)):
                    self._stop_non_finite(stage, self.global_step // self.steps_per_epoch,
                                          f"non-finite {name} weights ({getattr(v, 'path', v.name)})")
                arrays[f"{name}.{i:05d}"] = value
        state = {
            "global_step": self.global_step, "epoch": self.global_step // self.steps_per_epoch,
            "stage": stage.index, "rows": self.rows, "best": self.best,
            "partial": dataclasses.asdict(self._partial),
            "resume_keys": {k: getattr(self.config, k) for k in RESUME_KEYS},
            "seconds": self._elapsed_before + time.time() - self._start_time,
        }
        path = self.checkpoints.save(self.global_step, arrays, state)
        self.last_checkpoint = path or self.checkpoints.path_for(self.global_step)
        if self.is_chief:
            self._prune_best_files()

    def _save_best(self, epoch: int, val_top1: float) -> None:
        """Keeps the evaluation weights of the best epoch: in memory (every worker) and on disk."""
        name = f"best-e{epoch:05d}.npz"
        with self._eval_weights(raw=False):
            self._best_values = [np.asarray(v.numpy()) for v in self.model.variables]
        if self.is_chief:
            arrays = {f"model.{i:05d}": value for i, value in enumerate(self._best_values)}
            ckpt_lib.atomic_savez(os.path.join(self.checkpoints.directory, name),
                                  {**arrays, ckpt_lib.STATE_KEY: ckpt_lib.encode_state(
                                      {"epoch": epoch, "val_top1": val_top1})})
        self.best = {"epoch": epoch, "val_top1": val_top1, "file": name}

    def _prune_best_files(self) -> None:
        """Removes best-weights files no kept checkpoint (nor the current run) refers to."""
        keep = {self.best["file"]} if self.best else set()
        for _, path in self.checkpoints.list():
            try:
                best = ckpt_lib.read_state(path).get("best")
            except Exception:  # an unreadable checkpoint refers to nothing
                continue
            if best:
                keep.add(best["file"])
        for path in glob.glob(os.path.join(self.checkpoints.directory, "best-e*.npz")):
            if os.path.basename(path) not in keep:
                os.remove(path)

    def _stop_non_finite(self, stage, epoch: int, what: str) -> None:
        last = self.last_checkpoint or "none (no checkpoint was written yet)"
        message = (f"Non-finite {what} at stage {stage.index + 1}/{len(self.schedule.stages)} "
                   f"({stage.image_size} px), epoch {epoch + 1}, global step {self.global_step + 1}; "
                   f"training stopped. Last good checkpoint: {last} (left untouched). "
                   "Lower --lr (or change --mixed_precision) and continue with --resume.")
        if self._writer is not None:
            self._writer.close()
        raise NonFiniteLossError(message)

    # -- outputs --------------------------------------------------------------------------------

    def _write_metrics(self, final: Optional[dict] = None) -> None:
        if not self.is_chief:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in self.rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
        _atomic_write(os.path.join(self.out, "metrics.csv"), buffer.getvalue())
        payload = {"epochs": self.rows, "steps_per_epoch": self.steps_per_epoch,
                   "total_steps": self.total_steps, "best": self.best}
        if final is not None:
            payload["final"] = final
        _atomic_write(os.path.join(self.out, "metrics.json"), json.dumps(payload, indent=2))
        if self.rows:
            plots.plot_curves(self.rows, self.schedule.stages, os.path.join(self.out, "curves.png"),
                              eval_size=self.config.eval_size)

    def _scalar(self, name: str, value: float, step: int) -> None:
        # tf.summary.write with the scalars plugin's metadata: what tf.summary.scalar
        # writes, without needing the tensorboard package installed.
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.write(name, tf.constant(value, tf.float32), step=step,
                                 metadata=_SCALAR_METADATA)

    def _progress_bar(self, stage, epoch: int):
        if not self.is_chief or self.config.verbose != 1:
            return None
        prefix = (f"epoch {epoch + 1}/{self.schedule.total_epochs} stage "
                  f"{stage.index + 1}/{len(self.schedule.stages)} {stage.image_size}px")
        return _ProgressBar(self.steps_per_epoch, prefix,
                            start=self.global_step - epoch * self.steps_per_epoch)

    def _log(self, text: str) -> None:
        if self.is_chief and self.config.verbose:
            print(text, flush=True)

    def _header(self) -> str:
        c = self.config
        params = self.model.count_params()
        lines = [
            f"effv2 train: {c.model} (width {c.width or get_spec(c.model).width}, depth "
            f"{c.depth or get_spec(c.model).depth}, {params:,} parameters) on {c.data}: "
            f"{self.splits.summary()}",
            f"{self.replicas} replica(s) on {self.device} ({c.strategy} strategy, {self.num_workers} "
            f"worker(s)); precision {c.mixed_precision}; XLA {'on' if self.jit else 'off'}",
            f"recipe {c.recipe} ({self.recipe_reason}; docs/PROGRESSIVE.md#recipes)"
            + (f"; given: {', '.join('--' + k for k in self.recipe_flags)}" if self.recipe_flags else ""),
            f"{c.optimizer}, lr {c.lr:g} per 256 -> {c.scaled_lr():g} at batch {c.batch_size}, "
            f"warm-up {c.warmup_epochs:g} epochs, {c.lr_decay} decay"
            f"{f' x{c.lr_decay_rate:g} per {c.lr_decay_epochs:g} epochs' if c.lr_decay == 'exponential' else ''}; "
            f"weight decay {c.weight_decay:g}; EMA {c.ema_decay:g}; label smoothing {c.label_smoothing:g}",
            f"regularization scale {c.regularization_scale:g}: RandAugment on "
            f"{c.randaug_probability:.0%} of the images, crop area {c.crop_scale_min:g}-1",
            f"{self.schedule.total_epochs} epochs x {self.steps_per_epoch} steps = {self.total_steps} "
            f"steps; evaluation at {c.eval_size} px; output in {self.out}",
            self.schedule.table(),
        ]
        return "\n".join(lines)

    def _summary(self, result: TrainResult) -> str:
        minutes, seconds = divmod(int(round(result.seconds)), 60)
        lines = [f"\nDone: {len(result.rows)} epochs, {result.global_step} steps in "
                 f"{minutes}m {seconds:02d}s."]
        which = "EMA" if self.ema is not None else "final"
        if self.config.select == "best" and self.best is not None:
            lines.append(f"Selected weights: {which}, epoch {result.selected_epoch} "
                         f"(best validation top-1).")
        else:
            lines.append(f"Selected weights: {which}, last epoch ({result.selected_epoch}).")
        for name, m in (("validation", result.val), ("test", result.test)):
            if m:
                lines.append(f"  {name:<10} top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  "
                             f"loss {m['loss']:.4f}  ({m['examples']} images)")
        if result.model_path:
            lines.append(f"Wrote {result.model_path} (+ config.json, schedule.json, metrics.csv/json, "
                         "curves.png, tensorboard/)")
        return "\n".join(lines)


class _ProgressBar:
    """One line per epoch: ``epoch 3/12 stage 2/3 48px [=====>    ] 12/25 loss ... img/s``.

    Redrawn in place on a terminal; elsewhere (logs, CI) printed once when the epoch ends.
    """

    WIDTH = 24

    def __init__(self, target: int, prefix: str, start: int = 0):
        self.target, self.prefix = target, prefix
        self.dynamic = hasattr(sys.stdout, "isatty") and sys.stdout.isatty()
        self._last_draw = 0.0
        self.current = start

    def update(self, current: int, text: str) -> None:
        self.current = current
        done = current >= self.target
        now = time.time()
        if not done and (not self.dynamic or now - self._last_draw < 0.1):
            return
        self._last_draw = now
        filled = int(self.WIDTH * current / max(self.target, 1))
        bar = "=" * filled + (">" if filled < self.WIDTH else "") + " " * (self.WIDTH - filled - 1)
        line = f"{self.prefix} [{bar[:self.WIDTH]}] {current}/{self.target} - {text}"
        end = "\n" if done else ""
        sys.stdout.write(("\r" + line + end) if self.dynamic else (line + "\n"))
        sys.stdout.flush()


class _Window:
    """Steps queued since the last host read, and the epoch's timed throughput."""

    def __init__(self, bar, start: float):
        self.bar, self.pending = bar, []
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


def _validated(config: TrainConfig) -> TrainConfig:
    try:
        return config.validate()
    except ValueError as e:
        raise ConfigError(str(e)) from None


def _load_data(config: TrainConfig) -> data.DatasetSplits:
    try:
        return data.load(config.data, data_dir=config.data_dir, val_fraction=config.val_fraction,
                         seed=config.seed, cache_dir=config.cache_dir)
    except (ValueError, FileNotFoundError, NotADirectoryError) as e:
        raise ConfigError(f"--data: {e}") from e


def _make_schedule(config: TrainConfig) -> schedule_lib.ProgressiveSchedule:
    """The schedule of a RESOLVED config: flags, else the variant's defaults, with the
    default Mixup/CutMix alphas multiplied by the regularization scale (RandAugment keeps
    Table 6's magnitudes; the scale sets the fraction of images it is applied to)."""
    spec = get_spec(config.model)
    defaults = spec.progressive
    scale = config.regularization_scale
    mixup = tuple(a * scale for a in defaults.mixup_alpha)
    pairs = {}
    for name, low, high, default in (
            ("image_size", "min_size", "max_size", defaults.image_size),
            ("randaug_magnitude", "randaug_min", "randaug_max", defaults.randaug_magnitude),
            ("mixup_alpha", "mixup_min", "mixup_max", mixup),
            ("cutmix_alpha", "cutmix_min", "cutmix_max", (0.0, 0.0)),
            ("dropout", "dropout_min", "dropout_max", defaults.dropout)):
        lo, hi = getattr(config, low), getattr(config, high)
        lo = default[0] if lo is None else lo
        hi = default[1] if hi is None else hi
        if lo > hi:
            flag = low if getattr(config, low) is not None else high
            raise ConfigError(f"--{flag}: gives {name} (min, max) = ({lo}, {hi}) with min > max "
                              f"(the {spec.name} default is {default}); set both --{low} and --{high}.")
        pairs[name] = (lo, hi)
    try:
        return schedule_lib.make_schedule(config.model, config.epochs, config.stages, **pairs)
    except ValueError as e:
        raise ConfigError(f"schedule: {e}") from e


def _skip_together(grads):
    """Per-replica gradients, made non-finite on every replica when any replica's are.

    Keras' LossScaleOptimizer decides "finite, apply" or "overflow, skip and lower the
    scale" from the FIRST replica's gradients only (it expects them all-reduced already),
    while the inner optimizer then sums every replica's. When only another replica
    overflowed (fp16 under MirroredStrategy: measured on digits, step 2) the inf was summed
    into the weights. Adding 0 (all finite) or NaN (any overflow) to every gradient makes
    all replicas, and so the first, agree.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(overflows > 0.0, float("nan"), 0.0)
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]


def _shard(source: data.ImageSource, context) -> data.ImageSource:
    n, i = context.num_input_pipelines, context.input_pipeline_id
    if n == 1:
        return source
    count = len(range(i, source.num_examples, n))
    return data.ImageSource(dataset=source.dataset.shard(n, i), num_examples=count)


def _derive_seed(*parts) -> int:
    return zlib.crc32(repr(parts).encode()) % (2**31 - 2)


def _find_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def _take(arrays, prefix: str, count: int):
    return [arrays[f"{prefix}.{i:05d}"] for i in range(count)]


def _assign(variables, values) -> None:
    for variable, value in zip(variables, values):
        variable.assign(value)


def _atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
