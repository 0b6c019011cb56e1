"""`effv2 export`: a trained model to SavedModel, TF-Hub, TFLite, ONNX or .keras.

Examples:
    effv2 export --model runs/clothing --format saved_model --out exported/clothing/1 \
        --verify ../shared/data/clothing160
    effv2 export --model runs/clothing --format tflite --quantize int8 --int8_io \
        --representative_data ../shared/data/clothing160 --out exported/int8 \
        --verify ../shared/data/clothing160
    effv2 export --model runs/clothing --format tflite --quantize int8 --calibration_percentile 90 \
        --representative_data ../shared/data/clothing160 --representative_count 500 --out exported/int8
    effv2 export --model runs/clothing --format tflite --quantize int16x8 \
        --representative_data ../shared/data/clothing160 --out exported/int16x8
    effv2 export --model runs/clothing/model.keras --format tfhub --flavour feature_vector \
        --out exported/hub_fv

The command parses flags and prints: the exporters read --model themselves (one loader:
its run.json gives the class names, evaluation size and crop), and --verify is
``effv2_keras.export.verify_on_data``.
"""

from __future__ import annotations

import time

from absl import flags

from effv2_keras.cli import common

COMMAND = "export"
FLAGS = flags.FlagValues()
FORMATS = ["saved_model", "tfhub", "tflite", "onnx", "keras"]
TFLITE_ONLY = ("quantize", "int8_io", "int8_float_fallback", "calibration_percentile")
# Python argument -> flag, where the names differ.
RENAMES = {"representative_images": "representative_data", "float_fallback": "int8_float_fallback",
           "out_dir": "out"}
flags.DEFINE_string("model", None, "Run directory (with run.json), a .keras file, or (for onnx) a "
                    "SavedModel written by this command.", flag_values=FLAGS)
flags.DEFINE_enum("format", "saved_model", FORMATS, "Artifact format.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output directory (one artifact per directory).", flag_values=FLAGS)
flags.DEFINE_enum("quantize", None, ["fp16", "dynamic", "int8", "int16x8"],
                  "TFLite quantization (default fp32): fp16 weights, dynamic-range int8 weights, "
                  "full int8, or int16x8 (int16 activations, int8 weights); the last two need "
                  "--representative_data.", flag_values=FLAGS)
flags.DEFINE_bool("int8_io", False, "With --quantize int8: int8 input and output tensors.", flag_values=FLAGS)
flags.DEFINE_list("int8_float_fallback", [],
                  "With --quantize int8: ops kept in float, comma-separated: groups se, sigmoid, head, "
                  "stem; TFLite op types (LOGISTIC); or substrings of op names.", flag_values=FLAGS)
flags.DEFINE_float("calibration_percentile", None,
                   "With --quantize int8: activation ranges from this percentile of the per-image "
                   "extrema of the representative images (e.g. 90) instead of their overall min/max.",
                   flag_values=FLAGS)
flags.DEFINE_string("representative_data", None,
                    "Dataset (class folders or a data spec) whose train split calibrates full int8.",
                    flag_values=FLAGS)
flags.DEFINE_integer("representative_count", 200, "Images used for int8/int16x8 calibration (0 = the whole train split).",
                     flag_values=FLAGS)
flags.DEFINE_enum("flavour", "classification", ["classification", "feature_vector"],
                  "TF-Hub module flavour.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", None, "Size of fixed-size artifacts of a model that takes any size.",
                     flag_values=FLAGS)
flags.DEFINE_float("crop_fraction", None, "serving_bytes: central box of this fraction of each side before "
                   "resizing (default: the run's, else 0.875).", flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "SavedModel: classes reported by top_k_* outputs.", flag_values=FLAGS)
flags.DEFINE_string("verify", None, "Dataset to verify the artifact against the Keras model on.",
                    flag_values=FLAGS)
flags.DEFINE_integer("verify_count", 256, "Images used by --verify (0 = the whole split).", flag_values=FLAGS)
flags.DEFINE_string("verify_split", "test", "Split used by --verify (falls back to val).", flag_values=FLAGS)
flags.mark_flags_as_required(["model", "out"], flag_values=FLAGS)

parse = common.make_parser(FLAGS, __doc__.strip().splitlines()[0])


def _export(argv) -> int:
    from effv2_keras import export
    from effv2_keras.export.artifacts import directory_size

    common.no_arguments(argv)
    model = common.existing_path(FLAGS.model, "model")
    if FLAGS.format != "tflite" and any(FLAGS[name].present for name in TFLITE_ONLY):
        raise common.UsageError("--quantize, --int8_io, --int8_float_fallback and --calibration_percentile "
                                "apply to --format tflite only.")
    start = time.perf_counter()
    path = export.export(model, FLAGS.format, FLAGS.out, **_options(FLAGS))
    origin = ", from the SavedModel " + str(model) if export.is_serving_saved_model(model) else ""
    print(f"exported {FLAGS.format} ({FLAGS.quantize or 'fp32'}{origin}) to {path}: "
          f"{directory_size(path) / 1e6:.2f} MB in {time.perf_counter() - start:.1f} s")
    if not FLAGS.verify:
        return 0
    if FLAGS.format == "tfhub" and FLAGS.flavour == "feature_vector":
        print("verify: skipped (a feature_vector module has no probabilities to compare)")
        return 0
    result = export.verify_on_data(model, path, FLAGS.verify, split=FLAGS.verify_split,
                                   count=FLAGS.verify_count or None, image_size=FLAGS.image_size)
    print(export.format_table([result]))
    if not result.passed:
        return common.fail(COMMAND, f"verification failed: {'; '.join(result.failures())}")
    return 0


def _options(cfg) -> dict:
    """The exporter's keyword arguments from the flags of its format."""
    options = {"image_size": cfg.image_size}
    if cfg.format == "saved_model":
        options.update(top_k=cfg.top_k, crop_fraction=cfg.crop_fraction)
    elif cfg.format == "tfhub":
        options.update(flavour=cfg.flavour)
    elif cfg.format == "tflite":
        options.update(quantize=cfg.quantize, int8_io=cfg.int8_io, float_fallback=tuple(cfg.int8_float_fallback),
                       calibration_percentile=cfg.calibration_percentile,
                       representative_images=cfg.representative_data,
                       representative_count=cfg.representative_count)
    return options


main = common.guarded(COMMAND, FLAGS, _export, RENAMES)


def run(argv=None):
    common.run(main, parse, argv)


if __name__ == "__main__":
    run()
