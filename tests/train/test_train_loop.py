"""One tiny progressive run in-process, inspected from every side.

The run: 2 stages x 2 epochs x 2 steps at 32 then 48 px, RandAugment 2 -> 6,
Mixup 0 -> 0.4, dropout 0.1 -> 0.3, no label smoothing (so stage 1's labels are
exactly one-hot and Mixup's are visibly soft).
"""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import tensorflow as tf

from effv2_keras import augment
from effv2_keras.train import Callback, TrainConfig, Trainer, checkpoint as ckpt_lib
from effv2_keras.train import trainer as trainer_lib

from train_helpers import REPO, SCRIPTS, run_python, subprocess_env, tiny_config, tiny_flags

RUN = dict(epochs=4, stages=2, steps_per_epoch=2, randaug_min=2.0, randaug_max=6.0, mixup_min=0.0,
           mixup_max=0.4, dropout_min=0.1, dropout_max=0.3, label_smoothing=0.0,
           optimizer="rmsprop", lr_decay="cosine", warmup_epochs=1.0, checkpoint_every=1,
           keep_checkpoints=2, ema_decay=0.99)


class Recorder(Callback):
    def __init__(self):
        self.batches, self.steps, self.stages_begun, self.epoch_rows = [], [], [], []

    def on_stage_begin(self, stage, logs=None):
        self.stages_begun.append(stage.index)

    def on_train_batch_inputs(self, step, images, labels):
        trainer = self.trainer
        self.batches.append({"step": step, "images": tuple(images.shape), "labels": labels.numpy(),
                             "dropout": trainer.model.get_layer("top_dropout").rate,
                             "dropout_in_graph": trainer.train_model.get_layer("top_dropout").rate,
                             "iterations": int(trainer.optimizer.iterations.numpy())})

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append(dict(logs, batch=batch,
                               optimizer_lr=float(self.trainer.optimizer.learning_rate.numpy())))

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_rows.append(logs)


