"""Runs one reproduction experiment: `python tools/reproduce.py --help` (same as `effv2 reproduce`)."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from effv2_keras.cli.reproduce import run  # noqa: E402

if __name__ == "__main__":
    run()
