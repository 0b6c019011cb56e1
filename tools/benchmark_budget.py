"""effv2 train --time_budget against the keras and timm paths, at one wall-clock budget, over seeds.

Benchmark, not a test. For every (path, seed) of ``--paths`` x ``--seeds`` it trains one run
on ``--data`` with ``--budget`` of wall-clock, each in its own subprocess (never two
frameworks in one process):

* ``effv2``: ``python -m effv2_keras.cli.main train --time_budget ...`` (the package's plan:
  stages, epochs and epoch length fitted to the budget); ``--extra_effv2_flags`` adds flags
  (e.g. ``"--stages 2 --min_size 96"``) and names the run's ``variant``;
* ``keras`` / ``timm``: ``tools/benchmark_progressive.py --runs PATH --budget_s SECONDS``
  (keras.applications + model.fit, or PyTorch timm, epochs until the budget is spent);
  ``--extra_peer_flags`` (e.g. ``"--max_size 96"``) likewise names their variant.

Every path selects on the same seeded validation slice and reports test top-1 once. After
each run ONE row is appended to ``--out`` (JSON, rewritten atomically): path, variant,
seed, budget, epochs, wall-clock, selected and best validation top-1, test top-1, the curve
[(wall seconds, val top-1), ...], the command, the date and the CPU
(``effv2_keras.cpu_kernels.machine_facts()``, taken once in a TensorFlow subprocess that
imports the package first, as ``effv2 train`` does). A failed run is recorded with status
``failed`` and the last 20 lines of its stderr; the others go on.

Resumable: a (path, variant, seed) already in ``--out`` is skipped (a failed one too,
unless ``--retry_failed``); ``--out`` must hold rows of the same data, budget, model,
width, depth and batch size. At the end (and with ``--report_only``) it prints a markdown
table per (path, variant): mean test top-1 and its range over seeds, mean validation
top-1, mean epochs, seeds, and the difference of the means to effv2's default variant
(no extra flags); it writes the table to OUT.md and validation top-1 against wall-clock
seconds (one line per run, colored by path) to OUT.png.

Children get the environment this tool started with (not the oneDNN choice that importing
``effv2_keras`` makes here), so each path decides its kernels as it would run alone.

Example:
    python tools/benchmark_budget.py --data ../shared/data/signdigits100 --budget 5m \\
        --paths effv2,timm,keras --seeds 0,1,2 --width 0.5 --depth 0.5 --out runs/benchmark_budget.json
"""

from __future__ import annotations

import os

_ENV = dict(os.environ)  # before effv2_keras's import may set TF_ENABLE_ONEDNN_OPTS

import datetime  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import shlex  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from typing import Dict, Iterable, List, Optional, Sequence, Tuple  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from absl import app, flags  # noqa: E402

PATHS = ("effv2", "timm", "keras")
REFERENCE = ("effv2", "")  # the differences in the table are to effv2's default variant
COLORS = {"effv2": "tab:blue", "timm": "tab:orange", "keras": "tab:green"}
SETTINGS = ("data", "budget_seconds", "model", "width", "depth", "batch_size")
STDERR_LINES = 20

FLAGS = flags.FLAGS
Key = Tuple[str, str, int]


def define_flags() -> None:
    """The tool's flags (defined at run time, so tests can import the module)."""
    flags.DEFINE_string("data", None, "Image folder (ROOT/{train,val,test}/<class>/<file> or ROOT/<class>/...).")
    flags.DEFINE_string("budget", "5m", "Wall-clock budget of every run: 10m, 1h30m, 90s or seconds.")
    flags.DEFINE_list("paths", list(PATHS), f"Paths to run, of {','.join(PATHS)}.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds; every path runs once per seed.")
    flags.DEFINE_integer("batch_size", 32, "Batch size of every path.")
    flags.DEFINE_string("model", "efficientnetv2-b0", "Variant (b0-b3 for the keras/timm paths).")
    flags.DEFINE_float("width", None, "Width multiplier, every path (None: the variant's).")
    flags.DEFINE_float("depth", None, "Depth multiplier, every path (None: the variant's).")
    flags.DEFINE_string("out", "runs/benchmark_budget.json", "JSON of the rows; OUT.md and OUT.png beside it.")
    flags.DEFINE_string("scratch", "/tmp/benchmark_budget", "Directory for the runs' directories and logs.")
    flags.DEFINE_string("extra_effv2_flags", "", "Extra flags of effv2 train; the effv2 rows' variant.")
    flags.DEFINE_string("extra_peer_flags", "", "Extra flags of benchmark_progressive.py; the peers' variant.")
    flags.DEFINE_boolean("retry_failed", False, "Run again the (path, variant, seed) recorded as failed.")
    flags.DEFINE_float("run_timeout_s", None, "Kill a run after this many seconds (None: 2 x budget + 900).")
    flags.DEFINE_boolean("report_only", False, "Run nothing: print the table, write OUT.md and OUT.png.")


