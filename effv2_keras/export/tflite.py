"""TFLite / LiteRT flatbuffers: fp32, fp16 weights, dynamic-range int8, full int8
and int16x8 (int16 activations, int8 weights).

The converter starts from a SavedModel of the inference function
(``TFLiteConverter.from_saved_model``); ``from_concrete_functions`` on a Keras
model silently produced a broken model here, so it is never used. Every file
is run once in ``ai_edge_litert``'s interpreter before it is returned.

Input: float32 [batch, H, W, 3], 0-255 pixels (batch 1 by default, resizable);
output: probabilities. With ``quantize="int8", int8_io=True`` both are int8,
(de)quantized with the tensors' scale and zero point.

Full-integer options that trade size/speed for accuracy (measured in docs/EXPORT.md):
``quantize="int16x8"`` keeps activations in int16 (16-bit rounding noise instead
of 8-bit; float input/output); for int8, ``calibration_percentile=90`` takes
activation ranges from percentiles of per-image extrema instead of the min/max
over all representative images, and ``float_fallback=("se",)`` etc. keeps chosen
ops in float (TFLite's QuantizationDebugger denylist, see ``FLOAT_FALLBACK_GROUPS``).

Example:
    >>> from effv2_keras import export
    >>> export.export_tflite("runs/clothing", "exported/tflite_fp16", quantize="fp16")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from effv2_keras.export.artifacts import prepare_out_dir, write_labels, write_metadata
from effv2_keras.export.errors import ExportError
from effv2_keras.export.graph import save_probabilities_model
from effv2_keras.export.images import check_image_batch, load_split
from effv2_keras.export.source import load_source

QUANTIZATIONS = (None, "fp16", "dynamic", "int8", "int16x8")
FULL_INTEGER = ("int8", "int16x8")
FILENAME = "model.tflite"


REPRESENTATIVE_COUNT = 200


def export_tflite(model, out_dir, *, quantize: Optional[str] = None, int8_io: bool = False,
                  representative_images=None, representative_count: int = REPRESENTATIVE_COUNT,
                  image_size=None,
                  use_ema: bool = True, class_names=None,
                  float_fallback: Sequence[str] = (),
                  calibration_percentile: Optional[float] = None) -> Path:
    """Converts a model to ``out_dir/model.tflite`` (plus labels.txt and metadata).

    Args:
        model: a built Keras model, a ``.keras`` file or a run directory.
        out_dir: output directory.
        quantize: None (fp32), "fp16" (fp16 weights), "dynamic" (int8 weights,
            float activations), "int8" (full integer, needs ``representative_images``)
            or "int16x8" (int16 activations, int8 weights, float input/output; needs
            ``representative_images``).
        int8_io: with "int8", make the input and output tensors int8 too.
        representative_images: real images to calibrate activation ranges: float32
            [n, H, W, 3] in 0-255, or a dataset (an image folder or ``effv2_keras.data``
            spec) whose train split is sampled at the model's size and the run's crop.
        representative_count: images sampled from a dataset ``representative_images``
            (0 or None: the whole train split).
        image_size: fixed H, W of the flatbuffer; default the model's own size (or the
            run's, else the variant's, eval size).
        use_ema: an in-memory model compiled with ``use_ema=True`` exports its averages.
        class_names: written to labels.txt and the metadata (default: the run's ``run.json``).
        float_fallback: with "int8", ops kept in float (quantized around them): group
            names of ``FLOAT_FALLBACK_GROUPS`` ("se", "sigmoid", "head", "stem"), TFLite
            op types in capitals (e.g. "LOGISTIC") or substrings of op output names
            (e.g. "block6b_"). Uses TFLite's QuantizationDebugger denylist.
        calibration_percentile: with "int8", activation ranges from the P-th
            percentile of each tensor's per-image maximum (and the (100-P)-th of
            its per-image minimum) over the representative images, instead of
            TFLite's min/max over all of them (which rare outliers stretch, so
            every other value gets coarser steps). 90 measured best in docs/EXPORT.md.

    Returns:
        The path of the ``.tflite`` file.
    """
    float_fallback = tuple(float_fallback or ())
    _check_options(quantize, int8_io, representative_images, float_fallback, calibration_percentile)
    start = time.perf_counter()
    source = load_source(model, class_names, use_ema)
    model, head, names = source.model, source.classifier("TFLite export"), source.class_names
    size = source.fixed_size(image_size)
    if quantize in FULL_INTEGER:
        representative_images = _representative(representative_images, representative_count, size,
                                                source.crop_fraction)
    with tempfile.TemporaryDirectory(prefix="effv2_tflite_") as tmp:
        save_probabilities_model(model, head, size, tmp, "TFLite export")
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serving_default"])
        _configure(converter, quantize, int8_io, representative_images)
        if float_fallback or calibration_percentile is not None:
            flatbuffer, fallback_ops = _convert_calibrated(
                converter, representative_images, float_fallback, calibration_percentile)
        else:
            flatbuffer, fallback_ops = converter.convert(), None
    out = prepare_out_dir(out_dir)
    path = out / FILENAME
    path.write_bytes(flatbuffer)
    _smoke_test(path, size)
    write_labels(out, names)
    write_metadata(
        out, format="tflite", file=FILENAME, model=model.name, quantize=quantize or "fp32", int8_io=int8_io,
        image_size=list(size), input_range="0-255", class_names=names, num_classes=head.num_classes,
        activation=head.activation, ema=source.ema,
        representative_images=len(representative_images) if quantize in FULL_INTEGER else None,
        float_fallback=list(float_fallback) or None,
        float_fallback_matched=fallback_ops, calibration_percentile=calibration_percentile,
        seconds=round(time.perf_counter() - start, 2))
    return path


def _representative(images_or_data, count, size, crop_fraction) -> np.ndarray:
    """Calibration images at ``size``: the array given, or a sample of a dataset's train split."""
    if isinstance(images_or_data, (str, os.PathLike)):
        return load_split(images_or_data, size, "train", count or None, crop_fraction=crop_fraction).images
    images = check_image_batch(images_or_data)
    if tuple(images.shape[1:3]) != tuple(size):
        raise ExportError(f"{{representative_images}} are {images.shape[1]}x{images.shape[2]}, the model "
                          f"input is {size[0]}x{size[1]}.", "representative_images")
    return images


