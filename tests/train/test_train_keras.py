"""The trainer as a Keras user meets it: callbacks, the run directory, name-keyed checkpoints,
TensorBoard, data-aware defaults, and ``fit_progressive`` through a user's own ``model.fit``."""

import csv
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from effv2_keras import data, run_dir, schedule as schedule_lib
from effv2_keras.train import (Callback, ConfigError, TrainConfig, Trainer, checkpoint as ckpt_lib,
                               fit_progressive, train)

from train_helpers import tiny_config


def _small_splits(names=("circle", "square", "triangle"), per_class=24, size=40, seed=0):
    """A tiny 3-class set with word class names (not 0-9), 40 px photos-as-arrays."""
    rng = np.random.default_rng(seed)
    n = per_class * len(names)
    labels = np.repeat(np.arange(len(names)), per_class)
    images = rng.integers(0, 255, size=(n, size, size, 3), dtype=np.uint8)
    images[..., labels % 3] = 255  # a class-dependent colour channel: learnable in a few steps
    for i, label in enumerate(labels):
        images[i, ..., label] = np.clip(images[i, ..., label].astype(int) + 80 * label, 0, 255)
    order = rng.permutation(n)
    images, labels = images[order], labels[order]
    return data.from_numpy(images[:48], labels[:48], images[48:60], labels[48:60], images[60:], labels[60:],
                           class_names=list(names))


# -- Keras callbacks ------------------------------------------------------------------------------


def test_early_stopping_stops_the_run_and_csv_logger_writes_its_rows(tmp_path):
    csv_path = tmp_path / "keras_log.csv"

    class WorseEveryEpoch(keras.callbacks.Callback):
        """Makes the monitored value rise, so EarlyStopping(patience=1) stops after epoch 2."""

        def on_epoch_end(self, epoch, logs=None):
            logs["fake_loss"] = float(epoch)

    stopper = keras.callbacks.EarlyStopping(monitor="fake_loss", patience=1, mode="min")
    result = train(tiny_config(tmp_path / "run", epochs=6, stages=2, steps_per_epoch=2),
                   callbacks=[WorseEveryEpoch(), stopper, keras.callbacks.CSVLogger(str(csv_path))])
    assert result.stopped_early and stopper.stopped_epoch == 1
    assert [r["epoch"] for r in result.rows] == [1, 2]  # 2 of the 6 epochs ran
    assert result.global_step == 4 and os.path.exists(result.model_path)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert [row["epoch"] for row in rows] == ["0", "1"]  # Keras' 0-based epochs
    # Keras' names beside ours, as model.fit's logs have them
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "val_top1", "image_size"} <= set(rows[0])
    assert float(rows[1]["loss"]) == pytest.approx(result.rows[1]["train_loss"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]["stopped_early"] is True


def test_keras_batch_and_epoch_hooks_run_in_model_fit_order(tmp_path):
    calls = []

    class Order(Callback):
        def on_train_begin(self, logs=None):
            calls.append(("train_begin",))

        def on_stage_begin(self, stage, logs=None):
            calls.append(("stage", stage.index, stage.image_size))

        def on_epoch_begin(self, epoch, logs=None):
            calls.append(("epoch_begin", epoch))

        def on_train_batch_end(self, batch, logs=None):
            calls.append(("batch_end", batch, logs["step"]))
            assert self.model is self.trainer.model

        def on_epoch_end(self, epoch, logs=None):
            calls.append(("epoch_end", epoch))

        def on_train_end(self, logs=None):
            calls.append(("train_end",))

    train(tiny_config(tmp_path / "run", epochs=2, stages=2, steps_per_epoch=2, log_every=1),
          callbacks=[Order(), keras.callbacks.TerminateOnNaN()])
    assert calls == [("train_begin",), ("stage", 0, 32), ("epoch_begin", 0), ("batch_end", 0, 0),
                     ("batch_end", 1, 1), ("epoch_end", 0), ("stage", 1, 48), ("epoch_begin", 1),
                     ("batch_end", 0, 2), ("batch_end", 1, 3), ("epoch_end", 1), ("train_end",)]


def test_a_callback_that_is_not_a_keras_callback_is_a_clear_error(tmp_path):
    with pytest.raises(TypeError, match="^callbacks: expected keras.callbacks.Callback objects, got dict"):
        Trainer(tiny_config(tmp_path / "run", epochs=1, stages=1, steps_per_epoch=1), callbacks=[{}])


# -- the run directory ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def named_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("named") / "run"
    config = tiny_config(out, epochs=2, stages=2, steps_per_epoch=3, min_size=32, max_size=40,
                         data="folder:shapes")
    return train(config, splits=_small_splits())


def test_the_run_writes_a_manifest_with_its_class_names(named_run):
    manifest = run_dir.read(named_run.out)
    assert manifest.class_names == ["circle", "square", "triangle"] and manifest.num_classes == 3
    assert (manifest.model, manifest.eval_size, manifest.width, manifest.depth) == (
        "efficientnetv2-b0", 40, 0.25, 0.25)
    assert manifest.classifier_activation == "softmax" and manifest.data == "folder:shapes"
    for role in ("model", "config", "schedule", "metrics_csv", "metrics_json", "curves", "checkpoints"):
        assert manifest.path_of(named_run.out, role).exists(), role
    assert run_dir.find(os.path.join(named_run.out, "model.keras")) == manifest


def test_model_keras_returns_probabilities_in_float32(named_run):
    model = keras.models.load_model(named_run.model_path)
    assert model.layers[-1].name == "predictions" and model.layers[-1].activation.__name__ == "softmax"
    probabilities = model.predict(np.full((2, 40, 40, 3), 128.0, np.float32), verbose=0)
    assert probabilities.dtype == np.float32 and probabilities.shape == (2, 3)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)