# -- rows: keys, resume, JSON ---------------------------------------------------------------------


def normalize_variant(extra: str) -> str:
    """The variant name of a flag string: its words joined by single spaces."""
    return " ".join(shlex.split(extra or ""))


def key_of(row: dict) -> Key:
    return (row["path"], row.get("variant", ""), int(row["seed"]))


def pending(rows: Sequence[dict], paths: Sequence[str], variants: Dict[str, str], seeds: Sequence[int],
            retry_failed: bool = False) -> List[Key]:
    """The (path, variant, seed) to run, seed by seed, that ``rows`` does not hold already.

    ``variants``: each path's variant. A failed row counts as done unless ``retry_failed``.
    """
    done = {key_of(r) for r in rows if r.get("status") == "ok" or not retry_failed}
    keys = [(p, variants.get(p, ""), int(s)) for s in seeds for p in paths]
    return [k for k in keys if k not in done]


def mismatched_settings(rows: Sequence[dict], settings: dict) -> List[str]:
    """The settings in which ``rows`` differ from this invocation's (``name: old != new``)."""
    out = []
    for row in rows:
        for name in SETTINGS:
            old = row.get("settings", {}).get(name)
            if old != settings[name] and f"{name}: {old!r} != {settings[name]!r}" not in out:
                out.append(f"{name}: {old!r} != {settings[name]!r}")
    return out


def load_rows(path: str) -> List[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["rows"]


def save_rows(path: str, rows: Sequence[dict]) -> None:
    """Writes ``{"rows": rows}`` atomically (temporary file, then os.replace)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"rows": list(rows)}, f, indent=2)
    os.replace(tmp, path)


def add_row(rows: List[dict], row: dict) -> List[dict]:
    """``rows`` with ``row`` appended, replacing a row of the same key (a retried failure)."""
    return [r for r in rows if key_of(r) != key_of(row)] + [row]


# -- commands -------------------------------------------------------------------------------------


def _model_args(settings: dict) -> List[str]:
    args = ["--model", settings["model"], "--batch_size", str(settings["batch_size"])]
    for name in ("width", "depth"):
        if settings[name] is not None:
            args += [f"--{name}", f"{settings[name]:g}"]
    return args


def command(path: str, variant: str, seed: int, settings: dict, run_dir: str) -> List[str]:
    """The subprocess command of one run; effv2 writes into ``run_dir``, the peers RUN_DIR/peer.json."""
    budget = f"{settings['budget_seconds']:g}"
    if path == "effv2":
        return [sys.executable, "-m", "effv2_keras.cli.main", "train", "--data", f"folder:{settings['data']}",
                "--time_budget", budget, "--out", run_dir, "--seed", str(seed), "--verbose", "2",
                *_model_args(settings), *shlex.split(variant)]
    return [sys.executable, os.path.join(REPO, "tools", "benchmark_progressive.py"), "--runs", path,
            "--budget_s", budget, "--data", settings["data"], "--seed", str(seed),
            "--out", os.path.join(run_dir, "peer"), *_model_args(settings), *shlex.split(variant)]


def _child_env() -> dict:
    env = dict(_ENV)
    env["PYTHONPATH"] = os.pathsep.join([REPO, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["PYTHONUNBUFFERED"] = "1"  # the logs in the run directory follow the run
    return env


# -- results of a finished run --------------------------------------------------------------------


def effv2_result(run_dir: str) -> dict:
    """Epochs, wall-clock, val/test top-1 and the curve from an effv2 run's metrics.json."""
    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    final = metrics["final"]
    curve = [[e["wall_seconds"], e["val_top1"]] for e in metrics["epochs"] if e.get("val_top1") is not None]
    test = final.get("test") or {}
    return {"epochs": len(metrics["epochs"]), "wall_seconds": final["seconds"],
            "val_top1": final["val"]["top1"], "best_val_top1": max((v for _, v in curve), default=None),
            "test_top1": test.get("top1"), "global_step": final.get("global_step"), "curve": curve,
            "plan": _read_json(os.path.join(run_dir, "plan.json")),
            "precision": (_read_json(os.path.join(run_dir, "config.json")) or {}).get("mixed_precision")}


def peer_result(run_dir: str, path: str) -> dict:
    """The same fields from a benchmark_progressive.py peer report (RUN_DIR/peer.json)."""
    report = _read_json(os.path.join(run_dir, "peer.json"))
    result = next(iter(report["datasets"].values()))["results"][path]
    curve = [[e["seconds"], e["val_top1"]] for e in result["epochs"] if e.get("val_top1") is not None]
    return {"epochs": len(result["epochs"]), "wall_seconds": result["seconds"], "val_top1": result["val_top1"],
            "best_val_top1": max((v for _, v in curve), default=None), "test_top1": result["test_top1"],
            "selected_epoch": result["selected_epoch"], "curve": curve, "peer_settings": result["settings"]}


def _read_json(path: str) -> Optional[dict]:
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def _tail(path: str, lines: int = STDERR_LINES) -> List[str]:
    with open(path, errors="replace") as f:
        return f.read().splitlines()[-lines:]


def _kernels_line(stdout_path: str) -> Optional[str]:
    """effv2 train's 'CPU kernels: ...' header line (what its process ran)."""
    with open(stdout_path, errors="replace") as f:
        return next((line.split(":", 1)[1].strip() for line in f if line.startswith("CPU kernels:")), None)


# -- running ----------------------------------------------------------------------------------------


_FACTS: Optional[dict] = None


def machine_facts() -> dict:
    """cpu_kernels.machine_facts() of a fresh process that imports effv2_keras, then TensorFlow."""
    global _FACTS
    if _FACTS is None:
        code = ("import json, effv2_keras, tensorflow; from effv2_keras import cpu_kernels; "
                "print(json.dumps(cpu_kernels.machine_facts()))")
        try:
            done = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=_child_env(), capture_output=True,
                                  text=True, timeout=300, check=True)
            _FACTS = json.loads(done.stdout.strip().splitlines()[-1])
        except (subprocess.SubprocessError, ValueError, IndexError) as error:
            from effv2_keras import cpu_kernels

            _FACTS = {"cpu_model": cpu_kernels.cpu_model(), "error": f"probe failed: {error}"[:500]}
    return _FACTS


