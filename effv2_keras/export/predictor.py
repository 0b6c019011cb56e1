"""One interface over every artifact: ``load_predictor(path).predict(images)``.

Images are float32 [batch, H, W, 3] in 0-255 whatever the artifact (the TF-Hub
module's [0, 1] inputs and TFLite int8 quantization are handled here); the
result is probabilities [batch, classes].

    >>> from effv2_keras.export import load_predictor
    >>> predictor = load_predictor("exported/tflite_int8/model.tflite")  # doctest: +SKIP
    >>> predictor.predict_files(["shoe.jpg"])  # doctest: +SKIP
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import keras
import numpy as np
import tensorflow as tf

from effv2_keras import run_dir
from effv2_keras.export import images as images_lib
from effv2_keras.export.artifacts import read_metadata
from effv2_keras.export.errors import ExportError, first_line
from effv2_keras.export.head import keras_probabilities, pair
from effv2_keras.export.source import load_source


class Predictor:
    """Base: ``kind``, ``image_size`` ((h, w) or None when any size works), ``class_names``
    (None when unknown) and the ``crop_fraction`` its images are prepared with."""

    kind = "?"

    def __init__(self, path, image_size=None, class_names=None,
                 crop_fraction: Optional[float] = None):
        self.path = Path(path) if path is not None else None
        self.image_size: Optional[Tuple[int, int]] = pair(image_size) if image_size else None
        self.class_names: Optional[List[str]] = list(class_names) if class_names else None
        self.crop_fraction = crop_fraction or images_lib.DEFAULT_CROP_FRACTION

    def class_name(self, index: int) -> str:
        """The name of output ``index`` (``class_<index>`` when the names are unknown)."""
        return self.class_names[index] if self.class_names else f"class_{index}"

    def predict(self, images, batch_size: int = 32) -> np.ndarray:
        images = images_lib.check_image_batch(images)
        if self.image_size and tuple(images.shape[1:3]) != tuple(self.image_size):
            raise ExportError(f"{self.kind} model takes {self.image_size[0]}x{self.image_size[1]} images; "
                              f"got {images.shape[1]}x{images.shape[2]}.")
        outputs = [self._predict(images[i:i + batch_size]) for i in range(0, len(images), batch_size)]
        return np.concatenate(outputs, axis=0).astype(np.float32)

    def predict_files(self, paths: Sequence, image_size=None,
                      crop_fraction: Optional[float] = None) -> np.ndarray:
        """Probabilities of image files, decoded and cropped as the model was evaluated."""
        size = image_size or self.image_size
        if size is None:
            raise ExportError(f"{self.path} accepts any image size: pass {{image_size}}.", "image_size")
        return self.predict(images_lib.load_image_files(paths, pair(size), crop_fraction or self.crop_fraction))

    def _predict(self, batch: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class KerasPredictor(Predictor):
    """A Keras model, ``.keras`` file or run directory (its ``run.json`` gives names, size, crop)."""

    kind = "keras"

    def __init__(self, model_or_path, image_size=None, class_names=None):
        source = load_source(model_or_path, class_names)
        self.model = source.model
        self.head = source.classifier("prediction")
        if image_size is None:
            try:
                image_size = source.fixed_size()
            except ExportError:
                image_size = None  # any size, and no run or variant to say which
        super().__init__(source.path, image_size, source.class_names, source.crop_fraction)

    def _predict(self, batch):
        return keras_probabilities(self.model, batch, batch_size=len(batch))


class SavedModelPredictor(Predictor):
    kind = "saved_model"

    def __init__(self, path, image_size=None, class_names=None):
        metadata = read_metadata(path)
        # Keep the loaded object alive while its functions are used (TF frees its
        # variables with it: "function-local variables ... deleted").
        self.loaded = tf.saved_model.load(str(path))
        if "serving_default" not in self.loaded.signatures:
            raise ExportError(f"{path}: SavedModel without a serving_default signature.")
        self.function = self.loaded.signatures["serving_default"]
        inputs = self.function.structured_input_signature[1]
        if len(inputs) != 1:
            raise ExportError(f"{path}: serving_default takes {len(inputs)} inputs; "
                              "expected one image batch.")
        (self.input_key, spec), = inputs.items()
        if spec.dtype != tf.float32 or spec.shape.rank != 4 or spec.shape[-1] != 3:
            raise ExportError(f"{path}: serving_default takes {spec.dtype.name} {spec.shape}; "
                              "expected float32 [batch, H, W, 3] images.")
        outputs = self.function.structured_outputs
        self.output_key = "probabilities" if "probabilities" in outputs else (
            next(iter(outputs)) if len(outputs) == 1 else None)
        if self.output_key is None:
            raise ExportError(f"{path}: no 'probabilities' output in serving_default ({', '.join(outputs)}).")
        static = tuple(spec.shape[1:3]) if spec.shape[1] and spec.shape[2] else None
        size = image_size or static or metadata.get("image_size")
        super().__init__(path, size, class_names or metadata.get("class_names"), metadata.get("crop_fraction"))

    def _predict(self, batch):
        return self.function(**{self.input_key: tf.constant(batch)})[self.output_key].numpy()


class HubPredictor(Predictor):
    kind = "tfhub"

    def __init__(self, path, image_size=None, class_names=None):
        from effv2_keras.export.tfhub import load_module

        metadata = read_metadata(path)
        if metadata.get("flavour") == "feature_vector":
            raise ExportError(f"{path} is a feature_vector module: it has no classifier to predict with.")
        self.module = load_module(path)
        self.activation = metadata.get("activation", "softmax")
        super().__init__(path, image_size or metadata.get("image_size"),
                         class_names or metadata.get("class_names"))

    def _predict(self, batch):
        logits = self.module(tf.constant(batch / 255.0, tf.float32), training=False)
        return (tf.sigmoid(logits) if self.activation == "sigmoid" else tf.nn.softmax(logits, -1)).numpy()


class TFLitePredictor(Predictor):
    """Runs a .tflite file in ai_edge_litert's interpreter (not the deprecated tf.lite one)."""

    kind = "tflite"

    def __init__(self, path, image_size=None, class_names=None, num_threads: Optional[int] = None):
        from ai_edge_litert.interpreter import Interpreter

        metadata = read_metadata(path)
        try:
            self.interpreter = Interpreter(model_path=str(path), num_threads=num_threads)
        except (ValueError, RuntimeError) as error:
            raise ExportError(f"{path}: not a valid TFLite model ({first_line(error)}).") from None
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        shape = self.input["shape"]
        if len(shape) != 4 or shape[-1] != 3:
            raise ExportError(f"{path}: input shape {list(shape)}; expected [batch, H, W, 3].")
        super().__init__(path, image_size or (int(shape[1]), int(shape[2])),
                         class_names or metadata.get("class_names"))

    @property
    def input_dtype(self):
        return self.input["dtype"]

    @property
    def output_dtype(self):
        return self.output["dtype"]

    def _predict(self, batch):
        interpreter = self.interpreter
        if list(self.input["shape"]) != list(batch.shape):
            interpreter.resize_tensor_input(self.input["index"], list(batch.shape))
            interpreter.allocate_tensors()
            self.input = interpreter.get_input_details()[0]
            self.output = interpreter.get_output_details()[0]
        elif not getattr(self, "_allocated", False):
            interpreter.allocate_tensors()
        self._allocated = True
        interpreter.set_tensor(self.input["index"], _quantize(batch, self.input))
        interpreter.invoke()
        return _dequantize(interpreter.get_tensor(self.output["index"]), self.output)


