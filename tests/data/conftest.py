"""Fixtures for the data tests: the shared real photos, and small image files written in tmp_path."""

from __future__ import annotations

import csv
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

# tests/data/conftest.py -> repo root is parents[2]; shared/ sits beside the repo.
SHARED_DATA = Path(os.environ.get("EFFV2_SHARED_DATA")
                   or Path(__file__).resolve().parents[2].parent / "shared" / "data")


@pytest.fixture(scope="session")
def signdigits_dir() -> Path:
    path = SHARED_DATA / "signdigits100"
    if not (path / "train").is_dir():
        pytest.skip(f"real photos not found at {path} (set EFFV2_SHARED_DATA to the shared/data folder)")
    return path


@pytest.fixture(scope="session")
def signdigits_manifest(signdigits_dir):
    """Per-split Counter of labels, read from the data set's own manifest."""
    with open(signdigits_dir / "manifest.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    counts = {}
    for row in rows:
        counts.setdefault(row["split"], Counter())[int(row["label"])] += 1
    return counts


@pytest.fixture(scope="session")
def signdigits(signdigits_dir):
    """signdigits100 loaded once for the session (val carved 10%, seed 0)."""
    from effv2_keras import data

    return data.load(f"folder:{signdigits_dir}", val_fraction=0.1, seed=0)


@pytest.fixture
def write_image():
    """write_image(path, array, **pil_save_kwargs): saves a uint8 array with Pillow (format from the suffix)."""
    from PIL import Image

    def write(path, array, **kwargs):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        array = np.asarray(array, np.uint8)
        Image.fromarray(array if array.ndim == 2 or array.shape[-1] != 1 else array[..., 0]).save(path, **kwargs)
        return path

    return write


def id_image(value: int, height: int = 8, width: int = 8) -> np.ndarray:
    """A constant RGB image whose value identifies it after a lossless round trip (PNG)."""
    return np.full([height, width, 3], value, np.uint8)


@pytest.fixture
def id_folder(tmp_path, write_image):
    """ROOT/{a,b}/ with 10 PNGs each; image k (0-19) is constant k * 10 + 5, class a = 0-9."""
    root = tmp_path / "ids"
    for k in range(20):
        write_image(root / ("a" if k < 10 else "b") / f"img{k:02d}.png", id_image(k * 10 + 5))
    return root


@pytest.fixture
def ids_of():
    """ids_of(source): sorted ids of the images of a split loaded from id_folder."""
    def ids(source) -> list[int]:
        return sorted(int(image[0, 0, 0]) // 10 for image, _ in source.dataset.as_numpy_iterator())

    return ids
