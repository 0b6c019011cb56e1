"""`effv2 predict IMAGE... --model MODEL`: top-5 classes of image files.

MODEL is a .keras file, a run directory, a SavedModel or TF-Hub directory, a
.tflite or an .onnx file. Images are decoded, center-cropped (the central
0.875 of each side) and resized to the model's input size, exactly as the
SavedModel's serving_bytes signature and effv2_keras.data's evaluation do.

Example:
    effv2 predict shoe.jpg hat.png --model exported/int8/model.tflite
"""

from __future__ import annotations

import json

from absl import app, flags

from effv2_keras.cli.export import fail, make_parser, quiet_logs

FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, ".keras, run directory, SavedModel/TF-Hub directory, .tflite or .onnx.",
                    flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "Classes printed per image.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Input size for models that accept any size.", flag_values=FLAGS)
flags.DEFINE_float("crop_fraction", 0.875, "Central box of this fraction of each side before resizing.",
                  flag_values=FLAGS)
flags.DEFINE_bool("json", False, "Print one JSON object per image instead of a table.", flag_values=FLAGS)
flags.mark_flag_as_required("model", flag_values=FLAGS)

parse = make_parser(FLAGS, "usage: effv2 predict IMAGE... --model MODEL [--top_k 5]")


def main(argv) -> int:
    from effv2_keras.export import ExportError

    quiet_logs()
    paths = argv[1:]
    try:
        if not paths:
            raise ExportError("no images given: effv2 predict IMAGE... --model MODEL")
        for line in predict_lines(paths, FLAGS):
            print(line)
    except ExportError as error:
        return fail("predict", error)
    return 0


def predict_lines(paths, cfg):
    import numpy as np

    from effv2_keras.export import load_predictor

    predictor = load_predictor(cfg.model)
    probabilities = predictor.predict_files(paths, cfg.image_size, cfg.crop_fraction)
    names = predictor.class_names
    k = min(cfg.top_k, probabilities.shape[-1])
    for path, row in zip(paths, probabilities):
        order = np.argsort(-row, kind="stable")[:k]
        label = lambda i: names[i] if names else f"class {i}"  # noqa: E731
        if cfg.json:
            yield json.dumps({"image": str(path), "top_k": [
                {"class": int(i), "name": label(i), "score": round(float(row[i]), 6)} for i in order]})
            continue
        yield f"{path}  ({predictor.kind})"
        for rank, i in enumerate(order, start=1):
            yield f"  {rank}. {label(i):<20} {row[i]:.4f}"


def run(argv=None):
    app.run(main, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    run()
