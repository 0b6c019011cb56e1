"""`effv2 <command> [flags]`: dispatches to one absl app per command.

Only the chosen command's module is imported, so `effv2 train --helpfull` lists the flags
of training alone. TensorFlow's start-up banner (oneDNN, CUDA, CPU features) is hidden:
set ``EFFV2_TF_LOG=1`` (or a ``TF_CPP_MIN_LOG_LEVEL`` of your own) to see it.

Example:
    effv2 train --model efficientnetv2-b0 --data digits --out runs/digits
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "train": "progressive training with adaptive regularization",
    "export": "export a trained model (SavedModel, TF-Hub, TFLite, ONNX, .keras)",
    "predict": "top-5 predictions for image files",
    "evaluate": "top-1/top-5, confusion matrix and per-class report on a dataset",
    "reproduce": "run an experiment of the paper or the seed reports (resumable; --list)",
}


def _usage() -> str:
    lines = ["usage: effv2 <command> [flags]   (effv2 <command> --helpfull for every flag)", "", "commands:"]
    lines += [f"  {name:<10} {text}" for name, text in COMMANDS.items()]
    lines += ["", "TensorFlow's start-up logs are hidden; EFFV2_TF_LOG=1 shows them."]
    return "\n".join(lines)


def main(argv=None) -> None:
    from effv2_keras.cli import common

    argv = list(sys.argv if argv is None else argv)
    if len(argv) < 2 or argv[1] in ("-h", "--help", "help"):
        print(_usage())
        sys.exit(0 if len(argv) >= 2 else common.USAGE)
    command = argv[1]
    if command not in COMMANDS:
        print(f"effv2: error: unknown command {command!r}.\n\n{_usage()}", file=sys.stderr)
        sys.exit(common.USAGE)
    # Even for --help: a command's flags are defined next to the library code they feed,
    # which loads TensorFlow, so its banner must be held back here too.
    common.import_tensorflow()
    module = importlib.import_module(f"effv2_keras.cli.{command}")
    sys.argv = [f"effv2 {command}"] + argv[2:]
    module.run()


if __name__ == "__main__":
    main()
