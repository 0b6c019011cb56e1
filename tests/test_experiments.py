"""`effv2 reproduce`: the experiment registry, the resumable runner, classical_baselines in --quick mode
on real photos (../shared/data/signdigits100), its table, JSON and plot."""

from __future__ import annotations

import dataclasses
import doctest
import json

import pytest

from effv2_keras import experiments
from effv2_keras.cli import reproduce as cli_reproduce
from effv2_keras.experiments import (classical_baselines, fused_ablation, progressive_ablation, runner,
                                     scaling_sweeps, v2s_vs_b4)
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


def test_progressive_ablation_varies_only_the_sizes_and_whether_the_regularization_ramps(tmp_path):
    from effv2_keras import schedule

    by_variant = {}
    for candidate in progressive_ablation.candidates(Options(quick=False)):
        config = progressive_ablation.config_of(candidate, "digits", tmp_path).resolve()
        stages = schedule.from_config(config).stages
        by_variant.setdefault(candidate.settings["variant"], []).append(
            ([s.image_size for s in stages], [s.randaug_magnitude for s in stages], [s.dropout for s in stages],
             config.epochs, config.regularization_scale, config.seed))
    assert sorted(by_variant) == sorted(progressive_ablation.VARIANTS)
    assert all(len(runs) == 3 for runs in by_variant.values())  # 3 seeds each
    fixed, fixed_randaug, fixed_dropout, epochs, scale, _ = by_variant["fixed"][0]
    sizes, randaug, dropout, _, _, _ = by_variant["progressive"][0]
    a_sizes, a_randaug, a_dropout, _, _, _ = by_variant["progressive_adaptive"][0]
    assert fixed == [128] and sizes == a_sizes and sizes[0] == 64 and sizes[-1] == 128 and len(sizes) == 4
    assert len(set(randaug)) == 1 and len(set(dropout)) == 1  # held at the last stage's values
    assert a_randaug[-1] == randaug[0] and a_dropout[-1] == dropout[0]  # ... which the ramp ends at
    assert a_randaug == sorted(a_randaug) and a_randaug[0] < a_randaug[-1] and a_dropout[0] < a_dropout[-1]
    assert (fixed_randaug, fixed_dropout) == ([randaug[0]], [dropout[0]])
    assert {run[3:5] for runs in by_variant.values() for run in runs} == {(epochs, scale)}
    assert sorted(run[5] for run in by_variant["fixed"]) == [0, 1, 2]


def test_progressive_ablation_quick_trains_every_variant_through_the_trainer(tmp_path, monkeypatch):
    monkeypatch.setattr(progressive_ablation, "QUICK",
                        dataclasses.replace(progressive_ablation.QUICK, epochs=2))  # one epoch per stage
    report = reproduce("progressive_ablation", Options(quick=True, out=str(tmp_path)), log=lambda line: None)
    assert not report.failed and report.ran == [f"{v}_seed0" for v in progressive_ablation.VARIANTS]
    for name, row in report.rows.items():
        final = json.loads((report.folder / "runs" / name / "metrics.json").read_text())["final"]
        assert row["test_top1"] == final["test"]["top1"] and row["val_top1"] == final["val"]["top1"], name
        assert row["epochs"] == 2 and row["train_seconds"] > 0, name
    assert [report.rows[f"{v}_seed0"]["sizes"] for v in progressive_ablation.VARIANTS] == ["48", "32-48", "32-48"]
    assert report.rows["progressive_adaptive_seed0"]["dropout"] == [0.1, 0.2]
    assert report.rows["progressive_seed0"]["dropout"] == [0.2, 0.2]
    assert (report.folder / "table.md").read_text().count("| ok |") == 3


def test_fused_ablation_block_mixes_keep_v2_b0s_stages_and_train_as_registered_variants():
    from effv2_keras.models import build_model, get_spec
    from effv2_keras.models.arch import decode_stage
    from effv2_keras.train import TrainConfig

    mixes = fused_ablation.variants()
    shape = lambda stages: [(s.repeats, s.kernel, s.stride, s.expand, s.channels) for s in map(decode_stage, stages)]
    assert mixes["v2_mix"] == get_spec("efficientnetv2-b0").stages
    assert shape(mixes["all_mbconv"]) == shape(mixes["all_fused"]) == shape(mixes["v2_mix"])
    assert {(s.block, s.se_ratio) for s in map(decode_stage, mixes["all_mbconv"])} == {("mb", 0.25)}
    assert {(s.block, s.se_ratio) for s in map(decode_stage, mixes["all_fused"])} == {("fused", None)}
    params = {}
    for name, stages in mixes.items():
        model = fused_ablation.register(name, stages, "efficientnetv2-b0")
        TrainConfig(model=model).validate()  # the trainer accepts the registered name
        params[name] = build_model(model, width=0.25, depth=0.25, input_shape=(32, 32, 3), classes=10).count_params()
    # Fused-MBConv's regular 3x3 expansion costs more weights than a depthwise 3x3 + 1x1 expansion.
    assert params["all_mbconv"] < params["v2_mix"] < params["all_fused"], params
    # V2-B0 spends more FLOPs per pixel than V1-B0: their FLOPs match at a smaller V2 size.
    s = fused_ablation.QUICK
    size = fused_ablation.matched_size(s)
    ratio = (fused_ablation.flops("efficientnetv2-b0", s.width, s.depth, size)
             / fused_ablation.flops("efficientnet-b0", s.width, s.depth, s.size))
    assert size < s.size and 0.6 < ratio < 1.6, (size, ratio)


