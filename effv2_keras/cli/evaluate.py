"""`effv2 evaluate --model MODEL --data DATA`: top-1/top-5, per-class report, confusion matrix.

MODEL is any artifact `effv2 predict` takes (so an int8 .tflite can be scored
against its Keras model). DATA is a folder of class folders (split or not) or an
effv2_keras.data spec. Writes metrics.json, report.txt and confusion_matrix.png
to --out when given. The scoring is ``effv2_keras.export.evaluate``; this command
parses flags and prints.

Example:
    effv2 evaluate --model exported/int8/model.tflite --data ../shared/data/clothing160 --out eval/int8
"""

from __future__ import annotations

from absl import flags

from effv2_keras.cli import common

COMMAND = "evaluate"
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
flags.DEFINE_enum("tta", "none", ["none", "flip"], "Test-time augmentation: flip averages each image's "
                  "probabilities with its mirror image's (only where a flip keeps the label).", flag_values=FLAGS)
flags.mark_flags_as_required(["model", "data"], flag_values=FLAGS)

parse = common.make_parser(FLAGS, "usage: effv2 evaluate --model MODEL --data DATA [--split test] [--out DIR]")


def _evaluate(argv) -> int:
    from effv2_keras.export import evaluate

    common.no_arguments(argv)
    result = evaluate(common.existing_path(FLAGS.model, "model"), FLAGS.data, split=FLAGS.split,
                      count=FLAGS.limit or None, image_size=FLAGS.image_size, batch_size=FLAGS.batch_size,
                      tta=FLAGS.tta)
    print(result.report)
    print(f"top-1 {result.top1:.4f}  top-{result.k} {result.topk:.4f}  on {result.count} "
          f"images of {FLAGS.data} ({result.split}{', flip TTA' if result.tta == 'flip' else ''})")
    if FLAGS.out:
        out = result.save(FLAGS.out)
        print(f"wrote {out}/metrics.json, report.txt, confusion_matrix.png")
    return 0


main = common.guarded(COMMAND, FLAGS, _evaluate, renames={"count": "limit"})


def run(argv=None):
    common.run(main, parse, argv)


if __name__ == "__main__":
    run()
