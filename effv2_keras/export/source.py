"""The one loader of export/: a Keras model, a ``.keras`` file or a run directory -> ``Source``.

What a run directory holds is read from its ``run.json`` (``effv2_keras.run_dir``) and
nothing else: the model file, class names, evaluation size and crop. A ``.keras`` file is
read with the ``run.json`` of its folder when that manifest names it (what ``export_keras``
and ``effv2 train`` write); without one it is just a model: class names unknown, size
from the model's input or its variant. An in-memory model compiled with an EMA optimizer
(``use_ema=True``) gives its moving averages. This module never imports the trainer.

    >>> import effv2_keras
    >>> model = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25,
    ...                           input_shape=(32, 32, 3), classes=2)
    >>> source = load_source(model, class_names=["cat", "dog"])
    >>> source.class_names, source.fixed_size(), source.head.num_classes
    (['cat', 'dog'], (32, 32), 2)
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import keras

from effv2_keras import run_dir
from effv2_keras.export.errors import ExportError, first_line
from effv2_keras.export.head import Head, pair, resolve_image_size, split_head, check_class_names
from effv2_keras.models.builder import allow_deep_graph

NOT_KERAS_SUFFIXES = {
    ".tflite": "a TFLite flatbuffer",
    ".onnx": "an ONNX model",
    ".h5": "an HDF5 weights file (build the model and load it with model.load_weights first)",
    ".pb": "a SavedModel graph",
}

ModelOrPath = Union[keras.Model, str, os.PathLike, "Source"]


@dataclasses.dataclass
class Source:
    """The model an exporter or predictor works from, plus what its run directory says.

    ``ema`` is True when the optimizer's moving averages were swapped in, None when
    the weights are simply the model's (a run's ``model.keras`` already holds the EMA).
    """

    model: keras.Model
    head: Head
    class_names: Optional[List[str]] = None
    path: Optional[Path] = None  # the .keras file read
    ema: Optional[bool] = None
    manifest: Optional[run_dir.RunManifest] = None

    @property
    def image_size(self) -> Optional[Tuple[int, int]]:
        """The run's evaluation size (None without a manifest)."""
        return pair(self.manifest.eval_size) if self.manifest else None

    @property
    def crop_fraction(self) -> float:
        return self.manifest.crop_fraction if self.manifest else run_dir.DEFAULT_CROP_FRACTION

    def fixed_size(self, image_size=None) -> Tuple[int, int]:
        """The (height, width) of a fixed-size artifact: the model's own, ``image_size``,
        the run's evaluation size, or the variant's."""
        return resolve_image_size(self.model, image_size, self.image_size)

    def classifier(self, what: str) -> Head:
        """The head, or a one-line error when the model has no classifier."""
        if self.head.dense is None:
            raise ExportError(f"model {self.model.name!r} has no classifier head; {what} needs one.")
        return self.head


def load_source(model_or_path: ModelOrPath, class_names: Optional[Sequence[str]] = None,
                use_ema: bool = True) -> Source:
    """Resolves a Keras model, a ``.keras`` file, a run directory (or a ``Source``, returned
    as is) into a ``Source``; ``class_names`` overrides the run's."""
    if isinstance(model_or_path, Source):
        return model_or_path
    manifest, path = None, None
    if isinstance(model_or_path, keras.Model):
        check_exportable(model_or_path)
        model, ema = model_or_path, None
        if use_ema and _optimizer_ema(model) is not None:
            model, ema = ema_copy(model), True
    else:
        path, manifest = _model_file(Path(model_or_path))
        model, ema = _load_keras_file(path), None
        check_exportable(model)
    head = split_head(model)
    if class_names is None and manifest is not None:
        class_names = manifest.class_names
    return Source(model, head, check_class_names(class_names, head), path, ema, manifest)


