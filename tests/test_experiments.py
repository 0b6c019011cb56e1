"""`effv2 reproduce`: the experiment registry, the resumable runner, classical_baselines in --quick mode
on real photos (../shared/data/signdigits100), its table, JSON and plot."""

from __future__ import annotations

import doctest
import json

import pytest

from effv2_keras import experiments
from effv2_keras.cli import reproduce as cli_reproduce
from effv2_keras.experiments import classical_baselines, runner
from effv2_keras.experiments.runner import Options, ReproduceError, reproduce


@pytest.fixture
def cli(absl_cli):
    return absl_cli(cli_reproduce, "effv2 reproduce")


@pytest.fixture
def signs(shared_data):
    folder = shared_data / "signdigits100"
    if not (folder / "train").is_dir():
        pytest.skip(f"real photos not found at {folder} (set EFFV2_SHARED_DATA to the shared/data folder)")
    return f"folder:{folder}"


class _Counted:
    """Wraps an experiment's ``run`` and counts the candidates it trains."""

    def __init__(self, run):
        self.inner, self.names = run, []

    def __call__(self, candidate, context, workdir):
        self.names.append(candidate.name)
        return self.inner(candidate, context, workdir)


def test_every_experiment_documents_its_command_runtime_and_number():
    for name, summary in experiments.list_experiments():
        module = experiments.load(name)
        doc = module.__doc__
        assert summary and "effv2 reproduce " + name in doc and "--quick" in doc and "minute" in doc, name
        assert module.DEFAULT_DATA and module.COLUMNS[0][0] == "candidate"
    for module in (experiments, runner):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


def test_the_list_and_the_errors_of_the_command(cli, tmp_path):
    code, out, _ = cli("--list")
    assert code == 0 and out.startswith("classical_baselines ")
    code, _, err = cli("no_such_experiment", f"--out={tmp_path}")
    assert code == 2 and "unknown experiment 'no_such_experiment'" in err and err.count("\n") == 1
    # The default data (the seed's EMNIST-Letters through TFDS) is not prepared here: it fails
    # fast, naming the data set and the way out, before any candidate runs.
    code, _, err = cli("classical_baselines", "--quick", f"--out={tmp_path}", "--data=tfds:emnist:letters")
    assert code == 2 and "--data: tfds:emnist:letters is not prepared" in err and err.count("\n") == 1
    assert not (tmp_path / "classical_baselines" / "runs").exists()


def test_classical_baselines_quick_writes_its_table_and_never_retrains_a_finished_candidate(
        signs, tmp_path, monkeypatch, cli):
    counted = _Counted(classical_baselines.run)
    monkeypatch.setattr(classical_baselines, "run", counted)
    options = Options(quick=True, data=signs, out=str(tmp_path))
    report = reproduce("classical_baselines", options, log=lambda line: None)
    assert counted.names == ["random_forest", "linear_svm", "efficientnetv2_b0"] and not report.failed
    saved = json.loads((tmp_path / "classical_baselines" / "results.json").read_text())
    assert saved["settings"] == {"quick": True, "data": signs, "seed": 0}
    rows = {row["candidate"]: row for row in saved["rows"]}
    for name, row in rows.items():
        # Real scores on 10 classes of hand signs: above chance (10%) for every candidate.
        assert row["status"] == "ok" and 0.1 < row["test_top1"] <= 1 and 0 < row["val_top1"] <= 1, name
        assert row["train_seconds"] > 0 and row["parameters"] > 0 and row["machine"]["cpu_model"], name
    assert rows["random_forest"]["seed_report"] == 0.886 and rows["linear_svm"]["C"] in classical_baselines.SVM_C
    assert rows["efficientnetv2_b0"]["epochs"] == classical_baselines.QUICK.epochs
    table = (tmp_path / "classical_baselines" / "table.md").read_text()
    assert "| random_forest | " in table and "| efficientnetv2_b0 | " in table and table.count("| ok |") == 3
    assert (tmp_path / "classical_baselines" / "accuracy_vs_time.png").stat().st_size > 1000
    # Again: nothing is trained, the table is the same.
    again = reproduce("classical_baselines", options, log=lambda line: None)
    assert counted.names == ["random_forest", "linear_svm", "efficientnetv2_b0"] and again.ran == []
    assert (tmp_path / "classical_baselines" / "table.md").read_text() == table
    # Other options never mix into these results.
    with pytest.raises(ReproduceError, match="holds runs of other options"):
        reproduce("classical_baselines", Options(quick=False, data=signs, out=str(tmp_path)))
    code, out, _ = cli("classical_baselines", "--quick", f"--data={signs}", f"--out={tmp_path}")
    assert code == 0 and "| linear_svm | " in out and counted.names == ["random_forest", "linear_svm",
                                                                          "efficientnetv2_b0"]


def test_a_failed_candidate_is_recorded_the_others_go_on_and_a_rerun_retries_only_it(signs, tmp_path, monkeypatch):
    def broken(context, workdir):
        raise RuntimeError("the forest caught fire")

    trained = []

    def fake_network(context, workdir):  # the runner is under test here, not the network
        trained.append(workdir.name)
        return {"val_top1": 0.5, "test_top1": 0.5, "train_seconds": 1.0, "parameters": 1}

    monkeypatch.setattr(classical_baselines, "_random_forest", broken)
    monkeypatch.setattr(classical_baselines, "_network", fake_network)
    options = Options(quick=True, data=signs, out=str(tmp_path))
    report = reproduce("classical_baselines", options, log=lambda line: None)
    assert report.failed == ["random_forest"] and report.ran == ["random_forest", "linear_svm", "efficientnetv2_b0"]
    assert report.rows["random_forest"]["reason"] == "RuntimeError: the forest caught fire"
    assert "failed: RuntimeError: the forest caught fire" in (report.folder / "table.md").read_text()
    monkeypatch.undo()
    monkeypatch.setattr(classical_baselines, "_network", fake_network)
    retried = reproduce("classical_baselines", options, log=lambda line: None)
    assert retried.ran == ["random_forest"] and not retried.failed and trained == ["efficientnetv2_b0"]
