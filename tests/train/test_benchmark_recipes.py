"""Smoke test of tools/benchmark_recipes.py: candidates x seeds train, the table, JSON and PNG
come out, the race to the reference is computed, and a second call trains nothing again.

A tiny real-photo folder (a few signdigits100 images per class, linked from ../shared/data),
width/depth 0.25, 32 px, 2 epochs of 2 steps; run as a subprocess (the tool's absl flags
share names with ``effv2 train``'s).
"""

from __future__ import annotations

import json
import math

import pytest

from test_benchmark_progressive import tiny_signdigits
from train_helpers import REPO, run_python


def _run(folder, out, work):
    return run_python([
        REPO / "tools" / "benchmark_recipes.py", f"--data={folder}", "--width=0.25", "--depth=0.25",
        "--epochs=2", "--size=32", "--batch_size=8", "--steps_per_epoch=2", "--seeds=0,1",
        "--candidate=fixed: flip=false", "--candidate=two-stage: stages=2, min_size=32, max_size=48, eval_size=32",
        "--reference=fixed", "--report_epochs=1,2", f"--work={work}", f"--out={out}"], timeout=900)


@pytest.mark.slow
def test_benchmark_recipes_smoke(tmp_path):
    folder = tiny_signdigits(tmp_path)
    out = tmp_path / "recipes"
    proc = _run(folder, out, tmp_path / "work")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads((tmp_path / "recipes.json").read_text())
    assert sorted((r["candidate"], r["seed"]) for r in report["runs"]) == [
        ("fixed", 0), ("fixed", 1), ("two-stage", 0), ("two-stage", 1)]
    for r in report["runs"]:
        assert len(r["epochs"]) == 2 and r["resolved"]["recipe"] == "short"
        assert all(math.isfinite(e["val_top1"]) and 0 <= e["val_top1"] <= 1 for e in r["epochs"])
    two = next(r for r in report["runs"] if r["candidate"] == "two-stage")
    assert [s["image_size"] for s in two["stages"]] == [32, 48] and two["resolved"]["flip"] is True
    rows = {row["candidate"]: row for row in report["summary"]}
    assert rows["fixed"]["val_top1"]["values"] == [r["val_top1"] for r in sorted(
        (r for r in report["runs"] if r["candidate"] == "fixed"), key=lambda r: r["seed"])]
    assert len(rows["two-stage"]["time_to_reference_best_ratio"]) == 2
    assert "time to fixed's best" in (tmp_path / "recipes.md").read_text()
    assert (tmp_path / "recipes.png").stat().st_size > 1000
    # a second call finds every (candidate, seed) done and trains nothing
    again = _run(folder, out, tmp_path / "work2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before, kept") == 4
    assert not (tmp_path / "work2").exists()
