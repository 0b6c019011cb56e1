"""Progressive learning with adaptive regularization: the paper's Algorithm 1 as data.

Training is split into ``M`` stages. Stage ``i`` (0-based) trains at image size
``S_i`` with every regularizer ``phi`` (RandAugment magnitude, Mixup alpha,
CutMix alpha, dropout) interpolated linearly between its (min, max)::

    S_i   = S_0   + (S_e   - S_0)   * i / (M - 1)
    phi_i = phi_0 + (phi_e - phi_0) * i / (M - 1)          (M = 1: the max values)

Defaults are the variant's ``Progressive`` row in ``models/arch.py`` (for S, M and
L the paper's Table 6). Decisions, and where this differs from the official code:

* Image sizes. The endpoints are used exactly as given, so Table 6's 128 and 300
  (S) or 380 (M, L) come out unchanged even though 300 and 380 are not multiples
  of 8. Intermediate sizes are rounded to the nearest multiple of
  ``size_multiple`` (8; ties round up), e.g. S: 128, 185.3 -> 184, 242.7 -> 240,
  300; M and L: 128, 212 -> 216, 296, 380. Why 8: the unrounded sizes are
  fractional anyway, and a multiple of 8 divides exactly through the first three
  stride-2 layers (the network has stride 32 and TF "same" padding handles any
  size, so this is tidiness and hardware-friendly tiling, not correctness). It
  does not reduce the number of XLA compilations (one per stage either way); it
  makes sizes from different schedules coincide, so compile caches and benchmark
  numbers carry over. ``size_multiple=1`` only truncates to integers (round half up).
  The official code instead uses ``int(128 + (train - 128) * (i + 1) / M)``, so its
  first stage is not 128 (S: 171, 214, 257, 300).
* Regularizers are not rounded: S's RandAugment magnitudes are 5, 8.33, 11.67, 15.
  The first and last stage get the endpoints exactly (no float drift: 0.3, not
  0.30000000000000004).
* Dropout is scheduled per stage as Algorithm 1 says. The official code computes a
  dropout schedule and then discards it (dropout stays fixed).
* CutMix: Table 6 has no CutMix, so the default is (0, 0). The official code ramps
  CutMix together with Mixup (``cutmix_alpha = mixup_alpha``); pass
  ``cutmix_alpha=spec.progressive.mixup_alpha`` to do the same.
* Epochs are split as evenly as possible; when they do not divide, the EARLIER
  stages take one extra epoch each (they are the cheap, small-image stages), e.g.
  350 over 4 stages -> 88, 88, 87, 87.

Example:
    >>> s = make_schedule("efficientnetv2-s", epochs=350)
    >>> [st.image_size for st in s.stages], [st.epochs for st in s.stages]
    ([128, 184, 240, 300], [88, 88, 87, 87])
    >>> s.stage_for_epoch(176).index, s.first_epoch(2)
    (2, 176)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Optional, Sequence, Tuple

from effv2_keras.models.arch import get_spec

_FLOAT_FIELDS = ("randaug_magnitude", "mixup_alpha", "cutmix_alpha", "dropout")
_INT_FIELDS = ("index", "epochs", "image_size")


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of progressive training: how long, at which size, how regularized."""

    index: int
    epochs: int
    image_size: int
    randaug_magnitude: float
    mixup_alpha: float
    cutmix_alpha: float
    dropout: float

    def __post_init__(self):
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"Stage.{name} must be an int, got {value!r}.")
        if self.index < 0:
            raise ValueError(f"Stage.index must be >= 0, got {self.index}.")
        if self.epochs < 1:
            raise ValueError(f"Stage.epochs must be >= 1, got {self.epochs}.")
        if self.image_size < 1:
            raise ValueError(f"Stage.image_size must be >= 1, got {self.image_size}.")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) \
                    or not math.isfinite(value):
                raise ValueError(f"Stage.{name} must be a finite number, got {value!r}.")
            if value < 0:
                raise ValueError(f"Stage.{name} must be >= 0, got {value}.")
        if self.dropout >= 1:
            raise ValueError(f"Stage.dropout must be < 1, got {self.dropout}.")


