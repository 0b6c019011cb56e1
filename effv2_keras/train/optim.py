"""Optimizers, the learning-rate schedule and weight decay, as the paper's recipe.

* RMSProp (rho 0.9, momentum 0.9, epsilon 1e-3), SGD (momentum) or AdamW.
* Learning rate: linear warm-up, then exponential decay (x0.97 every 2.4 epochs,
  staircase, counted from step 0 as the official code does), cosine decay or
  constant. It is a function of the optimizer's GLOBAL step, so it runs on
  across progressive-learning stages and is restored with the optimizer state.
* Weight decay only on conv and dense kernels, never on BN parameters or biases:
  an L2 term ``wd / 2 * sum(|w|^2)`` added to the loss for RMSProp and SGD (as the
  official code does), decoupled decay for AdamW (``exclude_from_weight_decay``).
"""

from __future__ import annotations

import math
from typing import List, Optional

import keras
import tensorflow as tf

from effv2_keras.train.config import LR_DECAYS as DECAYS

RMSPROP_RHO = 0.9
RMSPROP_EPSILON = 1e-3
KERNEL_NAMES = ("kernel", "depthwise_kernel")


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak_lr`` over ``warmup_steps``, then the chosen decay.

    Step ``t`` (0-based) of warm-up uses ``peak_lr * (t + 1) / warmup_steps``, so the
    first step already moves. After warm-up: ``exponential``:
    ``peak_lr * decay_rate ** floor(t / decay_steps)``; ``cosine``:
    ``peak_lr * (1 + cos(pi * t / total_steps)) / 2``; ``linear``: from ``peak_lr`` after
    warm-up down to exactly 0 at the last step (``total_steps - 1``), the budgeted-training
    schedule; ``constant``: ``peak_lr``.

    >>> s = WarmupDecay(0.1, total_steps=100, warmup_steps=10, decay="exponential",
    ...                 decay_steps=24, decay_rate=0.5)
    >>> [round(float(s(t)), 4) for t in (0, 9, 10, 24, 48)]
    [0.01, 0.1, 0.1, 0.05, 0.025]
    >>> s = WarmupDecay(0.1, total_steps=11, decay="linear")
    >>> [round(float(s(t)), 4) for t in (0, 5, 10)]
    [0.1, 0.05, 0.0]
    """

    def __init__(self, peak_lr: float, total_steps: int, warmup_steps: int = 0,
                 decay: str = "exponential", decay_steps: float = 1.0, decay_rate: float = 0.97):
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {', '.join(DECAYS)}, got {decay!r}.")
        self.peak_lr = float(peak_lr)
        self.decay = decay
        self.decay_rate = float(decay_rate)
        # The step counts are variables read by the traced step, so a time budget can set them
        # after its measuring steps traced the train step (``retarget``) without tracing again.
        self._counts = {name: tf.Variable(0.0, trainable=False, name=f"lr_{name}")
                        for name in ("total_steps", "warmup_steps", "decay_steps")}
        self.retarget(total_steps, warmup_steps, decay_steps)

    def retarget(self, total_steps: int, warmup_steps: int = 0, decay_steps: float = 1.0) -> None:
        """New step counts for the same decay; steps traced before read them.

        >>> s = WarmupDecay(0.1, total_steps=11, decay="linear")
        >>> s.retarget(total_steps=21)
        >>> [round(float(s(t)), 4) for t in (0, 10, 20)]
        [0.1, 0.05, 0.0]
        """
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.decay_steps = float(decay_steps)
        for name, value in (("total_steps", self.total_steps), ("warmup_steps", self.warmup_steps),
                            ("decay_steps", self.decay_steps)):
            self._counts[name].assign(float(value))

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        peak = tf.constant(self.peak_lr, tf.float32)
        total, warmup = self._counts["total_steps"], self._counts["warmup_steps"]
        if self.decay == "exponential":
            lr = peak * tf.pow(self.decay_rate, tf.floor(step / tf.maximum(self._counts["decay_steps"], 1e-9)))
        elif self.decay == "cosine":
            progress = tf.minimum(step / tf.maximum(total, 1.0), 1.0)
            lr = 0.5 * peak * (1.0 + tf.cos(math.pi * progress))
        elif self.decay == "linear":
            last = tf.maximum(total - 1.0 - warmup, 1.0)
            lr = peak * tf.maximum(1.0 - (step - warmup) / last, 0.0)
        else:
            lr = peak
        warm = peak * (step + 1.0) / tf.maximum(warmup, 1.0)
        return tf.where(step < warmup, warm, lr)

    def value(self, step: int) -> float:
        """The learning rate at ``step`` as a Python float (for logs and tests)."""
        return float(self(step))

    def get_config(self):
        return {"peak_lr": self.peak_lr, "total_steps": self.total_steps,
                "warmup_steps": self.warmup_steps, "decay": self.decay,
                "decay_steps": self.decay_steps, "decay_rate": self.decay_rate}


def make_lr_schedule(config, steps_per_epoch: int, total_steps: int) -> WarmupDecay:
    """The schedule of a resolved TrainConfig (lr scaled to the batch: ``TrainConfig.scaled_lr``)."""
    total, warmup, decay_steps = step_counts(config, steps_per_epoch, total_steps)
    return WarmupDecay(config.scaled_lr(), total, warmup_steps=warmup, decay=config.lr_decay,
                       decay_steps=decay_steps, decay_rate=config.lr_decay_rate)


def step_counts(config, steps_per_epoch: int, total_steps: int):
    """(total, warm-up, decay) steps of a resolved TrainConfig's schedule (``WarmupDecay.retarget``)."""
    return (total_steps, int(round(config.warmup_epochs * steps_per_epoch)),
            config.lr_decay_epochs * steps_per_epoch)