def test_predict_reads_class_names_and_size_from_the_trainers_run_directory(named_run, tmp_path, capsys):
    from PIL import Image

    from effv2_keras.cli import predict
    from effv2_keras.export import load_source

    source = load_source(named_run.out)
    assert source.class_names == ["circle", "square", "triangle"] and source.fixed_size() == (40, 40)
    photo = tmp_path / "shape.png"
    Image.fromarray(np.full((50, 50, 3), 200, np.uint8)).save(photo)
    assert predict.main(predict.parse(["effv2 predict", str(photo), "--model", str(named_run.out)])) == 0
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[1] for line in lines[1:]) == ["circle", "square", "triangle"]


def test_tensorboard_has_hparams_and_one_augmented_batch_per_stage(named_run):
    pytest.importorskip("tensorboard", reason="the hparams summary needs the tensorboard package "
                                              "(pip install 'effv2_keras[tensorboard]')")
    images, plugins = {}, set()
    for path in tf.io.gfile.glob(os.path.join(named_run.out, "tensorboard", "*")):
        for record in tf.data.TFRecordDataset(path):
            event = tf.compat.v1.Event.FromString(record.numpy())
            for value in event.summary.value:
                plugins.add(value.metadata.plugin_data.plugin_name)
                if value.metadata.plugin_data.plugin_name == "images":
                    images[value.tag] = tf.make_ndarray(value.tensor)
    assert "hparams" in plugins and "scalars" in plugins
    assert sorted(images) == ["stage_1/augmented_batch", "stage_2/augmented_batch"]
    for tag, size in (("stage_1/augmented_batch", 32), ("stage_2/augmented_batch", 40)):
        width, height, *pngs = images[tag]
        assert (int(width), int(height)) == (size, size) and len(pngs) == 8
        assert tf.io.decode_png(pngs[0]).shape == (size, size, 3)


# -- checkpoints keyed by variable path --------------------------------------------------------------