def _model_file(path: Path) -> Tuple[Path, Optional[run_dir.RunManifest]]:
    """The ``.keras`` file ``path`` stands for, and the manifest that describes it."""
    if not path.exists():
        raise ExportError(f"{path}: no such file or directory (expected a .keras file or a run directory).")
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in NOT_KERAS_SUFFIXES:
            raise ExportError(f"{path} is {NOT_KERAS_SUFFIXES[suffix]}, not a Keras model: "
                              "pass the .keras file or the run directory it was exported from.")
        if suffix != ".keras":
            raise ExportError(f"{path}: expected a .keras file or a run directory.")
        return path, _manifest(run_dir.find, path)
    if (path / "saved_model.pb").exists():
        raise ExportError(f"{path} is a SavedModel; exporting needs the Keras model "
                          "(a .keras file or a run directory).")
    if not run_dir.manifest_path(path).is_file():
        raise ExportError(f"{path} is not a run directory: it holds no {run_dir.MANIFEST_FILE} "
                          "(pass its .keras file, or a folder written by effv2 train or export_keras).")
    manifest = _manifest(run_dir.read, path)
    model_file = manifest.path_of(path, "model")
    if model_file is None or not model_file.is_file():
        raise ExportError(f"{run_dir.manifest_path(path)} names model file {manifest.files.get('model')!r}, "
                          "which is missing.")
    return model_file, manifest


def _manifest(reader, path: Path) -> Optional[run_dir.RunManifest]:
    try:
        return reader(path)
    except run_dir.ManifestError as error:
        raise ExportError(str(error)) from None


def _load_keras_file(path: Path) -> keras.Model:
    allow_deep_graph()  # an XL file opened in a fresh process needs more than Python's 1,000 frames
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # keras raises ValueError/TypeError/zip errors alike
        damage = _archive_damage(path)
        if damage:
            raise ExportError(f"{path} exists but is not a readable Keras archive ({damage}).") from None
        raise ExportError(f"{path}: cannot load the Keras model ({first_line(error)}).") from None


def _archive_damage(path: Path) -> Optional[str]:
    """Why ``path`` is not an intact zip archive (a .keras file is one), None when it is."""
    if not zipfile.is_zipfile(path):
        return "truncated or not a zip file; copy or save it again"
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        return f"corrupt zip: {first_line(error)}"
    return f"corrupt member {bad}" if bad else None


def check_exportable(model) -> None:
    """One-line errors for models that cannot be traced: never built, no inputs."""
    if not isinstance(model, keras.Model):
        raise ExportError(f"expected a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ExportError(f"model {model.name!r} was never built: give it an Input (or call it on a batch) "
                          "before exporting.")
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs or len(inputs) != 1:
        raise ExportError(f"model {model.name!r} has no single defined input (subclassed models must be "
                          "wrapped in a functional model with keras.Input before exporting).")
    shape = tuple(inputs[0].shape)
    if len(shape) != 4:
        raise ExportError(f"model {model.name!r} takes inputs of shape {shape}; "
                          "expected images [batch, H, W, C].")


def _optimizer_ema(model):
    optimizer = getattr(model, "optimizer", None)
    if optimizer is None or not getattr(optimizer, "use_ema", False) or not optimizer.built:
        return None
    return getattr(optimizer, "_model_variables_moving_average", None) or None


def ema_copy(model: keras.Model) -> keras.Model:
    """An uncompiled copy of ``model`` whose trainable weights are the optimizer's EMA."""
    averages = _optimizer_ema(model)
    copy = inference_copy(model)
    if averages is None:
        return copy
    optimizer = model.optimizer
    for source, target in zip(model.trainable_variables, copy.trainable_variables):
        target.assign(averages[optimizer._get_variable_index(source)])
    return copy


def inference_copy(model: keras.Model) -> keras.Model:
    """An uncompiled clone with the same weights (no optimizer state travels with it)."""
    try:
        copy = model.__class__.from_config(model.get_config())  # clone_model would copy the compile state
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ExportError(f"cannot copy model {model.name!r} ({first_line(error)}); save it with "
                          "model.save() and export the .keras file.") from None
    copy.set_weights(model.get_weights())
    for layer in copy._flatten_layers():
        if hasattr(layer, "finalize_state") and layer.built:
            layer.finalize_state()  # Normalization reads adapted statistics into constants here
    return copy