def run_dir_of(scratch: str, key: Key) -> str:
    path, variant, seed = key
    slug = "".join(c if c.isalnum() or c in "._-" else "_" for c in variant.replace("--", ""))
    return os.path.join(scratch, f"{path}{'_' + slug if slug else ''}_seed{seed}")


def run_one(key: Key, settings: dict, scratch: str, timeout: float) -> dict:
    """Runs one (path, variant, seed) in a subprocess; returns its row (status ok or failed)."""
    path, variant, seed = key
    run_dir = run_dir_of(scratch, key)
    shutil.rmtree(run_dir, ignore_errors=True)  # not in the JSON: a leftover is not resumed
    os.makedirs(run_dir)
    cmd = command(path, variant, seed, settings, run_dir)
    out_log, err_log = os.path.join(run_dir, "stdout.log"), os.path.join(run_dir, "stderr.log")
    row = {"path": path, "variant": variant, "seed": seed, "budget_seconds": settings["budget_seconds"],
           "settings": settings, "command": shlex.join(_in_repo(cmd)), "run_dir": run_dir}
    start = time.time()
    try:
        with open(out_log, "w") as out, open(err_log, "w") as err:
            rc = subprocess.run(cmd, cwd=REPO, env=_child_env(), stdout=out, stderr=err, timeout=timeout).returncode
        error = None if rc == 0 else f"exit status {rc}"
        if error is None:
            row.update(effv2_result(run_dir) if path == "effv2" else peer_result(run_dir, path))
            if path == "effv2":
                row["kernels"] = _kernels_line(out_log)
    except subprocess.TimeoutExpired:
        error = f"killed after {timeout:.0f} s"
    except (OSError, KeyError, ValueError, TypeError, StopIteration) as exc:
        error = f"unreadable result: {type(exc).__name__}: {exc}"
    row.update(status="ok" if error is None else "failed", process_seconds=time.time() - start,
               date=datetime.datetime.now().astimezone().isoformat(timespec="seconds"), cpu=machine_facts())
    if error is not None:
        row.update(error=error, stderr_tail=_tail(err_log))
    return row


