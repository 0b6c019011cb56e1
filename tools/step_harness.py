"""The trainer's real training step for one stage, shared by the step benchmark and profiler.

``OneStageRun`` builds ``effv2 train``'s Trainer (its tf.data pipeline, traced step,
optimizer, EMA and host reads; RandAugment and Mixup off, no validation) for a single
stage at one image size; each ``round`` trains one epoch of ``steps`` steps.

Example:
    >>> from effv2_keras import data
    >>> run = OneStageRun("efficientnetv2-b0", 32, "float32", data.load("digits"), "digits", batch=8,
    ...                   steps=2, epochs=1, width=0.25, depth=0.25)
    >>> run.round() > 0
    True
"""

from __future__ import annotations

import os
import tempfile

SHARED_CLOTHING = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "data",
                               "clothing160")


def default_data_spec() -> str:
    """clothing160 from ../shared/data when present, else the embedded digits."""
    return f"folder:{os.path.abspath(SHARED_CLOTHING)}" if os.path.isdir(SHARED_CLOTHING) else "digits"


class OneStageRun:
    """A Trainer for one stage at ``size`` px; ``round()`` trains the next epoch and returns its img/s."""

    def __init__(self, model, size, precision, splits, data_spec, batch, steps, epochs, **overrides):
        from effv2_keras.train import TrainConfig
        from effv2_keras.train.trainer import Trainer

        config = TrainConfig(
            model=model, data=data_spec, batch_size=batch, epochs=epochs, stages=1, min_size=size,
            max_size=size, steps_per_epoch=steps, randaug_min=0, randaug_max=0, mixup_min=0, mixup_max=0,
            mixed_precision="none" if precision == "float32" else precision, verbose=0,
            out=tempfile.mkdtemp(prefix="effv2-step-"), **overrides)
        self.trainer = Trainer(config, splits=splits)
        self.stage = self.trainer.schedule.stages[0]
        self.epoch = 0
        self._begun = False

    def round(self) -> float:
        """One epoch of the stage (the step's images/s, its first step excluded)."""
        if not self._begun:
            self.trainer.begin_stage(self.stage)
            self._begun = True
        self.trainer.train_epoch(self.stage, self.epoch)
        self.epoch += 1
        return self.trainer._partial.images_per_sec
