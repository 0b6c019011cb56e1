"""Where the training step's time goes: the trainer's real step under the TF profiler.

Runs ``effv2 train``'s code path (the Trainer's pipeline, traced step, EMA, host reads)
for a warm-up round, then profiles ``--steps`` steps and prints two tables from the
profile's host plane: time by op type, and time by model part split into forward and
backward (ops under ``gradient_tape/``). Op times are summed over TF's compute threads
(two inter-op threads can run at once, so the sum can exceed the wall time); the
input-pipeline row is the time the Python thread waited in ``IteratorGetNext``.

Example:
    python tools/profile_step.py --model efficientnetv2-b0 --size 128 --batch 32 --steps 6
    python tools/profile_step.py --model efficientnetv2-b0 --width 0.5 --depth 0.5 --size 64
"""

from __future__ import annotations

import collections
import glob
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import effv2_keras  # noqa: E402,F401  (first: it picks TensorFlow's CPU kernels before TF loads)
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

from effv2_keras import cpu_kernels, data  # noqa: E402
from step_harness import OneStageRun, default_data_spec  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", "efficientnetv2-b0", "Variant.")
flags.DEFINE_float("width", None, "Width multiplier (None: the variant's).")
flags.DEFINE_float("depth", None, "Depth multiplier (None: the variant's).")
flags.DEFINE_integer("size", 128, "Image size.")
flags.DEFINE_integer("batch", 32, "Batch size.")
flags.DEFINE_integer("steps", 6, "Profiled steps (after a warm-up round of as many).")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "Mixed precision policy.")
flags.DEFINE_boolean("fast_step", True, "The trainer's --fast_step.")
flags.DEFINE_string("data", None, "Data spec (default: folder:../shared/data/clothing160 when present, else digits).")
flags.DEFINE_integer("top", 15, "Op types listed (the rest summed as 'other').")
flags.DEFINE_string("out", None, "Write both tables as JSON here.")

# XLA-compiled kernels (the twin's SiLU, forward and backward) run as CpuExecutable on the
# compute threads, outside any named op.
XLA_KERNEL = "XLA kernels (SiLU)"
SKIPPED_TYPES = {"PartitionedCall", "StatefulPartitionedCall", "While", "If", "StatelessIf", "_Retval", "_Arg",
                 "NoOp", "Identity", "ReadVariableOp", "VarHandleOp", "Const"}
OPTIMIZER_SCOPES = ("sprop", "adam", "sgd", "loss_scale", "optimizer")  # Keras writes RMSprop's as rm_sprop
PARTS = ("input pipeline wait", "input normalization", "stem", "fused blocks (convs)", "MBConv expand/project convs", "MBConv depthwise",
         "SE", "BN", "activations", "head", "loss", "optimizer", "EMA update", "casts", "other")


def layer_sets(model):
    """The model's layer names, and its fused blocks' names (blocks without a depthwise conv)."""
    names = {layer.name for layer in model.layers}
    blocks = {name.split("_")[0] for name in names if name.startswith("block")}
    fused = {b for b in blocks if f"{b}_dwconv" not in names and f"{b}_dwconv2" not in names}
    return names, fused


def part_of(op_name: str, op_type: str, layers, fused_blocks) -> str:
    parts = op_name.split("/")
    if op_type == "IteratorGetNext":
        return "input pipeline wait"
    if op_type == XLA_KERNEL:
        return "activations"
    if "ema" in parts:
        return "EMA update"
    if any(key in parts[0].lower() for key in OPTIMIZER_SCOPES):
        return "optimizer"
    if op_type == "Cast" or op_type.endswith("Cast"):
        return "casts"
    layer = next((name for name in (_layer_name(p, layers) for p in parts) if name), None)
    if "FusedBatchNorm" in op_type or (layer or "").endswith("_bn"):
        return "BN"
    if layer is None:
        return "loss" if any("cross" in p or "softmax" in p.lower() for p in parts) else "other"
    if "_se_" in layer:
        return "SE"
    if layer.endswith("activation"):
        return "activations"
    if "_dwconv" in layer:
        return "MBConv depthwise"
    if layer.startswith(("rescaling", "normalization")):
        return "input normalization"
    if layer.startswith("stem"):
        return "stem"
    if layer.startswith("block"):
        return "fused blocks (convs)" if layer.split("_")[0] in fused_blocks else "MBConv expand/project convs"
    return "head"


def _layer_name(scope: str, layers):
    """The layer a name-scope component belongs to (Keras uniquifies scopes with ``_1``)."""
    if scope in layers:
        return scope
    base, _, suffix = scope.rpartition("_")
    return base if suffix.isdigit() and base in layers else None


