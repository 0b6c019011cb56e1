"""Smoke test of tools/benchmark_progressive.py: every path runs, the JSON and PNG come out.

A tiny real-photo folder (a few signdigits100 images per class, linked from ../shared/data),
width/depth 0.25, 32 px, 1 epoch of 2 steps, a 5 s peer budget; run as a subprocess
(the tool's absl flags share names with ``effv2 train``'s).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from pathlib import Path

import pytest

from train_helpers import REPO, run_python

SHARED_DATA = Path(os.environ.get("EFFV2_SHARED_DATA") or REPO.parent / "shared" / "data")

PER_CLASS = {"train": 10, "test": 3}


def _tiny_folder(root, source):
    for split, count in PER_CLASS.items():
        for class_dir in sorted((source / split).iterdir()):
            target = root / split / class_dir.name
            target.mkdir(parents=True)
            for path in sorted(class_dir.glob("*.jpg"))[:count]:
                os.symlink(path, target / path.name)
    return root


def tiny_signdigits(tmp_path):
    """The tiny linked signdigits100 folder, or a skip naming where the photos were looked for."""
    source = SHARED_DATA / "signdigits100"
    if not (source / "train").is_dir():
        pytest.skip(f"real photos not found at {source} (set EFFV2_SHARED_DATA to the shared/data folder)")
    return _tiny_folder(tmp_path / "signdigits_tiny", source)


@pytest.mark.slow
def test_benchmark_progressive_smoke(tmp_path):
    folder = tiny_signdigits(tmp_path)
    runs = ["progressive", "fixed", "keras"]
    if importlib.util.find_spec("torch") and importlib.util.find_spec("timm"):
        runs.append("timm")
    out = tmp_path / "bench"
    proc = run_python([
        REPO / "tools" / "benchmark_progressive.py", f"--data={folder}", "--width=0.25", "--depth=0.25",
        "--epochs=1", "--stages=1", "--min_size=32", "--max_size=32", "--batch_size=8",
        "--steps_per_epoch=2", "--budget_s=5", "--pipeline_batches=2", "--noflip",
        f"--runs={','.join(runs)}", f"--out={out}"], timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "bench.json").read_text())
    assert (tmp_path / "bench.png").stat().st_size > 1000
    entry = report["datasets"]["signdigits_tiny"]
    assert list(entry["results"]) == runs
    for kind, result in entry["results"].items():
        assert result["epochs"], kind
        for value in [result["val_top1"], result["test_top1"]] + [e["val_top1"] for e in result["epochs"]]:
            assert math.isfinite(value) and 0.0 <= value <= 1.0, (kind, value)
        assert all(s["input_images_per_s"] > 0 for s in result["stages"]), kind
        assert len(result["loadavg_before"]) == 3
    assert [s["image_size"] for s in entry["results"]["fixed"]["stages"]] == [32]
    summary = entry["summary"]
    assert summary["budget_s"] == 5 and summary["best_peer"] in ("keras", "timm")
    assert "| progressive |" in proc.stdout
