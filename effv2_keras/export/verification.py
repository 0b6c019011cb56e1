"""Verification: does an artifact compute what the Keras model computes, on real images?

``verify(model, artifact, images, labels)`` reloads the artifact, runs both on
the same float32 0-255 images and reports the max abs difference of the
probabilities, top-1 agreement and, with labels, both accuracies.
``verify_on_data(reference, artifact, data)`` does the same on a sample of a dataset,
at the artifact's size and the run's crop, with the labels mapped by class name:

    >>> result = verify_on_data("runs/pets", "exported/tflite/model.tflite", "data/pets")  # doctest: +SKIP
    >>> result.passed, result.failures()  # doctest: +SKIP
    (True, [])

Tolerances (issue #4): fp32 artifacts (SavedModel, TF-Hub, TFLite fp32, ONNX)
max abs diff <= 1e-4; fp16 top-1 agreement >= 99%; int8 (dynamic and full) and
int16x8 top-1 agreement >= 97% and accuracy drop <= 1 point.
"""

from __future__ import annotations

import dataclasses
import time
from typing import List, Optional, Sequence

import numpy as np

from effv2_keras.export.artifacts import directory_size, read_metadata
from effv2_keras.export.errors import ExportError
from effv2_keras.export.head import keras_probabilities
from effv2_keras.export.images import load_split
from effv2_keras.export.predictor import Predictor, load_predictor
from effv2_keras.export.source import load_source

FP32_MAX_ABS_DIFF = 1e-4
FP16_MIN_AGREEMENT = 0.99
INT8_MIN_AGREEMENT = 0.97
INT8_MAX_ACCURACY_DROP = 0.01


@dataclasses.dataclass
class VerifyResult:
    artifact: str
    kind: str
    precision: str  # fp32, fp16, dynamic, int8 or int16x8
    count: int
    max_abs_diff: float
    mean_abs_diff: float
    top1_agreement: float
    reference_accuracy: Optional[float] = None
    accuracy: Optional[float] = None
    ms_per_image: Optional[float] = None
    size_bytes: Optional[int] = None

    @property
    def accuracy_drop(self) -> Optional[float]:
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.accuracy

    def failures(self) -> List[str]:
        """What misses the issue's tolerances (empty when the artifact passes)."""
        problems = []
        if self.precision == "fp32" and not self.max_abs_diff <= FP32_MAX_ABS_DIFF:
            problems.append(f"max abs diff {self.max_abs_diff:.2e} > {FP32_MAX_ABS_DIFF:.0e}")
        if self.precision == "fp16" and self.top1_agreement < FP16_MIN_AGREEMENT:
            problems.append(f"top-1 agreement {self.top1_agreement:.1%} < {FP16_MIN_AGREEMENT:.0%}")
        if self.precision in ("dynamic", "int8", "int16x8"):
            if self.top1_agreement < INT8_MIN_AGREEMENT:
                problems.append(f"top-1 agreement {self.top1_agreement:.1%} < {INT8_MIN_AGREEMENT:.0%}")
            drop = self.accuracy_drop
            if drop is not None and drop > INT8_MAX_ACCURACY_DROP:
                problems.append(f"accuracy drop {drop:.1%} > {INT8_MAX_ACCURACY_DROP:.0%}")
        if not np.isfinite(self.max_abs_diff):
            problems.append("non-finite outputs")
        return problems

    @property
    def passed(self) -> bool:
        return not self.failures()


def artifact_precision(predictor: Predictor) -> str:
    metadata = read_metadata(predictor.path) if predictor.path is not None else {}
    return metadata.get("quantize", "fp32")