def _no_images(images_or_data) -> bool:
    if isinstance(images_or_data, (str, os.PathLike)):
        return not str(images_or_data)
    return images_or_data is None or len(images_or_data) == 0


def _check_options(quantize, int8_io, representative_images, float_fallback=(), calibration_percentile=None):
    """One-line errors for option combinations that cannot work (before anything loads)."""
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"{{quantize}} must be one of fp16, dynamic, int8, int16x8 (or None for fp32); "
                          f"got {quantize!r}.", "quantize")
    if quantize in FULL_INTEGER and _no_images(representative_images):
        raise ExportError(f"full-integer {quantize} quantization needs representative images: pass "
                          "{representative_images} (real images or a dataset, e.g. the training folder).",
                          "representative_images")
    if int8_io and quantize != "int8":
        raise ExportError("int8 input/output ({int8_io}) needs {quantize} int8.", "int8_io", "quantize")
    for argument, value in (("float_fallback", float_fallback),
                            ("calibration_percentile", calibration_percentile is not None)):
        if value and quantize != "int8":
            raise ExportError(f"{{{argument}}} needs {{quantize}} int8.", argument, "quantize")
        if value and int8_io:
            raise ExportError(f"{{{argument}}} keeps float input/output; drop {{int8_io}}.", argument, "int8_io")
    for entry in float_fallback:
        if not isinstance(entry, str) or not entry.strip():
            raise ExportError(f"{{float_fallback}} entries must be non-empty strings; got {entry!r}.",
                              "float_fallback")
    if calibration_percentile is not None and not 50 <= calibration_percentile <= 100:
        raise ExportError(f"{{calibration_percentile}} must be in [50, 100]; got {calibration_percentile}.",
                          "calibration_percentile")


def _configure(converter, quantize, int8_io, representative_images):
    if quantize is None:
        return
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if quantize == "fp16":
        converter.target_spec.supported_types = [tf.float16]
    elif quantize in FULL_INTEGER:
        def representative_dataset():
            for image in representative_images:
                yield [image[None]]

        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.TFLITE_BUILTINS_INT8 if quantize == "int8"
            else tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8


# Named groups of ``float_fallback``: (TFLite op types, substrings of op output names).
FLOAT_FALLBACK_GROUPS = {
    "se": ((), ("_se_",)),                      # squeeze-excite: mean, reduce/expand convs, sigmoids, excite mul
    "sigmoid": (("LOGISTIC",), ()),             # every sigmoid (SiLU's and squeeze-excite's)
    "head": (("FULLY_CONNECTED", "SOFTMAX"), ("top_conv", "top_activation", "avg_pool")),
    "stem": ((), ("stem_conv", "stem_activation")),
}