@pytest.fixture(scope="module", autouse=True)
def killed_run(tmp_path_factory):
    """The same run as `effv2 train` in a subprocess, held after step 6 (for the SIGKILL test).

    Started first (autouse) so that it overlaps with the in-process run on 2 cores.
    """
    base = tmp_path_factory.mktemp("killed")
    out, marker, log = base / "run", base / "holding", base / "log.txt"
    with open(log, "w") as f:
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "held_cli.py"), *tiny_flags(out, **RUN)], cwd=REPO,
            env=subprocess_env(HOLD_AT_STEP="5", HOLD_MARKER=str(marker)), stdout=f,
            stderr=subprocess.STDOUT)
    yield out, marker, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The tiny run, with spies on the augmentation factories the trainer calls."""
    out = tmp_path_factory.mktemp("loop") / "run"
    calls = {"image": [], "batch": []}
    real_image, real_batch = augment.make_image_augmenter, augment.make_batch_augmenter

    def spy_image(magnitude, num_ops=2, seed=None, probability=1.0):
        calls["image"].append((magnitude, num_ops, probability))
        return real_image(magnitude, num_ops, seed=seed, probability=probability)

    def spy_batch(num_classes, mixup_alpha, cutmix_alpha, label_smoothing, seed=None):
        calls["batch"].append((mixup_alpha, cutmix_alpha, label_smoothing))
        return real_batch(num_classes, mixup_alpha, cutmix_alpha, label_smoothing, seed=seed)

    augment.make_image_augmenter, augment.make_batch_augmenter = spy_image, spy_batch
    try:
        recorder = Recorder()
        trainer = Trainer(tiny_config(out, **RUN), callbacks=[recorder])
        result = trainer.fit()
    finally:
        augment.make_image_augmenter, augment.make_batch_augmenter = real_image, real_batch
    return trainer, result, recorder, calls


def test_each_stage_trains_at_its_size_traced_once(run):
    trainer, result, rec, _ = run
    assert [s.image_size for s in trainer.schedule.stages] == [32, 48]
    # the train step was traced exactly once for the whole run, for any image size
    assert trainer.trace_counts == {0: 1}
    assert [(t["stage"], t["image_shape"], t["label_shape"]) for t in trainer.trace_log] == [
        (0, (16, None, None, 3), (16, 10))]
    # and every batch fed to it at run time had the stage's size
    assert [b["images"] for b in rec.batches] == [(16, 32, 32, 3)] * 4 + [(16, 48, 48, 3)] * 4
    assert rec.stages_begun == [0, 1]
    assert result.global_step == 8 and int(trainer.optimizer.iterations.numpy()) == 8


def test_each_stage_has_its_dropout_randaugment_and_mixup(run):
    trainer, _, rec, calls = run
    # the head dropout rate is a variable read inside the one traced graph; the stock
    # Dropout layer (what is saved) carries each stage's rate during its steps
    assert [t["dropout_variable"] for t in trainer.trace_log] == [True]
    assert float(trainer.train_model.get_layer("top_dropout").rate) == pytest.approx(0.3)
    assert [b["dropout"] for b in rec.batches] == [pytest.approx(0.1)] * 4 + [pytest.approx(0.3)] * 4
    assert [b["dropout_in_graph"] for b in rec.batches] == [pytest.approx(0.1)] * 4 + [pytest.approx(0.3)] * 4
    # the pipelines were built with the stage's RandAugment magnitude and Mixup alpha
    # 4 epochs, short recipe: regularization scale (4 / 100) ** 2, the share of images RandAugment touches
    assert calls["image"] == [(2.0, 2, pytest.approx(0.0016)), (6.0, 2, pytest.approx(0.0016))]
    assert calls["batch"] == [(0.0, 0.0, 0.0), (0.4, 0.0, 0.0)]
    # ...and the labels show it: exactly one-hot without Mixup, mixed with it
    first = np.concatenate([b["labels"] for b in rec.batches[:4]])
    second = np.concatenate([b["labels"] for b in rec.batches[4:]])
    assert set(np.unique(first)) == {0.0, 1.0}
    np.testing.assert_allclose(second.sum(-1), 1.0, rtol=1e-5)
    assert (second.max(-1) < 0.999).mean() > 0.5


def test_learning_rate_runs_over_global_steps_across_stages(run):
    trainer, _, rec, _ = run
    lrs = [s["lr"] for s in rec.steps]
    expected = [trainer.lr_schedule.value(step) for step in range(8)]
    np.testing.assert_allclose(lrs, expected, rtol=1e-6)
    # the optimizer itself used those rates (its schedule reads its own iteration counter)
    np.testing.assert_allclose([b["iterations"] for b in rec.batches], range(8))
    # warm-up over the first epoch only, then cosine decay straight through the stage boundary
    peak = 0.016 * 16 / 256
    assert lrs[1] == pytest.approx(peak)
    assert lrs[3] > lrs[4] > lrs[5]  # step 4 is the first of stage 2: no restart of warm-up
    assert lrs[4] == pytest.approx(peak * 0.5 * (1 + np.cos(np.pi * 4 / 8)), rel=1e-5)


def test_validation_each_epoch_and_metrics_files(run):
    trainer, result, rec, _ = run
    out = result.out
    rows = json.loads(open(os.path.join(out, "metrics.json")).read())["epochs"]
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4]
    assert [r["stage"] for r in rows] == [0, 0, 1, 1]
    assert [r["image_size"] for r in rows] == [32, 32, 48, 48]
    for r in rows:
        assert 0.0 <= r["val_top1"] <= r["val_top5"] <= 1.0 and np.isfinite(r["val_loss"])
    with open(os.path.join(out, "metrics.csv")) as f:
        lines = f.read().splitlines()
    assert lines[0].split(",")[:4] == ["epoch", "stage", "image_size", "dropout"]
    assert len(lines) == 5
    assert result.val["examples"] == trainer.splits.val.num_examples  # padding not counted
    assert result.test["examples"] == trainer.splits.test.num_examples
    assert 0.0 <= result.test["top1"] <= 1.0


def test_resolved_config_schedule_plot_and_tensorboard(run):
    trainer, result, _, _ = run
    out = result.out
    saved = TrainConfig.load(os.path.join(out, "config.json"))
    assert saved == trainer.config
    assert saved.lr == 0.016 and saved.weight_decay == 1e-5 and saved.steps_per_epoch == 2
    # the recipe that ran is saved, and the header says which one, why, and what overrode it
    assert saved.recipe == "short" and saved.regularization_scale == pytest.approx(0.0016)
    header = trainer.header
    assert "recipe short (auto: 4 epochs < 100; docs/PROGRESSIVE.md#recipes); given: --ema_decay, " \
           "--label_smoothing, --lr_decay, --optimizer, --stages, --warmup_epochs" in header
    assert (saved.min_size, saved.max_size, saved.eval_size) == (32, 48, 48)
    assert saved.jit_compile == "auto" and trainer.device == "cpu" and trainer.jit is False  # XLA off on CPU
    schedule = json.loads(open(os.path.join(out, "schedule.json")).read())
    assert schedule == trainer.schedule.to_dict()
    png = open(os.path.join(out, "curves.png"), "rb").read()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    tags = set()
    for path in tf.io.gfile.glob(os.path.join(out, "tensorboard", "*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            tags.update(v.tag for v in event.summary.value)
    assert {"epoch/val_top1", "epoch/train_loss", "epoch/image_size", "step/lr"} <= tags


def test_checkpoints_kept_and_best_selected_on_validation(run):
    trainer, result, _, _ = run
    manager = trainer.checkpoints
    assert [s for s, _ in manager.list()] == [7, 8]  # every step (checkpoint_every=1), last 2 kept
    state = ckpt_lib.read_state(manager.list()[-1][1])
    assert state["global_step"] == 8 and state["stage"] == 1 and len(state["rows"]) == 4
    best = max(result.rows, key=lambda r: (r["val_top1"], r["epoch"]))
    assert result.selected_epoch == best["epoch"] == trainer.best["epoch"]
    assert os.path.exists(os.path.join(manager.directory, trainer.best["file"]))
    # model.keras holds the selected (EMA) weights: the best file's arrays
    arrays, meta = ckpt_lib.read_npz(os.path.join(manager.directory, trainer.best["file"]))
    assert meta["epoch"] == best["epoch"]
    for path, v in ckpt_lib.model_variables(result.model):  # keyed by path, never by position
        np.testing.assert_array_equal(v.numpy(), arrays[f"model/{path}"])


def test_saved_weights_are_the_ema_weights_validation_scored(run):
    trainer, result, _, _ = run
    assert trainer.ema is not None
    # validation scored the EMA weights each epoch; the best epoch (ties: the later one) is
    # selected, and those weights, scored again after the run, give the same numbers
    best = max(result.rows, key=lambda r: (r["val_top1"], r["epoch"]))
    assert result.selected_epoch == best["epoch"]
    # at the epochs' own evaluation size and crop (the run's end may choose another pair: result.val)
    again = trainer.evaluate(trainer.splits.val)
    assert again["top1"] == pytest.approx(best["val_top1"], abs=1e-9)
    assert again["loss"] == pytest.approx(best["val_loss"], rel=1e-5)  # same batches, same sums


def test_model_keras_loads_without_effv2_keras_and_predicts_the_same(run, tmp_path):
    """Trained through the fast twin, saved as stock Keras: a fresh process without this
    package loads it and scores the test split exactly as the trainer did."""
    trainer, result, _, _ = run
    assert trainer.config.fast_step and trainer.train_model is not trainer.model
    batches = list(trainer._eval_dataset(trainer.splits.test, result.eval_size, result.eval_crop_fraction))
    test_images = np.concatenate([b[0].numpy() for b in batches])
    test_labels = np.concatenate([b[1].numpy() for b in batches]).argmax(-1)
    test_weights = np.concatenate([b[2].numpy() for b in batches])
    random_images = np.random.default_rng(0).uniform(0, 255, size=(4, 48, 48, 3)).astype("float32")
    images = np.concatenate([random_images, test_images])
    np.save(tmp_path / "images.npy", images)
    logits = result.model.predict(random_images, verbose=0).astype("float64")
    expected = np.exp(logits - logits.max(-1, keepdims=True))
    expected /= expected.sum(-1, keepdims=True)
    script = textwrap.dedent(f"""
        import sys
        sys.path = [p for p in sys.path if p not in ("", {str(REPO)!r})]
        sys.modules["effv2_keras"] = None  # any import of the package now fails
        import numpy as np, keras
        model = keras.models.load_model({str(result.model_path)!r})
        out = model.predict(np.load({str(tmp_path / 'images.npy')!r}), verbose=0)
        assert model.layers[-1].activation.__name__ == "softmax", model.layers[-1].activation
        assert out.dtype == np.float32
        assert not any(m.startswith("effv2_keras") for m in sys.modules if sys.modules[m] is not None)
        np.save({str(tmp_path / 'out.npy')!r}, out)
    """)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), env=env,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    out = np.load(tmp_path / "out.npy")
    # keras.applications' convention: probabilities (the trainer scored the same weights' logits)
    np.testing.assert_allclose(out.sum(-1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(out[:4], expected, rtol=1e-5, atol=1e-6)
    probabilities = out[4:].astype("float64")
    real = test_weights > 0
    top1 = float(np.mean(probabilities[real].argmax(-1) == test_labels[real]))
    loss = float(-np.mean(np.log(probabilities[real, test_labels[real]])))
    assert real.sum() == result.test["examples"]
    assert top1 == pytest.approx(result.test["top1"], abs=1e-9)
    # float32 probabilities instead of logits: the log of the smallest ones loses a little
    assert loss == pytest.approx(result.test["loss"], rel=1e-4)


class _PoisonFromStep(Trainer):
    """Feeds NaN images from global step ``poison_step`` on (a poisoned batch)."""

    poison_step = 2

    def _train_dataset(self, stage, start_step):
        clean = super()._train_dataset(stage, start_step)
        first_poisoned = self.poison_step - start_step

        def poison(index, batch):
            images, labels = batch
            return tf.where(index >= first_poisoned, images * np.nan, images), labels

        return clean.enumerate().map(poison)


def test_nan_loss_stops_cleanly_with_last_good_checkpoint_untouched(tmp_path):
    seen = {}

    class Snapshot(Callback):
        def on_epoch_end(self, epoch, logs=None):
            path = self.trainer.last_checkpoint
            seen[path] = (os.stat(path).st_mtime_ns, open(path, "rb").read())

    config = tiny_config(tmp_path / "nan", epochs=2, stages=1, min_size=32, max_size=32,
                         steps_per_epoch=2, ema_decay=0.0)
    trainer = _PoisonFromStep(config, callbacks=[Snapshot()])
    with pytest.raises(trainer_lib.NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    good = os.path.join(str(tmp_path / "nan"), "checkpoints", "ckpt-000000002.npz")
    assert "stage 1/1" in message and "epoch 2" in message and "global step 3" in message
    assert good in message and "\n" not in message
    # the last good checkpoint is byte-for-byte what was written before the NaN, and the newest
    assert list(seen) == [good]
    assert (os.stat(good).st_mtime_ns, open(good, "rb").read()) == seen[good]
    assert [s for s, _ in trainer.checkpoints.list()] == [2]
    arrays, state = ckpt_lib.read_npz(good)
    assert state["global_step"] == 2
    assert all(np.all(np.isfinite(a)) for a in arrays.values() if a.dtype.kind == "f")
    assert not os.path.exists(os.path.join(str(tmp_path / "nan"), "model.keras"))


def test_nan_loss_between_host_reads_stops_at_its_step_before_any_checkpoint(tmp_path):
    """Losses read every 4 steps: a NaN at step 9 (read after step 10) still stops the run
    naming step 9, and no checkpoint is written after the last good one (step 6)."""

    class PoisonNine(_PoisonFromStep):
        poison_step = 8

    config = tiny_config(tmp_path / "nan4", epochs=2, stages=1, min_size=32, max_size=32,
                         steps_per_epoch=6, log_every=4, ema_decay=0.0)
    reads = []

    class Reads(Callback):
        def on_train_batch_end(self, batch, logs=None):
            reads.append((logs["step"], self.trainer.global_step))

    trainer = PoisonNine(config, callbacks=[Reads()])
    with pytest.raises(trainer_lib.NonFiniteLossError) as info:
        trainer.fit()
    message = str(info.value)
    good = os.path.join(str(tmp_path / "nan4"), "checkpoints", "ckpt-000000006.npz")
    assert "epoch 2" in message and "global step 9" in message and good in message
    # the losses were read after steps 1, 5, 6 (epoch end) and 7, then after 11: step 8 (0-based)
    # was only seen when steps 8-10 had already run, and the run stopped there
    assert [s for s, _ in trainer.checkpoints.list()] == [6]
    assert reads[:7] == [(0, 1), (1, 5), (2, 5), (3, 5), (4, 5), (5, 6), (6, 7)]
    assert reads[7:] == [(7, 11)]


def test_stock_step_retraces_per_stage_with_the_rate_in_the_graph(tmp_path):
    """--nofast_step: the stock model trains directly, one trace per stage."""
    config = tiny_config(tmp_path / "stock", epochs=2, stages=2, steps_per_epoch=1, fast_step=False,
                         dropout_min=0.1, dropout_max=0.3)
    trainer = Trainer(config)
    result = trainer.fit()
    assert trainer.train_model is trainer.model
    assert trainer.trace_counts == {0: 1, 1: 1}
    assert [(t["image_shape"], t["dropout"]) for t in trainer.trace_log] == [
        ((16, 32, 32, 3), pytest.approx(0.1)), ((16, 48, 48, 3), pytest.approx(0.3))]
    assert result.global_step == 2 and os.path.exists(result.model_path)


def test_sigkill_in_stage_two_then_resume_matches_the_uninterrupted_run(run, killed_run, tmp_path):
    """`effv2 train` SIGKILLed after stage 2's first checkpoint, then `--resume`d."""
    _, reference, _, _ = run
    out, marker, proc, log = killed_run
    deadline = time.time() + 400
    while not marker.exists():  # the run is held right after step 6 (checkpoint 5 written)
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, "the run never reached stage 2"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL
    assert not (out / "model.keras").exists()  # it really died before the end
    saved = ckpt_lib.CheckpointManager(str(out / "checkpoints")).list()
    assert saved[-1][0] == 5  # the first checkpoint of stage 2 (which starts at step 4)
    assert ckpt_lib.read_state(saved[-1][1])["stage"] == 1

    # resume with nothing but --out and --resume: the rest comes from the run's config.json
    done = run_python(["-m", "effv2_keras.cli.main", "train", f"--out={out}", "--resume", "--verbose=1"],
                      timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Resumed from {saved[-1][1]}: global step 5/8, epoch 3." in done.stdout
    assert "Stage 1/2" not in done.stdout and "Stage 2/2" in done.stdout  # stage 1 was not redone
    rows = json.loads((out / "metrics.json").read_text())["epochs"]
    keys = ("epoch", "stage", "image_size", "dropout", "randaug_magnitude", "mixup_alpha",
            "global_step", "lr")
    # same epochs, stages, steps, regularization and learning rates (read from the optimizer's
    # own step counter, restored from the checkpoint) as the run that was never interrupted
    assert [tuple(r[k] for k in keys) for r in rows] == \
        [tuple(r[k] for k in keys) for r in reference.rows]
    final = ckpt_lib.read_state(ckpt_lib.CheckpointManager(str(out / "checkpoints")).list()[-1][1])
    assert final["global_step"] == reference.global_step == 8 and final["stage"] == 1
    assert (out / "model.keras").exists()


def test_a_stage_change_under_the_default_recipe_keeps_the_optimizer_and_the_lr(tmp_path, monkeypatch):
    """The short recipe's defaults (AdamW, constant rate): only --stages and the tiny sizes are given."""
    magnitudes = []
    real_image = augment.make_image_augmenter

    def spy_image(magnitude, num_ops=2, seed=None, probability=1.0):
        magnitudes.append(magnitude)
        return real_image(magnitude, num_ops, seed=seed, probability=probability)

    monkeypatch.setattr(augment, "make_image_augmenter", spy_image)

    class Slots(Recorder):
        def __init__(self):
            super().__init__()
            self.snapshots = {}

        def _snapshot(self, trainer):
            optimizer = trainer.optimizer
            return (int(optimizer.iterations.numpy()),
                    [v.numpy().copy() for v in optimizer.variables if v.shape.rank])

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            if epoch == 1:  # the last epoch of stage 1
                self.snapshots["end of stage 1"] = self._snapshot(self.trainer)

        def on_train_batch_inputs(self, step, images, labels):
            super().on_train_batch_inputs(step, images, labels)
            if step == 4:  # the first step of stage 2
                self.snapshots["start of stage 2"] = self._snapshot(self.trainer)

    rec = Slots()
    trainer = Trainer(tiny_config(tmp_path / "run", epochs=4, stages=2, steps_per_epoch=2, log_every=1),
                      callbacks=[rec])
    trainer.fit()
    c = trainer.config
    assert (c.recipe, c.optimizer, c.lr_decay, c.warmup_epochs) == ("short", "adamw", "constant", 0.0)
    # the optimizer state crosses the stage change untouched: same step count, same slots
    (it_end, slots_end), (it_start, slots_start) = (rec.snapshots["end of stage 1"],
                                                    rec.snapshots["start of stage 2"])
    assert it_end == it_start == 4
    assert len(slots_end) == len(slots_start) > 0
    for before, after in zip(slots_end, slots_start):
        np.testing.assert_array_equal(before, after)
    assert any(np.abs(s).max() > 0 for s in slots_start)  # AdamW's moments carry what stage 1 learned
    # the learning rate is one schedule over the global steps, the recipe's constant rate at
    # every step: no warm-up restart at step 4, the first of stage 2
    lrs = [s["lr"] for s in rec.steps]
    np.testing.assert_allclose(lrs, [trainer.lr_schedule.value(t) for t in range(8)], rtol=1e-6)
    np.testing.assert_allclose(lrs, [c.scaled_lr()] * 8, rtol=1e-6)
    assert c.scaled_lr() == pytest.approx(0.003 * (16 / 256) ** 0.5)
    # Algorithm 1: each stage trains with its own dropout and RandAugment magnitude
    stages = trainer.schedule.stages
    assert [b["dropout"] for b in rec.batches] == (
        [pytest.approx(stages[0].dropout)] * 4 + [pytest.approx(stages[1].dropout)] * 4)
    assert stages[0].dropout < stages[1].dropout
    assert magnitudes == [stages[0].randaug_magnitude, stages[1].randaug_magnitude]
    assert stages[0].randaug_magnitude < stages[1].randaug_magnitude