def read_profile(logdir: str):
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.xplane.pb")))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    plane = next(p for p in space.planes if p.name == "/host:CPU")
    events = []  # (op name, op type, seconds)
    pipeline_seconds = 0.0
    for line in plane.lines:
        compute = line.name.startswith("tf_Compute")
        main_thread = not line.name.startswith("tf_")
        for event in line.events:
            meta = plane.event_metadata[event.metadata_id]
            seconds = event.duration_ps * 1e-12
            if main_thread and meta.name == "EagerLocalExecute: IteratorGetNext":
                events.append(("IteratorGetNext", "IteratorGetNext", seconds))
            elif line.name.startswith("tf_data_private_threadpool") and meta.name == "ExecutorState::Process":
                pipeline_seconds += seconds
            elif compute and meta.name == "CpuExecutable::ExecuteAsyncOnStream":
                events.append(("xla", XLA_KERNEL, seconds))
            elif compute and ":" in meta.name and "::" not in meta.name:
                name, _, op_type = meta.name.rpartition(":")
                if op_type not in SKIPPED_TYPES and not op_type.startswith("__inference"):
                    events.append((name, op_type, seconds))
    return events, pipeline_seconds


def tables(events, layers, fused_blocks):
    by_type = collections.Counter()
    by_part = collections.defaultdict(lambda: [0.0, 0.0])
    for name, op_type, seconds in events:
        by_type[op_type] += seconds
        part = part_of(name, op_type, layers, fused_blocks)
        backward = name.startswith("gradient_tape/") or "/gradient_tape/" in name
        by_part[part][1 if backward else 0] += seconds
    return by_type, by_part


def print_tables(by_type, by_part, steps, wall, pipeline_seconds):
    total = sum(by_type.values())
    print(f"\n{FLAGS.model} w{FLAGS.width or '-'} d{FLAGS.depth or '-'} at {FLAGS.size} px, batch {FLAGS.batch}, "
          f"{FLAGS.precision}, fast_step {FLAGS.fast_step}: {wall / steps * 1000:.0f} ms/step wall, "
          f"{total / steps * 1000:.0f} ms/step of op time (summed over threads); the input pipeline's "
          f"tf.data threads worked {pipeline_seconds / steps * 1000:.0f} ms/step beside it")
    print("\n| op type | ms/step | share |\n|---|---|---|")
    top = by_type.most_common(FLAGS.top)
    for op_type, seconds in top:
        print(f"| {op_type} | {seconds / steps * 1000:.1f} | {seconds / total:.1%} |")
    rest = total - sum(s for _, s in top)
    print(f"| other ({len(by_type) - len(top)} types) | {rest / steps * 1000:.1f} | {rest / total:.1%} |")
    print("\n| model part | forward ms/step | backward ms/step | share |\n|---|---|---|---|")
    for part in PARTS:
        fwd, bwd = by_part.get(part, (0.0, 0.0))
        if fwd or bwd:
            print(f"| {part} | {fwd / steps * 1000:.1f} | {bwd / steps * 1000:.1f} | {(fwd + bwd) / total:.1%} |")


def main(argv):
    del argv
    data_spec = FLAGS.data or default_data_spec()
    run = OneStageRun(FLAGS.model, FLAGS.size, FLAGS.precision, data.load(data_spec, val_fraction=0.0), data_spec,
                      FLAGS.batch, FLAGS.steps, epochs=2, width=FLAGS.width, depth=FLAGS.depth,
                      fast_step=FLAGS.fast_step)
    run.round()  # warm-up: tracing, allocation
    logdir = tempfile.mkdtemp(prefix="effv2-xplane-")
    tf.profiler.experimental.start(logdir)
    start = time.perf_counter()
    run.round()
    wall = time.perf_counter() - start
    tf.profiler.experimental.stop()
    trainer = run.trainer
    layers, fused_blocks = layer_sets(trainer.model)
    events, pipeline_seconds = read_profile(logdir)
    by_type, by_part = tables(events, layers, fused_blocks)
    print_tables(by_type, by_part, FLAGS.steps, wall, pipeline_seconds)
    if FLAGS.out:
        with open(FLAGS.out, "w") as f:
            json.dump({"machine": cpu_kernels.machine_facts(), "argv": sys.argv[1:], "steps": FLAGS.steps,
                       "wall_seconds": wall,
                       "pipeline_thread_seconds": pipeline_seconds,
                       "by_type_seconds": dict(by_type),
                       "by_part_seconds": {k: {"forward": v[0], "backward": v[1]} for k, v in by_part.items()}},
                      f, indent=2)


if __name__ == "__main__":
    app.run(main)
