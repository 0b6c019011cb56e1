"""What every exporter shares: reading a model or a run directory, the
inference-mode checks, the classifier head, and the metadata file.

A *run directory* is what training leaves behind: ``model.keras`` (the trainer
saves its selected weights there, EMA already swapped in), optionally
``model_ema.keras`` (preferred when present), and ``config.json``. Class names
come from ``class_names.json`` (a list), ``config.json["class_names"]``, or the
class folders of a ``config.json["data"] = "folder:PATH"`` data set (sorted,
as effv2_keras.data names them); the image size of a size-free model from
``config.json["eval_size"]`` (else ``"max_size"``). This module never imports
the trainer.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple, Union

import keras
import numpy as np
import tensorflow as tf

from effv2_keras.models.builder import allow_deep_graph

METADATA_FILE = "effv2_export.json"
LABELS_FILE = "labels.txt"
RUN_MODEL_FILES = ("model.keras",)
RUN_EMA_FILES = ("model_ema.keras", "ema_model.keras")
NOT_KERAS_SUFFIXES = {
    ".tflite": "a TFLite flatbuffer",
    ".onnx": "an ONNX model",
    ".h5": "an HDF5 weights file (build the model and load it with model.load_weights first)",
    ".pb": "a SavedModel graph",
}
# Op types that only appear when a model is traced in training mode or with
# randomness: moving-statistic updates of BatchNormalization, dropout and
# drop-path masks, random augmentation.
_STATE_UPDATE_OPS = {"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"}

# Inference-only SavedModels skip the custom-gradient functions (SiLU has one per
# activation): tracing them is most of the save time, and nothing trains on these.
# The TF-Hub exporter keeps them: its modules are fine-tuned.
INFERENCE_SAVE_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)

ModelOrPath = Union[keras.Model, str, os.PathLike]


class ExportError(ValueError):
    """A user error with a one-line explanation (the CLI prints it as is)."""


@dataclasses.dataclass
class Source:
    """The model an exporter works from, plus what is known about it."""

    model: keras.Model
    class_names: Optional[List[str]] = None
    path: Optional[Path] = None
    ema: bool = False
    image_size: Optional[Tuple[int, int]] = None  # the run's evaluation size, for size-free models


# --------------------------------------------------------------------------- loading


def load_source(model_or_path: ModelOrPath, class_names: Optional[Sequence[str]] = None,
                use_ema: bool = True) -> Source:
    """Resolves a Keras model, a ``.keras`` file or a run directory into a ``Source``.

    With ``use_ema`` the EMA weights are used when there are any: a run
    directory's ``model_ema.keras``, or the moving averages of a compiled
    in-memory model whose optimizer has ``use_ema=True``.
    """
    if isinstance(model_or_path, keras.Model):
        check_exportable(model_or_path)
        model, ema = model_or_path, False
        if use_ema and _optimizer_ema(model) is not None:
            model, ema = ema_copy(model), True
        names = list(class_names) if class_names is not None else None
        return Source(model, names, None, ema)
    path = Path(model_or_path)
    if not path.exists():
        raise ExportError(f"{path}: no such file or directory (expected a .keras file or a run directory).")
    if path.is_dir():
        if (path / "saved_model.pb").exists():
            raise ExportError(f"{path} is a SavedModel; exporting needs the Keras model "
                              "(a .keras file or a run directory with model.keras).")
        candidates = (RUN_EMA_FILES if use_ema else ()) + RUN_MODEL_FILES
        found = next((path / n for n in candidates if (path / n).is_file()), None)
        if found is None:
            raise ExportError(f"{path} is not a run directory: it holds no {' or '.join(RUN_MODEL_FILES)}.")
        keras_file, run_dir = found, path
    else:
        keras_file, run_dir = path, None
        if path.suffix.lower() in NOT_KERAS_SUFFIXES:
            raise ExportError(f"{path} is {NOT_KERAS_SUFFIXES[path.suffix.lower()]}, not a Keras model: "
                              "pass the .keras file or the run directory it was exported from.")
        if path.suffix.lower() != ".keras":
            raise ExportError(f"{path}: expected a .keras file or a run directory.")
    model = _load_keras_file(keras_file)
    check_exportable(model)
    directory = run_dir if run_dir is not None else keras_file.parent
    if class_names is None:
        class_names = read_class_names(directory)
    config = read_run_config(directory)
    size = config.get("eval_size") or config.get("max_size")
    return Source(model, list(class_names) if class_names else None, keras_file,
                  ema=keras_file.name in RUN_EMA_FILES, image_size=_pair(size) if size else None)


def _load_keras_file(path: Path) -> keras.Model:
    allow_deep_graph()  # an XL file opened in a fresh process needs more than Python's 1,000 frames
    try:
        return keras.saving.load_model(path, compile=False)
    except Exception as error:  # keras raises ValueError/TypeError/zip errors alike
        raise ExportError(f"{path}: cannot load the Keras model ({_first_line(error)}).") from error


def read_run_config(directory: Optional[Path]) -> dict:
    path = Path(directory) / "config.json" if directory is not None else None
    if path is None or not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text())
    except ValueError:
        return {}
    return config if isinstance(config, dict) else {}


def read_class_names(directory: Optional[Path]) -> Optional[List[str]]:
    """Class names of a run or artifact directory (see the module docstring), else None."""
    if directory is None:
        return None
    directory = Path(directory)
    names_file = directory / "class_names.json"
    if names_file.is_file():
        return [str(n) for n in json.loads(names_file.read_text())]
    config = read_run_config(directory)
    names = _find_key(config, "class_names")
    if names:
        return [str(n) for n in names]
    labels = directory / LABELS_FILE
    if labels.is_file():
        return [line for line in labels.read_text().splitlines() if line]
    return _folder_class_names(config.get("data"), config.get("data_dir"))


def _folder_class_names(spec, data_dir) -> Optional[List[str]]:
    """Class folder names of a ``folder:PATH`` data spec (the train split's, sorted)."""
    if not isinstance(spec, str) or not spec.startswith("folder:"):
        return None
    root = Path(spec[len("folder:"):]).expanduser()
    if data_dir and not root.is_absolute():
        root = Path(data_dir) / root
    train = root / "train" if (root / "train").is_dir() else root
    if not train.is_dir():
        return None
    names = sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith("."))
    return names or None