def _quantize(values: np.ndarray, detail) -> np.ndarray:
    dtype = detail["dtype"]
    if dtype == np.float32:
        return values.astype(np.float32)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(values / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(values: np.ndarray, detail) -> np.ndarray:
    if detail["dtype"] == np.float32:
        return values
    scale, zero_point = detail["quantization"]
    return (values.astype(np.float32) - zero_point) * scale


class OnnxPredictor(Predictor):
    kind = "onnx"

    def __init__(self, path, image_size=None, class_names=None):
        try:
            import onnxruntime
        except ImportError:
            raise ExportError("running ONNX models needs onnxruntime: pip install onnxruntime.") from None
        metadata = read_metadata(path)
        self.session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        # Converted from a serving SavedModel the graph has several named outputs; ours has one.
        outputs = [o.name for o in self.session.get_outputs()]
        self.output_name = "probabilities" if "probabilities" in outputs else outputs[0]
        shape = self.session.get_inputs()[0].shape
        static = (shape[1], shape[2]) if all(isinstance(s, int) for s in shape[1:3]) else None
        super().__init__(path, image_size or static or metadata.get("image_size"),
                         class_names or metadata.get("class_names"))

    def _predict(self, batch):
        return self.session.run([self.output_name], {self.input_name: batch.astype(np.float32)})[0]


def load_predictor(model, image_size=None, class_names=None) -> Predictor:
    """A predictor for a Keras model, ``.keras`` file, run directory, SavedModel
    (TF Serving or TF-Hub), ``.tflite`` or ``.onnx`` file (or a directory holding one)."""
    if isinstance(model, keras.Model):
        return KerasPredictor(model, image_size, class_names)
    path = Path(model)
    if not path.exists():
        raise ExportError(f"{path}: no such file or directory.")
    if path.is_dir():
        if (path / "saved_model.pb").is_file():
            kind = read_metadata(path).get("format")
            cls = HubPredictor if kind == "tfhub" else SavedModelPredictor
            return cls(path, image_size, class_names)
        if not run_dir.manifest_path(path).is_file():
            for name, cls in (("model.tflite", TFLitePredictor), ("model.onnx", OnnxPredictor)):
                if (path / name).is_file():
                    return cls(path / name, image_size, class_names)
        return KerasPredictor(path, image_size, class_names)
    suffix = path.suffix.lower()
    if suffix == ".tflite":
        return TFLitePredictor(path, image_size, class_names)
    if suffix == ".onnx":
        return OnnxPredictor(path, image_size, class_names)
    if suffix == ".keras":
        return KerasPredictor(path, image_size, class_names)
    raise ExportError(f"{path}: unknown model format (expected .keras, a run directory, a SavedModel "
                      "directory, .tflite or .onnx).")
