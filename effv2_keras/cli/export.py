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

Flags live in this module's own FlagValues (not absl's global FLAGS), so the
commands can be imported side by side (tests, notebooks) without clashing.
"""

from __future__ import annotations

import sys
import time

from absl import app, flags

FLAGS = flags.FlagValues()
FORMATS = ["saved_model", "tfhub", "tflite", "onnx", "keras"]
flags.DEFINE_string("model", None, "Run directory (model.keras [+ model_ema.keras]) or a .keras file.",
                    flag_values=FLAGS)
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
flags.DEFINE_float("crop_fraction", 0.875, "serving_bytes: central box of this fraction of each side before resizing (data.center_crop_resize).",
                   flag_values=FLAGS)
flags.DEFINE_integer("top_k", 5, "SavedModel: classes reported by top_k_* outputs.", flag_values=FLAGS)
flags.DEFINE_bool("use_ema", True, "Export the EMA weights when the run has them.", flag_values=FLAGS)
flags.DEFINE_string("verify", None, "Dataset to verify the artifact against the Keras model on.",
                    flag_values=FLAGS)
flags.DEFINE_integer("verify_count", 256, "Images used by --verify (0 = the whole split).", flag_values=FLAGS)
flags.DEFINE_string("verify_split", "test", "Split used by --verify (falls back to val).", flag_values=FLAGS)
flags.mark_flags_as_required(["model", "out"], flag_values=FLAGS)

HELP_ARGS = ("-h", "--help", "-help", "--helpfull", "--helpshort")


def make_parser(flag_values: flags.FlagValues, usage: str):
    """An absl ``flags_parser`` for a command whose flags live in ``flag_values``."""

    def parse(argv):
        argv = list(argv)
        if any(arg in HELP_ARGS for arg in argv[1:]):
            print(f"{usage}\n\nflags:\n{flag_values.get_help()}")
            sys.exit(0)
        flag_values.unparse_flags()  # defaults again: in-process reuse must not inherit earlier flags
        try:
            rest = flag_values(argv)
        except flags.Error as error:
            print(f"{argv[0]}: error: {error}", file=sys.stderr)
            sys.exit(2)
        flags.FLAGS(argv[:1], known_only=True)  # absl.app insists that the global flags are parsed
        return rest

    return parse


def quiet_logs() -> None:
    """absl.app turns Python logging up to INFO; TensorFlow's save/load chatter is not for users."""
    from absl import logging

    logging.set_verbosity(logging.WARNING)


def fail(command: str, error: Exception) -> int:
    print(f"effv2 {command}: error: {error}", file=sys.stderr)
    return 1


parse = make_parser(FLAGS, __doc__.strip().splitlines()[0])


def main(argv) -> int:
    from effv2_keras.export import ExportError

    quiet_logs()
    if len(argv) > 1:
        return fail("export", ExportError(f"unexpected arguments: {' '.join(argv[1:])}"))
    try:
        return _export(FLAGS)
    except ExportError as error:
        return fail("export", error)


def _export(cfg) -> int:
    from effv2_keras import export
    from effv2_keras.export import common, images, verification

    if cfg.format != "tflite" and (cfg.quantize or cfg.int8_io or cfg.int8_float_fallback
                                   or cfg.calibration_percentile is not None):
        raise export.ExportError("--quantize, --int8_io, --int8_float_fallback and --calibration_percentile "
                                 "apply to --format tflite only.")
    if cfg.format == "onnx" and export.is_serving_saved_model(cfg.model):
        return _onnx_from_saved_model(cfg)
    source = common.load_source(cfg.model, use_ema=cfg.use_ema)
    model = source.model
    # The exporters get the loaded model (EMA already resolved) and what the run knows.
    options = {"class_names": source.class_names, "use_ema": False}
    size_free = common.static_image_size(model) is None
    if source.image_size and size_free and cfg.format in ("saved_model", "tflite", "onnx"):
        options["image_size"] = source.image_size
    if cfg.image_size and cfg.format != "keras":
        options["image_size"] = cfg.image_size
    if cfg.format == "saved_model":
        options.update(top_k=cfg.top_k, crop_fraction=cfg.crop_fraction)
    elif cfg.format == "tfhub":
        options.update(flavour=cfg.flavour)
    elif cfg.format == "tflite":
        options.update(quantize=cfg.quantize, int8_io=cfg.int8_io,
                       float_fallback=tuple(cfg.int8_float_fallback),
                       calibration_percentile=cfg.calibration_percentile)
        if cfg.quantize in ("int8", "int16x8") and cfg.representative_data:
            size = common.resolve_image_size(model, cfg.image_size, source.image_size)
            batch = images.load_split(cfg.representative_data, size, "train",
                                      cfg.representative_count or None)
            options["representative_images"] = batch.images
    start = time.perf_counter()
    path = export.export(model, cfg.format, cfg.out, **options)
    seconds = time.perf_counter() - start
    precision = cfg.quantize or "fp32"
    print(f"exported {cfg.format} ({precision}{', EMA weights' if source.ema else ''}) to {path}: "
          f"{common.directory_size(path) / 1e6:.2f} MB in {seconds:.1f} s")
    if not cfg.verify:
        return 0
    if cfg.format == "tfhub" and cfg.flavour == "feature_vector":
        print("verify: skipped (a feature_vector module has no probabilities to compare)")
        return 0
    size = common.resolve_image_size(model, cfg.image_size, source.image_size)
    batch = images.load_split(cfg.verify, size, cfg.verify_split, cfg.verify_count or None)
    labels = verification.align_labels(batch.labels, batch.class_names, source.class_names)
    return _report(verification.verify(model, path, batch.images, labels))


def _onnx_from_saved_model(cfg) -> int:
    """``--model`` is our SavedModel: tf2onnx converts it alone (no Keras model in memory),
    and --verify compares the ONNX file with the SavedModel it came from."""
    from effv2_keras import export
    from effv2_keras.export import common, images, verification
    from effv2_keras.export.predictor import load_predictor

    start = time.perf_counter()
    path = export.export(cfg.model, "onnx", cfg.out)
    print(f"exported onnx (fp32, from the SavedModel {cfg.model}) to {path}: "
          f"{common.directory_size(path) / 1e6:.2f} MB in {time.perf_counter() - start:.1f} s")
    if not cfg.verify:
        return 0
    saved = load_predictor(cfg.model)
    batch = images.load_split(cfg.verify, saved.image_size, cfg.verify_split, cfg.verify_count or None)
    labels = verification.align_labels(batch.labels, batch.class_names, saved.class_names)
    reference = saved.predict(batch.images)
    del saved
    return _report(verification.verify(None, path, batch.images, labels, reference=reference))


def _report(result) -> int:
    """Prints the verification table; exit status 1 when the artifact failed a tolerance."""
    from effv2_keras.export import verification

    print(verification.format_table([result]))
    if not result.passed:
        print(f"effv2 export: verification failed: {'; '.join(result.failures())}", file=sys.stderr)
        return 1
    return 0


def run(argv=None):
    app.run(main, argv=argv, flags_parser=parse)


if __name__ == "__main__":
    run()
