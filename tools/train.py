"""Trains a model with progressive learning: `python tools/train.py --help` (same as `effv2 train`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from effv2_keras.cli.train import run  # noqa: E402

if __name__ == "__main__":
    run()
