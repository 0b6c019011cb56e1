"""The reproduction suite: one module per experiment of the paper and of the reports the project
grew from (../shared/REFERENCE.md section 4), run by ``runner.reproduce``.

An experiment module holds, as data and small functions:

* its docstring: what it reproduces, the command, the expected runtime on 2 CPU cores (full and
  ``--quick``) and the seed report's or the paper's number;
* ``DEFAULT_DATA``: the seed's data set as a data spec (``tfds:...`` never downloads: it fails
  fast when not prepared; ``--data folder:PATH`` runs the experiment on any folder);
* ``COLUMNS``: the table's columns, ``(row key, header)`` pairs;
* ``prepare(options) -> context``: loads the data once (a validation slice carved from train);
* ``candidates(options) -> [Candidate]``: what to train or fit, each with a unique name;
* ``run(candidate, context, workdir) -> row``: trains one candidate, selects on validation,
  reports test once; ``workdir`` is the candidate's own folder (a trainer resumes there); a context
  with a ``done`` attribute is given the rows finished so far (a candidate that builds on others);
* optionally ``plot(rows, path)``: the experiment's own figure.

    >>> [name for name, _ in list_experiments()]
    ['classical_baselines', 'fused_ablation', 'progressive_ablation', 'scaling_sweeps', 'v2s_vs_b4']
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import List, Tuple

EXPERIMENTS = ("classical_baselines", "fused_ablation", "progressive_ablation", "scaling_sweeps", "v2s_vs_b4")


def load(name: str) -> ModuleType:
    """The experiment module ``name``; ValueError naming the known ones otherwise."""
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)} (effv2 reproduce --list)")
    return importlib.import_module(f"effv2_keras.experiments.{name}")


def list_experiments() -> List[Tuple[str, str]]:
    """(name, the first line of its docstring) of every experiment."""
    return [(name, (load(name).__doc__ or "").strip().splitlines()[0]) for name in EXPERIMENTS]