def _find_key(config, key, depth=2):
    if not isinstance(config, dict):
        return None
    if key in config:
        return config[key]
    if depth > 0:
        for value in config.values():
            found = _find_key(value, key, depth - 1)
            if found:
                return found
    return None


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


# --------------------------------------------------------------------------- EMA


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
        raise ExportError(f"cannot copy model {model.name!r} ({_first_line(error)}); save it with "
                          "model.save() and export the .keras file.") from None
    copy.set_weights(model.get_weights())
    for layer in copy._flatten_layers():
        if hasattr(layer, "finalize_state") and layer.built:
            layer.finalize_state()  # Normalization reads adapted statistics into constants here
    return copy


# --------------------------------------------------------------------------- shapes and head


def input_channels(model: keras.Model) -> Optional[int]:
    return model.inputs[0].shape[-1]


def static_image_size(model: keras.Model) -> Optional[Tuple[int, int]]:
    height, width = model.inputs[0].shape[1:3]
    return (int(height), int(width)) if height and width else None


def resolve_image_size(model: keras.Model, image_size=None, default=None) -> Tuple[int, int]:
    """The (height, width) a fixed-size artifact uses: the model's own, the
    argument, ``default`` (a run's eval size), or the registered variant's
    eval size (by model name)."""
    static = static_image_size(model)
    if image_size is None and static is None and default is not None:
        image_size = default
    if image_size is not None:
        size = _pair(image_size)
        if static is not None and size != static:
            raise ExportError(f"image_size {size} differs from the model's fixed input size {static}.")
        return size
    if static is not None:
        return static
    from effv2_keras.models.arch import get_spec  # architecture tables only, no training code

    try:
        eval_size = get_spec(model.name).eval_size
    except ValueError:
        raise ExportError(f"model {model.name!r} accepts any image size: pass image_size "
                          "(--image_size) to fix the size of this artifact.") from None
    return (eval_size, eval_size)


