"""``reproduce(name, options)``: runs an experiment's candidates, resumably, and writes
``OUT/<experiment>/{results.json, table.md, accuracy_vs_time.png}``.

* A candidate whose row says ``ok`` is never run again; one that was interrupted runs again in
  its own folder (``OUT/<experiment>/runs/<candidate>``), where the package's trainer continues
  from its last checkpoint; one that fails is recorded with its reason and the others go on.
* ``results.json`` is rewritten atomically after every candidate; it remembers the options that
  matter to the numbers (quick, data, seed) and refuses to mix runs of other options.
* an experiment with its own ``plot(rows, path)`` also gets ``OUT/<experiment>/<experiment>.png``.

    >>> options = Options(quick=True, data="folder:../shared/data/signdigits100", out="results")
    >>> options.settings()
    {'quick': True, 'data': 'folder:../shared/data/signdigits100', 'seed': 0}
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

from effv2_keras import cpu_kernels
from effv2_keras import experiments

RESULTS, TABLE, PLOT = "results.json", "table.md", "accuracy_vs_time.png"


class ReproduceError(ValueError):
    """A user error: an unknown experiment, data that is not there, results of other options."""


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One thing an experiment trains or fits: a unique ``name`` and its ``settings`` (JSON data)."""

    name: str
    settings: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Options:
    """What a user chooses: ``quick`` (minutes on ../shared/data-sized sets), ``data`` (a data spec;
    None: the experiment's ``DEFAULT_DATA``), ``out`` (results root), ``seed``."""

    quick: bool = False
    data: Optional[str] = None
    out: str = "results"
    seed: int = 0

    def settings(self) -> Dict[str, Any]:
        """The options the numbers depend on (a results file holds runs of one setting)."""
        return {"quick": self.quick, "data": self.data, "seed": self.seed}


@dataclasses.dataclass(frozen=True)
class NetworkSettings:
    """How an experiment trains its networks at one setting (full or ``--quick``): width and depth
    multipliers, image size, epochs."""

    width: float
    depth: float
    size: int
    epochs: int


@dataclasses.dataclass
class Report:
    """What ``reproduce`` did: the rows by candidate, which ran now, and the files it wrote."""

    experiment: str
    rows: Dict[str, dict]
    ran: List[str]
    folder: Path

    @property
    def failed(self) -> List[str]:
        return [name for name, row in self.rows.items() if row.get("status") != "ok"]


def load_splits(options: Options):
    """``options.data`` loaded once for an experiment (a 10% validation slice carved from train when the
    data has none, seeded by ``options.seed``); a ReproduceError naming ``--data`` when it cannot be
    loaded or has no test split (every experiment selects on validation and reports test once)."""
    from effv2_keras import data

    try:
        splits = data.load(options.data, val_fraction=0.1, seed=options.seed)
    except (ValueError, FileNotFoundError, NotADirectoryError) as error:
        raise ReproduceError(f"--data: {error}") from None
    if splits.val is None or splits.test is None:
        raise ReproduceError(f"--data: {options.data} needs a test split (and a validation slice) for this experiment.")
    return splits


def steady_mean(rows, key: str) -> float:
    """The mean of ``key`` over a trainer's epoch rows after the first, which holds the trace (all of
    them when there is one)."""
    steady = rows[1:] or rows
    return sum(row[key] for row in steady) / len(steady)


def reproduce(name: str, options: Options, log: Callable[[str], None] = print) -> Report:
    """Runs experiment ``name``'s candidates not yet done; writes its results, table and plot."""
    try:
        experiment = experiments.load(name)
    except ValueError as error:
        raise ReproduceError(str(error)) from None
    options = dataclasses.replace(options, data=options.data or experiment.DEFAULT_DATA)
    folder = Path(options.out) / name
    rows = _read_rows(folder / RESULTS, options)
    candidates = experiment.candidates(options)
    pending = [c for c in candidates if rows.get(c.name, {}).get("status") != "ok"]
    for candidate in candidates:
        if candidate not in pending:
            log(f"{name}/{candidate.name}: done before, kept")
    context = experiment.prepare(options) if pending else None  # loads the data: fails fast, before any run
    if hasattr(context, "done"):
        context.done = rows  # later candidates may build on earlier ones (kept current below)
    ran = []
    for candidate in pending:
        log(f"{name}/{candidate.name}: running")
        rows[candidate.name] = _run_one(experiment, candidate, context, folder)
        ran.append(candidate.name)
        _write_results(folder, name, options, rows)
        row = rows[candidate.name]
        log(f"{name}/{candidate.name}: {row['status']}" + (f" ({row['reason']})" if row["status"] != "ok" else ""))
    _write_results(folder, name, options, rows)
    ordered = {c.name: rows[c.name] for c in candidates if c.name in rows}
    (folder / TABLE).write_text(table(experiment, ordered, options) + "\n")
    plot(ordered, folder / PLOT, title=f"{name} ({'quick' if options.quick else 'full'}, {options.data})")
    if hasattr(experiment, "plot"):
        experiment.plot(ordered, folder / f"{name}.png")
    return Report(name, ordered, ran, folder)


def _run_one(experiment, candidate: Candidate, context, folder: Path) -> dict:
    workdir = folder / "runs" / candidate.name
    workdir.mkdir(parents=True, exist_ok=True)
    began = time.time()
    try:
        row = dict(experiment.run(candidate, context, workdir))
        row["status"] = "ok"
    except Exception as error:  # noqa: BLE001 - recorded with its reason; the other candidates go on
        row = {"status": "failed", "reason": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"}
    row.update(candidate=candidate.name, settings=dict(candidate.settings), process_seconds=time.time() - began,
               date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
               machine=cpu_kernels.machine_facts())
    return row


def _read_rows(path: Path, options: Options) -> Dict[str, dict]:
    if not path.exists():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("settings") != options.settings():
        raise ReproduceError(f"{path} holds runs of other options ({saved.get('settings')}, now "
                             f"{options.settings()}): use another --out or the same options.")
    return {row["candidate"]: row for row in saved.get("rows", [])}


def _write_results(folder: Path, name: str, options: Options, rows: Dict[str, dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    payload = {"experiment": name, "settings": options.settings(), "rows": list(rows.values())}
    tmp = folder / f"{RESULTS}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    os.replace(tmp, folder / RESULTS)


def table(experiment, rows: Mapping[str, dict], options: Options) -> str:
    """The experiment's Markdown table: its ``COLUMNS``, then the status (and a failure's reason)."""
    headers = [header for _, header in experiment.COLUMNS] + ["status"]
    lines = [f"{experiment.__name__.rsplit('.', 1)[-1]}: data {options.data}, "
             f"{'quick' if options.quick else 'full'} settings, seed {options.seed}", "",
             "| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for row in rows.values():
        cells = [_cell(row.get(key)) for key, _ in experiment.COLUMNS]
        status = row["status"] if row["status"] == "ok" else f"failed: {row.get('reason', '')}"
        lines.append("| " + " | ".join(cells + [status]) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def plot(rows: Mapping[str, dict], path: Path, title: str) -> None:
    """Test top-1 against training seconds, one labelled point per finished candidate."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    done = {name: row for name, row in rows.items()
            if row.get("status") == "ok" and row.get("test_top1") is not None and row.get("train_seconds") is not None}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for name, row in done.items():
        ax.scatter(row["train_seconds"], 100 * row["test_top1"])
        ax.annotate(name, (row["train_seconds"], 100 * row["test_top1"]), textcoords="offset points", xytext=(5, 4))
    ax.set_xlabel("training seconds (this machine)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
