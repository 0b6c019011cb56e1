"""Checkpoints: one ``.npz`` file per checkpoint, written atomically, last K kept.

A checkpoint is ``ckpt-<global step, 9 digits>.npz``: every variable to restore
(model, optimizer, EMA) as arrays keyed by ``<group>/<variable.path>`` (``pack``;
``restore`` matches them by that key, never by position, and names the first
variable that differs) plus a JSON ``state`` (stage, epoch, step, metrics so far,
best validation result ...). The best epoch's evaluation weights go to
``best-e<epoch>.npz`` in the same form (``save_best`` / ``load_best``).

Why npz and not tf.train.Checkpoint: the run state and the arrays land in one file
with one atomic rename, and a checkpoint can be checked (keys, shapes, finiteness)
before anything is assigned. It is written to a temporary file
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
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

logger = logging.getLogger("effv2_keras.train")

PATTERN = re.compile(r"^ckpt-(\d{9})\.npz$")
STATE_KEY = "__state__"


BEST_PATTERN = "best-e{epoch:05d}.npz"

# group name -> [(key, variable)]: what a checkpoint holds, e.g.
# {"model": [(v.path, v) for v in model.variables], "ema": [(v.path, shadow), ...]}
Groups = Dict[str, Sequence[Tuple[str, object]]]


class CheckpointError(RuntimeError):
    """No usable checkpoint (all unreadable), or one that does not fit the model."""


def named(variables, paths: Optional[Dict[int, str]] = None) -> List[Tuple[str, object]]:
    """``(variable.path, variable)`` for Keras variables (``paths``: ``id(variable)`` -> key
    overrides); a duplicate key is an error."""
    paths = paths or {}
    pairs = [(paths.get(id(v)) or getattr(v, "path", None) or v.name, v) for v in variables]
    seen = set()
    for path, _ in pairs:
        if path in seen:
            raise CheckpointError(f"two variables share the path {path!r}: checkpoints key variables "
                                  "by path, so every layer needs a unique name.")
        seen.add(path)
    return pairs


def model_variables(model) -> List[Tuple[str, object]]:
    """``named(model.variables)``, except that a layer's random-seed state is keyed by the
    layer (``block1a_drop/seed_generator_0``): Keras names seed generators from a
    process-wide counter, so their own paths differ between two builds of one model."""
    paths = {}
    for layer in model._flatten_layers(include_self=False):
        for index, generator in enumerate(getattr(layer, "_seed_generators", ())):
            paths[id(generator.state)] = f"{layer.name}/seed_generator_{index}"
    return named(model.variables, paths)


def optimizer_variables(optimizer) -> List[Tuple[str, object]]:
    """``named(optimizer.variables)`` without the optimizer's own name in front
    (``iteration``, ``stem_conv_kernel_velocity``): that name also comes from a process-wide
    counter (``rmsprop_3``), while the rest of a slot's path names the variable it belongs to."""
    prefix = f"{optimizer.name}/"
    paths = {}
    for variable in optimizer.variables:
        path = getattr(variable, "path", None) or variable.name
        if path.startswith(prefix):
            paths[id(variable)] = path[len(prefix):]
    return named(optimizer.variables, paths)


def pack(groups: Groups) -> Dict[str, np.ndarray]:
    """Every variable's value, keyed ``<group>/<key>``."""
    return {f"{group}/{key}": np.asarray(variable.numpy())
            for group, pairs in groups.items() for key, variable in pairs}


def first_non_finite(arrays: Dict[str, np.ndarray]) -> Optional[str]:
    """The key of the first floating-point array holding NaN or inf, else None."""
    return next((key for key, value in arrays.items()
                 if value.dtype.kind == "f" and not np.all(np.isfinite(value))), None)


def check_fits(arrays: Dict[str, np.ndarray], groups: Groups, where: str) -> None:
    """Raises CheckpointError naming the first variable of ``groups`` the checkpoint lacks or
    holds with another shape, or the first checkpoint variable this run does not have."""
    expected = {f"{group}/{key}": variable for group, pairs in groups.items() for key, variable in pairs}
    hint = "same --model/--width/--depth/--optimizer/--ema_decay as the run that wrote it?"
    for key, variable in expected.items():
        if key not in arrays:
            raise CheckpointError(f"--resume: {where} has no variable {key} of this run; {hint}")
        saved, mine = tuple(np.shape(arrays[key])), tuple(variable.shape)
        if saved != mine:
            raise CheckpointError(f"--resume: variable {key} has shape {saved} in {where} but {mine} "
                                  f"in this run; {hint}")
    extra = [key for key in arrays if key not in expected and key.split("/", 1)[0] in groups]
    if extra:
        raise CheckpointError(f"--resume: {where} holds {extra[0]}, which this run does not have; {hint}")


def restore(arrays: Dict[str, np.ndarray], groups: Groups, where: str) -> None:
    """Assigns each variable of ``groups`` its array (checked by ``check_fits`` first)."""
    check_fits(arrays, groups, where)
    for group, pairs in groups.items():
        for key, variable in pairs:
            variable.assign(arrays[f"{group}/{key}"])


def save_best(directory: str, epoch: int, val_top1: float, arrays: Dict[str, np.ndarray]) -> str:
    """Writes the best epoch's evaluation weights (``model/...`` arrays); returns the file name."""
    name = BEST_PATTERN.format(epoch=epoch)
    atomic_savez(os.path.join(directory, name),
                 {**arrays, STATE_KEY: encode_state({"epoch": epoch, "val_top1": val_top1})})
    return name


def load_best(directory: str, name: str) -> Dict[str, np.ndarray]:
    arrays, _ = read_npz(os.path.join(directory, name))
    return arrays


def prune_best(directory: str, keep: Sequence[str], checkpoint_paths: Sequence[str]) -> None:
    """Removes best-weights files neither ``keep`` nor any of the checkpoints refers to."""
    wanted = set(keep)
    for path in checkpoint_paths:
        try:
            best = read_state(path).get("best")
        except Exception:  # an unreadable checkpoint refers to nothing
            continue
        if best:
            wanted.add(best["file"])
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        if name.startswith("best-e") and name.endswith(".npz") and name not in wanted:
            os.remove(os.path.join(directory, name))


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