def test_fused_ablation_quick_trains_and_times_every_candidate(tmp_path, monkeypatch):
    monkeypatch.setattr(fused_ablation, "QUICK", dataclasses.replace(fused_ablation.QUICK, epochs=1))
    report = reproduce("fused_ablation", Options(quick=True, out=str(tmp_path)), log=lambda line: None)
    names = ["all_mbconv", "v2_mix", "all_fused", "v1_b0", "v2_mix_matched_flops"]
    assert not report.failed and report.ran == names
    rows = report.rows
    assert [rows[n]["blocks"] for n in names] == ["MMMMMM", "FFFMMM", "FFFFFF", "MMMMMMM", "FFFMMM"]
    assert rows["all_mbconv"]["parameters"] < rows["v2_mix"]["parameters"] < rows["all_fused"]["parameters"]
    assert rows["v2_mix_matched_flops"]["image_size"] < rows["v1_b0"]["image_size"] == fused_ablation.QUICK.size
    for name, row in rows.items():
        final = json.loads((report.folder / "runs" / name / "metrics.json").read_text())["final"]
        assert row["test_top1"] == final["test"]["top1"] and row["images_per_sec"] > 0, name
        assert row["step_ms"] == pytest.approx(1000 * 32 / row["images_per_sec"]) and row["mflops"] > 0, name
    assert (report.folder / "table.md").read_text().count("| ok |") == 5


def test_v2s_vs_b4_quick_trains_both_the_same_way(tmp_path, monkeypatch):
    monkeypatch.setattr(v2s_vs_b4, "QUICK", dataclasses.replace(v2s_vs_b4.QUICK, epochs=1))
    report = reproduce("v2s_vs_b4", Options(quick=True, data="digits", out=str(tmp_path)), log=lambda line: None)
    assert not report.failed and report.ran == ["efficientnetv2_s", "efficientnet_b4"]
    for name, row in report.rows.items():
        config = json.loads((report.folder / "runs" / name / "config.json").read_text())
        assert config["model"] == v2s_vs_b4.MODELS[name] and (config["width"], config["depth"]) == (0.25, 0.25)
        assert (config["max_size"], config["batch_size"], config["epochs"]) == (32, 64, 1), name
        final = json.loads((report.folder / "runs" / name / "metrics.json").read_text())["final"]
        assert row["test_top1"] == final["test"]["top1"] and row["gflops"] > 0 and row["epoch_seconds"] > 0, name
    assert [report.rows[n]["seed_report_minutes_a100"] for n in report.ran] == [66, 80]


def test_scaling_sweeps_grid_doubles_the_flops_and_phi_scales_the_triple():
    from effv2_keras.models import count_flops, get_spec

    for name, (alpha, beta, gamma) in scaling_sweeps.GRID.items():
        assert abs(alpha * beta ** 2 * gamma ** 2 - 2) <= 0.1, name
    s = scaling_sweeps.FULL
    assert scaling_sweeps.scaled(s, (1.2, 1.1, 1.15), 2) == {
        "triple": [1.2, 1.1, 1.15], "phi": 2, "depth": round(0.5 * 1.44, 4), "width": round(0.5 * 1.21, 4),
        "image_size": round(64 * 1.15 ** 2)}

    def mflops(settings):
        spec = get_spec(scaling_sweeps.MODEL).replace(width=settings["width"], depth=settings["depth"])
        return count_flops(spec, settings["image_size"]) / 1e6

    base = mflops(scaling_sweeps.scaled(s, (1.0, 1.0, 1.0), 0))
    for name in ("depth_x2", "width_x1.41", "resolution_x1.41", "grid_1.2_1.1_1.15"):
        ratio = mflops(scaling_sweeps.scaled(s, scaling_sweeps.GRID[name], 1)) / base
        # about 2x: channel rounding to multiples of 8 and whole blocks make it coarse at this small base
        assert 1.4 < ratio < 2.8, (name, ratio)


def test_scaling_sweeps_quick_scales_the_best_grid_triple_by_phi_2(tmp_path, monkeypatch):
    grid = {name: scaling_sweeps.GRID[name] for name in ("depth_x2", "grid_1.2_1.1_1.15")}
    monkeypatch.setattr(scaling_sweeps, "GRID", grid)
    monkeypatch.setattr(scaling_sweeps, "SINGLE_AXIS_4X", {})
    monkeypatch.setattr(scaling_sweeps, "QUICK", dataclasses.replace(scaling_sweeps.QUICK, epochs=1))
    report = reproduce("scaling_sweeps", Options(quick=True, out=str(tmp_path)), log=lambda line: None)
    assert not report.failed and report.ran == ["base", *grid, "compound_phi2"]
    rows = report.rows
    best = max(grid, key=lambda n: (rows[n]["val_top1"], -list(grid).index(n)))
    phi2 = rows["compound_phi2"]
    assert phi2["chosen_from"] == best
    assert {k: phi2[k] for k in ("depth", "width", "image_size")} == {
        k: v for k, v in scaling_sweeps.scaled(scaling_sweeps.QUICK, grid[best], 2).items()
        if k in ("depth", "width", "image_size")}
    assert rows["base"]["mflops"] < rows["grid_1.2_1.1_1.15"]["mflops"] < phi2["mflops"]
    assert (report.folder / "scaling_sweeps.png").stat().st_size > 1000
    assert "| compound_phi2 | " in (report.folder / "table.md").read_text()
