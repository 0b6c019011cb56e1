"""The run directory: the one contract between training and everything that reads its result.

``effv2 train`` writes ``run.json`` (a ``RunManifest``) into its ``--out`` folder beside the
files it names; export/, ``effv2 predict`` and ``effv2 evaluate`` read it and nothing else to
learn what the model is, what its classes are called and how its images are prepared. A
``.keras`` file exported on its own gets the same manifest beside it (``run.json`` in its
folder), so it carries its class names and evaluation size wherever it goes. A ``.keras``
file with no manifest still works: it is then just a model (class names unknown, size from
the variant).

This module imports neither train/ nor export/ (both import it)::

    >>> import tempfile
    >>> m = RunManifest(model="efficientnetv2-b0", num_classes=2, class_names=["cat", "dog"],
    ...                 eval_size=64, data="folder:pets")
    >>> folder = tempfile.mkdtemp()
    >>> _ = write(folder, m)
    >>> read(folder) == m
    True
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

MANIFEST_FILE = "run.json"
FORMAT_VERSION = 1
PREPROCESSING = "rgb_0_255"  # float RGB pixels in [0, 255]; the model normalizes them itself
DEFAULT_CROP_FRACTION = 0.875  # data.EVAL_CROP_FRACTION; repeated here so readers need no TF import

# Role -> file name of everything a finished run holds (paths relative to the run directory).
RUN_FILES = {
    "model": "model.keras",
    "config": "config.json",
    "schedule": "schedule.json",
    "plan": "plan.json",
    "metrics_csv": "metrics.csv",
    "metrics_json": "metrics.json",
    "curves": "curves.png",
    "checkpoints": "checkpoints",
    "tensorboard": "tensorboard",
}

PathLike = Union[str, os.PathLike]


class ManifestError(ValueError):
    """A run.json that is missing, unreadable or does not describe a run; one line."""


@dataclasses.dataclass(frozen=True)
class RunManifest:
    """What a reader needs to know about a trained model.

    Attributes:
        model: the variant name (``effv2_keras.list_models()``).
        num_classes: width of the classifier.
        class_names: one name per output, in output order.
        eval_size: the square size the model was evaluated at.
        width, depth: multiplier overrides the run used (None: the variant's).
        crop_fraction: central box of each side kept before resizing at evaluation.
        preprocessing: what the model's input is (``rgb_0_255``: float RGB in [0, 255]).
        classifier_activation: the last layer's activation (``softmax``: probabilities).
        data, data_dir: the data spec the run trained on (a record; readers never re-list it).
        files: role -> file name relative to the manifest's folder, for the files present.
    """

    model: str
    num_classes: int
    class_names: List[str]
    eval_size: int
    width: Optional[float] = None
    depth: Optional[float] = None
    crop_fraction: float = DEFAULT_CROP_FRACTION
    preprocessing: str = PREPROCESSING
    classifier_activation: str = "softmax"
    data: Optional[str] = None
    data_dir: Optional[str] = None
    files: Dict[str, str] = dataclasses.field(default_factory=lambda: {"model": RUN_FILES["model"]})
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        if len(self.class_names) != self.num_classes:
            raise ManifestError(f"run manifest: {len(self.class_names)} class names for "
                                f"{self.num_classes} classes.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict, where: str = MANIFEST_FILE) -> "RunManifest":
        known = {f.name for f in dataclasses.fields(cls)}
        required = {f.name for f in dataclasses.fields(cls)
                    if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING}
        if not isinstance(values, dict):
            raise ManifestError(f"{where}: expected a JSON object, got {type(values).__name__}.")
        missing = sorted(required - set(values))
        if missing:
            raise ManifestError(f"{where}: missing {', '.join(missing)}; not a run manifest.")
        version = values.get("format_version", FORMAT_VERSION)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise ManifestError(f"{where}: format_version {version!r} is newer than this package reads "
                                f"({FORMAT_VERSION}); upgrade effv2_keras.")
        fields = {k: v for k, v in values.items() if k in known}
        fields["class_names"] = [str(n) for n in fields["class_names"]]
        return cls(**fields)

    def replace(self, **changes) -> "RunManifest":
        return dataclasses.replace(self, **changes)

    def path_of(self, directory: PathLike, role: str) -> Optional[Path]:
        """The file of ``role`` (a ``RUN_FILES`` key) under ``directory``, or None when absent."""
        name = self.files.get(role)
        return Path(directory) / name if name else None


def manifest_path(directory: PathLike) -> Path:
    return Path(directory) / MANIFEST_FILE


def write(directory: PathLike, manifest: RunManifest) -> Path:
    """Writes ``run.json`` atomically (temporary file + rename) and returns its path."""
    path = manifest_path(directory)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
    return path


def read(directory: PathLike) -> RunManifest:
    """The manifest of a run directory (or of the folder a ``.keras`` file was exported to)."""
    path = manifest_path(directory)
    if not path.is_file():
        raise ManifestError(f"{directory}: no {MANIFEST_FILE}; not a run directory written by "
                            "effv2 train or effv2 export.")
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ManifestError(f"{path}: unreadable ({error}).") from None
    return RunManifest.from_dict(values, where=str(path))


def find(path: PathLike) -> Optional[RunManifest]:
    """The manifest that describes ``path`` (a run directory, or a ``.keras`` file whose
    folder holds one naming it as its model), else None."""
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    if not manifest_path(folder).is_file():
        return None
    manifest = read(folder)
    if path.is_dir() or manifest.files.get("model") == path.name:
        return manifest
    return None


def present_files(directory: PathLike, roles: Optional[Dict[str, str]] = None) -> Dict[str, str]:
    """``RUN_FILES`` (or ``roles``) restricted to the files that exist under ``directory``."""
    roles = RUN_FILES if roles is None else roles
    return {role: name for role, name in roles.items() if (Path(directory) / name).exists()}