def decayed_variables(model) -> List:
    """The variables weight decay applies to: conv, depthwise and dense kernels."""
    return [v for v in model.trainable_variables if _short_name(v) in KERNEL_NAMES]


def _short_name(variable) -> str:
    return variable.name.split("/")[-1].split(":")[0]


class FusedRMSprop(keras.optimizers.RMSprop):
    """Keras' RMSprop with each variable's update as one TF kernel (``ResourceApplyRMSProp``).

    Keras runs about ten elementwise ops per variable and step; the TF kernel computes
    the same update (``ms = rho ms + (1 - rho) g^2; mom = momentum mom + lr g / sqrt(ms + eps);
    var -= mom``) in one pass, on the same slot variables, so checkpoints are unchanged.
    Centered or momentum-free RMSProp runs Keras' own update.

    >>> opt = FusedRMSprop(0.1, rho=0.9, momentum=0.9, epsilon=1e-3)
    >>> v = keras.Variable([1.0, 2.0]); opt.build([v])
    >>> opt.apply([tf.constant([0.5, -0.5])], [v]); [round(float(x), 4) for x in v.numpy()]
    [0.6899, 2.3101]
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.centered or self.momentum <= 0:
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyRMSProp(
            var=variable.handle, ms=self._velocities[index].handle, mom=self._momentums[index].handle,
            lr=tf.cast(learning_rate, dtype), rho=tf.cast(self.rho, dtype),
            momentum=tf.cast(self.momentum, dtype), epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype))


class FusedSGD(keras.optimizers.SGD):
    """Keras' SGD with momentum as one TF kernel per variable (``ResourceApplyKerasMomentum``:
    ``m = momentum m - lr g; var += m``, Keras' own rule, on its slot variables)."""

    def update_step(self, gradient, variable, learning_rate):
        if self.momentum <= 0:
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        tf.raw_ops.ResourceApplyKerasMomentum(
            var=variable.handle, accum=self.momentums[self._get_variable_index(variable)].handle,
            lr=tf.cast(learning_rate, dtype), grad=tf.cast(gradient, dtype),
            momentum=tf.cast(self.momentum, dtype), use_nesterov=self.nesterov)


