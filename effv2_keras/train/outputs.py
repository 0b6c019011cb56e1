"""What a run writes and prints besides checkpoints: metrics, TensorBoard, the manifest, text.

The trainer decides WHEN; this module decides WHAT and HOW: ``metrics.csv`` /
``metrics.json`` / ``curves.png`` (rewritten atomically after every epoch),
TensorBoard scalars, the resolved config as hparams and one augmented batch per
stage as images, ``run.json`` (``effv2_keras.run_dir``), the header and summary text,
and the per-epoch progress bar with the whole run's ETA.

>>> import tempfile
>>> out = RunOutputs(tempfile.mkdtemp(), is_chief=True, tensorboard=False)
>>> out.write_metrics([{"epoch": 1, "train_loss": 2.0, "train_acc": 0.3}], stages=[],
...                   extra={"steps_per_epoch": 4})
>>> open(out.path("metrics.csv")).readline().split(",")[:3]
['epoch', 'stage', 'image_size']
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from typing import Dict, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf
from tensorflow.core.framework import summary_pb2

from effv2_keras import cpu_kernels, run_dir
from effv2_keras.train import plots

METRIC_COLUMNS = (
    "epoch", "stage", "image_size", "dropout", "randaug_magnitude", "mixup_alpha", "cutmix_alpha",
    "lr", "global_step", "train_loss", "train_acc", "val_loss", "val_top1", "val_top5",
    "images_per_sec", "epoch_seconds", "wall_seconds",
)
EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_top1", "val_top5", "lr", "image_size",
                 "dropout", "images_per_sec")
IMAGES_PER_SUMMARY = 8

# tf.summary.write with the plugins' metadata writes what tf.summary.scalar / .image would,
# without needing the tensorboard package installed.
_SCALARS = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars")).SerializeToString()
_IMAGES = summary_pb2.SummaryMetadata(
    plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="images")).SerializeToString()


class RunOutputs:
    """The files of one run directory, written by the chief only.

    Args:
        out: the run directory.
        is_chief: False on other workers of a multi-worker run: nothing is written.
        tensorboard: open a TensorBoard writer under ``out/tensorboard``.
    """

    def __init__(self, out: str, is_chief: bool = True, tensorboard: bool = True):
        self.out, self.is_chief = out, is_chief
        self._writer = None
        if is_chief:
            os.makedirs(out, exist_ok=True)
            if tensorboard:
                self._writer = tf.summary.create_file_writer(self.path(run_dir.RUN_FILES["tensorboard"]))

    def path(self, name: str) -> str:
        return os.path.join(self.out, name)

    def write_config(self, config, schedule, plan=None) -> None:
        """config.json (the resolved config: enough to repeat the run), schedule.json and, under a
        time budget, plan.json (what was measured and planned; a resume continues it)."""
        if self.is_chief:
            atomic_write(self.path(run_dir.RUN_FILES["config"]), config.to_json() + "\n")
            atomic_write(self.path(run_dir.RUN_FILES["schedule"]), json.dumps(schedule.to_dict(), indent=2))
            if plan is not None:
                atomic_write(self.path(run_dir.RUN_FILES["plan"]), json.dumps(plan.to_dict(), indent=2) + "\n")

    # -- TensorBoard ----------------------------------------------------------------------

    def scalar(self, name: str, value: float, step: int) -> None:
        if self._writer is not None:
            with self._writer.as_default():
                tf.summary.write(name, tf.constant(value, tf.float32), step=step, metadata=_SCALARS)

    def epoch_scalars(self, row: dict) -> None:
        for key in EPOCH_SCALARS:
            if row.get(key) is not None:
                self.scalar(f"epoch/{key}", row[key], row["epoch"])

    def hparams(self, config) -> bool:
        """The resolved config in TensorBoard's HParams tab; False when tensorboard is absent."""
        if self._writer is None:
            return False
        try:
            from tensorboard.plugins.hparams import api as hp
        except ImportError:
            return False
        values = {k: v for k, v in config.to_dict().items() if isinstance(v, (bool, int, float, str))}
        with self._writer.as_default():
            hp.hparams(values, trial_id=os.path.basename(os.path.abspath(self.out)))
        return True

    def stage_images(self, stage, images, step: int) -> None:
        """Up to ``IMAGES_PER_SUMMARY`` augmented training images of ``stage`` (RGB in [0, 255])."""
        if self._writer is None:
            return
        batch = np.asarray(images)[:IMAGES_PER_SUMMARY]
        pngs = [tf.io.encode_png(np.clip(np.round(image), 0, 255).astype(np.uint8)) for image in batch]
        height, width = batch.shape[1:3]
        tensor = tf.stack([tf.constant(str(width)), tf.constant(str(height))] + pngs)
        with self._writer.as_default():
            tf.summary.write(f"stage_{stage.index + 1}/augmented_batch", tensor, step=step, metadata=_IMAGES)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    # -- metrics, manifest ----------------------------------------------------------------

    def write_metrics(self, rows: Sequence[dict], stages: Sequence, extra: dict,
                      final: Optional[dict] = None, eval_size: Optional[int] = None) -> None:
        """metrics.csv (one row per epoch), metrics.json (rows + ``extra`` + ``final``), curves.png."""
        if not self.is_chief:
            return
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=METRIC_COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in METRIC_COLUMNS})
        atomic_write(self.path(run_dir.RUN_FILES["metrics_csv"]), buffer.getvalue())
        payload = {"epochs": list(rows), **extra}
        if final is not None:
            payload["final"] = final
        atomic_write(self.path(run_dir.RUN_FILES["metrics_json"]), json.dumps(payload, indent=2))
        if rows:
            plots.plot_curves(rows, stages, self.path(run_dir.RUN_FILES["curves"]), eval_size=eval_size)

    def write_model(self, model: keras.Model) -> Optional[str]:
        """``model.keras``, atomically (a temporary file renamed over the final name)."""
        if not self.is_chief:
            return None
        path = self.path(run_dir.RUN_FILES["model"])
        tmp = self.path(".model.tmp.keras")
        model.save(tmp)
        os.replace(tmp, path)
        return path

    def write_manifest(self, config, class_names: Sequence[str], eval_size: Optional[int] = None,
                       crop_fraction: Optional[float] = None) -> Optional[str]:
        """run.json: what export/, predict and evaluate read (``effv2_keras.run_dir``); ``eval_size``
        and ``crop_fraction``: those chosen at the end of the run (default: the config's size, the
        package's central crop)."""
        if not self.is_chief:
            return None
        manifest = run_dir.RunManifest(
            model=config.model, num_classes=len(class_names), class_names=[str(n) for n in class_names],
            eval_size=eval_size or config.eval_size, crop_fraction=crop_fraction or run_dir.DEFAULT_CROP_FRACTION,
            width=config.width, depth=config.depth, data=config.data,
            data_dir=config.data_dir, files=run_dir.present_files(self.out))
        return str(run_dir.write(self.out, manifest))


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