def _describe(row: dict) -> str:
    if row["status"] != "ok":
        return f"FAILED ({row['error']}); stderr in {row['run_dir']}/stderr.log"
    test = "-" if row["test_top1"] is None else f"{100 * row['test_top1']:.1f}%"
    return (f"test {test}, val {100 * row['val_top1']:.1f}%, {row['epochs']} epochs, "
            f"{row['wall_seconds']:.0f} s (process {row['process_seconds']:.0f} s)")


def run_all(keys: Sequence[Key], rows: List[dict], settings: dict, out: str, scratch: str,
            timeout: float) -> List[dict]:
    for i, key in enumerate(keys, 1):
        print(f"[{i}/{len(keys)}] {key[0]} {key[1] or '(default)'} seed {key[2]}: running "
              f"(logs in {run_dir_of(scratch, key)})", flush=True)
        row = run_one(key, settings, scratch, timeout)
        rows = add_row(rows, row)
        save_rows(out, rows)
        print(f"    {_describe(row)}", flush=True)
    return rows


# -- report ------------------------------------------------------------------------------------------


def _in_repo(cmd: Sequence[str]) -> List[str]:
    """The command with paths inside the repository written relative to it (the JSON is committed)."""
    prefix = REPO.rstrip(os.sep) + os.sep
    return [arg[len(prefix):] if arg.startswith(prefix) else arg for arg in cmd]


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}"


def _mean(values: Iterable[Optional[float]]) -> Optional[float]:
    values = [v for v in values if v is not None]
    return statistics.fmean(values) if values else None


def summarize(rows: Sequence[dict]) -> List[dict]:
    """Per (path, variant), over its ok rows: means, the test range, seeds, failures, and the
    differences of the mean test and val top-1 to effv2's default variant."""
    groups: Dict[Tuple[str, str], List[dict]] = {}
    for row in rows:
        groups.setdefault((row["path"], row.get("variant", "")), []).append(row)
    order = sorted(groups, key=lambda g: (PATHS.index(g[0]) if g[0] in PATHS else len(PATHS), g[1]))
    out = []
    for path, variant in order:
        ok = sorted((r for r in groups[(path, variant)] if r["status"] == "ok"), key=lambda r: r["seed"])
        tests = [r["test_top1"] for r in ok if r["test_top1"] is not None]
        out.append({"path": path, "variant": variant, "seeds": [r["seed"] for r in ok],
                    "failed": len(groups[(path, variant)]) - len(ok), "test_top1": _mean(tests),
                    "test_min": min(tests, default=None), "test_max": max(tests, default=None),
                    "val_top1": _mean(r["val_top1"] for r in ok), "epochs": _mean(r["epochs"] for r in ok),
                    "wall_seconds": _mean(r["wall_seconds"] for r in ok)})
    ref = next((s for s in out if (s["path"], s["variant"]) == REFERENCE), None)
    for s in out:
        for name in ("test_top1", "val_top1"):
            both = ref is not None and s[name] is not None and ref[name] is not None
            s[f"{name}_vs_ref"] = s[name] - ref[name] if both else None
    return out


def _diff(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:+.1f}"


