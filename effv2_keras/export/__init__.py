"""Exporters: .keras, SavedModel (TF Serving), TF-Hub, TFLite/LiteRT, ONNX; verify(), evaluate().

Every exporter takes a built Keras model, a ``.keras`` file or a run directory and reads
it through one loader (``load_source``: the run's ``run.json`` gives class names,
evaluation size and crop; an in-memory model's EMA is resolved there), traces it in
inference mode (checked: no random ops, dropout or BatchNorm updates in the graph) and
writes one artifact per directory with an ``effv2_export.json`` metadata file; the
``.keras`` export writes a ``run.json`` beside its file.

Modules, imported one way (errors <- head <- graph, source <- the exporters <- predictor
<- verification <- evaluation): ``errors``, ``head`` (shapes and the classifier),
``graph`` (inference-graph checks, the converters' SavedModel), ``source`` (loading),
``artifacts`` (metadata and output folders), ``images`` (decode, crop, dataset samples).

Example:
    >>> import effv2_keras
    >>> from effv2_keras import export
    >>> model = effv2_keras.build("efficientnetv2-b0", width=0.25, depth=0.25,
    ...                           input_shape=(64, 64, 3), classes=10)
    >>> path = export.export_tflite(model, "/tmp/tiny_tflite")  # doctest: +SKIP
    >>> export.verify(model, path, images).max_abs_diff < 1e-4  # doctest: +SKIP
    True
"""

from effv2_keras.export.errors import ExportError
from effv2_keras.export.evaluation import Evaluation, evaluate
from effv2_keras.export.graph import training_ops
from effv2_keras.export.images import decode_and_center_crop, load_image_files, load_split, sample_folder
from effv2_keras.export.keras_format import export_keras
from effv2_keras.export.onnx import export_onnx, is_serving_saved_model, onnx_available
from effv2_keras.export.predictor import Predictor, load_predictor
from effv2_keras.export.saved_model import export_saved_model
from effv2_keras.export.source import Source, load_source
from effv2_keras.export.tflite import export_tflite
from effv2_keras.export.tfhub import HubLayer, export_tfhub, load_module
from effv2_keras.export.verification import VerifyResult, align_labels, format_table, verify, verify_on_data

FORMATS = ("keras", "saved_model", "tfhub", "tflite", "onnx")


def export(model, format: str, out_dir, **options):
    """Dispatches to ``export_<format>``; returns the artifact's path."""
    exporters = {"keras": export_keras, "saved_model": export_saved_model, "tfhub": export_tfhub,
                 "tflite": export_tflite, "onnx": export_onnx}
    if format not in exporters:
        raise ExportError(f"{{format}} must be one of {', '.join(FORMATS)}; got {format!r}.", "format")
    return exporters[format](model, out_dir, **options)


__all__ = [
    "FORMATS", "Evaluation", "ExportError", "HubLayer", "Predictor", "Source", "VerifyResult", "align_labels",
    "decode_and_center_crop", "evaluate", "export", "export_keras", "export_onnx", "export_saved_model",
    "export_tfhub", "export_tflite", "format_table", "is_serving_saved_model", "load_image_files",
    "load_module", "load_predictor", "load_source", "load_split", "onnx_available", "sample_folder",
    "training_ops", "verify", "verify_on_data",
]
