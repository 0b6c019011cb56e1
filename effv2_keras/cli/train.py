"""`effv2 train`: progressive training with adaptive regularization (Algorithm 1).

Every flag is a field of ``effv2_keras.train.TrainConfig`` (same name, same
default, same help); this module only turns flags into a config and calls
``effv2_keras.train.train``. Flags that need no data (the variant's name, the
ranges) are checked before anything is loaded.

Examples:
    effv2 train --data digits --out runs/digits
    effv2 train --model efficientnetv2-s --data folder:/data/flowers --epochs 40 --out runs/flowers
    effv2 train --out runs/flowers --resume      # continue; flags from runs/flowers/config.json

Learning rate: --lr is the base rate PER 256 IMAGES; the rate used is
lr * batch_size / 256 (the paper: RMSProp 0.016 per 256), for AdamW
lr * sqrt(batch_size / 256).

With --resume and an existing <out>/config.json, that config is the base and
only the flags given on the command line override it.
"""

from __future__ import annotations

import dataclasses
import os
import typing

from absl import flags

from effv2_keras.cli import common
from effv2_keras.train.config import TrainConfig

COMMAND = "train"
FLAGS = flags.FlagValues()


def _define_flags() -> None:
    """One absl flag per TrainConfig field (the dataclass is the source)."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        kind = _base_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        if field.metadata.get("choices"):
            help_text += f" One of: {', '.join(field.metadata['choices'])}."
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                  float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
        define(field.name, field.default, help_text, flag_values=FLAGS)


def _base_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


_define_flags()
parse = common.make_parser(FLAGS, "usage: effv2 train --data DATA --out DIR [--model efficientnetv2-b0] "
                                  "[--epochs N] [--resume]")


def config_from_flags(flag_values: flags.FlagValues = FLAGS) -> TrainConfig:
    """The run's TrainConfig from the parsed flags (see the module docstring for --resume)."""
    values = {name: flag_values[name].value for name in TrainConfig.field_names()}
    saved = os.path.join(values["out"], "config.json")
    if values["resume"] and os.path.exists(saved):
        base = TrainConfig.load(saved).to_dict()
        given = {name: values[name] for name in values if flag_values[name].present}
        values = {**base, **given, "resume": True}
    return TrainConfig(**values)


def _train(argv) -> int:
    common.no_arguments(argv)
    from effv2_keras.train import ConfigError, NonFiniteLossError, train
    from effv2_keras.train.checkpoint import CheckpointError

    try:
        config = config_from_flags().validate()
    except (ConfigError, ValueError) as error:
        raise common.UsageError(str(error)) from None
    try:
        train(config)
    except ConfigError as error:  # what only the data can tell (a size the data cannot give, ...)
        raise common.UsageError(str(error)) from None
    except (CheckpointError, NonFiniteLossError) as error:
        return common.fail(COMMAND, str(error))
    return 0


main = common.guarded(COMMAND, FLAGS, _train)


def run(argv=None) -> None:
    """Entry point of `effv2 train` and tools/train.py."""
    common.run(main, parse, argv)


if __name__ == "__main__":
    run()
