"""Converts a keras.applications .h5 or a timm state dict into a weights file of ours.

The source is any file effv2_keras.models.weights.load_weights reads (a keras.applications
EfficientNet/EfficientNetV2 .h5, a timm tf_efficientnetv2_* / tf_efficientnet_* .pth or
.safetensors, or "imagenet" to fetch keras' own file); the variant must match it.

Examples:
    python tools/convert_weights.py --model efficientnetv2-b0 --src efficientnetv2-b0.h5 --out v2b0.weights.h5
    python tools/convert_weights.py --model efficientnetv2-s --src tf_efficientnetv2_s.pth --out v2s.keras

Then: effv2_keras.EfficientNetV2S(weights="v2s.keras").

The flags live in their own FlagValues, not absl's global FLAGS, so this tool can be imported
(and smoke-tested in-process) beside other tools that define --model or --out.
"""

from __future__ import annotations

import sys

from absl import flags

FLAGS = flags.FlagValues()
flags.DEFINE_string("model", None, "Variant, e.g. efficientnetv2-b0 (see effv2_keras.list_models()).",
                    flag_values=FLAGS)
flags.DEFINE_string("src", None, "Source: keras .h5, timm .pth/.safetensors, or 'imagenet'.", flag_values=FLAGS)
flags.DEFINE_string("out", None, "Output file: NAME.weights.h5 or NAME.keras.", flag_values=FLAGS)
flags.DEFINE_boolean("include_top", True, "Keep the classification head (else the backbone only).",
                     flag_values=FLAGS)
flags.DEFINE_integer("classes", 1000, "Classes of the source's head (with --include_top).", flag_values=FLAGS)
for _name in ("model", "src", "out"):
    flags.mark_flag_as_required(_name, flag_values=FLAGS)

HELP_FLAGS = ("-h", "--help", "--helpshort", "--helpfull")
OUT_SUFFIXES = (".weights.h5", ".keras")


def convert(model: str, src: str, out: str, include_top: bool = True, classes: int = 1000) -> str:
    """Builds ``model``, loads ``src`` into it and writes ``out``; returns ``out``."""
    if not out.endswith(OUT_SUFFIXES):
        raise ValueError(f"--out must end with .weights.h5 or .keras; got {out!r}.")
    import effv2_keras

    network = effv2_keras.build(model, include_top=include_top, classes=classes, weights=src)
    if out.endswith(".keras"):
        network.save(out)
    else:
        network.save_weights(out)
    return out


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(__doc__ + "\nflags:\n" + FLAGS.get_help())
        return 0
    FLAGS.unparse_flags()  # forget an earlier parse when called again in one process
    try:
        FLAGS(argv)
        out = convert(FLAGS.model, FLAGS.src, FLAGS.out, FLAGS.include_top, FLAGS.classes)
    except (flags.Error, ValueError, ImportError, OSError) as error:
        print(f"convert_weights: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
