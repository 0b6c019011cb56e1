"""Checkpoints: one ``.npz`` file per checkpoint, written atomically, last K kept.

A checkpoint is ``ckpt-<global step, 9 digits>.npz``: every variable to restore
(model, optimizer, EMA) as arrays plus a JSON ``state`` (stage, epoch, step,
metrics so far, best validation result ...). It is written to a temporary file
in the same directory, fsync'ed and renamed over the final name with
``os.replace``, so a run killed at any moment leaves either the previous set of
checkpoints or the previous set plus the new one, never a half-written file
under a checkpoint name. ``newest_good()`` reads checkpoints newest first and
skips unreadable ones with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import re
import zipfile
from typing import Dict, List, Optional, Tuple

import numpy as np

logger = logging.getLogger("effv2_keras.train")

PATTERN = re.compile(r"^ckpt-(\d{9})\.npz$")
STATE_KEY = "__state__"


class CheckpointError(RuntimeError):
    """No usable checkpoint (all unreadable), or one that does not fit the model."""


def atomic_savez(path: str, arrays: Dict[str, np.ndarray]) -> None:
    """np.savez to ``path`` via a temporary file + fsync + os.replace."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(directory)


def _fsync_dir(directory: str) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def encode_state(state: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(state, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def decode_state(array: np.ndarray) -> dict:
    return json.loads(bytes(np.asarray(array, dtype=np.uint8)).decode("utf-8"))


def read_npz(path: str) -> Tuple[Dict[str, np.ndarray], dict]:
    """Reads every array of a checkpoint (so a truncated file fails here, not later)."""
    with np.load(path, allow_pickle=False) as f:
        arrays = {key: f[key] for key in f.files}
    if STATE_KEY not in arrays:
        raise ValueError(f"{path} has no {STATE_KEY} entry")
    state = decode_state(arrays.pop(STATE_KEY))
    return arrays, state


def read_state(path: str) -> dict:
    with np.load(path, allow_pickle=False) as f:
        return decode_state(f[STATE_KEY])


class CheckpointManager:
    """Writes, lists, prunes and finds checkpoints in one directory."""

    def __init__(self, directory: str, keep: int = 3, write: bool = True):
        if keep < 1:
            raise ValueError(f"--keep_checkpoints: must be >= 1, got {keep}.")
        self.directory = directory
        self.keep = keep
        self.write = write  # False on non-chief workers: they never touch the files

    def path_for(self, step: int) -> str:
        return os.path.join(self.directory, f"ckpt-{step:09d}.npz")

    def list(self) -> List[Tuple[int, str]]:
        """(step, path) of every checkpoint file, oldest first."""
        if not os.path.isdir(self.directory):
            return []
        found = []
        for name in os.listdir(self.directory):
            match = PATTERN.match(name)
            if match:
                found.append((int(match.group(1)), os.path.join(self.directory, name)))
        return sorted(found)

    def save(self, step: int, arrays: Dict[str, np.ndarray], state: dict) -> Optional[str]:
        """Writes checkpoint ``step`` atomically, then prunes all but the newest ``keep``."""
        if not self.write:
            return None
        path = self.path_for(step)
        atomic_savez(path, {**arrays, STATE_KEY: encode_state(state)})
        for _, old in self.list()[:-self.keep]:
            if old != path:
                os.remove(old)
        return path

    def newest_good(self, check=None):
        """Returns ``(path, arrays, state)`` of the newest readable checkpoint, or None.

        Unreadable files (truncated, corrupt, not a checkpoint) are skipped with a
        warning. ``check(arrays, state)`` may raise CheckpointError for a readable
        checkpoint that does not fit the run; that is not skipped but re-raised.
        If checkpoints exist but none is readable, raises CheckpointError.
        """
        candidates = self.list()
        bad = []
        for step, path in reversed(candidates):
            try:
                arrays, state = read_npz(path)
            except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile,
                    UnicodeDecodeError) as e:
                logger.warning("Checkpoint %s is unreadable (%s: %s); trying an older one.",
                               path, type(e).__name__, e)
                bad.append(os.path.basename(path))
                continue
            if check is not None:
                check(arrays, state)
            return path, arrays, state
        if bad:
            raise CheckpointError(
                f"--resume: no readable checkpoint in {self.directory} "
                f"({len(bad)} unreadable: {', '.join(bad)}).")
        return None
