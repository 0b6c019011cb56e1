"""Helpers of the trainer tests: tiny configs and subprocess runs.

Every training here uses efficientnetv2-b0 at width/depth 0.25 (124k parameters),
32-48 px images, batches of 16 and 2-3 steps per epoch: seconds per stage on 2 cores,
most of it the one trace of the train step per stage.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = Path(__file__).resolve().parent / "scripts"

TINY = dict(model="efficientnetv2-b0", width=0.25, depth=0.25, data="digits", batch_size=16,
            min_size=32, max_size=48, flip=False, verbose=0, seed=0)


def tiny_config(out, **overrides):
    from effv2_keras.train import TrainConfig

    return TrainConfig(**{**TINY, "out": str(out), **overrides})


def tiny_flags(out, **overrides):
    """The same tiny run as command-line flags."""
    values = {**TINY, "out": str(out), **overrides}
    flags = []
    for name, value in values.items():
        if isinstance(value, bool):
            flags.append(f"--{name}" if value else f"--no{name}")
        else:
            flags.append(f"--{name}={value}")
    return flags


def subprocess_env(**extra):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.update(extra)
    return env


def run_python(args, timeout=300, **env):
    """Runs ``python args...`` from the repo root; returns the CompletedProcess."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=subprocess_env(**env),
                          capture_output=True, text=True, timeout=timeout)
