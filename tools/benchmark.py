"""Speed as ratios measured in alternation (A B C A B C ...), medians of rounds.

Two benchmarks:

* default: inference (and a plain SGD step) of our builders against keras.applications,
  in one process.
* ``--train_step``: the training step users get, per image size and precision:
  ``effv2 train``'s own code path (the Trainer's data pipeline, traced step, EMA and host
  reads; no validation), keras.applications + ``model.fit`` on the same tf.data pipeline,
  and timm (when installed) on the same network in PyTorch, channels-last, fed batches
  drawn from the same pipeline and held in memory (its input pipeline is not timed).
  Each round runs ``--steps`` steps of every contender; a round's speed excludes its
  first step; the table gives the median over rounds and the ratios of the medians.

  ``--isolate`` (the default) runs each contender in its own worker process (this script
  with ``--worker``): the workers warm up one after the other, then the parent asks each in
  turn for a round, so while one runs the others wait idle on their stdin. In one process
  TensorFlow's and PyTorch's thread pools sit side by side and distort the comparison: on a
  2-core AVX2 machine effv2 measured 1.01x timm's float32 step with timm in the same process,
  but 0.73x against timm in its own process (issue 24).
  ``--noisolate`` builds and alternates all contenders in this process.

Load from other processes hits every contender alike, so the ratios are what to quote.
Prints a Markdown table and writes JSON (``--out``); each row says whether it was isolated.

Example:
    python tools/benchmark.py --train_step --models efficientnetv2-b0 --sizes 64,128 \\
        --precisions float32,mixed_bfloat16 --out /tmp/train_step.json
"""

from __future__ import annotations

import functools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import effv2_keras  # noqa: E402  (first: it picks TensorFlow's CPU kernels before TF loads)
import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from effv2_keras import cpu_kernels, data  # noqa: E402
from effv2_keras.models.constructors import constructor_name  # noqa: E402
from effv2_keras.train import optim  # noqa: E402
from effv2_keras.train.fast import make_twin  # noqa: E402
from step_harness import OneStageRun, default_data_spec  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_list("models", ["efficientnetv2-b0"], "Variants to time (those keras.applications also has).")
flags.DEFINE_integer("size", 224, "Square image size (model benchmark).")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("rounds", 5, "Timed rounds per contender (after one warm-up round).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16", "mixed_float16"],
                  "Keras dtype policy (model benchmark).")
flags.DEFINE_boolean("model_step", True, "Model benchmark: also time one SGD training step per round.")
flags.DEFINE_boolean("train_step", False, "Benchmark the training step: effv2 train vs keras.applications "
                     "+ model.fit vs timm.")
flags.DEFINE_list("sizes", ["128"], "--train_step: image sizes.")
flags.DEFINE_list("precisions", ["float32"], "--train_step: float32 and/or mixed_bfloat16 (timm: bf16 autocast).")
flags.DEFINE_integer("steps", 8, "--train_step: steps per contender per round.")
flags.DEFINE_list("contenders", ["effv2", "keras", "timm"],
                  "--train_step: any of effv2, effv2_stock (--nofast_step), keras, timm, and variants "
                  "'effv2[xla_silu=0;log_every=1]' (TwinOptions and TrainConfig fields) to measure one lever.")
flags.DEFINE_string("data", None, "--train_step: data spec (default: folder:../shared/data/clothing160 "
                    "when present, else digits).")
flags.DEFINE_integer("inter_op", None, "--train_step lever: TF inter-op threads (None: TF's default).")
flags.DEFINE_integer("intra_op", None, "--train_step lever: TF intra-op threads (None: TF's default).")
flags.DEFINE_integer("data_threads", None, "--train_step lever: a private tf.data threadpool of this size.")
flags.DEFINE_boolean("grappler_bf16", False, "--train_step lever: grappler's auto_mixed_precision_onednn_bfloat16 "
                     "pass (use with --precisions float32).")
flags.DEFINE_boolean("isolate", True, "--train_step: each contender in its own worker process (--noisolate: "
                     "all in this process, where TF's and torch's thread pools share the cores).")
flags.DEFINE_string("worker", None, "Internal (--isolate): run this one contender as a worker driven over "
                    "stdin/stdout by the benchmark's parent process.")
