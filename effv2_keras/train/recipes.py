"""Training recipes: what a run gets for every setting its flags leave open.

Two recipes, chosen by ``--recipe`` (``TrainConfig.recipe``):

* ``short``: for training from scratch on a folder of a few thousand photos, 10-99
  epochs (docs/PROGRESSIVE.md, "Recipes": the ablation it was chosen from, with its
  commands): AdamW at a constant 1e-3 for batch 32 (sqrt-scaled to other batches), weight
  decay 0.01, no warm-up, EMA or label smoothing, and the paper's regularization scaled by
  (epochs / 100) ** 2 (almost none at 10 epochs, all of it from 100 epochs on), because a
  short run underfits;
* ``paper``: the paper's ImageNet recipe at any length (RMSProp 0.016 per 256 images,
  5 warm-up epochs, x0.97 every 2.4 epochs, EMA 0.9999, Table 6's regularization, 4
  progressive stages);
* ``auto`` (the default): ``short`` below ``SHORT_RUN_EPOCHS`` epochs, else ``paper``
  (the short recipe was measured on 10-epoch runs only).

A flag that is given always wins over the recipe. ``TrainConfig.resolve()`` fills the
rest and names the recipe in ``config.json``; ``recipe_sources()`` says where each
value came from (the run header prints it).

    >>> choose("auto", 30), choose("auto", 350), choose("paper", 10)[0]
    (('short', 'auto: 30 epochs < 100'), ('paper', 'auto: 350 epochs >= 100'), 'paper')
    >>> d = defaults("short", epochs=10)
    >>> d["optimizer"], d["lr_decay"], d["ema_decay"], round(d["regularization_scale"], 4), d["stages"]
    ('adamw', 'constant', 0.0, 0.01, 1)
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

RECIPES = ("auto", "short", "paper")
SHORT_RUN_EPOCHS = 100

# Base learning rate per 256 images. RMSProp and SGD scale it linearly, lr * batch_size / 256
# (the paper's 0.016 * batch / 256 for RMSProp); AdamW by the square root,
# lr * sqrt(batch_size / 256) (timm's rule for adaptive optimizers: Adam's step size does not
# grow with the gradient's magnitude, so linear scaling starves small batches). AdamW's 0.003
# gives 1.06e-3 at batch 32 and 3e-3 at 256.
BASE_LR = {"rmsprop": 0.016, "sgd": 0.1, "adamw": 0.003}
SQRT_LR_SCALING = ("adamw",)
# RMSProp and SGD: L2 penalty wd/2 * |w|^2 on conv and dense kernels, added to the loss (the
# official recipe's 1e-5). AdamW: decoupled decay (w -= lr * wd * w) on the same kernels.
WEIGHT_DECAY = {"rmsprop": 1e-5, "sgd": 1e-5, "adamw": 0.05}

PAPER_EPOCHS = 350.0
PAPER_WARMUP_EPOCHS = 5.0
PAPER_LR_DECAY_EPOCHS = 2.4
PAPER_CROP_SCALE_MIN = 0.08
PAPER_STAGES = 4
# The paper's regularization regularizes 350-epoch ImageNet runs; a run of a few epochs
# underfits, and the whole of it stops the run from learning (docs/PROGRESSIVE.md: 14%
# against 88% on signdigits100 in 10 epochs). The short recipe uses the fraction
# min(1, epochs / 100) ** 2 of it (1% at 10 epochs, 9% at 30, 25% at 50, all of it at 100).
FULL_REGULARIZATION_EPOCHS = 100
# The paper's recipe warms up for 5 epochs, or 10% of a shorter run.
PAPER_WARMUP_FRACTION = 0.1
# The short recipe (docs/PROGRESSIVE.md, "Recipes"): AdamW at timm's 1e-3 for batch 32 with
# torch's default decoupled decay, a constant rate, no warm-up, no EMA, no label smoothing,
# and the paper's regularization scaled by (epochs / 100) ** 2: in the measured 10-epoch runs
# the paper's augmentations (even on 10% of the images) and the compressed decay kept the
# network at chance for the first 2-4 epochs, and what learned fastest per epoch was the
# plain recipe of the timm and keras.applications paths.
SHORT_OPTIMIZER = "adamw"
SHORT_ADAMW_WEIGHT_DECAY = 0.01
# Progressive resizing needs stages long enough for the network to settle at each size
# (docs/PROGRESSIVE.md: at 2-3 epochs per stage every size change cost more than the small
# images saved). The short recipe: one stage per 25 epochs, at most the paper's 4.
EPOCHS_PER_SHORT_STAGE = 25

# Under --time_budget the learning rate decays linearly to zero when the budget ends (Li, Yumer &
# Ramanan, "Budgeted Training", ICLR 2020). A decaying rate needs a higher peak than the short recipe's
# constant one: twice it (2.1e-3 at batch 32) scored 92.7 / 93.9 / 96.1 test top-1 over 3 seeds against
# 90.5 / 86.9 / 90.8 at the recipe's own peak (signdigits100, 5 minutes; docs/PROGRESSIVE.md, third
# round). The paper recipe's peak is kept (not measured under a budget).
BUDGET_LR_DECAY = "linear"
BUDGET_LR_SCALE = {"short": 2.0}

# The TrainConfig fields a recipe fills when their flag is not given.
FIELDS = ("optimizer", "lr", "weight_decay", "warmup_epochs", "lr_decay", "lr_decay_epochs",
          "ema_decay", "label_smoothing", "regularization_scale", "stages")


def choose(recipe: str, epochs: int) -> Tuple[str, str]:
    """(the recipe that runs, why): ``auto`` picks by the run's length."""
    if recipe not in RECIPES:
        raise ValueError(f"--recipe: must be one of {', '.join(RECIPES)}, got {recipe!r}.")
    if recipe != "auto":
        return recipe, "--recipe " + recipe
    if epochs < SHORT_RUN_EPOCHS:
        return "short", f"auto: {epochs} epochs < {SHORT_RUN_EPOCHS}"
    return "paper", f"auto: {epochs} epochs >= {SHORT_RUN_EPOCHS}"


