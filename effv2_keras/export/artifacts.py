"""What an exporter writes beside its artifact and how an artifact folder is prepared:
the ``effv2_export.json`` metadata (format, class names, image size, quantization),
``labels.txt`` for the TFLite/ONNX tooling that expects one, the output folder.

    >>> import tempfile
    >>> folder = prepare_out_dir(tempfile.mkdtemp())
    >>> _ = write_metadata(folder, format="tflite", class_names=["cat", "dog"], seconds=None)
    >>> read_metadata(folder)
    {'format': 'tflite', 'class_names': ['cat', 'dog']}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional, Sequence

from effv2_keras.export.errors import ExportError

METADATA_FILE = "effv2_export.json"
LABELS_FILE = "labels.txt"  # written for deployment tooling; never read back


def write_metadata(directory: Path, **fields) -> Path:
    """``effv2_export.json`` with the fields that are not None."""
    path = Path(directory) / METADATA_FILE
    fields = {k: v for k, v in fields.items() if v is not None}
    path.write_text(json.dumps(fields, indent=2) + "\n")
    return path


def read_metadata(artifact: Path) -> dict:
    """The metadata of an artifact (its folder's ``effv2_export.json``), ``{}`` when it has none."""
    artifact = Path(artifact)
    directory = artifact if artifact.is_dir() else artifact.parent
    path = directory / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_labels(directory: Path, class_names: Optional[Sequence[str]]) -> None:
    if class_names:
        (Path(directory) / LABELS_FILE).write_text("\n".join(class_names) + "\n")


def prepare_out_dir(out_dir, overwrite: bool = True) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"{{out_dir}} {out} is a file; expected a directory.", "out_dir")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def directory_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
