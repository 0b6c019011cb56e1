"""Exponential moving average of a model's weights, BN moving statistics included.

As the official code (tf.train.ExponentialMovingAverage with ``num_updates``), the
decay warms up: step ``t`` uses ``min(decay, (1 + t) / (10 + t))``, so short runs
and the first steps of long ones are not dominated by the random initialization.
Every floating-point variable of the model is averaged: kernels, biases, BN
gamma/beta AND BN moving mean/variance. Evaluation and export use the averages
(``swap()`` exchanges them with the live weights and back).
"""

from __future__ import annotations

from typing import List

import tensorflow as tf

WARMUP_OFFSET = 10.0


def averaged_variables(model) -> List:
    """The model variables the EMA tracks: every floating-point one (not RNG states)."""
    return [v for v in model.variables if tf.as_dtype(v.dtype).is_floating]


class ExponentialMovingAverage:
    """Shadow copies of ``averaged_variables(model)``; create it under the strategy scope."""

    def __init__(self, model, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"--ema_decay: must be in (0, 1) for an EMA, got {decay!r}.")
        self.decay = float(decay)
        self.variables = averaged_variables(model)
        self.shadows = [
            tf.Variable(v.numpy(), trainable=False, name="ema_" + _safe(v.path))
            for v in self.variables
        ]

    def decay_at(self, step):
        """The decay used by the update after global step ``step`` (0-based)."""
        step = tf.cast(step, tf.float32)
        return tf.minimum(self.decay, (1.0 + step) / (WARMUP_OFFSET + step))

    def update(self, step) -> None:
        """shadow -= (1 - d) * (shadow - value). Call in replica context in the train step."""
        with tf.name_scope("ema"):
            one_minus = 1.0 - self.decay_at(step)
            for shadow, variable in zip(self.shadows, self.variables):
                value = tf.cast(variable.value if hasattr(variable, "value") else variable, shadow.dtype)
                shadow.assign_sub(one_minus * (shadow - value))

    def swap(self) -> None:
        """Exchanges live weights and averages (call twice to restore)."""
        for shadow, variable in zip(self.shadows, self.variables):
            live = tf.identity(variable.value)
            variable.assign(shadow)
            shadow.assign(live)


def _safe(path: str) -> str:
    return "".join(c if c.isalnum() or c in "_." else "_" for c in path)