def _convert_calibrated(converter, representative_images, float_fallback, percentile):
    """Full int8 through TFLite's QuantizationDebugger: calibrate once, optionally
    replace the min/max activation ranges by percentile ranges, and quantize with
    the ``float_fallback`` ops denylisted (kept in float).

    Returns the flatbuffer and what was kept in float ({"op_types": [...], "nodes": count}, or None).
    """
    debug = tf.lite.experimental

    def dataset():
        for image in representative_images[:8]:
            yield [image[None]]

    debugger = debug.QuantizationDebugger(converter=converter, debug_dataset=dataset,
                                          debug_options=debug.QuantizationDebugOptions())
    if percentile is not None:
        debugger.calibrated_model = _percentile_ranges(debugger.calibrated_model, representative_images,
                                                       percentile)
    matched = None
    if float_fallback:
        op_types, nodes = _resolve_float_fallback(debugger.calibrated_model, float_fallback)
        matched = {"op_types": op_types, "nodes": len(nodes)}
    else:
        op_types, nodes = [], []
    # Re-instruments the debug model with the new ranges/denylist; then the plain model.
    debugger.options = debug.QuantizationDebugOptions(denylisted_ops=op_types or None,
                                                      denylisted_nodes=nodes or None)
    return debugger.get_nondebug_quantized_model(), matched


def ops_of(flatbuffer: bytes) -> List[Tuple[str, List[int]]]:
    """(op type, output tensor indices) of every op of a flatbuffer's main graph, read with
    ai_edge_litert's flatbuffer_utils (tensor indices are the interpreter's).

        >>> ops_of(open("exported/tflite_int8/model.tflite", "rb").read())[:1]  # doctest: +SKIP
        [('QUANTIZE', [180])]
    """
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    return [(flatbuffer_utils.opcode_to_name(model, op.opcodeIndex), [int(i) for i in op.outputs])
            for op in model.subgraphs[0].operators]


def _float_op_outputs(flatbuffer):
    """[(op type, output tensor name)] of a float (calibrated) flatbuffer."""
    from ai_edge_litert.tools import flatbuffer_utils

    tensors = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer)).subgraphs[0].tensors
    return [(op, tensors[i].name.decode()) for op, outputs in ops_of(flatbuffer) for i in outputs if i >= 0]


def _resolve_float_fallback(calibrated, float_fallback):
    nodes_by_op = _float_op_outputs(calibrated)
    op_types, nodes = set(), set()
    for entry in float_fallback:
        if entry in FLOAT_FALLBACK_GROUPS:
            types, substrings = FLOAT_FALLBACK_GROUPS[entry]
        elif entry.isupper():
            types, substrings = (entry,), ()
        else:
            types, substrings = (), (entry,)
        matched = [name for op, name in nodes_by_op
                   if op in types or any(sub in name for sub in substrings)]
        if not matched:
            raise ExportError(f"{{float_fallback}} entry {entry!r} matches no op of the model "
                              f"(groups: {', '.join(FLOAT_FALLBACK_GROUPS)}; or an op type such as "
                              f"LOGISTIC, or a substring of an op name).", "float_fallback")
        op_types.update(t for t in types if any(op == t for op, _ in nodes_by_op))
        nodes.update(name for op, name in nodes_by_op
                     if op not in types and any(sub in name for sub in substrings))
    return sorted(op_types), sorted(nodes)


def _percentile_ranges(calibrated, representative_images, percentile):
    """The calibrated flatbuffer with every per-tensor activation range replaced by
    [P_(100-p) of per-image minima, P_p of per-image maxima] over the images."""
    from ai_edge_litert.interpreter import Interpreter
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(calibrated))
    ranged = {i: t for i, t in enumerate(model.subgraphs[0].tensors)
              if t.quantization is not None and t.quantization.min is not None
              and len(t.quantization.min) == 1}
    interpreter = Interpreter(model_content=calibrated, experimental_preserve_all_tensors=True)
    interpreter.allocate_tensors()
    index = interpreter.get_input_details()[0]["index"]
    lows, highs = {i: [] for i in ranged}, {i: [] for i in ranged}
    for image in representative_images:
        interpreter.set_tensor(index, image[None].astype(np.float32))
        interpreter.invoke()
        for i in ranged:
            try:
                values = interpreter.get_tensor(i)
            except ValueError:  # not materialised (folded away)
                continue
            if values.size:
                lows[i].append(float(values.min()))
                highs[i].append(float(values.max()))
    for i, tensor in ranged.items():
        if not highs[i]:
            continue
        low = min(float(np.percentile(lows[i], 100 - percentile)), 0.0)
        high = max(float(np.percentile(highs[i], percentile)), 0.0)
        if high - low <= 0:
            continue
        tensor.quantization.min = np.array([low], np.float32)
        tensor.quantization.max = np.array([high], np.float32)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _smoke_test(path: Path, size) -> None:
    """Runs the flatbuffer once on a grey image: it must load and give finite outputs."""
    from effv2_keras.export.predictor import TFLitePredictor

    probabilities = TFLitePredictor(path).predict(np.full((1, *size, 3), 128.0, np.float32))
    if not np.all(np.isfinite(probabilities)):
        path.unlink()
        raise ExportError(f"the converted TFLite model outputs non-finite values; {path} was removed.")
