"""TrainConfig: every option of a training run, in one serializable object.

Config flows one way: defaults (here) -> command-line flags (``effv2 train``,
one flag per field, same name) -> ``validate()`` (each field, once) ->
``resolve(data)`` (once: the recipe, ``effv2_keras.train.recipes``, the variant's
progressive row and the data's facts fill every "None" field) -> the run
directory's ``config.json``, which is enough to repeat the run::

    >>> cfg = TrainConfig(model="efficientnetv2-b0", epochs=6, stages=3).validate()
    >>> TrainConfig.from_dict(cfg.to_dict()) == cfg
    True

Errors are one line and name the flag: ``--lr: must be > 0, got -1.0``.
Fields left as None mean "auto"; the resolved values are what ``config.json``
holds and what ``schedule.from_config`` and the trainer read. Nothing changes
the config after ``resolve``.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any, Dict, Optional, Tuple

from effv2_keras import cpu_kernels
from effv2_keras.models.arch import list_models, registered_models
from effv2_keras import schedule as schedule_lib
from effv2_keras.train import plan as plan_lib
from effv2_keras.train import recipes
from effv2_keras.train.recipes import PAPER_CROP_SCALE_MIN, RECIPES

OPTIMIZERS = ("rmsprop", "sgd", "adamw")
LR_DECAYS = ("exponential", "cosine", "linear", "constant")
MIXED_PRECISION = ("auto", "none", "mixed_float16", "mixed_bfloat16")
# --mixed_precision auto picks bf16 on a CPU with bf16 hardware from this training size up. Full-width
# V2-B0, batch 32, on a 2-core AMD EPYC with AVX512_BF16 (docs/PERFORMANCE.md): mixed_bfloat16
# against float32 0.9x at 64 px (per-op costs and casts dominate), 1.24x at 96 px, 1.5x at 128 px.
BF16_MIN_SIZE = 96
JIT_COMPILE = ("auto", "true", "false")
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
SELECT = ("best", "last")
MIN_IMAGE_SIZE = 32  # the network has stride 32
SIZE_MULTIPLE = 8  # image sizes derived from other sizes are rounded to this (schedule.py says why)
# Training above this multiple of a data set's stored image size only upsamples: it adds compute,
# not detail (digits are stored at 32 px: 48 px at most).
MAX_UPSAMPLING = 1.5
# (min, max) pairs of the progressive schedule: config fields and the schedule quantity they set.
RANGES = (("min_size", "max_size", "image_size"), ("randaug_min", "randaug_max", "randaug_magnitude"),
          ("mixup_min", "mixup_max", "mixup_alpha"), ("cutmix_min", "cutmix_max", "cutmix_alpha"),
          ("dropout_min", "dropout_max", "dropout"))

# Changing any of these makes a checkpoint belong to a different run.
RESUME_KEYS = ("model", "width", "depth", "data", "val_fraction", "epochs", "stages", "time_budget",
               "batch_size", "steps_per_epoch", "optimizer", "mixed_precision", "seed")


def _field(default, help_text, choices=None):
    metadata = {"help": help_text}
    if choices:
        metadata["choices"] = choices
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Options of one run; each field is the ``effv2 train`` flag of the same name."""

    # What to train.
    model: str = _field("efficientnetv2-b0", "Variant name (effv2_keras.list_models()).")
    width: Optional[float] = _field(None, "Width multiplier override (None: the variant's).")
    depth: Optional[float] = _field(None, "Depth multiplier override (None: the variant's).")
    drop_path_rate: float = _field(0.2, "Stochastic-depth (drop path) rate of the last block.")
    # Data.
    data: str = _field("digits", "'digits', 'folder:PATH' or 'tfds:NAME[:CONFIG]'.")
    data_dir: Optional[str] = _field(None, "TFDS data_dir (for --data tfds:...).")
    cache_dir: Optional[str] = _field(None, "Directory for the decoded-image cache (None: memory).")
    val_fraction: float = _field(0.1, "Validation slice carved from train when there is no val split.")
    flip: Optional[bool] = _field(
        None, "Random horizontal flips in training (None: the data's: off for digits and other "
        "sets a mirror changes, on otherwise).")
    crop_scale_min: Optional[float] = _field(
        None, "Smallest area fraction of the random-resized crop (None: 1 - 0.92 x "
        "--regularization_scale, i.e. the official 0.08 at full scale).")
    # The recipe fills every "None: the recipe's" field whose flag is not given.
    recipe: str = _field(
        "auto", "Defaults for the flags not given: short (runs from scratch of 10-99 epochs), paper "
        f"(the paper's ImageNet recipe) or auto (short below {recipes.SHORT_RUN_EPOCHS} epochs, else "
        "paper); docs/PROGRESSIVE.md has the measurements.", RECIPES)
    # Progressive learning (Algorithm 1). None: the variant's defaults.
    epochs: int = _field(30, "Total epochs over all stages (with --time_budget: planned).")
    time_budget: Optional[str] = _field(
        None, "Wall-clock budget for the whole run, e.g. 10m, 1h30m or 600 (seconds): the step speed "
        "is measured at each stage's size, then the stages' epochs and the epoch length are planned to "
        "end with the budget (evaluations, checkpoints and the final save included), the learning rate "
        "reaching zero at the last step (--lr_decay linear unless given); plan.json in --out. "
        "Replaces --epochs.")
    stages: Optional[int] = _field(
        None, "Number of progressive-learning stages, the paper's M (None: the recipe's: short "
        f"one per {recipes.EPOCHS_PER_SHORT_STAGE} epochs, 1 to {recipes.PAPER_STAGES}; paper "
        f"{recipes.PAPER_STAGES}).")
    min_size: Optional[int] = _field(
        None, "Image size of the first stage (None: --max_size x the variant's min/max ratio).")
    max_size: Optional[int] = _field(
        None, f"Image size of the last stage (None: the variant's, capped at {MAX_UPSAMPLING:g} x the "
        "data's stored size; from --min_size by the variant's ratio when only that is given).")
    eval_size: Optional[int] = _field(
        None, "Validation/test image size (None: --max_size during training; at the end, with "
        "--choose_eval_size, the size that scores best on the validation split).")
    choose_eval_size: Optional[bool] = _field(
        None, "At the end of the run pick the evaluation size and crop on the validation split: 1, 1.15 and "
        "1.3 x the last training size (at most the data's stored size), each with the central 0.875 of "
        "each side and with the whole image (FixRes: what matters is that objects look as large as in "
        "training); run.json records them and evaluate, predict and export use them (None: on unless "
        "--eval_size is given).")
    randaug_min: Optional[float] = _field(None, "RandAugment magnitude of the first stage.")
    randaug_max: Optional[float] = _field(None, "RandAugment magnitude of the last stage.")
    mixup_min: Optional[float] = _field(None, "Mixup alpha of the first stage.")
    mixup_max: Optional[float] = _field(None, "Mixup alpha of the last stage.")
    cutmix_min: Optional[float] = _field(None, "CutMix alpha of the first stage.")
    cutmix_max: Optional[float] = _field(None, "CutMix alpha of the last stage.")
    dropout_min: Optional[float] = _field(None, "Head dropout rate of the first stage.")
    dropout_max: Optional[float] = _field(None, "Head dropout rate of the last stage.")
    regularization_scale: Optional[float] = _field(
        None, "0..1: how much of the paper's ImageNet regularization to use: RandAugment is "
        "applied to this fraction of the images, Mixup/CutMix alphas are multiplied by it and the "
        "crop's smallest area is 1 - 0.92 x it (None: the recipe's: short min(1, epochs / 100) ** 2, "
        "paper 1).")
    randaug_probability: Optional[float] = _field(
        None, "Fraction of training images RandAugment is applied to (None: --regularization_scale).")
    label_smoothing: Optional[float] = _field(
        None, "Label smoothing (None: the recipe's: short 0, paper 0.1).")
    # Optimization.
    batch_size: int = _field(64, "GLOBAL batch size (split over replicas and workers).")
    optimizer: Optional[str] = _field(
        None, "Optimizer (None: the recipe's: short adamw, paper rmsprop).", OPTIMIZERS)
    lr: Optional[float] = _field(
        None, "Base learning rate PER 256 IMAGES; the rate used is lr * batch_size / 256 for "
        "rmsprop/sgd, lr * sqrt(batch_size / 256) for adamw (None: 0.016 rmsprop, 0.1 sgd, 0.003 adamw).")
    momentum: float = _field(0.9, "Momentum of RMSProp and SGD.")
    warmup_epochs: Optional[float] = _field(
        None, "Linear warm-up epochs (None: the recipe's: short 0, paper min(5, epochs / 10)).")
    lr_decay: Optional[str] = _field(
        None, "Decay after warm-up (None: the recipe's: short constant, paper exponential; with "
        "--time_budget linear). linear reaches zero at the last step.", LR_DECAYS)
    lr_decay_rate: float = _field(0.97, "Exponential decay factor per --lr_decay_epochs.")
    lr_decay_epochs: Optional[float] = _field(
        None, "Epochs per exponential decay step (None: the recipe's: paper 2.4; short 2.4 x epochs / "
        "350, the official 350-epoch schedule compressed to the run, ending at 1.2% of the peak).")
    weight_decay: Optional[float] = _field(
        None, "Weight decay on conv/dense kernels only, never BN or biases "
        "(None: 1e-5 as L2 for rmsprop/sgd; decoupled for adamw, short recipe 0.01, paper 0.05).")
    ema_decay: Optional[float] = _field(
        None, "EMA decay of the weights and BN statistics (0: no EMA; None: the recipe's: short 0, "
        "paper 0.9999).")
    # Hardware.
    mixed_precision: str = _field(
        "auto", "Keras mixed precision policy (none = float32). auto: mixed_bfloat16 on a CPU with bf16 "
        f"hardware (AVX512_BF16 or AMX) when the largest training size is >= {BF16_MIN_SIZE} px, where it "
        "measured faster; none otherwise, and on GPU/TPU (pass mixed_float16 or mixed_bfloat16 there).",
        MIXED_PRECISION)
    jit_compile: str = _field("auto", "XLA: auto = on for GPU/TPU, off on CPU.", JIT_COMPILE)
    fast_step: bool = _field(
        True, "Train through the fused-kernel twin of the model (fused BN, fusible SiLU, one traced "
        "step for every stage); the saved model is stock Keras either way (docs/PERFORMANCE.md).")
    strategy: str = _field("default", "tf.distribute strategy.", STRATEGIES)
    tpu: str = _field("", "TPU name or address for --strategy tpu ('' = local/Colab TPU).")
    # Run bookkeeping.
    out: str = _field("runs/train", "Run directory (config, metrics, checkpoints, model.keras).")
    resume: bool = _field(False, "Continue from the newest good checkpoint in --out.")
    seed: int = _field(0, "Random seed (data split, shuffling, augmentation, init).")
    steps_per_epoch: Optional[int] = _field(
        None, "Training steps per epoch (None: train examples // batch_size); small for smoke runs.")
    checkpoint_every: Optional[int] = _field(
        None, "Checkpoint every N steps, besides stage ends (None: once per epoch).")
    keep_checkpoints: int = _field(3, "Number of step checkpoints kept.")
    log_every: int = _field(
        20, "Steps between host reads of the loss (progress bar, TensorBoard, callbacks, the "
        "non-finite check); epoch ends and checkpoints always read it first.")
    select: str = _field("best", "Weights for model.keras/test: best validation epoch or last.", SELECT)
    verbose: int = _field(1, "0: quiet, 1: progress bar per epoch, 2: one line per epoch.")

    # -- serialization -------------------------------------------------------------

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Dict[str, Any]) -> "TrainConfig":
        """Inverse of ``to_dict``; unknown keys are an error."""
        unknown = sorted(set(values) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"Unknown TrainConfig keys: {', '.join(unknown)}.")
        return cls(**values)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainConfig":
        return cls.from_dict(json.loads(text))

    def save(self, path: str) -> None:
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path: str) -> "TrainConfig":
        with open(path) as f:
            return cls.from_json(f.read())

    @classmethod
    def field_names(cls):
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    # -- validation ------------------------------------------------------------------

    def validate(self) -> "TrainConfig":
        """Returns self, or raises ValueError with one line naming the flag."""
        for f in dataclasses.fields(self):
            choices = f.metadata.get("choices")
            value = getattr(self, f.name)
            if choices and value not in choices and not (value is None and f.default is None):
                _fail(f.name, f"must be one of {', '.join(choices)}", value)
        for name in ("model", "data", "out"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                _fail(name, "must be a non-empty string", getattr(self, name))
        if self.model not in list_models() + registered_models():
            _fail("model", "unknown variant (effv2_keras.list_models(): efficientnetv2-b0..b3, -s, -m, "
                  "-l, -xl, efficientnet-b0..b7)", self.model)
        _positive_int(self, "epochs", "batch_size")
        if self.time_budget is not None:
            plan_lib.parse_duration(self.time_budget)
            if self.strategy in ("multiworker", "tpu"):
                _fail("time_budget", "is planned by one process; with --strategy multiworker or tpu every worker "
                      "would plan on its own: give --epochs instead", self.time_budget)
        _positive_int(self, "stages", optional=True)
        _positive_int(self, "steps_per_epoch", "checkpoint_every", optional=True)
        _positive_int(self, "log_every")
        _positive_int(self, "keep_checkpoints")
        if self.stages is not None and self.stages > self.epochs:
            _fail("stages", f"must be <= --epochs ({self.epochs}): every stage needs an epoch",
                  self.stages)
        for name in ("min_size", "max_size", "eval_size"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value)
                if value < MIN_IMAGE_SIZE:
                    _fail(name, f"must be >= {MIN_IMAGE_SIZE} (the network has stride 32)", value)
        _positive(self, "width", "depth", optional=True)
        _positive(self, "lr", optional=True)
        _positive(self, "lr_decay_epochs", optional=True)
        _in_range(self, "drop_path_rate", 0.0, 1.0, upper_open=True)
        _in_range(self, "val_fraction", 0.0, 1.0, upper_open=True)
        if self.crop_scale_min is not None:
            _in_range(self, "crop_scale_min", 0.0, 1.0, lower_open=True)
        for name in ("regularization_scale", "randaug_probability"):
            if getattr(self, name) is not None:
                _in_range(self, name, 0.0, 1.0)
        for name in ("label_smoothing", "ema_decay"):
            if getattr(self, name) is not None:
                _in_range(self, name, 0.0, 1.0, upper_open=True)
        _in_range(self, "momentum", 0.0, 1.0, upper_open=True)
        _in_range(self, "lr_decay_rate", 0.0, 1.0, lower_open=True)
        _non_negative(self, "warmup_epochs", "weight_decay", "randaug_min", "randaug_max",
                      "mixup_min", "mixup_max", "cutmix_min", "cutmix_max", optional=True)
        for name in ("dropout_min", "dropout_max"):
            if getattr(self, name) is not None:
                _in_range(self, name, 0.0, 1.0, upper_open=True)
        for low, high, _ in RANGES:
            lo, hi = getattr(self, low), getattr(self, high)
            if lo is not None and hi is not None and lo > hi:
                _fail(low, f"must be <= --{high} ({hi})", lo)
        if self.warmup_epochs is not None and self.warmup_epochs > self.epochs:
            _fail("warmup_epochs", f"must be <= --epochs ({self.epochs})", self.warmup_epochs)
        _check_int("seed", self.seed)
        _check_int("verbose", self.verbose)
        if self.verbose not in (0, 1, 2):
            _fail("verbose", "must be 0, 1 or 2", self.verbose)
        if not isinstance(self.resume, bool):
            _fail("resume", "must be true or false", self.resume)
        for name in ("flip", "choose_eval_size"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), bool):
                _fail(name, "must be true or false", getattr(self, name))
        if self.strategy != "tpu" and self.tpu:
            _fail("tpu", "is only used with --strategy tpu", self.tpu)
        return self

    def resolve(self, data=None, plan: Optional[plan_lib.BudgetPlan] = None,
                device: str = "cpu") -> "TrainConfig":
        """The final config: every "None" field filled, in one place; a given flag always wins.

        ``data`` is what the data source knows (a ``data.DatasetSplits``: its stored
        ``image_size``, ``flip_invariant`` and the training split's size); without it the
        sizes are the variant's and ``steps_per_epoch`` stays None. Filled: the recipe's
        fields (``recipe`` becomes the one that ran), the progressive (min, max) ranges
        from the variant's row (Mixup scaled by the regularization scale), the image sizes
        (capped by the data, one end following the other), flips, the crop, and the steps.

        >>> c = TrainConfig(epochs=10).resolve()
        >>> c.recipe, c.optimizer, c.lr_decay, c.stages, round(c.regularization_scale, 4), c.crop_scale_min
        ('short', 'adamw', 'constant', 1, 0.01, 0.9908)
        >>> (c.min_size, c.max_size, c.eval_size), (c.dropout_min, c.dropout_max)
        ((128, 192, 192), (0.1, 0.2))
        >>> TrainConfig(max_size=96).resolve().min_size  # the first size follows the last
        64
        >>> p = TrainConfig(epochs=10, recipe="paper").resolve()
        >>> p.optimizer, p.lr_decay_epochs, p.stages, p.regularization_scale, p.crop_scale_min
        ('rmsprop', 2.4, 4, 1.0, 0.08)

        ``plan`` (a time budget's ``train.plan.BudgetPlan``) sets the epochs, stages, their
        sizes and the epoch length, and makes the learning rate decay linearly to zero.
        ``device`` (``cpu``, ``gpu``, ``tpu``) resolves ``--mixed_precision auto``
        (``choose_precision``).
        """
        self.validate()
        if plan is not None:
            return self._with_plan(plan).resolve(data, device=device)
        name, _ = recipes.choose(self.recipe, self.epochs)
        filled = recipes.defaults(name, self.epochs, optimizer=self.optimizer)
        values = {field: filled[field] if getattr(self, field) is None else getattr(self, field)
                  for field in recipes.FIELDS}
        if values["warmup_epochs"] > self.epochs:
            _fail("warmup_epochs", f"must be <= --epochs ({self.epochs})", values["warmup_epochs"])
        scale = values["regularization_scale"]
        crop = self.crop_scale_min
        if crop is None:
            crop = round(1.0 - (1.0 - PAPER_CROP_SCALE_MIN) * scale, 6)
        ranges = self._resolved_ranges(scale, getattr(data, "image_size", None))
        steps = self.steps_per_epoch
        if steps is None and data is not None:
            steps = data.train.num_examples // self.batch_size
        flip = self.flip if self.flip is not None else bool(getattr(data, "flip_invariant", True))
        resolved = self.replace(
            recipe=name,
            randaug_probability=float(scale if self.randaug_probability is None
                                      else self.randaug_probability),
            crop_scale_min=float(crop), flip=flip,
            eval_size=self.eval_size or ranges["max_size"],
            choose_eval_size=self.eval_size is None if self.choose_eval_size is None else self.choose_eval_size,
            steps_per_epoch=steps,
            checkpoint_every=self.checkpoint_every or steps,
            mixed_precision=choose_precision(self.mixed_precision, device, ranges["max_size"])[0],
            **ranges,
            **{k: v if k in ("optimizer", "lr_decay", "stages") else float(v) for k, v in values.items()},
        )
        return resolved.validate()

    def _with_plan(self, plan: plan_lib.BudgetPlan) -> "TrainConfig":
        """This config with what a budget plan decides (a given --lr_decay still wins)."""
        if self.time_budget is None:
            raise ValueError("a budget plan needs --time_budget.")
        # The recipe stays the one the plan was measured with (chosen from --epochs), even when
        # the plan's epoch count would make "auto" pick another; a corrected plan keeps the
        # recipe's epoch-dependent values (regularization, warm-up) of the plan it corrected.
        recipe = recipes.choose(self.recipe, self.epochs)[0]
        pinned = {}
        if plan.recipe_epochs:
            kept = recipes.defaults(recipe, plan.recipe_epochs, optimizer=self.optimizer)
            pinned = {k: kept[k] for k in ("regularization_scale", "warmup_epochs", "lr_decay_epochs")
                      if getattr(self, k) is None}
        return self.with_budget_schedule().replace(
            recipe=recipe, **pinned,
            epochs=plan.epochs, stages=len(plan.stages), steps_per_epoch=plan.steps_per_epoch,
            min_size=plan.sizes[0], max_size=plan.sizes[-1],
            checkpoint_every=self.checkpoint_every or plan.steps_per_epoch)

    def with_budget_schedule(self) -> "TrainConfig":
        """This config with the learning-rate schedule a ``--time_budget`` run gets where its flags
        leave it open (``recipes.budget_defaults``: linear to zero; the short recipe's peak doubled).

        >>> c = TrainConfig(time_budget="5m").with_budget_schedule()
        >>> c.lr_decay, c.lr, TrainConfig(time_budget="5m", lr=0.001).with_budget_schedule().lr
        ('linear', 0.006, 0.001)
        """
        recipe = recipes.choose(self.recipe, self.epochs)[0]
        filled = recipes.budget_defaults(recipe, self.optimizer)
        return self.replace(**{field: value for field, value in filled.items() if getattr(self, field) is None})

    def budget_seconds(self) -> Optional[float]:
        """``--time_budget`` in seconds (None without a budget)."""
        return None if self.time_budget is None else plan_lib.parse_duration(self.time_budget)

    def _resolved_ranges(self, scale: float, stored_size: Optional[int]) -> Dict[str, Any]:
        """The five (min, max) pairs: given flags, else the variant's progressive row."""
        defaults = schedule_lib.default_ranges(self.model, scale)
        defaults["image_size"] = _image_sizes(defaults["image_size"], self.min_size, self.max_size, stored_size)
        out = {}
        for low, high, quantity in RANGES:
            lo = defaults[quantity][0] if getattr(self, low) is None else getattr(self, low)
            hi = defaults[quantity][1] if getattr(self, high) is None else getattr(self, high)
            if lo > hi:
                given = low if getattr(self, low) is not None else high
                _fail(given, f"gives {quantity} (min, max) = ({lo:g}, {hi:g}) with min > max (the "
                      f"{self.model} default is {defaults[quantity]}); set both --{low} and --{high}", 
                      getattr(self, given))
            out[low], out[high] = lo, hi
        return out

    def recipe_sources(self) -> Dict[str, str]:
        """Where each recipe field's value comes from: its flag, or the recipe (and why).

        >>> TrainConfig(epochs=10, lr=0.01).recipe_sources()["lr"]
        '--lr'
        >>> TrainConfig(epochs=10).recipe_sources()["optimizer"]
        'short recipe (auto: 10 epochs < 100)'
        """
        name, why = recipes.choose(self.recipe, self.epochs)
        origin = f"{name} recipe" + ("" if why.startswith("--") else f" ({why})")
        return {field: f"--{field}" if getattr(self, field) is not None else origin
                for field in recipes.FIELDS}

    def scaled_lr(self) -> float:
        """The learning rate at the end of warm-up: lr * batch_size / 256 (adamw: the sqrt).
        Of a resolved config (the recipe sets the optimizer and lr otherwise)."""
        if self.optimizer is None or self.lr is None:
            return self.resolve().scaled_lr()
        return recipes.scale_lr(self.lr, self.batch_size, self.optimizer)



