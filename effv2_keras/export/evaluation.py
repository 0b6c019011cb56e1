"""Scoring any artifact on a labelled dataset: top-1/top-k, the per-class report and the
confusion matrix (scikit-learn's ``classification_report`` and ``ConfusionMatrixDisplay``).

The model is anything ``load_predictor`` reads (so an int8 ``.tflite`` is scored as its
Keras model is); the data is a folder of class folders or an ``effv2_keras.data`` spec,
prepared at the model's size with the run's crop; labels are matched to the model's
classes by name.

    >>> from effv2_keras.export import evaluate
    >>> result = evaluate("exported/tflite_int8/model.tflite", "data/pets", count=200)  # doctest: +SKIP
    >>> round(result.top1, 3), result.save("eval/int8")  # doctest: +SKIP
    (0.915, PosixPath('eval/int8'))
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np

from effv2_keras.export.errors import ExportError
from effv2_keras.export.images import load_split
from effv2_keras.export.predictor import load_predictor
from effv2_keras.export.verification import align_labels

TOP_K = 5
FILES = ("metrics.json", "report.txt", "confusion_matrix.png")


@dataclasses.dataclass
class Evaluation:
    """The scores of one model on one split."""

    model: str
    kind: str
    data: str
    split: str
    count: int
    tta: str
    top1: float
    k: int
    topk: float
    class_names: List[str]
    confusion_matrix: np.ndarray  # int [true, predicted]
    per_class: Dict[str, dict]  # name -> precision, recall, f1-score, support
    report: str  # scikit-learn's text report

    def to_dict(self) -> dict:
        """JSON-ready fields (the text report left out)."""
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "report"}
        values["confusion_matrix"] = self.confusion_matrix.tolist()
        return values

    def save(self, out_dir) -> Path:
        """Writes ``metrics.json``, ``report.txt`` and ``confusion_matrix.png`` to ``out_dir``."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        (out / "report.txt").write_text(self.report)
        plot_confusion_matrix(self.confusion_matrix, self.class_names, out / "confusion_matrix.png",
                              f"{Path(self.model).name}: top-1 {self.top1:.3f}")
        return out


TTA = ("none", "flip")


def evaluate(model, data, *, split: str = "test", count: Optional[int] = None, image_size=None,
             batch_size: int = 32, tta: str = "none") -> Evaluation:
    """Scores ``model`` (any artifact ``load_predictor`` reads) on ``count`` images (None:
    all) of ``data``'s ``split`` (test falls back to val).

    ``tta="flip"``: test-time augmentation, the mean of the probabilities of each image and its
    mirror image (for data whose labels survive a horizontal flip; never inside exported models).
    """
    if tta not in TTA:
        raise ExportError(f"{{tta}} must be one of {', '.join(TTA)}, got {tta!r}.", "tta")
    from sklearn.metrics import classification_report, confusion_matrix

    predictor = load_predictor(model)
    size = image_size or predictor.image_size
    if size is None:
        raise ExportError(f"{model} accepts any image size: pass {{image_size}}.", "image_size")
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = load_split(data, size, split, count, batch_size=batch_size, crop_fraction=predictor.crop_fraction)
    if batch.labels is None:
        raise ExportError(f"{data} has no class folders: evaluation needs labelled images.")
    probabilities = predictor.predict(batch.images, batch_size)
    if tta == "flip":
        probabilities = (probabilities + predictor.predict(batch.images[:, :, ::-1], batch_size)) / 2
    classes = probabilities.shape[-1]
    labels = align_labels(batch.labels, batch.class_names, predictor.class_names)
    if labels.max() >= classes:
        raise ExportError(f"the data has {len(batch.class_names or [])} classes, the model {classes} outputs.")
    names = predictor.class_names or batch.class_names
    if not names or len(names) != classes:
        names = [predictor.class_name(i) for i in range(classes)]
    predicted = probabilities.argmax(-1)
    k = min(TOP_K, classes)
    top_k = np.argsort(-probabilities, axis=-1)[:, :k]
    ids = list(range(classes))
    report = dict(labels=ids, target_names=names, zero_division=0)
    per_class = classification_report(labels, predicted, output_dict=True, **report)
    return Evaluation(
        model=str(model), kind=predictor.kind, data=str(data), split=split, count=int(len(labels)), tta=tta,
        top1=float(np.mean(predicted == labels)), k=k, topk=float(np.mean(np.any(top_k == labels[:, None], 1))),
        class_names=names, confusion_matrix=confusion_matrix(labels, predicted, labels=ids),
        per_class={n: per_class[n] for n in names},
        report=classification_report(labels, predicted, digits=4, **report))


def plot_confusion_matrix(matrix: np.ndarray, names: List[str], path, title: str) -> None:
    """Draws ``matrix`` with scikit-learn's ``ConfusionMatrixDisplay`` into a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    size = max(4.0, 0.5 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    display = ConfusionMatrixDisplay(matrix, display_labels=names)
    display.plot(ax=axis, cmap="Blues", colorbar=False, xticks_rotation="vertical",
                 text_kw={"fontsize": 7})
    axis.set_title(title)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