def test_resume_restores_every_optimizer_slot_to_its_variable_by_path(tmp_path):
    config = tiny_config(tmp_path / "run", epochs=2, stages=1, steps_per_epoch=2, optimizer="rmsprop",
                         ema_decay=0.9)
    first = Trainer(config)
    first.fit()
    saved = {path: v.numpy().copy() for path, v in ckpt_lib.optimizer_variables(first.optimizer)}
    saved_ema = {path: s.numpy().copy() for (path, _), s in
                 zip(ckpt_lib.named(first.ema.variables), first.ema.shadows)}
    second = Trainer(config.replace(resume=True))
    second._start()  # restores the newest checkpoint, runs nothing
    restored = dict(ckpt_lib.optimizer_variables(second.optimizer))
    assert set(restored) == set(saved) and len(saved) > 3
    slots = [path for path in saved if saved[path].ndim and np.abs(saved[path]).max() > 0]
    assert len(slots) > 10  # RMSProp's velocities and momentums, each a different array
    for path, value in saved.items():
        np.testing.assert_array_equal(restored[path].numpy(), value, err_msg=path)
    for (path, _), shadow in zip(ckpt_lib.named(second.ema.variables), second.ema.shadows):
        np.testing.assert_array_equal(shadow.numpy(), saved_ema[path], err_msg=path)


def test_slots_swapped_in_the_file_are_not_silently_restored(tmp_path):
    """Two slots of equal shape swapped under their keys: the values follow the keys."""
    config = tiny_config(tmp_path / "run", epochs=1, stages=1, steps_per_epoch=2, optimizer="rmsprop")
    Trainer(config).fit()
    path = Trainer(config.replace(resume=True)).checkpoints.list()[-1][1]
    arrays, state = ckpt_lib.read_npz(path)
    velocity = next(k for k in arrays if k.startswith("optimizer/") and k.endswith("_velocity")
                    and arrays[k].ndim == 4)
    momentum = velocity[: -len("velocity")] + "momentum"
    arrays[velocity], arrays[momentum] = arrays[momentum], arrays[velocity]
    ckpt_lib.atomic_savez(path, {**arrays, ckpt_lib.STATE_KEY: ckpt_lib.encode_state(state)})
    resumed = Trainer(config.replace(resume=True))
    resumed._start()
    by_path = dict(ckpt_lib.optimizer_variables(resumed.optimizer))
    np.testing.assert_array_equal(by_path[velocity.split("/", 1)[1]].numpy(), arrays[velocity])
    np.testing.assert_array_equal(by_path[momentum.split("/", 1)[1]].numpy(), arrays[momentum])


def test_a_checkpoint_of_another_width_names_the_first_variable_that_differs(tmp_path):
    Trainer(tiny_config(tmp_path / "run", epochs=1, stages=1, steps_per_epoch=1)).fit()
    config = tiny_config(tmp_path / "run", epochs=1, stages=1, steps_per_epoch=1, resume=True)
    # resume_keys would catch --width first; take it out to reach the variables themselves
    path = Trainer(config).checkpoints.list()[-1][1]
    arrays, state = ckpt_lib.read_npz(path)
    state["resume_keys"].pop("width")
    ckpt_lib.atomic_savez(path, {**arrays, ckpt_lib.STATE_KEY: ckpt_lib.encode_state(state)})
    wider = Trainer(config.replace(width=0.5))
    with pytest.raises(ckpt_lib.CheckpointError,
                       match=r"^--resume: variable model/stem_conv/kernel has shape \(3, 3, 3, 8\) in .* "
                             r"but \(3, 3, 3, 16\) in this run"):
        wider._start()


# -- data-aware defaults, flags checked before the data ----------------------------------------------


def test_the_readme_command_resolves_to_digit_sized_images_without_flips():
    """`effv2 train --data digits --out runs/digits`: no size or flip flag needed."""
    splits = data.load("digits")
    assert splits.image_size == 32 and splits.flip_invariant is False
    config = TrainConfig(data="digits", out="runs/digits").resolve(splits)
    assert (config.min_size, config.max_size, config.eval_size) == (32, 48, 48)
    assert config.flip is False
    assert config.steps_per_epoch == splits.train.num_examples // config.batch_size
    schedule = schedule_lib.from_config(config)
    assert all(32 <= stage.image_size <= 48 for stage in schedule.stages)