def choose_precision(requested: str, device: str, max_size: int,
                     bf16_hardware: Optional[bool] = None) -> Tuple[str, str]:
    """The Keras policy ``--mixed_precision`` resolves to, and why (for the run header).

    ``auto``: mixed_bfloat16 on a CPU with bf16 hardware when the largest training size is at
    least ``BF16_MIN_SIZE``, else none (float32). Anything else is the user's choice.

    >>> choose_precision("auto", "cpu", 128, bf16_hardware=True)[0]
    'mixed_bfloat16'
    >>> [choose_precision("auto", d, s, bf16_hardware=b)[0] for d, s, b in
    ...  (("cpu", 64, True), ("cpu", 128, False), ("gpu", 128, True))]
    ['none', 'none', 'none']
    >>> choose_precision("mixed_float16", "gpu", 128)
    ('mixed_float16', '--mixed_precision')
    """
    if requested != "auto":
        return requested, "--mixed_precision"
    if device != "cpu":
        return "none", f"auto: float32 on {device}; pass --mixed_precision mixed_float16 or mixed_bfloat16"
    if not (cpu_kernels.bf16_hardware() if bf16_hardware is None else bf16_hardware):
        return "none", "auto: this CPU has no bf16 hardware (AVX512_BF16 or AMX)"
    if max_size < BF16_MIN_SIZE:
        return "none", f"auto: bf16 hardware, but {max_size} px < {BF16_MIN_SIZE} px, where float32 is faster"
    return "mixed_bfloat16", f"auto: bf16 hardware and {max_size} px >= {BF16_MIN_SIZE} px"


