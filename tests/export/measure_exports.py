"""Measures every export format of one model: size, export time, and the
verification numbers on real photos. Produces the tables of docs/EXPORT.md.

A trained run (accuracy and agreement are meaningful):
    python tests/export/measure_exports.py --model /tmp/effv2_measure/run \
        --data ../shared/data/clothing160 --out /tmp/effv2_measure/trained

Train a model on the photos first (plain model.fit, Adam; a stand-in for
`effv2 train` when minutes are short), then measure it:
    python tests/export/measure_exports.py --train efficientnetv2-b0 --width 0.5 --depth 0.5 \
        --image_size 96 --epochs 10 --data ../shared/data/clothing160 --out /tmp/effv2_measure/trained

With augmentation (random-resized crops, flips; AdamW, cosine decay), bounded in time:
    python tests/export/measure_exports.py --train efficientnetv2-b0 --width 0.5 --depth 0.5 \
        --image_size 96 --epochs 18 --augment --minutes 15 --data ../shared/data/clothing160 \
        --out /tmp/effv2_q/aug --formats keras,tflite_dynamic,tflite_int8

An untrained variant at its eval size (conversion sizes and times; only the
fp32 differences mean something, agreement of random weights is noise):
    python tests/export/measure_exports.py --variant efficientnetv2-s \
        --data ../shared/data/clothing160 --count 16 --out /tmp/effv2_measure/s
M, L and XL need --bn_calibrate N (BatchNorm statistics from N photos plus the
verification photos): their random activations otherwise reach ~1e6 and the
one-hot outputs flip between runs of the same graph.

Quantization variants of one model (not in the default --formats):
tflite_int8_p90, tflite_int8_p95, tflite_int8_float_se, tflite_int8_float_sigmoid,
tflite_int8_float_se_head, tflite_int8_p90_float_se.

Not a test (pytest does not collect it); it only uses the public API.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

FORMATS = {  # name -> (format, options)
    "keras": ("keras", {}),
    "saved_model": ("saved_model", {}),
    "tfhub": ("tfhub", {}),
    "tflite_fp32": ("tflite", {}),
    "tflite_fp16": ("tflite", {"quantize": "fp16"}),
    "tflite_dynamic": ("tflite", {"quantize": "dynamic"}),
    "tflite_int8": ("tflite", {"quantize": "int8"}),
    "tflite_int8_io": ("tflite", {"quantize": "int8", "int8_io": True}),
    "tflite_int16x8": ("tflite", {"quantize": "int16x8"}),
    # Not in the default --formats: int8 with some ops kept in float.
    "tflite_int8_float_se": ("tflite", {"quantize": "int8", "float_fallback": ("se",)}),
    "tflite_int8_float_sigmoid": ("tflite", {"quantize": "int8", "float_fallback": ("sigmoid",)}),
    "tflite_int8_float_se_head": ("tflite", {"quantize": "int8", "float_fallback": ("se", "head")}),
    "tflite_int8_p90": ("tflite", {"quantize": "int8", "calibration_percentile": 90}),
    "tflite_int8_p95": ("tflite", {"quantize": "int8", "calibration_percentile": 95}),
    "tflite_int8_p90_float_se": ("tflite", {"quantize": "int8", "calibration_percentile": 90,
                                            "float_fallback": ("se",)}),
    "onnx": ("onnx", {}),
}


def batch1_latency_ms(predictor, image, repeats: int = 20) -> float:
    predictor.predict(image[None])  # warm-up (allocation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(image[None])
        times.append(time.perf_counter() - start)
    return 1000.0 * sorted(times)[len(times) // 2]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="run directory or .keras file")
    source.add_argument("--train", help="variant to train on --data first (then measured)")
    source.add_argument("--variant", help="registered variant, built untrained (eval size, 1000 classes)")
    parser.add_argument("--data", required=True, help="folder of class folders (train/test splits)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--formats", default=",".join(n for n in FORMATS if "_float_" not in n and "_p9" not in n))
    parser.add_argument("--count", type=int, default=0, help="verification photos (0 = the whole test split)")
    parser.add_argument("--representative_count", type=int, default=200, help="0 = the whole train split")
    parser.add_argument("--bn_calibrate", type=int, default=0,
                        help="--variant: set every BatchNorm's moving statistics from one batch of this many "
                             "training photos plus the verification photos first (an untrained M/L/XL "
                             "otherwise has activations of ~1e6 and one-hot outputs that fp32 rounding flips)")
    parser.add_argument("--width", type=float, default=None, help="--train: width multiplier")
    parser.add_argument("--depth", type=float, default=None, help="--train: depth multiplier")
    parser.add_argument("--image_size", type=int, default=96, help="--train: image size")
    parser.add_argument("--epochs", type=int, default=10, help="--train: epochs")
    parser.add_argument("--augment", action="store_true",
                        help="--train: random-resized-crop + flip, AdamW with cosine decay")
    parser.add_argument("--minutes", type=float, default=None, help="--train: stop after this many minutes")
    args = parser.parse_args(argv)
    if args.train:
        args.model = str(train(args))

    from effv2_keras import export
    from effv2_keras.export import images, verification
    from effv2_keras.export.head import keras_probabilities, resolve_image_size, static_image_size
    from effv2_keras.export.source import load_source
    from effv2_keras.export.predictor import load_predictor

    start = time.perf_counter()
    if args.model:
        src = load_source(args.model)
        model, names, label = src.model, src.class_names, args.model
        size = src.fixed_size()
    else:
        import effv2_keras

        model = effv2_keras.build(args.variant)
        names, label = None, f"{args.variant} (untrained, 1000 classes)"
        size = resolve_image_size(model)

    print(f"model {label}: {model.count_params():,} parameters, {size[0]}x{size[1]} "
          f"({time.perf_counter() - start:.1f} s to load/build)", flush=True)
    test = images.load_split(args.data, size, "test", args.count or None)
    if args.variant and args.bn_calibrate:
        import numpy as np

        train_photos = images.load_split(args.data, size, "train", args.bn_calibrate, seed=1).images
        calibrate_batchnorm(model, np.concatenate([train_photos, test.images]))
    labels = verification.align_labels(test.labels, test.class_names, names) if names else None
    reference = keras_probabilities(model, test.images)
    print(f"Keras reference on {len(test.images)} photos: mean top-1 probability "
          f"{reference.max(-1).mean():.4f}, distinct top-1 classes {len(set(reference.argmax(-1)))}", flush=True)
    representative = None
    out = Path(args.out)
    rows = []
    static_size = static_image_size(model)
    if args.model and args.formats == "onnx":
        # ONNX alone from a file (how L/XL are measured): hand the exporter the path and let
        # this process's copy go, so it does not sit beside the tf2onnx child's (24 GB here).
        del model, src
        gc.collect()
        model = args.model
    for name in args.formats.split(","):
        fmt, options = FORMATS[name]
        options = dict(options, class_names=names)
        if options.get("quantize") in ("int8", "int16x8"):
            if representative is None:
                representative = images.load_split(args.data, size, "train",
                                                   args.representative_count or None).images
            options["representative_images"] = representative
        if fmt in ("tflite", "onnx", "saved_model") and static_size is None:
            options["image_size"] = size
        if fmt == "onnx" and not export.onnx_available():
            print("onnx: skipped (pip install tf2onnx onnxruntime)", flush=True)
            continue
        start = time.perf_counter()
        path = export.export(model, fmt, out / name, **options)
        seconds = time.perf_counter() - start
        predictor = load_predictor(path)
        result = verification.verify(model, predictor, test.images, labels, reference=reference)
        latency = batch1_latency_ms(predictor, test.images[0]) if fmt in ("tflite", "onnx") else None
        rows.append({"name": name, "seconds": seconds, "latency_ms": latency, "result": result})
        print(f"{name}: {result.size_bytes / 1e6:.2f} MB, export {seconds:.1f} s, max abs diff "
              f"{result.max_abs_diff:.2e}, top-1 agreement {result.top1_agreement:.4f}", flush=True)
    table = format_rows(rows, labels is not None)
    print(table)
    (out / "table.md").write_text(table + "\n")
    records = [{**{k: v for k, v in row.items() if k != "result"}, **row["result"].__dict__} for row in rows]
    (out / "results.json").write_text(json.dumps(records, indent=2))
    return 0


def calibrate_batchnorm(model, batch) -> None:
    """Sets every BatchNormalization's moving mean/variance to the batch statistics
    of ``batch`` (one training-mode pass with momentum 0; dropout and drop-path
    are off), so a randomly initialised deep network computes unit-scale
    activations in inference mode. The weights are otherwise untouched."""
    import keras

    norms = [layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)]
    rates = {}
    for layer in model._flatten_layers():
        for attr in ("rate", "drop_rate", "drop_path_rate"):
            if isinstance(getattr(layer, attr, None), float):
                rates[(layer, attr)] = getattr(layer, attr)
                setattr(layer, attr, 0.0)
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.0
    try:
        model(batch, training=True)
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        for (layer, attr), rate in rates.items():
            setattr(layer, attr, rate)
    print(f"BatchNorm statistics of {len(norms)} layers set from {len(batch)} photos", flush=True)


def train(args) -> Path:
    """Trains ``args.train`` on the train split and writes a run directory.

    Default: Adam 1e-3, no augmentation. ``--augment``: random-resized crops
    (scale 0.35-1 of a full-square decode at 1.2x size) and horizontal flips,
    AdamW 2e-3 with cosine decay. ``--minutes`` stops training after that time.
    """
    import keras
    import tensorflow as tf

    import effv2_keras
    from effv2_keras import run_dir
    from effv2_keras.export import sample_folder

    keras.utils.set_random_seed(0)
    size = (args.image_size, args.image_size)
    start = time.perf_counter()
    val = sample_folder(args.data, size, None, "val", seed=0)
    if args.augment:
        big = int(round(args.image_size * 1.2))
        data = sample_folder(args.data, (big, big), None, "train", seed=0, crop_fraction=1.0)
    else:
        data = sample_folder(args.data, size, None, "train", seed=0)
    model = effv2_keras.build(args.train, width=args.width, depth=args.depth,
                              input_shape=(*size, 3), classes=len(data.class_names))
    callbacks = []
    if args.minutes:
        class StopAfter(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                if time.perf_counter() - start > 60 * args.minutes:
                    print(f"time limit: stopping after epoch {epoch + 1}", flush=True)
                    self.model.stop_training = True

        callbacks.append(StopAfter())
    if args.augment:
        steps = args.epochs * (len(data.labels) // 32)
        optimizer = keras.optimizers.AdamW(keras.optimizers.schedules.CosineDecay(
            2e-3, steps), weight_decay=0.02)

        def augment(images, labels):
            n = tf.shape(images)[0]
            scale = tf.sqrt(tf.random.uniform([n], 0.35, 1.0))
            ratio = tf.sqrt(tf.exp(tf.random.uniform([n], -0.25, 0.25)))
            h, w = tf.minimum(scale / ratio, 1.0), tf.minimum(scale * ratio, 1.0)
            y0, x0 = tf.random.uniform([n]) * (1 - h), tf.random.uniform([n]) * (1 - w)
            boxes = tf.stack([y0, x0, y0 + h, x0 + w], -1)
            crops = tf.image.crop_and_resize(images, boxes, tf.range(n), size)
            crops = tf.where(tf.random.uniform([n, 1, 1, 1]) < 0.5, crops[:, :, ::-1], crops)
            return crops, labels

        train_data = (tf.data.Dataset.from_tensor_slices((data.images, data.labels))
                      .shuffle(len(data.labels), seed=0).batch(32, drop_remainder=True)
                      .map(augment).prefetch(2))
        fit_args = dict(x=train_data)
    else:
        optimizer = keras.optimizers.Adam(1e-3)
        fit_args = dict(x=data.images, y=data.labels, batch_size=32)
    model.compile(optimizer, "sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(**fit_args, epochs=args.epochs, verbose=2, callbacks=callbacks,
                        validation_data=(val.images, val.labels))
    run = Path(args.out) / "run"
    run.mkdir(parents=True, exist_ok=True)
    model.save(run / "model.keras")
    run_dir.write(run, run_dir.RunManifest(model=model.name, num_classes=len(data.class_names),
                                           class_names=data.class_names, eval_size=size[0]))
    print(f"trained {args.train} in {time.perf_counter() - start:.0f} s: val accuracy "
          f"{history.history['val_accuracy'][-1]:.3f}", flush=True)
    return run


def format_rows(rows, labelled: bool) -> str:
    head = "| artifact | precision | size MB | export s | max abs diff | top-1 agreement |"
    head += " Keras acc | artifact acc | drop (points) |" if labelled else ""
    head += " ms/image (batch 32) | ms (batch 1) | issue tolerance |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for row in rows:
        r = row["result"]
        line = (f"| {row['name']} | {r.precision} | {r.size_bytes / 1e6:.2f} | {row['seconds']:.1f} | "
                f"{r.max_abs_diff:.1e} | {100 * r.top1_agreement:.1f}% |")
        if labelled:
            line += (f" {100 * r.reference_accuracy:.1f}% | {100 * r.accuracy:.1f}% | "
                     f"{100 * r.accuracy_drop:.1f} |")
        latency = "-" if row["latency_ms"] is None else f"{row['latency_ms']:.1f}"
        verdict = "pass" if r.passed else "FAIL: " + "; ".join(r.failures())
        line += f" {r.ms_per_image:.1f} | {latency} | {verdict} |"
        lines.append(line)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
