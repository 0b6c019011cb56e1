"""Scaling sweeps: single-axis width, depth and resolution against compound scaling, by accuracy and FLOPs.

EfficientNet's compound scaling (Tan & Le 2019, the rule EfficientNetV2 keeps): scale depth by alpha^phi,
width by beta^phi and resolution by gamma^phi with alpha * beta^2 * gamma^2 ~= 2, so FLOPs grow about 2^phi;
a grid search at phi = 1 picks the triple (the V1 paper found 1.2, 1.1, 1.15). The seed report repeated the
grid search on 3 classes of CIFAR-10 (best 1.2, 1.1, 1.15 at 93.2%, ../shared/REFERENCE.md section 4) beside
single-axis sweeps. Here, from a small V2-B0 base, every candidate trains through the package's trainer
(same recipe and epochs), selects on validation and reports test once:

* ``base``: the base network at its size;
* the grid at phi = 1 (``GRID``): triples with alpha * beta^2 * gamma^2 within 5% of 2, among them the
  single-axis ones (depth x2, width x1.41, resolution x1.41) and the V1 paper's (1.2, 1.1, 1.15);
* the single-axis sweeps continued to about 4x FLOPs (depth x4, width x2, resolution x2);
* ``compound_phi2``: the grid's best triple on validation, scaled by phi = 2.

Each row: the triple and phi, width and depth multipliers, image size, parameters, FLOPs, training seconds,
validation and test top-1; ``scaling_sweeps.png`` plots test top-1 against FLOPs, one line per axis and one
for compound scaling; the table names the triple ``compound_phi2`` was chosen from.

Command (full settings: base width and depth 0.5 at 64 px, 10 epochs, 13 runs; estimated from the trainer's
step rates, about 1.5 hours on 2 CPU cores for signdigits100)::

    effv2 reproduce scaling_sweeps --data folder:../shared/data/signdigits100

``--quick`` (base width and depth 0.25 at 32 px, 2 epochs; a few minutes)::

    effv2 reproduce scaling_sweeps --quick --data folder:../shared/data/signdigits100

Default data: the embedded digits.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Dict, Tuple

from effv2_keras.experiments.runner import Candidate, NetworkSettings, Options, load_splits

DEFAULT_DATA = "digits"
MODEL = "efficientnetv2-b0"
COLUMNS = (("candidate", "candidate"), ("triple", "alpha, beta, gamma"), ("phi", "phi"),
           ("depth", "depth x"), ("width", "width x"), ("image_size", "px"), ("parameters", "parameters"),
           ("mflops", "MFLOPs"), ("train_seconds", "training s"), ("val_top1", "validation top-1"),
           ("test_top1", "test top-1"), ("chosen_from", "phi 2 from"))
SQRT2 = 2 ** 0.5
# (alpha: depth, beta: width, gamma: resolution), each with alpha * beta^2 * gamma^2 within 5% of 2.
GRID: Dict[str, Tuple[float, float, float]] = {
    "depth_x2": (2.0, 1.0, 1.0),
    "width_x1.41": (1.0, SQRT2, 1.0),
    "resolution_x1.41": (1.0, 1.0, SQRT2),
    "grid_1.2_1.1_1.15": (1.2, 1.1, 1.15),  # the V1 paper's choice
    "grid_1.4_1.2_1.0": (1.4, 1.2, 1.0),
    "grid_1.0_1.2_1.15": (1.0, 1.2, 1.15),
    "grid_1.1_1.1_1.2": (1.1, 1.1, 1.2),
    "grid_1.3_1.05_1.2": (1.3, 1.05, 1.2),
}
SINGLE_AXIS_4X: Dict[str, Tuple[float, float, float]] = {
    "depth_x4": (4.0, 1.0, 1.0), "width_x2": (1.0, 2.0, 1.0), "resolution_x2": (1.0, 1.0, 2.0)}
AXES = {"depth": 0, "width": 1, "resolution": 2}


FULL = NetworkSettings(width=0.5, depth=0.5, size=64, epochs=10)
QUICK = NetworkSettings(width=0.25, depth=0.25, size=32, epochs=2)


def settings_of(options: Options) -> NetworkSettings:
    return QUICK if options.quick else FULL


def scaled(settings: NetworkSettings, triple: Tuple[float, float, float], phi: float) -> dict:
    """The network and size of ``triple`` at ``phi`` from the base ``settings``."""
    alpha, beta, gamma = triple
    return {"triple": list(triple), "phi": phi, "depth": round(settings.depth * alpha ** phi, 4),
            "width": round(settings.width * beta ** phi, 4), "image_size": int(round(settings.size * gamma ** phi))}


def candidates(options: Options):
    s = settings_of(options)
    rows = [Candidate("base", scaled(s, (1.0, 1.0, 1.0), 0))]
    rows += [Candidate(name, scaled(s, triple, 1)) for name, triple in GRID.items()]
    rows += [Candidate(name, scaled(s, triple, 1)) for name, triple in SINGLE_AXIS_4X.items()]
    rows.append(Candidate("compound_phi2", {"phi": 2, "triple": "the grid's best on validation"}))
    return rows


@dataclasses.dataclass
class Context:
    data: str
    seed: int
    settings: NetworkSettings
    splits: object  # effv2_keras.data.DatasetSplits, loaded once for every candidate
    done: dict = dataclasses.field(default_factory=dict)  # rows finished so far (the runner's)


def prepare(options: Options) -> Context:
    return Context(options.data, options.seed, settings_of(options), load_splits(options))


def best_triple(done: dict) -> Tuple[str, Tuple[float, float, float]]:
    """The grid candidate with the best validation top-1 (ties: the first in ``GRID``)."""
    finished = [name for name in GRID if done.get(name, {}).get("status") == "ok"]
    if not finished:
        raise RuntimeError("compound_phi2 needs the grid's results: every grid candidate failed.")
    name = max(finished, key=lambda n: (done[n]["val_top1"], -list(GRID).index(n)))
    return name, GRID[name]


def run(candidate: Candidate, context: Context, workdir: Path) -> dict:
    from effv2_keras.models import count_flops, get_spec
    from effv2_keras.train import TrainConfig, train

    settings, chosen = dict(candidate.settings), None
    if candidate.name == "compound_phi2":
        chosen, triple = best_triple(context.done)
        settings = scaled(context.settings, triple, 2)
    config = TrainConfig(model=MODEL, width=settings["width"], depth=settings["depth"], data=context.data,
                         epochs=context.settings.epochs, stages=1, min_size=settings["image_size"],
                         max_size=settings["image_size"], batch_size=32, seed=context.seed, out=str(workdir),
                         resume=True, verbose=0)
    result = train(config, context.splits)
    spec = get_spec(MODEL).replace(width=settings["width"], depth=settings["depth"])
    return {**settings, "chosen_from": chosen, "parameters": int(result.model.count_params()),
            "mflops": count_flops(spec, settings["image_size"]) / 1e6, "train_seconds": result.seconds,
            "val_top1": result.val["top1"], "test_top1": result.test["top1"]}


def plot(rows: dict, path: Path) -> None:
    """Test top-1 against FLOPs: each single axis from the base to 4x, and compound scaling."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    ok = {name: row for name, row in rows.items() if row.get("status") == "ok"}
    lines = {axis: ["base", f"{axis}_x{'2' if axis == 'depth' else '1.41'}",
                    f"{axis}_x{'4' if axis == 'depth' else '2'}"] for axis in AXES}
    chosen = ok.get("compound_phi2", {}).get("chosen_from")
    lines["compound"] = ["base", chosen, "compound_phi2"]
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for label, names in lines.items():
        points = [(ok[n]["mflops"], 100 * ok[n]["test_top1"]) for n in names if n in ok]
        if points:
            ax.plot(*zip(*points), marker="o", label=label, linewidth=2.5 if label == "compound" else 1.2)
    ax.set_xlabel("MFLOPs per image")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title("single-axis against compound scaling", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