def test_one_size_flag_alone_sets_the_other_end():
    assert (TrainConfig(max_size=96).resolve().min_size, TrainConfig(min_size=160).resolve().max_size) == (64, 240)
    # a given flag always wins over the data's cap
    splits = data.load("digits")
    assert TrainConfig(max_size=96).resolve(splits).max_size == 96


def test_an_unknown_variant_is_reported_before_any_data_is_read(tmp_path, monkeypatch):
    def no_loading(*args, **kwargs):
        raise AssertionError("data was loaded before the flags were checked")

    monkeypatch.setattr(data, "load", no_loading)
    with pytest.raises(ConfigError, match=r"^--model: unknown variant .*got 'efficientnetv2-q9'"):
        Trainer(TrainConfig(model="efficientnetv2-q9", out=str(tmp_path)))


# -- fit_progressive --------------------------------------------------------------------------------


def test_fit_progressive_trains_a_keras_model_through_three_stages(tmp_path):
    from effv2_keras import build

    splits = _small_splits()
    keras.utils.set_random_seed(0)
    model = build("efficientnetv2-b0", input_shape=(None, None, 3), pooling="avg", classes=3,
                  width=0.25, depth=0.25, classifier_activation="softmax")
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.CategoricalCrossentropy(), metrics=["accuracy"])
    plan = schedule_lib.make_schedule("efficientnetv2-b0", epochs=3, stages=3, image_size=(32, 48),
                                      randaug_magnitude=(0.0, 4.0), mixup_alpha=(0.0, 0.2),
                                      dropout=(0.1, 0.3))
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_stage_begin(self, stage, logs=None):
            seen.append(("stage", stage.index, model.get_layer("top_dropout").rate))

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen.append(("batch", int(model.optimizer.iterations.numpy())))

    history = fit_progressive(model, splits, plan, batch_size=16, seed=0, callbacks=[Watch()], verbose=0)
    assert history.epoch == [0, 1, 2]
    assert history.history["image_size"] == [32, 40, 48]
    assert history.history["dropout"] == pytest.approx([0.1, 0.2, 0.3])
    assert len(history.history["val_loss"]) == 3 and np.all(np.isfinite(history.history["loss"]))
    # each stage's dropout was in place when it began; the optimizer's steps ran on across stages
    assert seen == [("stage", 0, pytest.approx(0.1)), ("batch", 0), ("stage", 1, pytest.approx(0.2)),
                    ("batch", 3), ("stage", 2, pytest.approx(0.3)), ("batch", 6)]
    assert int(model.optimizer.iterations.numpy()) == 9  # 48 images // 16, three epochs


def test_fit_progressive_refuses_what_it_cannot_train():
    from effv2_keras import build

    plan = schedule_lib.make_schedule("efficientnetv2-b0", epochs=2, stages=2, image_size=(32, 48))
    model = build("efficientnetv2-b0", input_shape=(None, None, 3), pooling="avg", classes=3,
                  width=0.25, depth=0.25)
    with pytest.raises(ValueError, match="^model: compile it first"):
        fit_progressive(model, _small_splits(), plan)
    fixed = build("efficientnetv2-b0", input_shape=(32, 32, 3), classes=3, width=0.25, depth=0.25)
    fixed.compile("adam", keras.losses.CategoricalCrossentropy())
    with pytest.raises(ValueError, match=r"input is fixed at 32x32 .* input_shape=\(None, None, 3\)"):
        fit_progressive(fixed, _small_splits(), plan)
    with pytest.raises(TypeError, match="^epochs: set by fit_progressive"):
        fit_progressive(fixed, _small_splits(), plan, epochs=3)