def _image_sizes(variant: Tuple[int, int], given_min: Optional[int], given_max: Optional[int],
                 stored_size: Optional[int]) -> Tuple[int, int]:
    """(first, last) stage sizes: given ones win; one given end sets the other by the variant's
    min/max ratio; with neither, the variant's range, its top capped at ``MAX_UPSAMPLING`` x the
    data's stored size (and the bottom scaled with it).

    >>> _image_sizes((128, 192), None, None, 32), _image_sizes((128, 192), None, None, 160)
    ((32, 48), (128, 192))
    >>> _image_sizes((128, 192), None, 96, None), _image_sizes((128, 192), 160, None, None)
    ((64, 96), (160, 240))
    """
    ratio = variant[0] / variant[1]
    if given_min is not None and given_max is not None:
        return given_min, given_max
    if given_max is not None:
        return min(given_max, _round_size(given_max * ratio)), given_max
    if given_min is not None:
        return given_min, max(given_min, _round_size(given_min / ratio))
    top = variant[1]
    if stored_size:
        top = min(top, _round_size(stored_size * MAX_UPSAMPLING))
    return (variant[0] if top == variant[1] else min(top, _round_size(top * ratio))), top


EVAL_SIZE_FACTORS = (1.0, 1.15, 1.3)
# Central crops tried with each size: the package's usual 0.875 (224/256) and the whole image. A
# short run's training crops are nearly whole images (crop area 0.97-1), and evaluating on the
# central 0.875 then shows objects 1.14x larger than training did: 86.6% against 91.7% test
# top-1 for the same model (V2-B0, 5 minutes on signdigits100; docs/TRAINING.md).
EVAL_CROP_FRACTIONS = (0.875, 1.0)


