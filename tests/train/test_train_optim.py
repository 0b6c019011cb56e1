"""Optimizers, the warm-up/decay schedule over global steps, and kernel-only weight decay."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from effv2_keras.train import optim
from effv2_keras.train.config import TrainConfig


def small_model():
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, use_bias=False, name="conv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.DepthwiseConv2D(3, use_bias=True, name="dw"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3, name="dense"),
    ])


def test_warmup_then_exponential_staircase():
    s = optim.WarmupDecay(0.016, total_steps=1000, warmup_steps=50, decay="exponential",
                          decay_steps=24, decay_rate=0.97)
    assert s.value(0) == pytest.approx(0.016 / 50)
    assert s.value(49) == pytest.approx(0.016)
    # after warm-up: 0.97 ** floor(step / 24), counted from step 0 as the official code
    for step in (50, 71, 72, 200, 999):
        assert s.value(step) == pytest.approx(0.016 * 0.97 ** (step // 24), rel=1e-5)


def test_cosine_and_constant():
    cos = optim.WarmupDecay(1.0, total_steps=100, warmup_steps=0, decay="cosine")
    for step in (0, 25, 50, 100, 150):
        expected = 0.5 * (1 + math.cos(math.pi * min(step, 100) / 100))
        assert cos.value(step) == pytest.approx(expected, abs=1e-6)
    const = optim.WarmupDecay(0.3, total_steps=100, warmup_steps=10, decay="constant")
    assert [round(const.value(t), 6) for t in (4, 9, 10, 99)] == [0.15, 0.3, 0.3, 0.3]


def test_schedule_of_a_config_scales_lr_and_counts_epochs_in_steps():
    config = TrainConfig(optimizer="rmsprop", batch_size=512, epochs=10, warmup_epochs=2.0,
                         lr_decay="exponential", lr_decay_epochs=2.4).resolve()
    s = optim.make_lr_schedule(config, steps_per_epoch=100, total_steps=1000)
    assert s.peak_lr == pytest.approx(0.016 * 2)  # 0.016 per 256 images
    assert s.warmup_steps == 200
    assert s.decay_steps == pytest.approx(240)  # 2.4 epochs
    assert s.value(239) == pytest.approx(0.032)
    assert s.value(240) == pytest.approx(0.032 * 0.97)


def test_rmsprop_has_the_papers_constants():
    model = small_model()
    opt, l2 = optim.make_optimizer("rmsprop", 0.01, model, weight_decay=1e-5)
    assert (opt.rho, opt.momentum, opt.epsilon) == (0.9, 0.9, 1e-3)
    assert l2 == 1e-5
    sgd, l2 = optim.make_optimizer("sgd", 0.01, model, weight_decay=1e-5, momentum=0.8)
    assert sgd.momentum == 0.8 and l2 == 1e-5
    scaled, _ = optim.make_optimizer("sgd", 0.01, model, loss_scale=True)
    assert isinstance(scaled, keras.optimizers.LossScaleOptimizer)
    with pytest.raises(ValueError, match="--optimizer"):
        optim.make_optimizer("adagrad", 0.01, model)


def test_weight_decay_only_on_kernels():
    model = small_model()
    names = sorted(v.path.split("/", 1)[1] for v in optim.decayed_variables(model))
    assert names == ["conv/kernel", "dense/kernel", "dw/kernel"]  # not bn/gamma, bn/beta, dw/bias
    penalty = optim.l2_penalty(optim.decayed_variables(model), 1e-2)
    expected = 0.5 * 1e-2 * sum(float(np.sum(np.square(v.numpy()))) for v in optim.decayed_variables(model))
    assert float(penalty) == pytest.approx(expected, rel=1e-5)
    assert optim.l2_penalty([], 1e-2) is None and optim.l2_penalty(model.trainable_variables, 0.0) is None


def test_adamw_decays_kernels_but_not_bn_or_bias():
    model = small_model()
    for v in model.trainable_variables:  # non-zero everywhere so decay would show
        v.assign(np.full(v.shape, 0.5, "float32"))
    opt, l2 = optim.make_optimizer("adamw", 0.1, model, weight_decay=0.5)
    assert l2 == 0.0
    before = {v.path: v.numpy().copy() for v in model.trainable_variables}
    opt.apply([np.zeros(v.shape, "float32") for v in model.trainable_variables], model.trainable_variables)
    decayed = {v.path for v in optim.decayed_variables(model)}
    for v in model.trainable_variables:
        if v.path in decayed:
            np.testing.assert_allclose(v.numpy(), before[v.path] * (1 - 0.1 * 0.5), rtol=1e-6)
        else:
            np.testing.assert_array_equal(v.numpy(), before[v.path])
    assert decayed and len(decayed) < len(model.trainable_variables)


def test_schedule_of_an_adamw_config_uses_sqrt_scaling():
    config = TrainConfig(optimizer="adamw", batch_size=64, epochs=10).resolve()
    s = optim.make_lr_schedule(config, steps_per_epoch=10, total_steps=100)
    assert s.peak_lr == pytest.approx(0.003 * 0.5)  # sqrt(64 / 256)


def test_exponential_decay_is_the_official_350_epoch_schedule_compressed_to_the_run():
    # 0.97 every 2.4 epochs over 350 epochs (the paper recipe) ends at 0.97 ** (350 / 2.4) = 1.2% of
    # the peak; a 35-epoch run asking for --lr_decay exponential decays 0.97 every 0.24 epochs and
    # ends at the same fraction.
    for epochs in (350, 35):
        config = TrainConfig(optimizer="rmsprop", batch_size=256, epochs=epochs, warmup_epochs=0.0,
                             lr_decay="exponential").resolve()
        assert config.lr_decay_epochs == pytest.approx(2.4 * epochs / 350)
        total = epochs * 100
        s = optim.make_lr_schedule(config, steps_per_epoch=100, total_steps=total)
        final = s.value(total - 1) / s.peak_lr
        assert final == pytest.approx(0.97 ** math.floor((total - 1) / (config.lr_decay_epochs * 100)), rel=1e-5)
        assert 0.011 < final < 0.013


@pytest.mark.parametrize("fused_cls, stock_cls, kwargs", [
    ("FusedRMSprop", keras.optimizers.RMSprop, dict(rho=0.9, momentum=0.9, epsilon=1e-3)),
    ("FusedSGD", keras.optimizers.SGD, dict(momentum=0.9)),
    ("FusedAdamW", keras.optimizers.AdamW, dict(weight_decay=0.1)),
])
def test_fused_optimizers_update_exactly_as_keras(fused_cls, stock_cls, kwargs):
    """One TF kernel per variable, Keras' update: same weights and slots after 5 steps
    (float32 round-off of a different operation order: within 1e-6)."""
    from effv2_keras.train import optim

    rng = np.random.default_rng(0)
    fused, stock = getattr(optim, fused_cls)(0.05, **kwargs), stock_cls(0.05, **kwargs)
    start = rng.normal(size=(4, 5)).astype("float32")
    a, b = keras.Variable(start), keras.Variable(start)
    fused.build([a])
    stock.build([b])

    @tf.function
    def step(grad):
        fused.apply([grad], [a])
        stock.apply([grad], [b])

    for _ in range(5):
        step(tf.constant(rng.normal(size=(4, 5)).astype("float32")))
    assert np.max(np.abs(a.numpy() - start)) > 1e-2  # the weights moved
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-6, atol=1e-6)
    assert [v.shape for v in fused.variables] == [v.shape for v in stock.variables]
    for x, y in zip(fused.variables, stock.variables):
        np.testing.assert_allclose(np.asarray(x.numpy(), "float64"), np.asarray(y.numpy(), "float64"),
                                   rtol=1e-6, atol=1e-6)


def test_fused_adamw_decays_only_the_variables_keras_would():
    """The decay's exclusion list (norms and biases in the trainer) holds in the fused path too."""
    from effv2_keras.train import optim

    start = np.ones([3], "float32")
    pairs = []
    for cls in (optim.FusedAdamW, keras.optimizers.AdamW):
        kernel, bias = keras.Variable(start), keras.Variable(start)
        optimizer = cls(0.1, weight_decay=0.5)
        optimizer.exclude_from_weight_decay(var_list=[bias])
        optimizer.build([kernel, bias])
        tf.function(lambda: optimizer.apply([tf.zeros([3]), tf.zeros([3])], [kernel, bias]))()
        pairs.append((kernel.numpy(), bias.numpy()))
    (fused_kernel, fused_bias), (kernel, bias) = pairs
    np.testing.assert_allclose(fused_kernel, 0.95 * start, rtol=1e-6)  # zero gradient: decay only
    np.testing.assert_allclose(fused_kernel, kernel, rtol=1e-6)
    np.testing.assert_array_equal(fused_bias, start)
    np.testing.assert_array_equal(bias, start)