def verify(model, artifact, images, labels=None, *, batch_size: int = 32,
           reference: Optional[np.ndarray] = None) -> VerifyResult:
    """Compares an artifact with the Keras model on the same images.

    Args:
        model: the reference Keras model (or .keras file / run directory).
        artifact: a path (SavedModel dir, TF-Hub dir, .tflite, .onnx, .keras) or a Predictor.
        images: float32 [n, H, W, 3] real images in 0-255.
        labels: optional int class ids [n] for the accuracies.
        reference: precomputed Keras probabilities for ``images`` (saves time
            when several artifacts are verified against one model).
    """
    predictor = artifact if isinstance(artifact, Predictor) else load_predictor(artifact)
    if reference is None:
        reference = keras_probabilities(load_source(model).model, images, batch_size)
    start = time.perf_counter()
    output = predictor.predict(images, batch_size)
    seconds = time.perf_counter() - start
    if output.shape != reference.shape:
        raise ExportError(f"{predictor.path}: outputs {output.shape}, "
                                 f"the Keras model {reference.shape}.")
    diff = np.abs(output.astype(np.float64) - reference.astype(np.float64))
    agreement = float(np.mean(np.argmax(output, -1) == np.argmax(reference, -1)))
    ref_acc = acc = None
    if labels is not None:
        labels = np.asarray(labels)
        ref_acc = float(np.mean(np.argmax(reference, -1) == labels))
        acc = float(np.mean(np.argmax(output, -1) == labels))
    return VerifyResult(
        artifact=str(predictor.path), kind=predictor.kind, precision=artifact_precision(predictor),
        count=len(images), max_abs_diff=float(np.max(diff)) if diff.size else float("nan"),
        mean_abs_diff=float(np.mean(diff)) if diff.size else float("nan"), top1_agreement=agreement,
        reference_accuracy=ref_acc, accuracy=acc, ms_per_image=1000.0 * seconds / max(1, len(images)),
        size_bytes=directory_size(predictor.path) if predictor.path is not None else None)


def verify_on_data(reference, artifact, data, *, split: str = "test", count: Optional[int] = 256,
                   image_size=None, batch_size: int = 32) -> VerifyResult:
    """``verify`` on ``count`` images of ``data``'s ``split`` (a folder or data spec).

    ``reference`` is anything ``load_predictor`` reads (the Keras model, its run
    directory, or the SavedModel an ONNX file was converted from). Images are prepared
    at the artifact's size (else the reference's, else ``image_size``) with the
    reference's crop; labels are mapped to the artifact's classes by name.
    """
    target = artifact if isinstance(artifact, Predictor) else load_predictor(artifact)
    source = reference if isinstance(reference, Predictor) else load_predictor(reference)
    size = target.image_size or source.image_size or image_size
    if size is None:
        raise ExportError(f"{target.path} accepts any image size: pass {{image_size}}.", "image_size")
    batch = load_split(data, size, split, count or None, batch_size=batch_size,
                       crop_fraction=source.crop_fraction)
    names = target.class_names or source.class_names
    labels = align_labels(batch.labels, batch.class_names, names)
    return verify(None, target, batch.images, labels, batch_size=batch_size,
                  reference=source.predict(batch.images, batch_size))


def format_table(results: Sequence[VerifyResult]) -> str:
    """A Markdown table of verification results."""
    header = ("| artifact | kind | precision | n | max abs diff | mean abs diff | top-1 agreement "
              "| Keras acc | artifact acc | ms/image | size MB | pass |")
    lines = [header, "|" + "---|" * 12]
    for r in results:
        pct = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        size = "-" if r.size_bytes is None else f"{r.size_bytes / 1e6:.2f}"
        verdict = "yes" if r.passed else "NO: " + "; ".join(r.failures())
        lines.append(f"| {r.artifact} | {r.kind} | {r.precision} | {r.count} | {r.max_abs_diff:.2e} | "
                     f"{r.mean_abs_diff:.2e} | {pct(r.top1_agreement)} | {pct(r.reference_accuracy)} | "
                     f"{pct(r.accuracy)} | {r.ms_per_image:.2f} | {size} | {verdict} |")
    return "\n".join(lines)


def align_labels(labels, data_class_names, model_class_names):
    """Maps dataset label ids to the model's class ids by class name.

    Returns ``labels`` unchanged when either list of names is unknown or they agree.
    """
    if labels is None or not data_class_names or not model_class_names:
        return labels
    if list(data_class_names) == list(model_class_names):
        return labels
    index = {name: i for i, name in enumerate(model_class_names)}
    missing = [n for n in data_class_names if n not in index]
    if missing:
        raise ExportError(f"the data has classes the model does not know: {', '.join(missing[:5])}.")
    mapping = np.array([index[n] for n in data_class_names], np.int64)
    return mapping[np.asarray(labels)]
