"""`effv2 predict IMAGE... --model MODEL`: top-5 classes of image files.

MODEL is a .keras file, a run directory, a SavedModel or TF-Hub directory, a
.tflite or an .onnx file. Images are decoded, center-cropped (the run's crop, 0.875 of
each side by default) and resized to the model's input size, exactly as the
SavedModel's serving_bytes signature and effv2_keras.data's evaluation do. Class names
come from the run's run.json (or the artifact's metadata); ``class_<i>`` when unknown.

Example:
    effv2 predict shoe.jpg hat.png --model exported/int8/model.tflite
"""

from __future__ import annotations

import json

from absl import flags

from effv2_keras.cli import common

COMMAND = "predict"
FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, ".keras, run directory, SavedModel/TF-Hub directory, .tflite or .onnx.",
                    flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Classes printed per image.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Input size for models that accept any size.", flag_values=FLAGS)
flags.DEFINE_float("crop_fraction", None, "Central box of this fraction of each side before resizing "
                   "(default: the run's, else 0.875).", flag_values=FLAGS)
flags.DEFINE_bool("json", False, "Print one JSON object per image instead of a table.", flag_values=FLAGS)
flags.mark_flag_as_required("model", flag_values=FLAGS)

parse = common.make_parser(FLAGS, "usage: effv2 predict IMAGE... --model MODEL [--top_k 5]")


def _predict(argv) -> int:
    paths = argv[1:]
    if not paths:
        raise common.UsageError("no images given: effv2 predict IMAGE... --model MODEL")
    for line in predict_lines(paths, FLAGS):
        print(line)
    return 0


def predict_lines(paths, cfg):
    """The lines `effv2 predict` prints for ``paths`` (a table, or JSON with ``cfg.json``)."""
    import numpy as np

    from effv2_keras.export import load_predictor

    predictor = load_predictor(common.existing_path(cfg.model, "model"))
    probabilities = predictor.predict_files(paths, cfg.image_size, cfg.crop_fraction)
    k = min(cfg.top_k, probabilities.shape[-1])
    for path, row in zip(paths, probabilities):
        order = np.argsort(-row, kind="stable")[:k]
        if cfg.json:
            yield json.dumps({"image": str(path), "top_k": [
                {"class": int(i), "name": predictor.class_name(i), "score": round(float(row[i]), 6)}
                for i in order]})
            continue
        yield f"{path}  ({predictor.kind})"
        for rank, i in enumerate(order, start=1):
            yield f"  {rank}. {predictor.class_name(i):<20} {row[i]:.4f}"


main = common.guarded(COMMAND, FLAGS, _predict)


def run(argv=None):
    common.run(main, parse, argv)


if __name__ == "__main__":
    run()