# -- progress ---------------------------------------------------------------------------------


def interactive() -> bool:
    """True in a terminal or a notebook: the progress bar is redrawn in place there.

    Keras' Progbar treats every POSIX process as a live display; in logs and CI that
    leaves carriage returns, so elsewhere the bar is its one-line-per-epoch form."""
    return (hasattr(sys.stdout, "isatty") and sys.stdout.isatty()) or "ipykernel" in sys.modules


class Progress:
    """Per-epoch ``keras.utils.Progbar`` (its ETA is the epoch's) and the whole run's ETA.

    Args:
        total_steps: steps of the whole run.
        done_steps: steps already done (a resumed run).
        verbose: 0 silent, 1 a live bar in terminals and notebooks, 2 (or 1 in logs) no bar:
            the trainer prints one line per epoch.
    """

    def __init__(self, total_steps: int, done_steps: int = 0, verbose: int = 1):
        self.total_steps, self.verbose = total_steps, verbose
        self._started_at, self._start_step = time.perf_counter(), done_steps
        self.bar = None

    def begin_epoch(self, steps: int, done: int = 0) -> None:
        """A live bar for the epoch where the display redraws in place (elsewhere the epoch's
        one summary line, with the run's ETA, is the progress)."""
        self.bar = None
        if self.verbose == 1 and interactive():
            self.bar = keras.utils.Progbar(steps, verbose=1, stateful_metrics=("loss", "acc", "lr", "img/s"),
                                           unit_name="step")
            if done:
                self.bar.update(done)

    def update(self, position: int, loss: float, acc: float, lr: float, speed: float) -> None:
        if self.bar is not None:
            self.bar.update(position, [("loss", loss), ("acc", acc), ("lr", lr), ("img/s", speed)])

    def run_eta(self, global_step: int) -> Optional[float]:
        """Seconds left for the whole run at the pace of this process so far."""
        done = global_step - self._start_step
        if done <= 0:
            return None
        pace = (time.perf_counter() - self._started_at) / done
        return pace * max(self.total_steps - global_step, 0)


def format_seconds(seconds: Optional[float]) -> str:
    """``1h02m``, ``3m05s``, ``12s``; ``?`` when unknown.

    >>> format_seconds(3725), format_seconds(185), format_seconds(12.4), format_seconds(None)
    ('1h02m', '3m05s', '12s', '?')
    """
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


# -- text ---------------------------------------------------------------------------------------


