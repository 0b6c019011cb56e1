"""EMA of the weights, BN moving statistics included, with the official decay warm-up."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from effv2_keras.train.ema import ExponentialMovingAverage, averaged_variables


def bn_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="dense"),
                              keras.layers.BatchNormalization(name="bn"), keras.layers.Dropout(0.5)])
    return model


def test_tracks_every_float_variable_including_bn_statistics():
    model = bn_model()
    names = sorted(v.path.split("/", 1)[1] for v in averaged_variables(model))
    assert names == ["bn/beta", "bn/gamma", "bn/moving_mean", "bn/moving_variance",
                     "dense/bias", "dense/kernel"]
    assert all(tf.as_dtype(v.dtype).is_floating for v in averaged_variables(model))
    assert len(averaged_variables(model)) < len(model.variables)  # the dropout RNG state is not averaged


def test_update_rule_and_warmup():
    model = bn_model()
    ema = ExponentialMovingAverage(model, decay=0.9999)
    assert float(ema.decay_at(0)) == pytest.approx(1 / 10)
    assert float(ema.decay_at(90)) == pytest.approx(91 / 100)
    assert float(ema.decay_at(10**7)) == pytest.approx(0.9999)
    start = [s.numpy().copy() for s in ema.shadows]
    # one training step moves weights AND the BN moving statistics
    opt = keras.optimizers.SGD(0.1)
    x = np.random.default_rng(0).normal(size=(8, 4)).astype("float32") + 3.0
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x, training=True) ** 2)
    opt.apply(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
    live = [v.numpy().copy() for v in ema.variables]
    ema.update(tf.constant(5, tf.int64))
    d = 6 / 15
    for shadow, before, now, variable in zip(ema.shadows, start, live, ema.variables):
        np.testing.assert_allclose(shadow.numpy(), d * before + (1 - d) * now, rtol=1e-5, atol=1e-7)
    moving_mean = [i for i, v in enumerate(ema.variables) if v.path.endswith("moving_mean")][0]
    assert not np.allclose(ema.shadows[moving_mean].numpy(), start[moving_mean])


def test_swap_twice_restores():
    model = bn_model()
    ema = ExponentialMovingAverage(model, decay=0.5)
    for s in ema.shadows:
        s.assign(tf.ones_like(s) * 7.0)
    live = [v.numpy().copy() for v in ema.variables]
    ema.swap()
    assert all(np.all(v.numpy() == 7.0) for v in ema.variables)
    ema.swap()
    for v, before in zip(ema.variables, live):
        np.testing.assert_array_equal(v.numpy(), before)


def test_rejects_decay_outside_open_interval():
    with pytest.raises(ValueError, match="--ema_decay"):
        ExponentialMovingAverage(bn_model(), decay=1.0)