flags.DEFINE_string("out", None, "Write the results here as JSON.")

TIMM_MISSING = "timm is not installed (pip install torch==2.13.0; pip install --no-deps timm==1.0.31)"
TIMM_NAMES = {"efficientnetv2-b0": "tf_efficientnetv2_b0", "efficientnetv2-b1": "tf_efficientnetv2_b1",
              "efficientnetv2-b2": "tf_efficientnetv2_b2", "efficientnetv2-b3": "tf_efficientnetv2_b3",
              "efficientnetv2-s": "tf_efficientnetv2_s", "efficientnetv2-m": "tf_efficientnetv2_m"}


# -- model benchmark --------------------------------------------------------------------------


def reference_model(name: str, size: int) -> keras.Model:
    constructor = getattr(keras.applications, constructor_name(name))
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


def model_benchmark():
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(0, 255, (FLAGS.batch, FLAGS.size, FLAGS.size, 3)).astype("float32"))
    labels = tf.constant(rng.integers(0, 1000, FLAGS.batch))
    rows = []
    for name in FLAGS.models:
        builders = {"effv2_keras": lambda: effv2_keras.build(name, input_shape=(FLAGS.size, FLAGS.size, 3)),
                    "keras.applications": lambda: reference_model(name, FLAGS.size)}
        functions = {impl: timed_functions(build(), images, labels, FLAGS.model_step)
                     for impl, build in builders.items()}
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
    print("| model | kind | px | batch | precision | ours img/s | keras.applications img/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} | {r['kind']} | {r['size']} | {r['batch']} | {r['precision']} "
              f"| {r['ours_images_per_s']} | {r['keras_images_per_s']} | {r['ratio']} |")
    return rows


# -- training-step benchmark --------------------------------------------------------------------


class TrainerContender(OneStageRun):
    """``effv2 train``'s path (``step_harness.OneStageRun``), optionally with one lever off."""

    def __init__(self, name, size, precision, splits, data_spec, batch, steps, rounds, twin=None,
                 fused_optimizer=True, **overrides):
        super().__init__(name, size, precision, splits, data_spec, batch, steps, epochs=rounds + 1, **overrides)
        t = self.trainer
        if twin is not None:  # a lever measured on its own: the twin with some swaps off
            t.train_model = make_twin(t.model, twin)
        if not fused_optimizer:  # Keras' own per-op update instead of one kernel per variable
            t.optimizer, t.l2 = optim.make_optimizer(
                t.config.optimizer, t.lr_schedule, t.model, weight_decay=t.config.weight_decay,
                momentum=t.config.momentum, fused=False)


class KerasFitContender:
    """keras.applications + ``model.fit`` (RMSprop, as our default) on the same pipeline."""

    def __init__(self, name, size, precision, splits, batch, steps):
        keras.mixed_precision.set_global_policy(precision)
        constructor = getattr(keras.applications, constructor_name(name))
        self.model = constructor(weights=None, input_shape=(size, size, 3), classes=splits.num_classes)
        self.model.compile(optimizer=keras.optimizers.RMSprop(0.016 * batch / 256, rho=optim.RMSPROP_RHO,
                                                              momentum=0.9, epsilon=optim.RMSPROP_EPSILON),
                           loss="categorical_crossentropy", metrics=["accuracy"])
        keras.mixed_precision.set_global_policy("float32")
        self.dataset = data.make_pipeline(splits.train, size, batch, splits.num_classes, training=True,
                                          drop_remainder=True).repeat()
        self.batch, self.steps = batch, steps
        self.timer = _StepTimer()

    def round(self) -> float:
        self.model.fit(self.dataset, epochs=1, steps_per_epoch=self.steps, verbose=0, callbacks=[self.timer])
        return self.timer.images_per_sec(self.batch)


class _StepTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.ends = []

    def on_train_batch_end(self, batch, logs=None):
        self.ends.append(time.perf_counter())

    def images_per_sec(self, batch: int) -> float:
        return batch * (len(self.ends) - 1) / (self.ends[-1] - self.ends[0])


