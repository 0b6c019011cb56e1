"""Progressive training (the paper's Algorithm 1): config, optimizer/LR, EMA, checkpoints, loop;
and ``fit_progressive``, the same stages through a user's own ``model.fit``.

>>> from effv2_keras.train import TrainConfig, train
>>> result = train(TrainConfig(model="efficientnetv2-b0", width=0.25, depth=0.25, epochs=2,
...                            stages=2, min_size=32, max_size=48, out="runs/doc"))  # doctest: +SKIP
"""

from effv2_keras.train.checkpoint import CheckpointError, CheckpointManager
from effv2_keras.train.config import TrainConfig
from effv2_keras.train.ema import ExponentialMovingAverage
from effv2_keras.train.optim import WarmupDecay, make_lr_schedule, make_optimizer
from effv2_keras.train.progressive import fit_progressive, stage_dataset
from effv2_keras.train.strategy import make_strategy
from effv2_keras.train.trainer import (Callback, ConfigError, NonFiniteLossError, Trainer, TrainResult,
                                       train)

__all__ = [
    "TrainConfig", "Trainer", "TrainResult", "train", "Callback", "ConfigError", "NonFiniteLossError",
    "CheckpointError", "CheckpointManager", "ExponentialMovingAverage", "WarmupDecay",
    "make_lr_schedule", "make_optimizer", "make_strategy", "fit_progressive", "stage_dataset",
]
