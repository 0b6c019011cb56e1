"""Shared fixtures. Keep this file small: test-area fixtures live beside their tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

# tests/conftest.py -> the repo root is parents[1]; shared/ sits beside the repo.
SHARED_DATA = Path(os.environ.get("EFFV2_SHARED_DATA")
                   or Path(__file__).resolve().parents[1].parent / "shared" / "data")
REAL_IMAGE_SETS = ("signdigits100", "clothing160")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared/data folder (may be absent: tests skip with a reason then)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def real_images():
    """``real_images(n, size, dataset="clothing160")``: n real photos, float32 0-255, (n, size, size, 3).

    Files are taken in sorted order, spread evenly over the test split, so every call
    returns the same images. Skips when the shared data folder is absent.
    """
    from PIL import Image

    def load(n: int, size: int, dataset: str = "clothing160") -> np.ndarray:
        if dataset not in REAL_IMAGE_SETS:
            raise ValueError(f"dataset must be one of {REAL_IMAGE_SETS}; got {dataset!r}.")
        folder = SHARED_DATA / dataset / "test"
        files = sorted(folder.glob("*/*.jpg"))
        if not files:
            pytest.skip(f"real photos not found at {folder} (set EFFV2_SHARED_DATA to the shared/data folder)")
        chosen = [files[i] for i in np.linspace(0, len(files) - 1, n).astype(int)]
        arrays = []
        for path in chosen:
            with Image.open(path) as image:
                image = image.convert("RGB").resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(image, dtype="float32"))
        return np.stack(arrays)

    return load


@pytest.fixture
def absl_cli(capsys):
    """``absl_cli(module, "effv2 train")`` -> ``run(*argv)``: runs that absl command in-process and
    returns (exit code, stdout, stderr); the module's flags are reset before each run and after the test."""
    used = []

    def bind(module, program: str):
        used.append(module)

        def run(*argv):
            module.FLAGS.unparse_flags()
            with pytest.raises(SystemExit) as info:
                module.run([program, *argv])
            captured = capsys.readouterr()
            return info.value.code or 0, captured.out, captured.err

        return run

    yield bind
    for module in used:
        module.FLAGS.unparse_flags()