class FusedAdamW(keras.optimizers.AdamW):
    """Keras' AdamW with each variable's Adam update as one TF kernel (``ResourceApplyAdam``:
    ``m += (g - m)(1 - b1); v += (g^2 - v)(1 - b2); var -= lr sqrt(1 - b2^t) / (1 - b1^t) m /
    (sqrt(v) + eps)``, Keras' own rule, on its slot variables) and the decoupled decay as one
    multiply per decayed kernel, with the learning rate and the bias corrections computed once
    per step. Single replica only (no per-variable merge calls).

    Why: Keras traces about ten elementwise ops, a schedule evaluation and a distribution-strategy
    merge call per variable; for V2-B0's 486 variables that was 6 s of the train step's 13 s trace
    and thousands of tiny ops every step. AMSGrad runs Keras' own update.

    >>> opt = FusedAdamW(0.1, weight_decay=0.5)
    >>> v = keras.Variable([1.0, 2.0]); opt.build([v])
    >>> opt.apply([tf.constant([0.5, -0.5])], [v]); [round(float(x), 4) for x in v.numpy()]
    [0.85, 2.0]
    """

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        if self.amsgrad:
            return super()._backend_update_step(grads, trainable_variables, learning_rate)
        lr = tf.cast(learning_rate, tf.float32)
        step = tf.cast(self.iterations + 1, tf.float32)
        beta_1_power = tf.pow(tf.constant(self.beta_1, tf.float32), step)
        beta_2_power = tf.pow(tf.constant(self.beta_2, tf.float32), step)
        scalars = {}  # dtype -> the step's scalars in it, cast once (every variable is float32 here)
        for grad, variable in zip(grads, trainable_variables):
            index = self._get_variable_index(variable)
            variable = getattr(variable, "value", variable)  # the tf.Variable under a keras.Variable
            dtype = variable.dtype
            if dtype not in scalars:
                scalars[dtype] = dict(zip(
                    ("beta1_power", "beta2_power", "lr", "beta1", "beta2", "epsilon"),
                    (tf.cast(x, dtype) for x in (beta_1_power, beta_2_power, lr, self.beta_1, self.beta_2,
                                                 self.epsilon))))
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle, m=self._momentums[index].value.handle,
                v=self._velocities[index].value.handle, grad=tf.cast(grad, dtype), **scalars[dtype])

    def _apply_weight_decay(self, variables):
        if self.weight_decay is None or self.amsgrad:
            return super()._apply_weight_decay(variables)
        keep = 1.0 - tf.cast(self.learning_rate, tf.float32) * tf.cast(self.weight_decay, tf.float32)
        for variable in variables:
            if self._use_weight_decay(variable):
                variable = getattr(variable, "value", variable)
                variable.assign(variable * tf.cast(keep, variable.dtype))


def make_optimizer(name: str, learning_rate, model, weight_decay: float = 0.0,
                   momentum: float = 0.9, loss_scale: bool = False, fused: bool = False):
    """Builds the optimizer (and builds its slots for ``model``'s trainable variables).

    Returns ``(optimizer, l2)``: ``l2`` is the coefficient of the L2 penalty the
    train step adds to the loss (RMSProp, SGD), 0 where the optimizer decays the
    weights itself (AdamW). With ``loss_scale`` the optimizer is wrapped in a
    ``keras.optimizers.LossScaleOptimizer`` (dynamic loss scaling for float16). ``fused``:
    RMSProp, SGD and AdamW update each variable in one TF kernel (``FusedRMSprop``, ``FusedSGD``,
    ``FusedAdamW``;
    single-replica training only: the kernels take the variable's own handle).
    """
    l2 = 0.0
    if name == "rmsprop":
        optimizer = (FusedRMSprop if fused else keras.optimizers.RMSprop)(
            learning_rate=learning_rate, rho=RMSPROP_RHO, momentum=momentum, epsilon=RMSPROP_EPSILON)
        l2 = weight_decay
    elif name == "sgd":
        optimizer = (FusedSGD if fused else keras.optimizers.SGD)(learning_rate=learning_rate, momentum=momentum)
        l2 = weight_decay
    elif name == "adamw":
        optimizer = (FusedAdamW if fused else keras.optimizers.AdamW)(
            learning_rate=learning_rate, weight_decay=weight_decay)
        decayed = {id(v) for v in decayed_variables(model)}
        optimizer.exclude_from_weight_decay(
            var_list=[v for v in model.trainable_variables if id(v) not in decayed])
    else:
        raise ValueError(f"--optimizer: must be one of rmsprop, sgd, adamw, got {name!r}.")
    if loss_scale:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    optimizer.build(model.trainable_variables)
    return optimizer, l2


def l2_penalty(variables, coefficient: float) -> Optional[tf.Tensor]:
    """``coefficient / 2 * sum(|w|^2)`` in float32 (None when coefficient is 0)."""
    if not coefficient or not variables:
        return None
    total = tf.add_n([tf.reduce_sum(tf.square(tf.cast(v, tf.float32))) for v in variables])
    return 0.5 * coefficient * total


def inner_optimizer(optimizer):
    """The optimizer doing the updates (unwraps a LossScaleOptimizer)."""
    return getattr(optimizer, "inner_optimizer", optimizer)