def eval_size_candidates(last_size: int, stored_size: Optional[int] = None) -> Tuple[int, ...]:
    """The evaluation sizes tried at the end of a run: ``EVAL_SIZE_FACTORS`` x the last training
    size, rounded to a multiple of 8, never above the data's stored size (or the training size).

    >>> eval_size_candidates(128, 160), eval_size_candidates(48, 32), eval_size_candidates(96)
    ((128, 144, 160), (48,), (96, 112, 128))
    """
    cap = max(last_size, stored_size) if stored_size else None
    sizes = {last_size} | {_round_size(last_size * factor) for factor in EVAL_SIZE_FACTORS}
    return tuple(sorted({size if cap is None else min(size, cap) for size in sizes}))


def _round_size(size: float) -> int:
    return max(MIN_IMAGE_SIZE, SIZE_MULTIPLE * int(math.floor(size / SIZE_MULTIPLE + 0.5)))


def _fail(name, message, value):
    raise ValueError(f"--{name}: {message}, got {value!r}.")


def _check_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        _fail(name, "must be an integer", value)


def _is_number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _values(cfg, names, optional):
    """(name, value) of each field, leaving out None where the field is optional."""
    for name in names:
        value = getattr(cfg, name)
        if not (value is None and optional):
            yield name, value


def _positive_int(cfg, *names, optional=False):
    for name, value in _values(cfg, names, optional):
        _check_int(name, value)
        if value < 1:
            _fail(name, "must be >= 1", value)


def _positive(cfg, *names, optional=False):
    for name, value in _values(cfg, names, optional):
        if not _is_number(value) or value <= 0:
            _fail(name, "must be > 0", value)


def _non_negative(cfg, *names, optional=False):
    for name, value in _values(cfg, names, optional):
        if not _is_number(value) or value < 0:
            _fail(name, "must be >= 0", value)


def _in_range(cfg, name, low, high, lower_open=False, upper_open=False):
    value = getattr(cfg, name)
    ok = _is_number(value)
    if ok:
        ok = (value > low if lower_open else value >= low) and (value < high if upper_open else value <= high)
    if not ok:
        interval = f"{'(' if lower_open else '['}{low:g}, {high:g}{')' if upper_open else ']'}"
        _fail(name, f"must be in {interval}", value)
