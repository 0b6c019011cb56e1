"""Training recipes against each other, over seeds: per epoch and per second of wall-clock.

Benchmark, not a test. Every ``--candidate`` is a name and a set of ``TrainConfig``
overrides; each is trained by the package's Trainer (``effv2 train``'s path) once per
``--seeds`` seed on the same ``--data`` folder, and every epoch's (wall-clock seconds since
the run started, validation top-1) is recorded. The table gives, per candidate, the mean and
the range over seeds of the selected validation top-1, the test top-1 of the selected
weights, the validation top-1 at chosen epochs and the wall-clock.

With ``--reference NAME`` the table also gives, for every other candidate and seed, the
wall-clock at which it first reached the reference's best validation top-1 of the same seed
(as a fraction of the reference's wall-clock) and its best validation top-1 within the
reference's wall-clock: the progressive-against-fixed comparison of docs/PROGRESSIVE.md.

``--peers FILE.json`` adds the keras.applications and timm rows of
``tools/benchmark_progressive.py`` reports (one per seed, run at equal epochs with
``--peer_max_epochs E --budget_s 1e9``) to the same table.

Writes OUT.json (every epoch of every run, the resolved config of each), OUT.md (the
table) and OUT.png (validation top-1 against wall-clock, one line per run).

Resumable: the JSON is rewritten after every run, and a (candidate, seed) already in it
with the same overrides is not trained again.

Example (the progressive-against-fixed table of docs/PROGRESSIVE.md; every command is there):
    python tools/benchmark_recipes.py --data ../shared/data/clothing160 --size 128 --epochs 10 \\
        --seeds 0,1,2 --candidate "fixed 128 (short recipe, the default):" \\
        --candidate "progressive 64-128, 4 stages (short recipe): stages=4, min_size=64" \\
        --reference "fixed 128 (short recipe, the default)" --out docs/bench/progressive_clothing160
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from typing import Dict, List, Optional

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("data", "../shared/data/signdigits100", "Image folder (ROOT/{train,val,test}/<class>/...).")
flags.DEFINE_string("model", "efficientnetv2-b0", "Variant.")
flags.DEFINE_float("width", None, "Width multiplier override (None: the variant's).")
flags.DEFINE_float("depth", None, "Depth multiplier override (None: the variant's).")
flags.DEFINE_integer("epochs", 10, "Epochs of every candidate (a candidate may override).")
flags.DEFINE_integer("size", 96, "Training and evaluation size of a one-stage candidate "
                     "(min_size = max_size = size unless the candidate sets them).")
flags.DEFINE_integer("batch_size", 32, "Batch size.")
flags.DEFINE_list("seeds", ["0"], "Seeds; each candidate is trained once per seed.")
flags.DEFINE_multi_string("candidate", [], "NAME: key=value, key=value (TrainConfig fields).")
flags.DEFINE_string("reference", None, "Candidate whose best val top-1 and wall-clock the others race.")
flags.DEFINE_list("report_epochs", ["3", "5"], "Epochs (1-based) whose val top-1 the table shows.")
flags.DEFINE_list("peers", [], "tools/benchmark_progressive.py JSON reports (one per seed) to add.")
flags.DEFINE_list("include", [], "JSON reports of this tool whose runs join the table and plot "
                  "(not trained again; e.g. an earlier round of the ablation).")
flags.DEFINE_integer("steps_per_epoch", None, "Cap on steps per epoch (smoke runs).")
flags.DEFINE_string("work", "/tmp/benchmark_recipes", "Scratch directory for the run directories.")
flags.DEFINE_string("out", "runs/benchmark_recipes", "Output prefix: OUT.json and OUT.md.")


def parse_candidate(text: str):
    """``"name: a=1, b=x"`` -> ("name", {"a": 1, "b": "x"}), values typed by TrainConfig.

    >>> parse_candidate("adamw: optimizer=adamw, lr=0.006, ema_decay=0")
    ('adamw', {'optimizer': 'adamw', 'lr': 0.006, 'ema_decay': 0.0})
    """
    from effv2_keras.train.config import TrainConfig

    name, _, rest = text.partition(":")
    name = name.strip()
    if not name:
        raise app.UsageError(f"--candidate: needs 'NAME: key=value, ...', got {text!r}")
    fields = {f.name: f for f in TrainConfig.__dataclass_fields__.values()}
    overrides = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise app.UsageError(f"--candidate {name}: {item!r} is not key=value of a TrainConfig field")
        overrides[key] = _typed(fields[key], value.strip())
    return name, overrides


def _typed(field, value: str):
    if value.lower() == "none":
        return None
    hint = str(field.type)
    if "bool" in hint:
        return value.lower() in ("1", "true", "yes")
    if "int" in hint:
        return int(value)
    if "float" in hint:
        return float(value)
    return value


def run_one(name: str, overrides: dict, seed: int) -> dict:
    from effv2_keras.train import TrainConfig, Trainer

    values = dict(model=FLAGS.model, width=FLAGS.width, depth=FLAGS.depth, data=f"folder:{FLAGS.data}",
                  epochs=FLAGS.epochs, stages=1, min_size=FLAGS.size, max_size=FLAGS.size,
                  batch_size=FLAGS.batch_size, steps_per_epoch=FLAGS.steps_per_epoch, seed=seed,
                  out=os.path.join(FLAGS.work, f"{name}-s{seed}"), verbose=2)
    values.update(overrides)
    start = time.time()
    timeline = _timeline(start)
    trainer = Trainer(TrainConfig(**values), callbacks=[timeline])
    result = trainer.fit()
    c = result.config
    return {"candidate": name, "seed": seed, "overrides": overrides, "seconds": time.time() - start,
            "epochs": timeline.epochs, "selected_epoch": result.selected_epoch,
            "val_top1": result.val["top1"], "test_top1": result.test["top1"] if result.test else None,
            "resolved": c.to_dict(), "stages": trainer.schedule.to_dict()["stages"],
            "loadavg_after": os.getloadavg()}


def _timeline(start: float):
    """A Trainer callback recording (seconds since the run started, val top-1) per epoch."""
    from effv2_keras.train.trainer import Callback

    class Timeline(Callback):
        def __init__(self):
            super().__init__()
            self.epochs = []

        def on_epoch_end(self, epoch, logs=None):
            row = logs
            self.epochs.append({"epoch": epoch + 1, "seconds": time.time() - start,
                                "val_top1": row["val_top1"], "image_size": row["image_size"],
                                "train_images_per_s": row["images_per_sec"]})

    return Timeline()


def peer_runs(paths: List[str]) -> List[dict]:
    """keras/timm results of benchmark_progressive reports, as runs of this tool."""
    runs = []
    for path in paths:
        with open(path) as f:
            report = json.load(f)
        seed = report["flags"]["seed"]
        for entry in report["datasets"].values():
            for kind, r in entry["results"].items():
                runs.append({"candidate": f"{kind} (peer)", "seed": seed, "overrides": r.get("settings", {}),
                             "seconds": r["seconds"], "epochs": r["epochs"], "selected_epoch": None,
                             "val_top1": r["val_top1"], "test_top1": r["test_top1"]})
    return runs


def included_runs(paths: List[str]) -> List[dict]:
    runs = []
    for path in paths:
        with open(path) as f:
            runs += [r for r in json.load(f)["runs"] if not r["candidate"].endswith("(peer)")]
    return runs


def time_to_reach(run: dict, target: float) -> Optional[float]:
    return next((e["seconds"] for e in run["epochs"] if e["val_top1"] >= target - 1e-9), None)


def best_within(run: dict, seconds: float) -> Optional[float]:
    values = [e["val_top1"] for e in run["epochs"] if e["seconds"] <= seconds + 1e-6]
    return max(values) if values else None


def summarize(runs: List[dict], reference: Optional[str], report_epochs: List[int]) -> List[dict]:
    """One row per candidate: means and ranges over its seeds (and the race to the reference)."""
    by_name: Dict[str, List[dict]] = {}
    for r in runs:
        by_name.setdefault(r["candidate"], []).append(r)
    refs = {r["seed"]: r for r in by_name.get(reference, [])}
    rows = []
    for name, group in by_name.items():
        group = sorted(group, key=lambda r: r["seed"])
        row = {"candidate": name, "seeds": [r["seed"] for r in group],
               "val_top1": _stats([r["val_top1"] for r in group]),
               "test_top1": _stats([r["test_top1"] for r in group if r["test_top1"] is not None]),
               "seconds": _stats([r["seconds"] for r in group])}
        for k in report_epochs:
            row[f"val_top1_epoch{k}"] = _stats([r["epochs"][k - 1]["val_top1"] for r in group
                                                if len(r["epochs"]) >= k])
        if reference and name != reference and refs:
            ratios, at_budget, delta, ref_at_own = [], [], [], []
            for r in group:
                ref = refs.get(r["seed"])
                if ref is None:
                    continue
                reached = time_to_reach(r, ref["val_top1"])
                ratios.append(None if reached is None else reached / ref["seconds"])
                within = best_within(r, ref["seconds"])
                at_budget.append(within)
                delta.append(None if within is None else within - ref["val_top1"])
                ref_within = best_within(ref, r["seconds"])
                ref_at_own.append(None if ref_within is None else r["val_top1"] - ref_within)
            row["time_to_reference_best_ratio"] = ratios
            row["val_top1_within_reference_seconds"] = _stats([v for v in at_budget if v is not None])
            row["minus_reference_within_its_seconds"] = _stats([v for v in delta if v is not None])
            # equal wall-clock the other way: this run's best against the reference's best
            # within this run's own wall-clock
            row["minus_reference_at_own_seconds"] = _stats([v for v in ref_at_own if v is not None])
        rows.append(row)
    return rows


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values), "values": values}


def markdown(rows: List[dict], reference: Optional[str], report_epochs: List[int]) -> str:
    def pct(s):
        return "-" if s is None else f"{100 * s['mean']:.1f} ({100 * s['min']:.1f}-{100 * s['max']:.1f})"

    def sec(s):
        return "-" if s is None else f"{s['mean']:.0f}"

    head = ["candidate", "seeds"] + [f"val % e{k}" for k in report_epochs] + \
        ["val % (selected)", "test %", "wall-clock s"]
    if reference:
        head += [f"time to {reference}'s best / its time", f"val % within {reference}'s time",
                 f"val points above {reference} at this run's time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["candidate"], ",".join(map(str, row["seeds"]))]
        cells += [pct(row.get(f"val_top1_epoch{k}")) for k in report_epochs]
        cells += [pct(row["val_top1"]), pct(row["test_top1"]), sec(row["seconds"])]
        if reference:
            ratios = row.get("time_to_reference_best_ratio")
            cells.append("-" if ratios is None else
                         ", ".join("never" if x is None else f"{x:.2f}" for x in ratios))
            cells.append(pct(row.get("val_top1_within_reference_seconds")))
            gap = row.get("minus_reference_at_own_seconds")
            cells.append("-" if gap is None else
                         f"{100 * gap['mean']:+.1f} ({', '.join(f'{100 * v:+.1f}' for v in gap['values'])})")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: List[dict], path: str, title: str) -> None:
    """Validation top-1 against wall-clock: one colour per candidate, one line per seed."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from effv2_keras.train.plots import label_wallclock_axes

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    colours = {}
    for r in runs:
        colour = colours.setdefault(r["candidate"], f"C{len(colours) % 10}")
        label = r["candidate"] if sum(1 for x in runs if x["candidate"] == r["candidate"]
                                      and x["seed"] < r["seed"]) == 0 else None
        ax.plot([e["seconds"] / 60 for e in r["epochs"]], [100 * e["val_top1"] for e in r["epochs"]],
                "o-", color=colour, markersize=2.5, linewidth=1, alpha=0.8, label=label)
    label_wallclock_axes(ax, title)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main(argv):
    del argv
    candidates = [parse_candidate(text) for text in FLAGS.candidate]
    report_epochs = [int(k) for k in FLAGS.report_epochs]
    out_json = FLAGS.out + ".json"
    runs: List[dict] = []
    if os.path.exists(out_json):
        with open(out_json) as f:
            runs = [r for r in json.load(f)["runs"] if not r["candidate"].endswith("(peer)")]
    done = {(r["candidate"], r["seed"], json.dumps(r["overrides"], sort_keys=True)) for r in runs}
    command = " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:])
    for seed in (int(s) for s in FLAGS.seeds):
        for name, overrides in candidates:
            if (name, seed, json.dumps(overrides, sort_keys=True)) in done:
                print(f"=== {name} seed {seed}: done before, kept ===", flush=True)
                continue
            runs = [r for r in runs if (r["candidate"], r["seed"]) != (name, seed)]
            print(f"\n=== {name} seed {seed}: {overrides} ===", flush=True)
            runs.append(run_one(name, overrides, seed))
            _write(out_json, command, runs)
            _clear_keras()
    everything = runs + included_runs(FLAGS.include) + peer_runs(FLAGS.peers)
    rows = summarize(everything, FLAGS.reference, report_epochs)
    table = markdown(rows, FLAGS.reference, report_epochs)
    _write(out_json, command, runs, rows)
    with open(FLAGS.out + ".md", "w") as f:
        f.write(f"`{command}`\n\n{table}\n")
    plot(everything, FLAGS.out + ".png", f"{os.path.basename(os.path.normpath(FLAGS.data))}, "
         f"{FLAGS.model}, {FLAGS.epochs} epochs, batch {FLAGS.batch_size}")
    print("\n" + table)
    print(f"\nWrote {out_json}, {FLAGS.out}.md and {FLAGS.out}.png", flush=True)


def _clear_keras():
    import keras

    keras.backend.clear_session()


def _write(path: str, command: str, runs: List[dict], rows: Optional[List[dict]] = None) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    report = {"command": command, "data": FLAGS.data, "model": FLAGS.model, "width": FLAGS.width,
              "depth": FLAGS.depth, "epochs": FLAGS.epochs, "size": FLAGS.size, "batch_size": FLAGS.batch_size,
              "runs": runs, "summary": rows}
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=float)
    os.replace(tmp, path)


if __name__ == "__main__":
    app.run(main)