def _pair(size) -> Tuple[int, int]:
    if isinstance(size, (int, np.integer)):
        return (int(size), int(size))
    height, width = size
    return (int(height), int(width))


def check_rgb_model(model: keras.Model, what: str) -> None:
    channels = input_channels(model)
    if channels != 3:
        raise ExportError(f"{what} decodes RGB images, but model {model.name!r} takes "
                          f"{channels}-channel inputs.")


@dataclasses.dataclass
class Head:
    """The model split at its classifier: ``features(x)`` then a Dense ``kernel``/``bias``.

    ``dense`` is None for models without a Dense top (feature extractors):
    their outputs are the features.
    """

    features: keras.Model
    dense: Optional[keras.layers.Dense]
    activation: str  # "softmax", "sigmoid" or "linear" (logits; probabilities by softmax)

    @property
    def num_classes(self) -> Optional[int]:
        return None if self.dense is None else int(self.dense.units)

    def logits(self, features):
        features = tf.cast(features, tf.float32)
        kernel = tf.cast(self.dense.kernel, tf.float32)
        return tf.matmul(features, kernel) + tf.cast(self.dense.bias, tf.float32)

    def probabilities(self, logits):
        return tf.sigmoid(logits) if self.activation == "sigmoid" else tf.nn.softmax(logits, axis=-1)


def split_head(model: keras.Model) -> Head:
    """Finds the classifier (a final Dense with softmax, sigmoid or no activation)."""
    last = model.layers[-1]
    if isinstance(last, keras.layers.Dense) and len(model.outputs) == 1:
        activation = getattr(last.activation, "__name__", str(last.activation))
        if activation not in ("softmax", "sigmoid", "linear"):
            raise ExportError(f"unsupported classifier activation {activation!r} on layer {last.name!r}.")
        if not last.use_bias:
            raise ExportError(f"classifier layer {last.name!r} has no bias; expected a standard Dense head.")
        features = keras.Model(model.inputs, last.input, name=f"{model.name}_features")
        return Head(features, last, activation)
    return Head(model, None, "linear")


@dataclasses.dataclass
class Classifier:
    """A loaded model with a classifier head, ready to convert."""

    source: Source
    model: keras.Model
    head: Head
    class_names: Optional[List[str]]
    image_size: Tuple[int, int]


def load_classifier(model_or_path: ModelOrPath, class_names, use_ema: bool, image_size, what: str) -> Classifier:
    """``load_source`` + a check that the model has a classifier head + class names and image size."""
    source = load_source(model_or_path, class_names, use_ema)
    model = source.model
    head = split_head(model)
    if head.dense is None:
        raise ExportError(f"model {model.name!r} has no classifier head; {what} export needs one.")
    names = check_class_names(source.class_names, head)
    size = resolve_image_size(model, image_size, source.image_size)
    return Classifier(source, model, head, names, size)


def pooled_features(head: Head, images):
    """[batch, channels] features: the classifier's input, or the global
    average of a feature map when the model has neither top nor pooling."""
    features = tf.cast(head.features(images, training=False), tf.float32)
    if features.shape.rank == 4:
        features = tf.reduce_mean(features, axis=[1, 2])
    return features


def keras_probabilities(model: keras.Model, images: np.ndarray, batch_size: int = 32) -> np.ndarray:
    """Reference probabilities of a Keras classifier in inference mode."""
    head = split_head(model)
    if head.dense is None:
        raise ExportError(f"model {model.name!r} has no classifier head: no probabilities to compare.")
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = tf.convert_to_tensor(images[start:start + batch_size], tf.float32)
        out = tf.cast(model(batch, training=False), tf.float32)
        if head.activation == "linear":
            out = tf.nn.softmax(out, axis=-1)
        outputs.append(out.numpy())
    return np.concatenate(outputs, axis=0)


# --------------------------------------------------------------------------- graph checks


