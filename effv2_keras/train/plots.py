"""curves.png: loss and accuracy per epoch, stage boundaries and image sizes marked."""

from __future__ import annotations

import os
from typing import Optional, Sequence


def plot_curves(rows: Sequence[dict], stages: Sequence, path: str, eval_size: Optional[int] = None) -> None:
    """Writes a two-panel PNG (loss, top-1 accuracy) from metrics rows.

    ``rows``: one dict per finished epoch with ``epoch`` (1-based), ``train_loss``,
    ``train_acc`` and, when there is a validation split, ``val_loss``, ``val_top1``.
    ``stages``: the schedule's stages; a dashed line marks where each begins and a
    label gives its number (1-based, as the log) and image size. ``eval_size``: the
    validation image size, named in the legend.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in rows]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    ax_loss.plot(epochs, [r["train_loss"] for r in rows], "o-", label="train")
    ax_acc.plot(epochs, [r["train_acc"] for r in rows], "o-", label="train (augmented)")
    val_rows = [r for r in rows if r.get("val_loss") is not None]
    at = f", {eval_size}px" if eval_size else ""
    if val_rows:
        ax_loss.plot([r["epoch"] for r in val_rows], [r["val_loss"] for r in val_rows], "s-",
                     label=f"validation (EMA{at})")
        ax_acc.plot([r["epoch"] for r in val_rows], [r["val_top1"] for r in val_rows], "s-",
                    label=f"validation top-1 (EMA{at})")
    first = 0
    for stage in stages:
        for ax in (ax_loss, ax_acc):
            ax.axvline(first + 0.5, color="grey", linestyle="--", linewidth=0.8)
            ax.text(first + 0.6, 1.0, f"stage {stage.index + 1}\n{stage.image_size}px",
                    transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="dimgrey")
        first += stage.epochs
    total = first
    for ax, title in ((ax_loss, "loss"), (ax_acc, "top-1 accuracy")):
        ax.set_xlabel("epoch")
        ax.set_title(title)
        ax.set_xlim(0.5, max(total, 1) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    ax_acc.set_ylim(0, 1.0)
    # Early validation at the final size of a net trained on small images can be orders of
    # magnitude off: a log scale keeps the rest of the curve readable.
    ax_loss.set_yscale("log")
    ax_loss.set_title("loss (log scale)")
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def label_wallclock_axes(ax, title: str) -> None:
    """Title, axis labels, grid and legend of a validation-top-1-against-wall-clock panel
    (the benchmark tools' plots)."""
    ax.set_title(title)
    ax.set_xlabel("wall-clock (minutes, data loading included)")
    ax.set_ylabel("validation top-1 (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