def table(rows: Sequence[dict]) -> str:
    """The markdown report: a header line (data, budget, model, CPU) and one row per (path, variant)."""
    if not rows:
        return "No runs recorded yet."
    s0 = rows[0]["settings"]
    size = ", ".join(f"{n} {s0[n]:g}" for n in ("width", "depth") if s0[n] is not None) or "full width and depth"
    lines = [f"Budget {s0['budget_seconds']:g} s on {s0['data']}; {s0['model']} ({size}), batch "
             f"{s0['batch_size']}; CPU {rows[0].get('cpu', {}).get('cpu_model', '?')}. Top-1 in %; "
             "differences in points to effv2's default variant.", "",
             "| path | variant | seeds | test top-1 mean | test range | val top-1 mean | epochs mean "
             "| wall s mean | test - effv2 | val - effv2 | failed |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for s in summarize(rows):
        span = "-" if s["test_min"] is None else f"{_pct(s['test_min'])}-{_pct(s['test_max'])}"
        epochs = "-" if s["epochs"] is None else f"{s['epochs']:.1f}"
        wall = "-" if s["wall_seconds"] is None else f"{s['wall_seconds']:.0f}"
        lines.append(f"| {s['path']} | {s['variant'] or 'default'} | {len(s['seeds'])} | {_pct(s['test_top1'])} "
                     f"| {span} | {_pct(s['val_top1'])} | {epochs} | {wall} | {_diff(s['test_top1_vs_ref'])} "
                     f"| {_diff(s['val_top1_vs_ref'])} | {s['failed']} |")
    return "\n".join(lines)


def plot(rows: Sequence[dict], path: str) -> bool:
    """Validation top-1 against wall-clock seconds, one line per ok run, colored by path."""
    ok = [r for r in rows if r["status"] == "ok" and r["curve"]]
    if not ok:
        return False
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    variants = sorted({(r["path"], r.get("variant", "")) for r in ok})
    styles = ["-", "--", ":", "-."]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    labelled = set()
    for r in sorted(ok, key=key_of):
        group = (r["path"], r.get("variant", ""))
        style = styles[[v for v in variants if v[0] == r["path"]].index(group) % len(styles)]
        label = None if group in labelled else f"{r['path']} {group[1] or '(default)'}"
        labelled.add(group)
        ax.plot([p[0] for p in r["curve"]], [100 * p[1] for p in r["curve"]], style, marker="o", markersize=3,
                color=COLORS.get(r["path"], "tab:gray"), label=label)
    ax.axvline(ok[0]["budget_seconds"], color="grey", linestyle=":", linewidth=1, label="budget")
    ax.set_xlim(left=0)
    ax.set_xlabel("wall-clock (s since the run began)")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


def report(rows: Sequence[dict], out: str) -> str:
    """Prints the table; writes it to OUT.md and the plot to OUT.png. Returns the table."""
    text = table(rows)
    print("\n" + text, flush=True)
    stem = os.path.splitext(out)[0]
    with open(stem + ".md", "w") as f:
        f.write(text + "\n")
    wrote = plot(rows, stem + ".png")
    print(f"\nWrote {stem}.md" + (f" and {stem}.png" if wrote else ""), flush=True)
    return text


# -- main ---------------------------------------------------------------------------------------------


def parse_budget(text: str) -> float:
    """Seconds in ``text`` (effv2_keras.train.plan.parse_duration, loaded without TensorFlow)."""
    name = "_effv2_train_plan"
    if name not in sys.modules:  # effv2_keras.train's __init__ would import TensorFlow
        spec = importlib.util.spec_from_file_location(name, os.path.join(REPO, "effv2_keras", "train", "plan.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name].parse_duration(text)


def settings_from_flags() -> dict:
    if not FLAGS.data:
        raise app.UsageError("--data: give the image folder.")
    if not os.path.isdir(FLAGS.data):
        raise app.UsageError(f"--data: {FLAGS.data} is not a directory.")
    try:
        budget = parse_budget(FLAGS.budget)
    except ValueError as error:
        raise app.UsageError(f"--budget: {error}") from None
    # Relative to the repository (every path runs there): the JSON then reads the same on any
    # machine with the same layout (../shared/data/...).
    return {"data": os.path.relpath(os.path.abspath(FLAGS.data), REPO), "budget_seconds": budget, "model": FLAGS.model,
            "width": FLAGS.width, "depth": FLAGS.depth, "batch_size": FLAGS.batch_size}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    out = os.path.abspath(FLAGS.out)
    rows = load_rows(out)
    if FLAGS.report_only:
        report(rows, out)
        return
    unknown = sorted(set(FLAGS.paths) - set(PATHS))
    if unknown or not FLAGS.paths:
        raise app.UsageError(f"--paths: unknown {unknown}; choose from {','.join(PATHS)}")
    settings = settings_from_flags()
    clash = mismatched_settings(rows, settings)
    if clash:
        raise app.UsageError(f"{out} holds runs of other settings ({'; '.join(clash)}): use another --out.")
    variants = {p: normalize_variant(FLAGS.extra_peer_flags) for p in PATHS}
    variants["effv2"] = normalize_variant(FLAGS.extra_effv2_flags)
    seeds = [int(s) for s in FLAGS.seeds]
    keys = pending(rows, FLAGS.paths, variants, seeds, FLAGS.retry_failed)
    for key in [(p, variants[p], s) for s in seeds for p in FLAGS.paths]:
        if key not in keys:
            print(f"{key[0]} {key[1] or '(default)'} seed {key[2]}: done before, kept", flush=True)
    timeout = FLAGS.run_timeout_s or 2 * settings["budget_seconds"] + 900
    rows = run_all(keys, rows, settings, out, os.path.abspath(FLAGS.scratch), timeout)
    report(rows, out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