def graph_op_types(concrete_function) -> Dict[str, List]:
    """Op type -> node defs, over the graph and every function in its library."""
    graph_def = concrete_function.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    ops: Dict[str, List] = {}
    for node in nodes:
        ops.setdefault(node.op, []).append(node)
    return ops


def training_ops(concrete_function) -> List[str]:
    """Op types that betray a training-mode trace (empty for a clean inference graph)."""
    found = set()
    for op, nodes in graph_op_types(concrete_function).items():
        if "Random" in op or op in _STATE_UPDATE_OPS or op.startswith("Dropout"):
            found.add(op)
        if op.startswith("FusedBatchNorm") and any(n.attr["is_training"].b for n in nodes):
            found.add(f"{op}(is_training=True)")
    return sorted(found)


def assert_inference_graph(concrete_function, what: str) -> None:
    """Raises unless the traced graph is free of random ops, dropout and BN updates."""
    bad = training_ops(concrete_function)
    if bad:
        raise ExportError(f"{what}: the traced graph is not in inference mode (found {', '.join(bad)}).")


# --------------------------------------------------------------------------- tracking and metadata


class VariableHolder(tf.__internal__.tracking.AutoTrackable):
    """A trackable object holding the model's underlying ``tf.Variable``s.

    It tracks ``v.value`` (the tf.Variable inside each Keras variable), never the
    Keras variables or the Keras model: if the saved object also tracked the
    Keras variables, every gradient of the reloaded object would silently be None.
    """

    def __init__(self, variables: Iterable, trainable_variables: Iterable = ()):
        super().__init__()
        self.variables = [v.value for v in variables]
        self.trainable_variables = [v.value for v in trainable_variables]


def write_metadata(directory: Path, **fields) -> Path:
    path = Path(directory) / METADATA_FILE
    fields = {k: v for k, v in fields.items() if v is not None}
    path.write_text(json.dumps(fields, indent=2) + "\n")
    return path


def read_metadata(artifact: Path) -> dict:
    artifact = Path(artifact)
    directory = artifact if artifact.is_dir() else artifact.parent
    path = directory / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else {}


def write_labels(directory: Path, class_names: Optional[Sequence[str]]) -> None:
    if class_names:
        (Path(directory) / LABELS_FILE).write_text("\n".join(class_names) + "\n")


def check_class_names(class_names, head: Head) -> Optional[List[str]]:
    """The class names to embed, checked against the classifier's width (None when unknown)."""
    if not class_names or head.dense is None:
        return None
    if len(class_names) != head.num_classes:
        raise ExportError(f"{len(class_names)} class names given for a model with "
                          f"{head.num_classes} outputs.")
    return [str(n) for n in class_names]


def prepare_out_dir(out_dir, overwrite: bool = True) -> Path:
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ExportError(f"--out {out} is a file; expected a directory.")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ExportError(f"{out} exists and is not empty.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def directory_size(path: Path) -> int:
    path = Path(path)
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


# --------------------------------------------------------------------------- converter input


class ProbabilitiesModule(VariableHolder):
    """``serve(images)`` -> {"probabilities"}: the one-output graph converters start from."""

    def __init__(self, model: keras.Model, head: Head):
        super().__init__(model.variables)
        self._head = head  # a plain dataclass: the Keras model inside is not tracked
        self.serve = tf.function(self._serve)

    def _serve(self, images):
        logits = self._head.logits(pooled_features(self._head, images))
        return {"probabilities": self._head.probabilities(logits)}


def save_probabilities_model(model: keras.Model, head: Head, size: Tuple[int, int], directory,
                             what: str) -> None:
    """Saves ``ProbabilitiesModule`` (fixed H, W; free batch) as a SavedModel, after
    checking that its graph is an inference graph."""
    module = ProbabilitiesModule(model, head)
    function = module.serve.get_concrete_function(
        tf.TensorSpec([None, size[0], size[1], input_channels(model)], tf.float32, name="images"))
    assert_inference_graph(function, what)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": function},
                        options=INFERENCE_SAVE_OPTIONS)
