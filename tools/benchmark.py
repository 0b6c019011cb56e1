"""Inference and training-step speed of our models against keras.applications, as a ratio.

Both models are built in the same process with the same settings and timed in
alternation (A B A B ...), so load from other processes hits both alike.
Prints a table and writes JSON.

Example:
    python tools/benchmark.py --models efficientnetv2-b0 --size 224 --batch 32 --out docs/benchmark_models.json
"""

from __future__ import annotations

import json
import platform
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import effv2_keras

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["efficientnetv2-b0"], "Variants to time (those keras.applications also has).")
flags.DEFINE_integer("size", 224, "Square image size.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per model (after one warm-up).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"], "Keras dtype policy.")
flags.DEFINE_boolean("train_step", True, "Also time one SGD training step per round.")
flags.DEFINE_string("out", None, "Write the results here as JSON.")


def reference_model(name: str, size: int) -> keras.Model:
    constructor = getattr(keras.applications, effv2_keras.models.constructors.constructor_name(name))
    return constructor(weights=None, input_shape=(size, size, 3))


def timed_functions(model: keras.Model, images, labels, train_step: bool):
    infer = tf.function(lambda x: model(x, training=False))
    optimizer = keras.optimizers.SGD(0.01)
    loss_fn = keras.losses.SparseCategoricalCrossentropy()

    @tf.function
    def step(x, y):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply_gradients(zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables))
        return loss

    functions = {"inference": lambda: infer(images).numpy()}
    if train_step:
        functions["train_step"] = lambda: step(images, labels).numpy()
    return functions


def main(argv):
    del argv
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (FLAGS.batch, FLAGS.size, FLAGS.size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 1000, FLAGS.batch))
    rows = []
    for name in FLAGS.models:
        builders = {"effv2_keras": lambda: effv2_keras.build(name, input_shape=(FLAGS.size, FLAGS.size, 3)),
                    "keras.applications": lambda: reference_model(name, FLAGS.size)}
        functions = {impl: timed_functions(build(), images, labels, FLAGS.train_step) for impl, build in builders.items()}
        for impl in functions:  # warm-up: tracing and first-run allocation
            for fn in functions[impl].values():
                fn()
        times = {(impl, kind): [] for impl in functions for kind in functions[impl]}
        for _ in range(FLAGS.rounds):
            for impl, kinds in functions.items():
                for kind, fn in kinds.items():
                    start = time.perf_counter()
                    fn()
                    times[(impl, kind)].append(time.perf_counter() - start)
        for kind in functions["effv2_keras"]:
            ours = FLAGS.batch / np.median(times[("effv2_keras", kind)])
            theirs = FLAGS.batch / np.median(times[("keras.applications", kind)])
            rows.append(dict(model=name, kind=kind, size=FLAGS.size, batch=FLAGS.batch, precision=FLAGS.precision,
                             ours_images_per_s=round(ours, 2), keras_images_per_s=round(theirs, 2),
                             ratio=round(ours / theirs, 3)))
        keras.backend.clear_session()
    print(f"| model | kind | px | batch | precision | ours img/s | keras.applications img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['kind']} | {r['size']} | {r['batch']} | {r['precision']} "
              f"| {r['ours_images_per_s']} | {r['keras_images_per_s']} | {r['ratio']} |")
    if FLAGS.out:
        meta = dict(machine=platform.machine(), processor=platform.processor(), cpus=len(tf.config.list_physical_devices("CPU")),
                    tensorflow=tf.__version__, keras=keras.__version__, rounds=FLAGS.rounds)
        with open(FLAGS.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
