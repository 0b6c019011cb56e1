"""tools/benchmark.py --train_step and tools/profile_step.py end to end, on tiny settings.

The numbers are not checked for speed (benchmarks, not tests); the tools must run the
trainer's real step, time every contender and write what docs/PERFORMANCE.md quotes.
"""

import json

import pytest

from train_helpers import run_python


def test_train_step_benchmark_times_every_contender_and_writes_ratios(tmp_path):
    out = tmp_path / "step.json"
    done = run_python(["tools/benchmark.py", "--train_step", "--noisolate", "--data", "digits", "--sizes", "32",
                       "--batch", "8", "--rounds", "1", "--steps", "2",
                       "--contenders", "effv2,effv2[xla_silu=0],effv2_stock", "--out", out], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    row, = json.loads(out.read_text())["rows"]
    assert set(row["images_per_s"]) == {"effv2", "effv2[xla_silu=0]", "effv2_stock"}
    assert all(v > 0 for v in row["images_per_s"].values())
    # the ratio is of the unrounded medians (rounded to 3 decimals), the img/s are rounded to 0.01:
    # recomputing it from the rounded values can differ in the third decimal
    speeds = row["images_per_s"]
    assert row["effv2_over_effv2_stock"] == pytest.approx(speeds["effv2"] / speeds["effv2_stock"], abs=2e-3)
    assert "| efficientnetv2-b0 | 32 | float32 |" in done.stdout
    assert row["isolated"] is False


def test_train_step_benchmark_isolated_runs_each_contender_in_its_own_worker(tmp_path):
    out = tmp_path / "step.json"
    done = run_python(["tools/benchmark.py", "--train_step", "--data", "digits", "--models", "efficientnetv2-b0",
                       "--sizes", "32", "--batch", "8", "--rounds", "2", "--steps", "2",
                       "--contenders", "effv2,effv2_stock", "--out", out], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    row, = result["rows"]
    assert row["isolated"] is True and result["meta"]["isolate"] is True
    assert set(row["images_per_s"]) == {"effv2", "effv2_stock"}
    assert all(v > 0 for v in row["images_per_s"].values())
    assert {c: len(v) for c, v in row["samples"].items()} == {"effv2": 2, "effv2_stock": 2}
    assert "effv2_over_effv2_stock" in row


def test_profile_step_attributes_op_time_to_model_parts(tmp_path):
    out = tmp_path / "profile.json"
    done = run_python(["tools/profile_step.py", "--data", "digits", "--width", "0.25", "--depth", "0.25",
                       "--size", "32", "--batch", "8", "--steps", "2", "--out", out], timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    profile = json.loads(out.read_text())
    parts = profile["by_part_seconds"]
    # the fast step's fused BN (forward and backward), its XLA SiLU kernels and the optimizer were seen
    assert parts["BN"]["forward"] > 0 and parts["BN"]["backward"] > 0
    assert parts["activations"]["forward"] > 0 and parts["optimizer"]["forward"] > 0
    assert any("FusedBatchNormGradV3" in t for t in profile["by_type_seconds"])
    assert "| model part | forward ms/step | backward ms/step | share |" in done.stdout
