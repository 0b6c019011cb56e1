"""tools/benchmark_budget.py without training: the resume keys, the JSON, the table and the plot.

The tool is imported from its file (its absl flags are defined only when it runs as a
script); rows are written by hand, nothing is run in a subprocess.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from train_helpers import REPO

SETTINGS = dict(data="/data/signdigits100", budget_seconds=300.0, model="efficientnetv2-b0", width=0.5,
                depth=0.5, batch_size=32)


@pytest.fixture(scope="module")
def tool():
    spec = importlib.util.spec_from_file_location("benchmark_budget", REPO / "tools" / "benchmark_budget.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _row(path, seed, test, val, variant="", status="ok", epochs=3):
    row = dict(path=path, variant=variant, seed=seed, budget_seconds=300.0, settings=SETTINGS, status=status,
               command="python ...", date="2025-01-01T00:00:00+00:00", cpu={"cpu_model": "Test CPU"},
               run_dir=f"/tmp/{path}_{seed}")
    if status == "ok":
        row.update(epochs=epochs, wall_seconds=290.0, val_top1=val, best_val_top1=val, test_top1=test,
                   curve=[[100.0 * (i + 1), val * (i + 1) / epochs] for i in range(epochs)])
    else:
        row.update(error="exit status 1", stderr_tail=["Traceback", "boom"])
    return row


ROWS = [_row("effv2", 0, 0.80, 0.82), _row("effv2", 1, 0.84, 0.86),
        _row("effv2", 0, 0.70, 0.71, variant="--stages 2"),
        _row("timm", 0, 0.60, 0.62), _row("timm", 1, 0.64, 0.66), _row("keras", 0, None, None, status="failed")]


def test_pending_skips_recorded_keys(tool):
    variants = {"effv2": "", "timm": "", "keras": ""}
    todo = tool.pending(ROWS, ["effv2", "timm", "keras"], variants, [0, 1, 2])
    assert todo == [("keras", "", 1), ("effv2", "", 2), ("timm", "", 2), ("keras", "", 2)]  # seed by seed
    # a failed row is kept unless retried; another variant is another key
    assert ("keras", "", 0) in tool.pending(ROWS, ["keras"], variants, [0], retry_failed=True)
    assert tool.pending(ROWS, ["effv2"], {"effv2": "--stages 2"}, [0, 1]) == [("effv2", "--stages 2", 1)]
    assert tool.normalize_variant("  --stages 2   --min_size 96 ") == "--stages 2 --min_size 96"


def test_rows_round_trip_and_replace_a_retried_failure(tool, tmp_path):
    out = str(tmp_path / "bench.json")
    assert tool.load_rows(out) == []
    tool.save_rows(out, ROWS)
    assert tool.load_rows(out) == ROWS and not (tmp_path / "bench.json.tmp").exists()
    retried = _row("keras", 0, 0.5, 0.5)
    rows = tool.add_row(tool.load_rows(out), retried)
    assert len(rows) == len(ROWS) and rows[-1] == retried
    assert tool.mismatched_settings(ROWS, SETTINGS) == []
    assert tool.mismatched_settings(ROWS, {**SETTINGS, "budget_seconds": 600.0}) == [
        "budget_seconds: 300.0 != 600.0"]


def test_commands_of_each_path(tool, tmp_path):
    effv2 = tool.command("effv2", "--stages 2 --min_size 96", 1, SETTINGS, str(tmp_path))
    assert effv2[1:5] == ["-m", "effv2_keras.cli.main", "train", "--data"]
    assert effv2[effv2.index("--time_budget") + 1] == "300" and effv2[-4:] == ["--stages", "2", "--min_size", "96"]
    assert effv2[effv2.index("--data") + 1] == "folder:/data/signdigits100"
    timm = tool.command("timm", "", 2, {**SETTINGS, "width": None}, str(tmp_path))
    assert timm[1].endswith("tools/benchmark_progressive.py") and timm[timm.index("--runs") + 1] == "timm"
    assert timm[timm.index("--budget_s") + 1] == "300" and "--width" not in timm and "--depth" in timm
    assert timm[timm.index("--out") + 1] == str(tmp_path / "peer")
    assert tool.parse_budget("5m") == 300.0


def test_report_table_and_plot(tool, tmp_path, capsys):
    out = str(tmp_path / "bench.json")
    tool.save_rows(out, ROWS)
    text = tool.report(tool.load_rows(out), out)
    assert text in capsys.readouterr().out
    assert (tmp_path / "bench.md").read_text().strip() == text
    assert (tmp_path / "bench.png").stat().st_size > 1000
    lines = {line.split("|")[1].strip() + "/" + line.split("|")[2].strip(): line
             for line in text.splitlines() if line.startswith("| ") and "---" not in line}
    assert lines["effv2/default"].replace(" ", "") == "|effv2|default|2|82.0|80.0-84.0|84.0|3.0|290|+0.0|+0.0|0|"
    assert "|1|70.0|70.0-70.0|71.0|" in lines["effv2/--stages 2"].replace(" ", "")
    assert "|60.0-64.0|64.0|3.0|290|-20.0|-20.0|0|" in lines["timm/default"].replace(" ", "")
    assert lines["keras/default"].replace(" ", "") == "|keras|default|0|-|-|-|-|-|-|-|1|"
    assert "Budget 300 s" in text and "Test CPU" in text


def test_report_without_rows(tool, tmp_path):
    out = str(tmp_path / "empty.json")
    assert tool.report([], out) == "No runs recorded yet."
    assert not (tmp_path / "empty.png").exists()


def test_recorded_commands_name_repository_paths_relative_to_it(tool):
    python = f"{tool.REPO}/.venv/bin/python"
    assert tool._in_repo([python, f"{tool.REPO}/tools/benchmark_progressive.py", "--out", "/tmp/x"]) == [
        ".venv/bin/python", "tools/benchmark_progressive.py", "--out", "/tmp/x"]