@dataclasses.dataclass(frozen=True)
class ProgressiveSchedule:
    """The stages of one run, in order. Epochs are 0-based and global."""

    stages: Tuple[Stage, ...]

    def __post_init__(self):
        stages = tuple(self.stages)
        object.__setattr__(self, "stages", stages)
        if not stages:
            raise ValueError("ProgressiveSchedule needs at least one stage.")
        for i, stage in enumerate(stages):
            if not isinstance(stage, Stage):
                raise ValueError(f"ProgressiveSchedule.stages[{i}] is not a Stage: {stage!r}.")
            if stage.index != i:
                raise ValueError(
                    f"ProgressiveSchedule.stages[{i}] has index {stage.index}; "
                    "stage indices must be 0, 1, 2, ... in order."
                )

    @property
    def epochs(self) -> int:
        return sum(stage.epochs for stage in self.stages)

    def first_epoch(self, stage_index: int) -> int:
        """Global 0-based epoch at which stage ``stage_index`` starts."""
        if isinstance(stage_index, bool) or not isinstance(stage_index, int):
            raise ValueError(f"stage_index must be an int, got {stage_index!r}.")
        if not 0 <= stage_index < len(self.stages):
            raise ValueError(
                f"stage_index {stage_index} out of range: the schedule has "
                f"{len(self.stages)} stages (0..{len(self.stages) - 1})."
            )
        return sum(stage.epochs for stage in self.stages[:stage_index])

    def stage_for_epoch(self, epoch: int) -> Stage:
        """The stage that global 0-based ``epoch`` belongs to."""
        if isinstance(epoch, bool) or not isinstance(epoch, int):
            raise ValueError(f"epoch must be an int, got {epoch!r}.")
        if not 0 <= epoch < self.epochs:
            raise ValueError(
                f"epoch {epoch} out of range: the schedule has {self.epochs} "
                f"epochs (0..{self.epochs - 1})."
            )
        end = 0
        for stage in self.stages:
            end += stage.epochs
            if epoch < end:
                return stage
        raise AssertionError("unreachable")  # pragma: no cover

    def to_dict(self) -> dict:
        """A JSON-able dict; ``from_dict(to_dict())`` gives an equal schedule."""
        return {
            "epochs": self.epochs,
            "stages": [dataclasses.asdict(stage) for stage in self.stages],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ProgressiveSchedule":
        """Inverse of ``to_dict``. Unknown keys are errors; ``epochs`` is checked."""
        if not isinstance(d, dict):
            raise ValueError(
                f"ProgressiveSchedule.from_dict expects a dict, got {type(d).__name__}.")
        unknown = set(d) - {"stages", "epochs"}
        if unknown:
            raise ValueError(f"Unknown schedule keys: {sorted(unknown)}.")
        if "stages" not in d:
            raise ValueError("Schedule dict has no 'stages'.")
        fields = [f.name for f in dataclasses.fields(Stage)]
        stages = []
        for i, raw in enumerate(d["stages"]):
            if not isinstance(raw, dict):
                raise ValueError(f"stages[{i}] must be a dict, got {raw!r}.")
            missing, extra = set(fields) - set(raw), set(raw) - set(fields)
            if missing or extra:
                raise ValueError(
                    f"stages[{i}]: missing keys {sorted(missing)}, unknown keys {sorted(extra)}."
                )
            values = {}
            for name in fields:
                value = raw[name]
                if name in _INT_FIELDS:
                    if isinstance(value, float) and value.is_integer():
                        value = int(value)
                else:
                    if isinstance(value, int) and not isinstance(value, bool):
                        value = float(value)
                values[name] = value
            stages.append(Stage(**values))
        schedule = cls(tuple(stages))
        if "epochs" in d and d["epochs"] != schedule.epochs:
            raise ValueError(
                f"Schedule dict says epochs={d['epochs']} but its stages "
                f"sum to {schedule.epochs}."
            )
        return schedule

    def table(self) -> str:
        """A fixed-width table of the stages, for the start of a run's log."""
        header = (
            f"{'stage':>5}  {'epochs':>6}  {'epoch range':>11}  {'image':>5}  "
            f"{'randaug':>7}  {'mixup':>6}  {'cutmix':>6}  {'dropout':>7}"
        )
        lines = [header, "-" * len(header)]
        start = 0
        for s in self.stages:
            span = f"{start}-{start + s.epochs - 1}"
            lines.append(
                f"{s.index:>5}  {s.epochs:>6}  {span:>11}  {s.image_size:>5}  "
                f"{s.randaug_magnitude:>7.2f}  {s.mixup_alpha:>6.3f}  "
                f"{s.cutmix_alpha:>6.3f}  {s.dropout:>7.4f}"
            )
            start += s.epochs
        lines.append(f"{len(self.stages)} stages, {self.epochs} epochs")
        return "\n".join(lines)


def _check_range(name: str, value, *, integer: bool = False, upper: Optional[float] = None):
    """Validates a (min, max) pair and returns it as a tuple of numbers."""
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}.") from None
    for v in (lo, hi):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{name} must hold two finite numbers, got {value!r}.")
        if integer and not float(v).is_integer():
            raise ValueError(f"{name} must hold integers, got {value!r}.")
    if integer and lo < 1:
        raise ValueError(f"{name} must be positive, got {value!r}.")
    if lo < 0:
        raise ValueError(f"{name} must be non-negative, got {value!r}.")
    if lo > hi:
        raise ValueError(f"{name} must be (min, max) with min <= max, got {value!r}.")
    if upper is not None and hi >= upper:
        raise ValueError(f"{name} must be below {upper}, got {value!r}.")
    if integer:
        return int(lo), int(hi)
    return float(lo), float(hi)