def defaults(recipe: str, epochs: int, optimizer: Optional[str] = None) -> Dict[str, object]:
    """Every field of ``FIELDS`` as ``recipe`` (``short`` or ``paper``) sets it for a run of
    ``epochs`` epochs; ``optimizer`` (a given flag) selects the learning rate and decay."""
    if recipe == "paper":
        optimizer = optimizer or "rmsprop"
        return {
            "optimizer": optimizer, "lr": BASE_LR[optimizer], "weight_decay": WEIGHT_DECAY[optimizer],
            "warmup_epochs": min(PAPER_WARMUP_EPOCHS, epochs * PAPER_WARMUP_FRACTION),
            "lr_decay": "exponential", "lr_decay_epochs": PAPER_LR_DECAY_EPOCHS,
            "ema_decay": 0.9999, "label_smoothing": 0.1, "regularization_scale": 1.0,
            "stages": min(PAPER_STAGES, epochs),
        }
    if recipe == "short":
        optimizer = optimizer or SHORT_OPTIMIZER
        return {
            "optimizer": optimizer, "lr": BASE_LR[optimizer],
            "weight_decay": SHORT_ADAMW_WEIGHT_DECAY if optimizer == "adamw" else WEIGHT_DECAY[optimizer],
            "warmup_epochs": 0.0,
            "lr_decay": "constant",
            # Only read by --lr_decay exponential: the paper's schedule compressed to the run.
            "lr_decay_epochs": round(PAPER_LR_DECAY_EPOCHS * epochs / PAPER_EPOCHS, 4),
            "ema_decay": 0.0, "label_smoothing": 0.0,
            "regularization_scale": round(min(1.0, epochs / FULL_REGULARIZATION_EPOCHS) ** 2, 6),
            "stages": max(1, min(PAPER_STAGES, epochs // EPOCHS_PER_SHORT_STAGE)),
        }
    raise ValueError(f"recipe must be short or paper, got {recipe!r}.")


def budget_defaults(recipe: str, optimizer: Optional[str] = None) -> Dict[str, object]:
    """The schedule a ``--time_budget`` run gets where its flags leave it open (``lr`` per 256 images).

    >>> budget_defaults("short"), budget_defaults("paper")
    ({'lr_decay': 'linear', 'lr': 0.006}, {'lr_decay': 'linear', 'lr': 0.016})
    """
    optimizer = optimizer or (SHORT_OPTIMIZER if recipe == "short" else "rmsprop")
    return {"lr_decay": BUDGET_LR_DECAY, "lr": BASE_LR[optimizer] * BUDGET_LR_SCALE.get(recipe, 1.0)}


def scale_lr(lr_per_256: float, batch_size: int, optimizer: str) -> float:
    """``lr * batch / 256`` (rmsprop, sgd) or ``lr * sqrt(batch / 256)`` (adamw).

    >>> scale_lr(0.016, 4096, "rmsprop"), round(scale_lr(0.003, 64, "adamw"), 6)
    (0.256, 0.0015)
    """
    ratio = batch_size / 256.0
    return lr_per_256 * (ratio ** 0.5 if optimizer in SQRT_LR_SCALING else ratio)