def header_text(config, *, params: int, data_summary: str, replicas: int, device: str, workers: int,
                jit: bool, precision_reason: str, recipe_reason: str, recipe_flags: Sequence[str], variant_width: float,
                variant_depth: float, schedule, steps_per_epoch: int, out: str) -> str:
    """The lines printed when a run starts: model, hardware, recipe, schedule."""
    c = config
    total = schedule.epochs * steps_per_epoch
    lines = [
        f"effv2 train: {c.model} (width {c.width or variant_width}, depth {c.depth or variant_depth}, "
        f"{params:,} parameters) on {c.data}: {data_summary}",
        f"{replicas} replica(s) on {device} ({c.strategy} strategy, {workers} worker(s)); precision "
        f"{c.mixed_precision} ({precision_reason}); XLA {'on' if jit else 'off'}",
        f"CPU kernels: {cpu_kernels.describe()}",
        f"recipe {c.recipe} ({recipe_reason}; docs/PROGRESSIVE.md#recipes)"
        + (f"; given: {', '.join('--' + k for k in recipe_flags)}" if recipe_flags else ""),
        f"{c.optimizer}, lr {c.lr:g} per 256 -> {c.scaled_lr():g} at batch {c.batch_size}, "
        f"warm-up {c.warmup_epochs:g} epochs, {c.lr_decay} decay"
        f"{f' x{c.lr_decay_rate:g} per {c.lr_decay_epochs:g} epochs' if c.lr_decay == 'exponential' else ''}; "
        f"weight decay {c.weight_decay:g}; EMA {c.ema_decay:g}; label smoothing {c.label_smoothing:g}",
        f"regularization scale {c.regularization_scale:g}: RandAugment on {c.randaug_probability:.0%} of "
        f"the images, crop area {c.crop_scale_min:g}-1, flips {'on' if c.flip else 'off'}",
        f"{schedule.epochs} epochs x {steps_per_epoch} steps = {total} steps; evaluation at "
        f"{c.eval_size} px; output in {out}",
        schedule.table(),
    ]
    return "\n".join(lines)


def stage_text(stage, num_stages: int, eta: Optional[float]) -> str:
    return (f"\nStage {stage.index + 1}/{num_stages}: {stage.image_size} px, {stage.epochs} epochs, "
            f"RandAugment {stage.randaug_magnitude:g}, Mixup {stage.mixup_alpha:g}, CutMix "
            f"{stage.cutmix_alpha:g}, dropout {stage.dropout:g}"
            + (f" (run ETA {format_seconds(eta)})" if eta is not None else ""))


def epoch_text(row: dict, epochs: int, eta: Optional[float]) -> str:
    val = (f" - val_loss {row['val_loss']:.4f} - val_top1 {row['val_top1']:.4f} - val_top5 "
           f"{row['val_top5']:.4f}" if row.get("val_top1") is not None else "")
    return (f"epoch {row['epoch']}/{epochs}: loss {row['train_loss']:.4f} - acc {row['train_acc']:.4f}"
            f"{val} - {row['images_per_sec']:.1f} img/s - run ETA {format_seconds(eta)}")


def summary_text(result, *, ema: bool, selected_best: bool, eval_scores: Optional[dict] = None) -> str:
    """The lines printed when a run ends: time, selected weights, validation/test, files."""
    minutes, seconds = divmod(int(round(result.seconds)), 60)
    lines = [f"\nDone: {len(result.rows)} epochs, {result.global_step} steps in {minutes}m {seconds:02d}s."]
    which = "EMA" if ema else "final"
    if selected_best:
        lines.append(f"Selected weights: {which}, epoch {result.selected_epoch} (best validation top-1).")
    else:
        lines.append(f"Selected weights: {which}, last epoch ({result.selected_epoch}).")
    if result.eval_size:
        crop = f", central {result.eval_crop_fraction:g} of each side" if result.eval_crop_fraction else ""
        lines.append(f"Evaluated at {result.eval_size} px{crop}" + (
            " (lowest validation loss of px@crop " + ", ".join(
                f"{s} {v['loss']:.3f} (top-1 {v['top1']:.4f})" for s, v in eval_scores.items()) + ")"
            if eval_scores and len(eval_scores) > 1 else "") + ":")
    for name, m in (("validation", result.val), ("test", result.test)):
        if m:
            lines.append(f"  {name:<10} top-1 {m['top1']:.4f}  top-5 {m['top5']:.4f}  loss {m['loss']:.4f}  "
                         f"({m['examples']} images)")
    if result.model_path:
        lines.append(f"Wrote {result.model_path} (softmax probabilities; + run.json, config.json, "
                     "schedule.json, metrics.csv/json, curves.png, tensorboard/)")
    return "\n".join(lines)


def epoch_logs(row: dict) -> Dict[str, float]:
    """A metrics row as Keras callbacks expect ``logs``: Keras' names added, None dropped,
    and no ``epoch`` (callbacks get Keras' 0-based index as an argument; a 1-based copy in
    the logs would overwrite CSVLogger's column).

    >>> epoch_logs({"train_loss": 1.5, "train_acc": 0.5, "val_loss": None, "epoch": 1})
    {'train_loss': 1.5, 'train_acc': 0.5, 'loss': 1.5, 'accuracy': 0.5}
    """
    logs = {k: v for k, v in row.items() if v is not None and k != "epoch"}
    for keras_name, ours in (("loss", "train_loss"), ("accuracy", "train_acc"), ("val_loss", "val_loss"),
                             ("val_accuracy", "val_top1"), ("val_top5_accuracy", "val_top5")):
        if row.get(ours) is not None:
            logs[keras_name] = row[ours]
    return logs

