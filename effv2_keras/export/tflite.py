"""TFLite / LiteRT flatbuffers: fp32, fp16 weights, dynamic-range int8 and full int8.

The converter starts from a SavedModel of the inference function
(``TFLiteConverter.from_saved_model``); ``from_concrete_functions`` on a Keras
model silently produced a broken model here, so it is never used. Every file
is run once in ``ai_edge_litert``'s interpreter before it is returned.

Input: float32 [batch, H, W, 3], 0-255 pixels (batch 1 by default, resizable);
output: probabilities. With ``quantize="int8", int8_io=True`` both are int8,
(de)quantized with the tensors' scale and zero point.

Example:
    >>> from effv2_keras import export
    >>> export.export_tflite("runs/clothing", "exported/tflite_fp16", quantize="fp16")  # doctest: +SKIP
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Optional

import numpy as np
import tensorflow as tf

from effv2_keras.export import common
from effv2_keras.export.common import ExportError
from effv2_keras.export.images import check_image_batch

QUANTIZATIONS = (None, "fp16", "dynamic", "int8")
FILENAME = "model.tflite"


def export_tflite(model, out_dir, *, quantize: Optional[str] = None, int8_io: bool = False,
                  representative_images: Optional[np.ndarray] = None, image_size=None,
                  use_ema: bool = True, class_names=None) -> Path:
    """Converts a model to ``out_dir/model.tflite`` (plus labels.txt and metadata).

    Args:
        model: a built Keras model, a ``.keras`` file or a run directory.
        out_dir: output directory.
        quantize: None (fp32), "fp16" (fp16 weights), "dynamic" (int8 weights,
            float activations) or "int8" (full integer, needs ``representative_images``).
        int8_io: with "int8", make the input and output tensors int8 too.
        representative_images: float32 [n, H, W, 3] real images in 0-255
            (a few hundred from the training data) to calibrate activation ranges.
        image_size: fixed H, W of the flatbuffer; default the model's own size.
        use_ema: export the EMA weights when the run has them.
        class_names: written to labels.txt (read from a run directory when None).

    Returns:
        The path of the ``.tflite`` file.
    """
    _check_options(quantize, int8_io, representative_images)
    start = time.perf_counter()
    source = common.load_source(model, class_names, use_ema)
    model = source.model
    head = common.split_head(model)
    if head.dense is None:
        raise ExportError(f"model {model.name!r} has no classifier head; TFLite export needs one.")
    names = common.check_class_names(source.class_names, head)
    size = common.resolve_image_size(model, image_size, source.image_size)
    if representative_images is not None:
        representative_images = check_image_batch(representative_images)
        if tuple(representative_images.shape[1:3]) != size:
            raise ExportError(f"representative images are {representative_images.shape[1:3]}, "
                              f"the model input is {size}.")
    with tempfile.TemporaryDirectory(prefix="effv2_tflite_") as tmp:
        common.save_probabilities_model(model, head, size, tmp, "TFLite export")
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        _configure(converter, quantize, int8_io, representative_images)
        flatbuffer = converter.convert()
    out = common.prepare_out_dir(out_dir)
    path = out / FILENAME
    path.write_bytes(flatbuffer)
    _smoke_test(path, size)
    common.write_labels(out, names)
    common.write_metadata(
        out, format="tflite", file=FILENAME, model=model.name, quantize=quantize or "fp32", int8_io=int8_io,
        image_size=list(size), input_range="0-255", class_names=names, num_classes=head.num_classes,
        activation=head.activation, ema=source.ema,
        representative_images=None if representative_images is None else len(representative_images),
        seconds=round(time.perf_counter() - start, 2))
    return path


def _check_options(quantize, int8_io, representative_images):
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize must be one of fp16, dynamic, int8 (or None for fp32); "
                          f"got {quantize!r}.")
    if quantize == "int8" and (representative_images is None or len(representative_images) == 0):
        raise ExportError("full-integer int8 quantization needs representative images: pass "
                          "--representative_data DATA (real images, e.g. the training folder).")
    if int8_io and quantize != "int8":
        raise ExportError("int8 input/output (--int8_io) needs --quantize int8.")


def _configure(converter, quantize, int8_io, representative_images):
    if quantize is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        def representative_dataset():
            for image in representative_images:
                yield [image[None]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8


def _smoke_test(path: Path, size) -> None:
    """Runs the flatbuffer once on a grey image: it must load and give finite outputs."""
    from effv2_keras.export.predictor import TFLitePredictor

    probabilities = TFLitePredictor(path).predict(np.full((1, *size, 3), 128.0, np.float32))
    if not np.all(np.isfinite(probabilities)):
        path.unlink()
        raise ExportError(f"the converted TFLite model outputs non-finite values; {path} was removed.")
