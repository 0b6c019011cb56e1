"""Progressive learning against fixed-size training and the paths users have today, by wall-clock.

Benchmark, not a test. For every ``--data`` folder, the same variant is trained from the
same seed along up to four paths, one after another in this process:

* ``progressive``: ``effv2 train`` (the package's Trainer) with its defaults and
  ``--stages`` stages from ``--min_size`` to ``--max_size`` px, regularization ramped
  (the paper's Algorithm 1);
* ``fixed``: the same Trainer, same epochs, one stage at ``--max_size`` with the
  regularization at its maximum (for runs under 50 epochs this is what ``effv2 train``
  does when ``--stages`` is not given: one stage per 25 epochs);
* ``keras``: the plain Keras path: keras.applications' same variant (same width/depth),
  ``keras.utils.image_dataset_from_directory`` and ``model.fit``, Adam 1e-3, float32;
* ``timm``: the PyTorch path (when torch and timm are installed): timm's tf_efficientnetv2
  of the same variant, channels-last, bf16 autocast, AdamW 1e-3, images decoded once
  into memory.

The peers (keras, timm) run epochs until ``--budget_s`` of wall-clock is spent (default:
the progressive run's wall-clock, so every path gets the same budget). Every path selects
its weights on the same validation slice (the folder's ``val/``, else a stratified seeded
slice carved from train, never test) and reports test top-1 at the end. Per epoch it
records (wall-clock seconds since the run started, validation top-1), data loading and
model building included, so the PNG plots accuracy against wall-clock.

Derived numbers: the best peer (highest selected validation top-1); for every path the
first wall-clock time its validation top-1 reached the best peer's; and validation top-1
at equal budget (the best epoch finished within the budget). The input pipeline alone
(images/s, timed after each run) is reported beside the training step's images/s.

The machine may be shared: the load average before and after every run is in the JSON.

Example (the command of docs/PROGRESSIVE.md):
    python tools/benchmark_progressive.py --data ../shared/data/clothing160 --width 0.5 --depth 0.5 \\
        --epochs 10 --stages 4 --min_size 64 --max_size 128 --batch_size 32 --out docs/progressive_clothing160
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402
import keras  # noqa: E402

RUNS = ("progressive", "fixed", "keras", "timm")
PEERS = ("keras", "timm")

FLAGS = flags.FLAGS
flags.DEFINE_list("data", ["../shared/data/clothing160"],
                  "Image folders (ROOT/{train,val,test}/<class>/<file> or ROOT/<class>/<file>).")
flags.DEFINE_string("model", "efficientnetv2-b0", "Variant (a base variant b0-b3 for the keras/timm peers).")
flags.DEFINE_float("width", None, "Width multiplier override, for every path (None: the variant's).")
flags.DEFINE_float("depth", None, "Depth multiplier override, for every path (None: the variant's).")
flags.DEFINE_integer("epochs", 16, "Epochs of the progressive and fixed runs.")
flags.DEFINE_integer("stages", 4, "Stages of the progressive run.")
flags.DEFINE_integer("min_size", 64, "First-stage image size of the progressive run.")
flags.DEFINE_integer("max_size", 128, "Last-stage size; the fixed run and the peers train and evaluate at it.")
flags.DEFINE_integer("batch_size", 32, "Batch size of every path.")
flags.DEFINE_list("runs", list(RUNS), f"Paths to run, a subset of {','.join(RUNS)} (in this order).")
flags.DEFINE_float("budget_s", 0.0, "Wall-clock budget of each peer run in seconds "
                   "(0: the progressive run's wall-clock, else the fixed run's, else 600).")
flags.DEFINE_integer("peer_max_epochs", 1000, "Epoch cap of the peers (they normally stop at the budget).")
flags.DEFINE_float("val_fraction", 0.1, "Validation slice carved from train when a folder has no val/.")
flags.DEFINE_boolean("flip", True, "Random horizontal flips (trainer and timm path).")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on training steps per epoch, every path (smoke runs).")
flags.DEFINE_integer("pipeline_batches", 20, "Batches timed when measuring an input pipeline alone.")
flags.DEFINE_string("out", "runs/benchmark_progressive", "Output prefix: writes OUT.json and OUT.png.")
flags.DEFINE_integer("seed", 0, "Seed of every path (data split, shuffling, augmentation, init).")
flags.DEFINE_string("replot", None, "Train nothing: recompute the comparison, table and PNG of this "
                    "JSON (from an earlier run, finished or killed) and write them to --out.")


# -- data: one split view shared by every path ---------------------------------------------------


def split_view(root: str, val_fraction: float, seed: int, into: str) -> Dict[str, str]:
    """Symlinks ``into/{train,val,test}/<class>/<file>`` so every path reads the same splits.

    The folder's own val/ when it has one, else the package's stratified seeded slice of
    train (never test). Returns the three split folders (test may be absent).
    """
    from effv2_keras.data import core, folder

    root = os.path.abspath(root)
    dirs = folder._split_dirs(root)
    classes = folder._class_folders(dirs["train"])
    listed = {split: folder._list_files(path, classes) for split, path in dirs.items() if path}
    if "val" not in listed:
        files, labels = listed["train"]
        keep, take = core.stratified_split(labels, val_fraction, seed)
        listed["train"] = ([files[i] for i in keep], labels[keep])
        listed["val"] = ([files[i] for i in take], labels[take])
    out = {}
    for split, (files, labels) in listed.items():
        for c in classes:
            os.makedirs(os.path.join(into, split, c), exist_ok=True)
        for i, (path, label) in enumerate(zip(files, labels)):
            name = f"{i:06d}_{os.path.basename(path)}"
            os.symlink(path, os.path.join(into, split, classes[label], name))
        out[split] = os.path.join(into, split)
    return out


# -- the package's Trainer (progressive and fixed) ------------------------------------------------


class _Timeline(keras.callbacks.Callback):
    """Trainer callback: (seconds since the run started, val top-1) at every epoch end."""

    def __init__(self, start: float):
        super().__init__()
        self.start, self.epochs = start, []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append({"epoch": epoch + 1, "seconds": time.time() - self.start,
                            "val_top1": logs.get("val_top1"), "image_size": logs["image_size"],
                            "stage": logs["stage"], "train_images_per_s": logs["images_per_sec"],
                            "epoch_train_seconds": logs["epoch_seconds"]})


def run_trainer(kind: str, view: str, out_dir: str) -> dict:
    from effv2_keras import data
    from effv2_keras.train import TrainConfig, Trainer

    fixed = kind == "fixed"
    config = TrainConfig(
        model=FLAGS.model, width=FLAGS.width, depth=FLAGS.depth, data=f"folder:{view}",
        epochs=FLAGS.epochs, stages=1 if fixed else FLAGS.stages,
        min_size=FLAGS.max_size if fixed else FLAGS.min_size, max_size=FLAGS.max_size,
        batch_size=FLAGS.batch_size, flip=FLAGS.flip, steps_per_epoch=FLAGS.steps_per_epoch,
        seed=FLAGS.seed, out=os.path.join(out_dir, kind), verbose=2)
    start = time.time()
    timeline = _Timeline(start)
    trainer = Trainer(config, callbacks=[timeline])
    result = trainer.fit()
    seconds = time.time() - start
    # The input pipeline alone, per stage (after the timed run; the private method builds
    # exactly the training pipeline of the stage: crops, flips, RandAugment, Mixup).
    pipeline = []
    for stage in trainer.schedule.stages:
        ds = trainer._train_dataset(stage, start_step=0)
        pipeline.append({"stage": stage.index, "image_size": stage.image_size,
                         "images_per_s": data.measure_throughput(ds, batches=FLAGS.pipeline_batches)})
    stages = []
    for stage in trainer.schedule.stages:
        rows = [e for e in timeline.epochs if e["stage"] == stage.index]
        stages.append({"stage": stage.index, "image_size": stage.image_size, "epochs": stage.epochs,
                       "randaug": stage.randaug_magnitude, "mixup": stage.mixup_alpha,
                       "dropout": stage.dropout,
                       "train_images_per_s": _mean([r["train_images_per_s"] for r in rows]),
                       "input_images_per_s": pipeline[stage.index]["images_per_s"],
                       "train_seconds": sum(r["epoch_train_seconds"] for r in rows)})
    c = result.config
    return {"path": kind, "seconds": seconds, "epochs": timeline.epochs, "stages": stages,
            "selected_epoch": result.selected_epoch, "val_top1": result.val["top1"],
            "test_top1": result.test["top1"] if result.test else None,
            "settings": {"optimizer": c.optimizer, "lr_per_256": c.lr, "lr": c.scaled_lr(),
                         "warmup_epochs": c.warmup_epochs, "weight_decay": c.weight_decay,
                         "ema_decay": c.ema_decay, "label_smoothing": c.label_smoothing,
                         "lr_decay": c.lr_decay, "lr_decay_epochs": c.lr_decay_epochs,
                         "regularization_scale": c.regularization_scale,
                         "randaug_probability": c.randaug_probability, "crop_scale_min": c.crop_scale_min,
                         "eval_size": c.eval_size, "precision": c.mixed_precision,
                         "steps_per_epoch": c.steps_per_epoch}}


# -- the plain Keras path --------------------------------------------------------------------------


def _keras_reference(num_classes: int, size: int):
    import keras
    from keras.src.applications import efficientnet_v2

    from effv2_keras.models import get_spec

    spec = get_spec(FLAGS.model)
    width = FLAGS.width if FLAGS.width is not None else spec.width
    depth = FLAGS.depth if FLAGS.depth is not None else spec.depth
    keras.utils.set_random_seed(FLAGS.seed)
    # The public constructors (EfficientNetV2B0, ...) fix width/depth; their common builder
    # takes them, with the same block table (name selects it).
    return efficientnet_v2.EfficientNetV2(
        width_coefficient=width, depth_coefficient=depth, default_size=size, name=FLAGS.model,
        weights=None, input_shape=(size, size, 3), classes=num_classes, include_preprocessing=True)


class _Budget:
    """Stops a peer at the budget; records its epochs; keeps the best-validation weights."""

    def __init__(self, start: float, budget: float):
        self.start, self.budget = start, budget
        self.epochs: List[dict] = []
        self.best = None  # (val_top1, epoch, weights)

    def over(self) -> bool:
        return time.time() - self.start >= self.budget

    def epoch_end(self, epoch: int, val_top1: float, images: int, train_seconds: float, get_weights):
        self.epochs.append({"epoch": epoch + 1, "seconds": time.time() - self.start, "val_top1": val_top1,
                            "train_images_per_s": images / max(train_seconds, 1e-9),
                            "epoch_train_seconds": train_seconds, "image_size": FLAGS.max_size})
        if self.best is None or val_top1 >= self.best[0]:
            self.best = (val_top1, epoch + 1, get_weights())


def run_keras(splits: Dict[str, str], budget: float) -> dict:
    import keras

    from effv2_keras import data

    start = time.time()
    size, batch = FLAGS.max_size, FLAGS.batch_size

    def load(split, shuffle):
        return keras.utils.image_dataset_from_directory(
            splits[split], image_size=(size, size), batch_size=batch, shuffle=shuffle, seed=FLAGS.seed,
            verbose=False)

    train_ds, val_ds = load("train", True), load("val", False)
    num_classes = len(train_ds.class_names)
    if FLAGS.steps_per_epoch:
        train_ds = train_ds.take(FLAGS.steps_per_epoch)
    model = _keras_reference(num_classes, size)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    tracker = _Budget(start, budget)

    class Callback(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.batches = time.time(), 0

        def on_train_batch_end(self, step, logs=None):
            self.batches += 1
            if tracker.over():
                self.model.stop_training = True

        def on_test_begin(self, logs=None):
            self.train_seconds = time.time() - self.t0

        def on_epoch_end(self, epoch, logs=None):
            tracker.epoch_end(epoch, float(logs["val_accuracy"]), self.batches * batch,
                              self.train_seconds, self.model.get_weights)

    model.fit(train_ds, validation_data=val_ds, epochs=FLAGS.peer_max_epochs, callbacks=[Callback()],
              shuffle=False, verbose=0)  # the dataset shuffles itself every epoch
    seconds = time.time() - start
    model.set_weights(tracker.best[2])
    test_top1 = None
    if "test" in splits:
        test_top1 = float(model.evaluate(load("test", False), verbose=0, return_dict=True)["accuracy"])
    input_rate = data.measure_throughput(load("train", True).repeat(), batches=FLAGS.pipeline_batches)
    return _peer_result("keras", tracker, seconds, test_top1, input_rate,
                        {"optimizer": "adam", "lr": 1e-3, "precision": "float32",
                         "augmentation": "none", "eval": f"whole image resized to {size}"})


# -- the PyTorch path --------------------------------------------------------------------------------


def _timm_reference(timm, num_classes: int):
    from timm.models import efficientnet as timm_effnet

    from effv2_keras.models import get_spec

    spec = get_spec(FLAGS.model)
    name = "tf_" + FLAGS.model.replace("efficientnetv2-", "efficientnetv2_")
    if FLAGS.width is None and FLAGS.depth is None:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=spec.dropout,
                                 drop_path_rate=0.2)
    if not FLAGS.model.startswith("efficientnetv2-b"):
        raise ValueError("--width/--depth with the timm path: only the base variants (b0-b3)")
    # timm's tf_efficientnetv2_b* are this builder with the variant's multipliers.
    return timm_effnet._gen_efficientnetv2_base(
        name, channel_multiplier=FLAGS.width if FLAGS.width is not None else spec.width,
        depth_multiplier=FLAGS.depth if FLAGS.depth is not None else spec.depth, pretrained=False,
        num_classes=num_classes, drop_rate=spec.dropout, drop_path_rate=0.2, bn_eps=1e-3, pad_type="same")


def _decode_folder(folder: str, size: int):
    """(uint8 [N, 3, S, S], int64 [N]): every image decoded once, resized to S x S (PIL)."""
    import numpy as np
    from PIL import Image

    classes = sorted(d for d in os.listdir(folder) if not d.startswith("."))
    images, labels = [], []
    for label, name in enumerate(classes):
        for f in sorted(os.listdir(os.path.join(folder, name))):
            with Image.open(os.path.join(folder, name, f)) as im:
                im = im.convert("RGB").resize((size, size), Image.BILINEAR)
                images.append(np.asarray(im, np.uint8).transpose(2, 0, 1))
            labels.append(label)
    return np.stack(images), np.asarray(labels, np.int64), classes


def run_timm(splits: Dict[str, str], budget: float) -> Optional[dict]:
    from timm_import import import_timm

    timm = import_timm()
    if timm is None:
        print("timm path skipped: torch or timm is not installed.", flush=True)
        return None
    import numpy as np
    import torch

    start = time.time()
    torch.manual_seed(FLAGS.seed)
    size, batch = FLAGS.max_size, FLAGS.batch_size
    decoded = {split: _decode_folder(path, size) for split, path in splits.items()}
    x_train, y_train, classes = decoded["train"]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1) * 255
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1) * 255

    def prepare(x):
        x = (torch.from_numpy(x).float() - mean) / std
        return x.contiguous(memory_format=torch.channels_last)

    model = _timm_reference(timm, len(classes)).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    generator = np.random.default_rng(FLAGS.seed)

    def batches_of(x, y, shuffle):
        order = generator.permutation(len(x)) if shuffle else np.arange(len(x))
        stop = len(x) - len(x) % batch if shuffle else len(x)
        for i in range(0, stop, batch):
            idx = order[i:i + batch]
            xb = x[idx]
            if shuffle and FLAGS.flip:
                flips = generator.random(len(idx)) < 0.5
                xb = np.where(flips[:, None, None, None], xb[..., ::-1], xb)
            yield prepare(np.ascontiguousarray(xb)), torch.from_numpy(y[idx])

    def accuracy(split):
        x, y, _ = decoded[split]
        model.eval()
        correct = 0
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            for xb, yb in batches_of(x, y, False):
                correct += int((model(xb).float().argmax(-1) == yb).sum())
        return correct / len(x)

    tracker = _Budget(start, budget)
    for epoch in range(FLAGS.peer_max_epochs):
        model.train()
        t0, images = time.time(), 0
        for step, (xb, yb) in enumerate(batches_of(x_train, y_train, True)):
            if FLAGS.steps_per_epoch and step >= FLAGS.steps_per_epoch:
                break
            with torch.autocast("cpu", dtype=torch.bfloat16):
                loss = loss_fn(model(xb).float(), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            images += len(yb)
            if tracker.over():
                break
        train_seconds = time.time() - t0
        tracker.epoch_end(epoch, accuracy("val"), images, train_seconds,
                          lambda: {k: v.detach().clone() for k, v in model.state_dict().items()})
        if tracker.over():
            break
    seconds = time.time() - start
    model.load_state_dict(tracker.best[2])
    test_top1 = accuracy("test") if "test" in decoded else None
    t0, count = time.time(), 0
    for i, (xb, _) in enumerate(batches_of(x_train, y_train, True)):
        count += len(xb)
        if i + 1 >= FLAGS.pipeline_batches:
            break
    input_rate = count / max(time.time() - t0, 1e-9)
    return _peer_result("timm", tracker, seconds, test_top1, input_rate,
                        {"optimizer": "adamw", "lr": 1e-3, "weight_decay": 0.01, "precision": "bf16 autocast",
                         "memory_format": "channels_last", "augmentation": "flip" if FLAGS.flip else "none",
                         "eval": f"whole image resized to {size}", "torch": torch.__version__,
                         "timm": timm.__version__, "threads": torch.get_num_threads()})


def _peer_result(kind, tracker: _Budget, seconds, test_top1, input_rate, settings) -> dict:
    return {"path": kind, "seconds": seconds, "epochs": tracker.epochs, "budget_s": tracker.budget,
            "selected_epoch": tracker.best[1], "val_top1": tracker.best[0], "test_top1": test_top1,
            "stages": [{"stage": 0, "image_size": FLAGS.max_size, "epochs": len(tracker.epochs),
                        "train_images_per_s": _mean([e["train_images_per_s"] for e in tracker.epochs]),
                        "input_images_per_s": input_rate,
                        "train_seconds": sum(e["epoch_train_seconds"] for e in tracker.epochs)}],
            "settings": settings}


# -- comparison, table, plot ----------------------------------------------------------------------------


def _mean(values):
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def time_to_reach(result: dict, target: float) -> Optional[float]:
    """Wall-clock seconds at the end of the first epoch whose val top-1 >= target (None: never)."""
    for e in result["epochs"]:
        if e["val_top1"] is not None and e["val_top1"] >= target - 1e-9:
            return e["seconds"]
    return None


def best_within(result: dict, budget: float) -> Optional[float]:
    """Best val top-1 among the epochs that ended within ``budget`` seconds."""
    values = [e["val_top1"] for e in result["epochs"] if e["seconds"] <= budget + 1e-6]
    return max(values) if values else None


def compare(results: Dict[str, dict], budget: float) -> dict:
    peers = {k: r for k, r in results.items() if k in PEERS}
    summary = {"budget_s": budget}
    if not peers:
        return summary
    best = max(peers.values(), key=lambda r: r["val_top1"])
    target = best["val_top1"]
    peer_time = time_to_reach(best, target)
    summary.update(best_peer=best["path"], target_val_top1=target, best_peer_seconds_to_target=peer_time,
                   best_peer_seconds=best["seconds"], best_peer_test_top1=best["test_top1"])
    for kind, r in results.items():
        t = time_to_reach(r, target)
        r["seconds_to_best_peer_val"] = t
        r["time_ratio_vs_best_peer"] = None if t is None or not peer_time else t / peer_time
        r["val_top1_at_budget"] = best_within(r, budget)
    for kind in ("progressive", "fixed"):
        if kind in results:
            r = results[kind]
            summary[f"{kind}_half_time_goal_met"] = (r["time_ratio_vs_best_peer"] is not None
                                                     and r["time_ratio_vs_best_peer"] <= 0.5)
            at_budget = r["val_top1_at_budget"]
            summary[f"{kind}_beats_best_peer_at_budget"] = (at_budget is not None
                                                            and at_budget > best_within(best, budget))
    return summary


def print_table(name: str, results: Dict[str, dict], summary: dict) -> None:
    def pct(x):
        return "-" if x is None else f"{100 * x:.1f}"

    def sec(x):
        return "never" if x is None else f"{x:.0f}"

    print(f"\n## {name}  (budget {summary['budget_s']:.0f} s"
          + (f"; best peer {summary['best_peer']}, val top-1 {pct(summary['target_val_top1'])}%"
             if "best_peer" in summary else "") + ")")
    print("| path | epochs | wall-clock s | train img/s per stage (px) | input img/s per stage "
          "| val top-1 % (selected) | val top-1 % at budget | s to best peer's val | test top-1 % |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, r in results.items():
        speeds = ", ".join(f"{s['train_images_per_s']:.0f} ({s['image_size']})" for s in r["stages"]
                           if s["train_images_per_s"] is not None)
        inputs = ", ".join(f"{s['input_images_per_s']:.0f}" for s in r["stages"])
        print(f"| {kind} | {len(r['epochs'])} | {r['seconds']:.0f} | {speeds} | {inputs} | "
              f"{pct(r['val_top1'])} (e{r['selected_epoch']}) | {pct(r.get('val_top1_at_budget'))} | "
              f"{sec(r.get('seconds_to_best_peer_val'))} | {pct(r['test_top1'])} |")


def plot(datasets: Dict[str, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from effv2_keras.train.plots import label_wallclock_axes

    fig, axes = plt.subplots(1, len(datasets), figsize=(6.2 * len(datasets), 4.2), squeeze=False)
    styles = {"progressive": "o-", "fixed": "s-", "keras": "^--", "timm": "v--"}
    for ax, (name, entry) in zip(axes[0], datasets.items()):
        for kind, r in entry["results"].items():
            ax.plot([e["seconds"] / 60 for e in r["epochs"]], [100 * e["val_top1"] for e in r["epochs"]],
                    styles.get(kind, "o-"), markersize=3, label=f"{kind} (test {100 * (r['test_top1'] or 0):.1f}%)")
        summary = entry["summary"]
        ax.axvline(summary["budget_s"] / 60, color="grey", linestyle=":", linewidth=1, label="budget")
        if "target_val_top1" in summary:
            ax.axhline(100 * summary["target_val_top1"], color="grey", linestyle="--", linewidth=0.8,
                       label=f"best peer ({summary['best_peer']}) val")
        label_wallclock_axes(ax, name)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def machine_info() -> dict:
    import keras
    import tensorflow as tf

    info = {"machine": platform.machine(), "processor": platform.processor(), "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "tensorflow": tf.__version__, "keras": keras.__version__,
            "gpus": len(tf.config.list_physical_devices("GPU"))}
    try:
        with open("/proc/cpuinfo") as f:
            info["cpu_model"] = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), None)
    except OSError:
        pass
    return info


def replot(path: str) -> None:
    with open(path) as f:
        report = json.load(f)
    for name, entry in report["datasets"].items():
        results = entry["results"]
        budget = FLAGS.budget_s or report["flags"]["budget_s"] or next(
            (results[k]["seconds"] for k in ("progressive", "fixed") if k in results), 600.0)
        entry["summary"] = compare(results, budget)
        entry.pop("partial", None)
        print_table(name, results, entry["summary"])
    _write(report, FLAGS.out)
    plot(report["datasets"], FLAGS.out + ".png")
    print(f"\nWrote {FLAGS.out}.json and {FLAGS.out}.png", flush=True)


def main(argv):
    del argv
    if FLAGS.replot:
        return replot(FLAGS.replot)
    unknown = sorted(set(FLAGS.runs) - set(RUNS))
    if unknown or not FLAGS.runs:
        raise app.UsageError(f"--runs: unknown {unknown}; choose from {','.join(RUNS)}")
    runs = [k for k in RUNS if k in FLAGS.runs]
    out_dir = os.path.dirname(os.path.abspath(FLAGS.out))
    os.makedirs(out_dir, exist_ok=True)
    work = tempfile.mkdtemp(prefix="benchmark_progressive_")
    report = {"command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
              "flags": {name: FLAGS[name].value for name in (
                  "data", "model", "width", "depth", "epochs", "stages", "min_size", "max_size", "batch_size",
                  "runs", "budget_s", "peer_max_epochs", "val_fraction", "flip", "steps_per_epoch", "seed")},
              "machine": machine_info(), "datasets": {}}
    try:
        for root in FLAGS.data:
            name = os.path.basename(os.path.normpath(root))
            view = os.path.join(work, name)
            splits = split_view(root, FLAGS.val_fraction, FLAGS.seed, view)
            results: Dict[str, dict] = {}
            budget = FLAGS.budget_s
            for kind in runs:
                if not budget and kind in PEERS:
                    budget = (results.get("progressive") or results.get("fixed") or {}).get("seconds", 600.0)
                load_before = os.getloadavg()
                print(f"\n=== {name}: {kind} ===", flush=True)
                if kind in ("progressive", "fixed"):
                    result = run_trainer(kind, view, os.path.join(work, "runs", name))
                elif kind == "keras":
                    result = run_keras(splits, budget)
                else:
                    result = run_timm(splits, budget)
                if result is None:
                    continue
                result["loadavg_before"], result["loadavg_after"] = load_before, os.getloadavg()
                results[kind] = result
                report["datasets"][name] = {"partial": True, "results": results}
                _write(report, FLAGS.out)  # a killed benchmark keeps the paths it finished
                _clear_keras()
            budget = budget or (results.get("progressive") or results.get("fixed") or {}).get("seconds", 0.0)
            summary = compare(results, budget)
            report["datasets"][name] = {"root": root, "splits": {
                s: sum(len(fs) for _, _, fs in os.walk(p)) for s, p in splits.items()},
                "results": results, "summary": summary}
            print_table(name, results, summary)
            _write(report, FLAGS.out)
            plot(report["datasets"], FLAGS.out + ".png")  # after every data set: partial runs keep theirs
        print(f"\nWrote {FLAGS.out}.json and {FLAGS.out}.png", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _clear_keras():
    import keras

    keras.backend.clear_session()


def _write(report: dict, prefix: str) -> None:
    def clean(x):
        if hasattr(x, "item") and not isinstance(x, (list, dict)):  # numpy scalars
            x = x.item()
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    tmp = prefix + ".json.tmp"
    with open(tmp, "w") as f:
        json.dump(clean(report), f, indent=2)
    os.replace(tmp, prefix + ".json")


if __name__ == "__main__":
    app.run(main)