class TimmContender:
    """timm's port of the network in PyTorch: channels-last, AdamW, bf16 autocast for mixed."""

    def __init__(self, name, size, precision, splits, batch, steps, timm):
        import torch

        self.torch = torch
        torch.manual_seed(0)
        self.model = timm.create_model(TIMM_NAMES[name], pretrained=False, num_classes=splits.num_classes)
        self.model = self.model.to(memory_format=torch.channels_last).train()
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-3, weight_decay=0.05)
        self.bf16 = precision != "float32"
        mean = torch.tensor(self.model.pretrained_cfg["mean"]).view(1, 3, 1, 1) * 255
        std = torch.tensor(self.model.pretrained_cfg["std"]).view(1, 3, 1, 1) * 255
        pipeline = data.make_pipeline(splits.train, size, batch, splits.num_classes, training=True,
                                      drop_remainder=True).repeat()
        self.batches = []
        for images, labels in pipeline.take(4):
            x = torch.from_numpy(images.numpy()).permute(0, 3, 1, 2)
            x = ((x - mean) / std).contiguous(memory_format=torch.channels_last)
            self.batches.append((x, torch.from_numpy(labels.numpy())))
        self.batch, self.steps = batch, steps

    def round(self) -> float:
        torch = self.torch
        ends = []
        for i in range(self.steps):
            x, y = self.batches[i % len(self.batches)]
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
                loss = torch.nn.functional.cross_entropy(self.model(x), y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss.item()
            ends.append(time.perf_counter())
        return self.batch * (len(ends) - 1) / (ends[-1] - ends[0])


def make_contenders(name, size, precision, splits, data_spec, names=None):
    """The contenders of ``names`` (default ``--contenders``) that can run here, built in this process."""
    names = FLAGS.contenders if names is None else names
    timm = None
    if "timm" in names:
        from timm_import import import_timm

        timm = import_timm()
        if timm is None:
            print(f"{TIMM_MISSING}: its column is left out.", file=sys.stderr)
    builders = {
        "effv2": lambda: TrainerContender(name, size, precision, splits, data_spec, FLAGS.batch, FLAGS.steps,
                                          FLAGS.rounds),
        "effv2_stock": lambda: TrainerContender(name, size, precision, splits, data_spec, FLAGS.batch,
                                                FLAGS.steps, FLAGS.rounds, fast_step=False),
        "keras": lambda: KerasFitContender(name, size, precision, splits, FLAGS.batch, FLAGS.steps),
        "timm": lambda: TimmContender(name, size, precision, splits, FLAGS.batch, FLAGS.steps, timm),
    }
    contenders = {}
    for c in names:
        if c.startswith("effv2[") and c.endswith("]"):
            twin, overrides = parse_variant(c[len("effv2["):-1])
            fused_optimizer = bool(int(overrides.pop("fused_optimizer", 1)))
            contenders[c] = TrainerContender(name, size, precision, splits, data_spec, FLAGS.batch, FLAGS.steps,
                                             FLAGS.rounds, twin=twin, fused_optimizer=fused_optimizer, **overrides)
        elif c in builders and (c != "timm" or timm):
            contenders[c] = builders[c]()
    return contenders


def parse_variant(text: str):
    """``fused_batch_norm=0;log_every=1``: TwinOptions fields, ``fused_optimizer`` and TrainConfig fields."""
    import dataclasses

    from effv2_keras.train.fast import TwinOptions

    twin_fields = {f.name for f in dataclasses.fields(TwinOptions)}
    twin, overrides = {}, {}
    for item in filter(None, text.split(";")):
        key, _, value = item.partition("=")
        if key in twin_fields:
            twin[key] = value.lower() in ("1", "true", "yes")
        else:
            overrides[key] = int(value) if value.isdigit() else value
    return (TwinOptions(**twin) if twin else None), overrides


def train_step_benchmark():
    if FLAGS.steps < 2:
        raise app.UsageError("--steps: at least 2 (a round's speed excludes its first step).")
    data_spec = FLAGS.data or default_data_spec()
    if FLAGS.isolate:
        measure = functools.partial(isolated_samples, data_spec=data_spec)
    else:
        measure = functools.partial(in_process_samples, splits=data.load(data_spec, val_fraction=0.0),
                                    data_spec=data_spec)
    rows = []
    for name in FLAGS.models:
        for size in (int(s) for s in FLAGS.sizes):
            for precision in FLAGS.precisions:
                row = step_row(name, size, precision, measure(name, size, precision))
                rows.append(row)
                print(json.dumps(row), flush=True)
    columns = list(dict.fromkeys(c for r in rows for c in r["images_per_s"]))
    ratios = list(dict.fromkeys(k for r in rows for k in r if k.startswith("effv2_over_")))
    print(f"\ndata {data_spec}, batch {FLAGS.batch}, {FLAGS.rounds} rounds x {FLAGS.steps} steps, medians (img/s)")
    print("| model | px | precision | " + " | ".join(columns) + " | " + " | ".join(ratios) + " |")
    print("|---" * (3 + len(columns) + len(ratios)) + "|")
    for r in rows:
        cells = [str(r["images_per_s"].get(c, "")) for c in columns] + [str(r.get(k, "")) for k in ratios]
        print(f"| {r['model']} | {r['size']} | {r['precision']} | " + " | ".join(cells) + " |")
    return rows


def step_row(name, size, precision, samples):
    """One table row: the medians of each contender's round speeds and effv2's ratios to them."""
    medians = {c: float(np.median(v)) for c, v in samples.items()}
    row = dict(model=name, size=size, batch=FLAGS.batch, precision=precision, isolated=FLAGS.isolate,
               images_per_s={c: round(m, 2) for c, m in medians.items()},
               samples={c: [round(x, 2) for x in v] for c, v in samples.items()})
    for other in medians:
        if "effv2" in medians and other != "effv2":
            row[f"effv2_over_{other}"] = round(medians["effv2"] / medians[other], 3)
    return row


def in_process_samples(name, size, precision, splits, data_spec):
    """Every contender built in this process, warmed up, then ``--rounds`` alternating rounds."""
    contenders = make_contenders(name, size, precision, splits, data_spec)
    for contender in contenders.values():
        contender.round()  # warm-up: tracing, allocation, pipeline start
    samples = {c: [] for c in contenders}
    for _ in range(FLAGS.rounds):
        for c, contender in contenders.items():
            samples[c].append(contender.round())
    del contenders
    keras.backend.clear_session()
    return samples


# -- --isolate: one worker process per contender -------------------------------------------------


def isolated_samples(name, size, precision, data_spec):
    """Each contender in its own worker; warm-ups one at a time, then ``--rounds`` alternating rounds."""
    workers = []
    try:
        for contender in dict.fromkeys(FLAGS.contenders):
            worker = ContenderWorker(contender, worker_argv(contender, name, size, precision, data_spec))
            workers.append(worker)
            if not worker.wait_ready():
                workers.remove(worker)
        samples = {w.contender: [] for w in workers}
        for _ in range(FLAGS.rounds):
            for worker in workers:
                samples[worker.contender].append(worker.round())
        for worker in workers:
            worker.quit()
    finally:
        for worker in workers:
            worker.close()
    return samples


def worker_argv(contender, name, size, precision, data_spec):
    """This script as a worker for one contender, with the parent's settings and levers."""
    argv = [sys.executable, os.path.abspath(__file__), "--train_step", f"--worker={contender}",
            "--models", name, "--sizes", str(size), "--precisions", precision, f"--data={data_spec}",
            f"--batch={FLAGS.batch}", f"--steps={FLAGS.steps}", f"--rounds={FLAGS.rounds}",
            "--grappler_bf16" if FLAGS.grappler_bf16 else "--nograppler_bf16"]
    for lever in ("inter_op", "intra_op", "data_threads"):
        if getattr(FLAGS, lever) is not None:
            argv.append(f"--{lever}={getattr(FLAGS, lever)}")
    return argv


class ContenderWorker:
    """The parent's end of one worker: commands on its stdin, READY and JSON lines back on its stdout."""

    def __init__(self, contender, argv):
        self.contender = contender
        # a file, not a pipe: nobody reads the worker's logs while it runs, and a full pipe would block it
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                        text=True, env=dict(os.environ))

    def wait_ready(self) -> bool:
        """True once warmed up; False (with a note on stderr) when its contender cannot run here."""
        message = self.read_message()
        if message == "READY":
            return True
        print(f"{self.contender}: {message['unavailable']}: its column is left out.", file=sys.stderr)
        self.process.wait()
        return False

    def round(self) -> float:
        self.send("round")
        return self.read_message()["images_per_s"]

    def quit(self):
        self.send("quit")
        self.process.wait()

    def close(self):
        if self.process.poll() is None:  # left running by an error elsewhere
            self.process.kill()
            self.process.wait()
        self.process.stdin.close()
        self.process.stdout.close()
        self.stderr.close()

    def send(self, command: str):
        try:
            self.process.stdin.write(command + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:  # it died: the next read_message reports it
            pass

    def read_message(self):
        """``READY`` or the next JSON line; other lines (a library printing to stdout) are skipped."""
        for line in iter(self.process.stdout.readline, ""):
            line = line.strip()
            if line == "READY":
                return line
            if line.startswith("{"):
                return json.loads(line)
        self.fail()

    def fail(self):
        code = self.process.wait()
        self.stderr.seek(0)
        print("".join(self.stderr.readlines()[-30:]), file=sys.stderr)
        raise SystemExit(f"benchmark.py: the {self.contender!r} worker exited early (exit code {code}); "
                         "the end of its stderr is above.")


def run_worker():
    """``--worker``: build one contender, warm it up, say READY, then run a round per ``round`` line."""
    protocol = protocol_channel()
    data_spec = FLAGS.data or default_data_spec()
    splits = data.load(data_spec, val_fraction=0.0)
    name, size, precision = FLAGS.models[0], int(FLAGS.sizes[0]), FLAGS.precisions[0]
    contender = make_contenders(name, size, precision, splits, data_spec, names=[FLAGS.worker]).get(FLAGS.worker)
    if contender is None:
        reason = TIMM_MISSING if FLAGS.worker == "timm" else "not a contender this script knows"
        print(json.dumps({"unavailable": reason}), file=protocol, flush=True)
        return
    contender.round()  # warm-up: tracing, allocation, pipeline start
    print("READY", file=protocol, flush=True)
    for command in iter(sys.stdin.readline, ""):
        if command.strip() == "quit":
            return
        if command.strip() != "round":
            raise ValueError(f"worker: unknown command {command.strip()!r}")
        print(json.dumps({"images_per_s": contender.round()}), file=protocol, flush=True)


def protocol_channel():
    """The worker's stdout, kept for the parent's protocol; whatever else prints to stdout goes to stderr."""
    sys.stdout.flush()
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    return channel


def apply_process_levers():
    """Process-wide settings (compare runs through the timm column, which they do not touch)."""
    if FLAGS.inter_op is not None:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op)
    if FLAGS.intra_op is not None:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op)
    if FLAGS.grappler_bf16:
        tf.config.optimizer.set_experimental_options({"auto_mixed_precision_onednn_bfloat16": True})
    if FLAGS.data_threads:
        make = data.make_pipeline

        def with_private_threadpool(*args, **kwargs):
            options = tf.data.Options()
            options.threading.private_threadpool_size = FLAGS.data_threads
            return make(*args, **kwargs).with_options(options)

        data.make_pipeline = with_private_threadpool


def main(argv):
    del argv
    apply_process_levers()
    if FLAGS.worker:
        return run_worker()
    rows = train_step_benchmark() if FLAGS.train_step else model_benchmark()
    if FLAGS.out:
        meta = dict(**cpu_kernels.machine_facts(), processor=platform.processor(),
                    tensorflow=tf.__version__, keras=keras.__version__, rounds=FLAGS.rounds,
                    steps=FLAGS.steps, argv=sys.argv[1:], inter_op=FLAGS.inter_op, intra_op=FLAGS.intra_op,
                    data_threads=FLAGS.data_threads, grappler_bf16=FLAGS.grappler_bf16, isolate=FLAGS.isolate,
                    env={k: v for k, v in os.environ.items() if k.startswith(("TF_", "OMP_", "ONEDNN"))})
        with open(FLAGS.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    app.run(main)
