"""`effv2 train`: progressive training with adaptive regularization (Algorithm 1).

Every flag is a field of ``effv2_keras.train.TrainConfig`` (same name, same
default, same help); this module only turns flags into a config and calls
``effv2_keras.train.train``.

Examples:
    effv2 train --model efficientnetv2-b0 --data digits --out runs/digits
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
import sys
import typing

from absl import app, flags

from effv2_keras.train.config import TrainConfig

FLAGS = flags.FLAGS
PROG = "effv2 train"


def _define_flags() -> None:
    """One absl flag per TrainConfig field (defined once: the dataclass is the source)."""
    hints = typing.get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        if field.name in FLAGS:
            continue
        kind = _base_type(hints[field.name])
        help_text = field.metadata.get("help", "")
        if field.metadata.get("choices"):
            help_text += f" One of: {', '.join(field.metadata['choices'])}."
        define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer,
                  float: flags.DEFINE_float, str: flags.DEFINE_string}[kind]
        define(field.name, field.default, help_text)


def _base_type(hint):
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


_define_flags()


def config_from_flags() -> TrainConfig:
    """The run's TrainConfig from the parsed flags (see the module docstring for --resume)."""
    values = {name: FLAGS[name].value for name in TrainConfig.field_names()}
    saved = os.path.join(values["out"], "config.json")
    if values["resume"] and os.path.exists(saved):
        base = TrainConfig.load(saved).to_dict()
        given = {name: values[name] for name in values if FLAGS[name].present}
        values = {**base, **given, "resume": True}
    return TrainConfig(**values)


def _error(message: str, code: int = 2) -> None:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv) -> None:
    if len(argv) > 1:
        _error(f"unexpected arguments: {' '.join(argv[1:])} (flags are --name=value).")
    from effv2_keras.train import ConfigError, NonFiniteLossError, train
    from effv2_keras.train.checkpoint import CheckpointError

    try:
        config = config_from_flags().validate()
    except ValueError as e:
        _error(str(e))
    try:
        train(config)
    except ConfigError as e:
        _error(str(e))
    except CheckpointError as e:
        _error(str(e))
    except NonFiniteLossError as e:
        _error(str(e), code=1)


def run(argv=None) -> None:
    """Entry point of `effv2 train` and tools/train.py."""
    program = (argv or sys.argv)[0]
    for name in TrainConfig.field_names():  # so that --help lists them under this program
        FLAGS.register_key_flag_for_module(program, FLAGS[name])
    app.run(main, argv=argv)


if __name__ == "__main__":
    run()