def _lerp(lo: float, hi: float, i: int, m: int) -> float:
    if m == 1:
        return hi
    t = i / (m - 1)
    return (1.0 - t) * lo + t * hi  # exact at both ends


def _round_to_multiple(x: float, multiple: int) -> int:
    return int(math.floor(x / multiple + 0.5)) * multiple


def default_ranges(model: str, regularization_scale: float = 1.0) -> dict:
    """The variant's (min, max) of each scheduled quantity: its ``Progressive`` row, CutMix (0, 0),
    Mixup multiplied by ``regularization_scale`` (the only place these defaults are filled).

    >>> default_ranges("efficientnetv2-l", 0.5)["mixup_alpha"], default_ranges("efficientnetv2-b0")["dropout"]
    ((0.0, 0.2), (0.1, 0.2))
    """
    row = get_spec(model).progressive
    return {"image_size": tuple(row.image_size), "randaug_magnitude": tuple(row.randaug_magnitude),
            "mixup_alpha": tuple(a * regularization_scale for a in row.mixup_alpha),
            "cutmix_alpha": (0.0, 0.0), "dropout": tuple(row.dropout)}


def make_schedule(
    model: str = "efficientnetv2-s",
    epochs: int = 350,
    stages: int = 4,
    image_size: Optional[Tuple[int, int]] = None,
    randaug_magnitude: Optional[Tuple[float, float]] = None,
    mixup_alpha: Optional[Tuple[float, float]] = None,
    cutmix_alpha: Optional[Tuple[float, float]] = None,
    dropout: Optional[Tuple[float, float]] = None,
    size_multiple: int = 8,
    stage_epochs: Optional[Sequence[int]] = None,
    stage_sizes: Optional[Sequence[int]] = None,
) -> ProgressiveSchedule:
    """Builds the progressive schedule of Algorithm 1 (see the module docstring).

    Every (min, max) argument left as None takes the variant's default from
    ``get_spec(model).progressive`` (CutMix: (0, 0)). Invalid arguments raise
    ValueError naming the argument. ``stage_epochs`` and ``stage_sizes`` (a time budget's
    plan) replace the even split of the epochs and the interpolated sizes; the
    regularization still follows Algorithm 1 by stage index.

    >>> s = make_schedule("efficientnetv2-b0", epochs=9, stages=2, image_size=(64, 128),
    ...                   stage_epochs=(6, 3), stage_sizes=(64, 128))
    >>> [(st.image_size, st.epochs, st.dropout) for st in s.stages]
    [(64, 6, 0.1), (128, 3, 0.2)]
    """
    for name, value in (("epochs", epochs), ("stages", stages),
                        ("size_multiple", size_multiple)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}.")
    if epochs < stages:
        raise ValueError(
            f"epochs ({epochs}) must be >= stages ({stages}): "
            "every stage needs at least one epoch."
        )
    defaults = default_ranges(model)
    sizes = _check_range("image_size", defaults["image_size"] if image_size is None else image_size,
                         integer=True)
    magnitudes = _check_range("randaug_magnitude",
                              defaults["randaug_magnitude"] if randaug_magnitude is None
                              else randaug_magnitude)
    mixups = _check_range("mixup_alpha",
                          defaults["mixup_alpha"] if mixup_alpha is None else mixup_alpha)
    cutmixes = _check_range("cutmix_alpha", defaults["cutmix_alpha"] if cutmix_alpha is None else cutmix_alpha)
    dropouts = _check_range("dropout", defaults["dropout"] if dropout is None else dropout, upper=1.0)

    base, extra = divmod(epochs, stages)
    if stage_epochs is None:
        stage_epochs = [base + (1 if i < extra else 0) for i in range(stages)]
    elif len(stage_epochs) != stages or sum(stage_epochs) != epochs:
        raise ValueError(f"stage_epochs must be {stages} numbers summing to {epochs}, got {stage_epochs!r}.")
    if stage_sizes is not None and len(stage_sizes) != stages:
        raise ValueError(f"stage_sizes must be {stages} sizes, got {stage_sizes!r}.")
    built = []
    for i in range(stages):
        if stage_sizes is not None:
            size = stage_sizes[i]
        elif stages == 1 or i == stages - 1:
            size = sizes[1]
        elif i == 0:
            size = sizes[0]
        else:
            size = _round_to_multiple(_lerp(*sizes, i, stages), size_multiple)
            size = min(max(size, sizes[0]), sizes[1])  # rounding never leaves [min, max]
        built.append(Stage(
            index=i,
            epochs=int(stage_epochs[i]),
            image_size=int(size),
            randaug_magnitude=_lerp(*magnitudes, i, stages),
            mixup_alpha=_lerp(*mixups, i, stages),
            cutmix_alpha=_lerp(*cutmixes, i, stages),
            dropout=_lerp(*dropouts, i, stages),
        ))
    return ProgressiveSchedule(tuple(built))


def from_config(config, plan=None) -> ProgressiveSchedule:
    """The schedule of a resolved ``TrainConfig`` (``config.resolve(...)``): its variant, epochs,
    stages and the five (min, max) ranges, nothing filled here; with a time budget's ``plan``
    (``train.plan.BudgetPlan``, the one the config was resolved with) its epochs and sizes per stage.

    >>> from effv2_keras.train import TrainConfig
    >>> s = from_config(TrainConfig(epochs=6, stages=3, max_size=96).resolve())
    >>> [st.image_size for st in s.stages], [st.epochs for st in s.stages]
    ([64, 80, 96], [2, 2, 2])
    """
    return make_schedule(
        config.model, config.epochs, config.stages,
        image_size=(config.min_size, config.max_size),
        randaug_magnitude=(config.randaug_min, config.randaug_max),
        mixup_alpha=(config.mixup_min, config.mixup_max),
        cutmix_alpha=(config.cutmix_min, config.cutmix_max),
        dropout=(config.dropout_min, config.dropout_max),
        stage_epochs=None if plan is None else [stage.epochs for stage in plan.stages],
        stage_sizes=None if plan is None else plan.sizes)
