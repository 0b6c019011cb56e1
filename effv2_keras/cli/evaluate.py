"""`effv2 evaluate --model MODEL --data DATA`: top-1/top-5, per-class report, confusion matrix.

MODEL is any artifact `effv2 predict` takes (so an int8 .tflite can be scored
against its Keras model). DATA is read with effv2_keras.data (a folder of class
folders, split or not). Writes metrics.json, report.txt and confusion_matrix.png
to --out when given.

Example:
    effv2 evaluate --model exported/int8/model.tflite --data ../shared/data/clothing160 --out eval/int8
"""

from __future__ import annotations

import json
from pathlib import Path

from absl import app, flags

from effv2_keras.cli.export import fail, make_parser, quiet_logs

FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, ".keras, run directory, SavedModel/TF-Hub directory, .tflite or .onnx.",
                    flag_values=FLAGS)
flags.DEFINE_string("data", None, "Dataset: class folders (optionally in train/val/test) or a data spec.",
                    flag_values=FLAGS)
flags.DEFINE_string("split", "test", "Split to evaluate (test falls back to val).", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Directory for metrics.json, report.txt and confusion_matrix.png.",
                    flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Input size for models that accept any size.", flag_values=FLAGS)
flags.DEFINE_integer("limit", 0, "Evaluate at most this many images (0 = all).", flag_values=FLAGS)
flags.DEFINE_integer("batch_size", 32, "Batch size.", flag_values=FLAGS)
flags.mark_flags_as_required(["model", "data"], flag_values=FLAGS)

parse = make_parser(FLAGS, "usage: effv2 evaluate --model MODEL --data DATA [--split test] [--out DIR]")


def main(argv) -> int:
    from effv2_keras.export import ExportError

    quiet_logs()
    try:
        if len(argv) > 1:
            raise ExportError(f"unexpected arguments: {' '.join(argv[1:])}")
        metrics = evaluate(FLAGS)
    except ExportError as error:
        return fail("evaluate", error)
    print(metrics["report"])
    print(f"top-1 {metrics['top1']:.4f}  top-{metrics['k']} {metrics['topk']:.4f}  on {metrics['count']} "
          f"images of {FLAGS.data} ({metrics['split']})")
    if FLAGS.out:
        print(f"wrote {FLAGS.out}/metrics.json, report.txt, confusion_matrix.png")
    return 0


def evaluate(cfg) -> dict:
    import numpy as np
    from sklearn.metrics import classification_report, confusion_matrix

    from effv2_keras.export import ExportError, load_predictor
    from effv2_keras.export.images import load_split
    from effv2_keras.export.verification import align_labels

    predictor = load_predictor(cfg.model)
    size = cfg.image_size or predictor.image_size
    if size is None:
        raise ExportError(f"{cfg.model} accepts any image size: pass --image_size.")
    size = (size, size) if isinstance(size, int) else tuple(size)
    batch = load_split(cfg.data, size, cfg.split, cfg.limit or None, batch_size=cfg.batch_size)
    if batch.labels is None:
        raise ExportError(f"{cfg.data} has no class folders: evaluation needs labelled images.")
    probabilities = predictor.predict(batch.images, cfg.batch_size)
    classes = probabilities.shape[-1]
    names = predictor.class_names or batch.class_names
    if names and len(names) != classes:
        raise ExportError(f"the model has {classes} outputs but {len(names)} class names.")
    labels = align_labels(batch.labels, batch.class_names, predictor.class_names)
    if labels.max() >= classes:
        raise ExportError(f"the data has {len(batch.class_names or [])} classes, "
                          f"the model {classes} outputs.")
    names = names or [str(i) for i in range(classes)]
    predicted = probabilities.argmax(-1)
    k = min(5, classes)
    top_k = np.argsort(-probabilities, axis=-1)[:, :k]
    matrix = confusion_matrix(labels, predicted, labels=list(range(classes)))
    report = classification_report(labels, predicted, labels=list(range(classes)), target_names=names,
                                   digits=4, zero_division=0)
    per_class = classification_report(labels, predicted, labels=list(range(classes)), target_names=names,
                                      output_dict=True, zero_division=0)
    metrics = {
        "model": str(cfg.model), "kind": predictor.kind, "data": str(cfg.data), "split": cfg.split,
        "count": int(len(labels)), "top1": float(np.mean(predicted == labels)), "k": k,
        "topk": float(np.mean(np.any(top_k == labels[:, None], axis=1))),
        "per_class": {n: per_class[n] for n in names}, "confusion_matrix": matrix.tolist(),
        "class_names": names, "report": report,
    }
    if cfg.out:
        out = Path(cfg.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "metrics.json").write_text(json.dumps({k_: v for k_, v in metrics.items() if k_ != "report"},
                                                     indent=2) + "\n")
        (out / "report.txt").write_text(report)
        plot_confusion_matrix(matrix, names, out / "confusion_matrix.png",
                              f"{Path(str(cfg.model)).name}: top-1 {metrics['top1']:.3f}")
    return metrics


def plot_confusion_matrix(matrix, names, path, title):
    import matplotlib
    import numpy as np

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = max(4.0, 0.5 * len(names) + 2)
    figure, axis = plt.subplots(figsize=(size, size))
    axis.imshow(matrix, cmap="Blues")
    axis.set_xticks(range(len(names)), names, rotation=90)
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title)
    for (row, col), value in np.ndenumerate(matrix):
        if value:
            axis.text(col, row, str(value), ha="center", va="center", fontsize=7,
                      color="white" if value > matrix.max() / 2 else "black")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def run(argv=None):
    app.run(main, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    run()
