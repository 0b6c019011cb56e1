"""A tiny distributed training, run in its own process by test_train_distributed.py.

    python distributed_run.py mirrored OUT RESULT.json
    TF_CONFIG=... python distributed_run.py multiworker OUT RESULT.json

mirrored: 2 logical CPU devices (set before TensorFlow starts), MirroredStrategy, mixed_float16.
multiworker: one worker of a MultiWorkerMirroredStrategy cluster given by TF_CONFIG.
Writes RESULT.json (what each replica saw, replica agreement) and RESULT.npz (final weights).
"""

import hashlib
import json
import sys

import keras
import numpy as np
import tensorflow as tf

mode, out, result_path = sys.argv[1], sys.argv[2], sys.argv[3]
if mode == "mirrored":
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from effv2_keras.train import Callback, TrainConfig, Trainer  # noqa: E402


class Recorder(Callback):
    def __init__(self):
        self.batches = []

    def on_train_batch_inputs(self, step, images, labels):
        trainer = self.trainer
        local_images = trainer.strategy.experimental_local_results(images)
        local_labels = trainer.strategy.experimental_local_results(labels)
        self.batches.append({
            "step": step,
            "shapes": [list(x.shape) for x in local_images],
            "image_sums": [float(tf.reduce_sum(x)) for x in local_images],
            "label_ids": [np.argmax(y.numpy(), -1).tolist() for y in local_labels],
            "digests": [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x in local_images],
        })


def replica_spread(variables):
    """Largest difference between the replicas' copies of any variable (0: identical)."""
    worst = 0.0
    for v in variables:
        tf_var = v.value if isinstance(v, keras.Variable) else v  # the tf (distributed) variable
        copies = [c.numpy() for c in getattr(tf_var, "values", [tf_var])]
        for c in copies[1:]:
            worst = max(worst, float(np.max(np.abs(c.astype("float64") - copies[0]))) if c.size else 0.0)
    return worst


extra = {"randaug_min": 5.0, "randaug_max": 5.0,  # RandAugment on every image: it must work on every worker
         "randaug_probability": 1.0}
if mode == "mirrored":  # loss scaling under a distribution strategy, while we are at it
    extra["mixed_precision"] = "mixed_float16"
config = TrainConfig(model="efficientnetv2-b0", width=0.25, depth=0.25, data="digits", batch_size=16,
                     min_size=32, max_size=32, epochs=1, stages=1, steps_per_epoch=3, flip=False,
                     verbose=0, strategy=mode, ema_decay=0.9, out=out, dropout_min=0.2, dropout_max=0.2,
                     **extra)
recorder = Recorder()
trainer = Trainer(config, callbacks=[recorder])
result = trainer.fit()
weights = {f"model.{i:05d}": v.numpy() for i, v in enumerate(trainer.model.variables)}
weights.update({f"ema.{i:05d}": s.numpy() for i, s in enumerate(trainer.ema.shadows)})
np.savez(result_path.replace(".json", ".npz"), **weights)
with open(result_path, "w") as f:
    json.dump({
        "optimizer": type(trainer.optimizer).__name__,
        "compute_dtype": trainer.model.get_layer("stem_conv").compute_dtype,
        "output_dtype": str(result.model.output.dtype),
        "replicas": trainer.replicas, "workers": trainer.num_workers, "chief": trainer.is_chief,
        "per_replica_batch": trainer.per_replica_batch, "global_step": result.global_step,
        "trace_log": [list(t["image_shape"]) for t in trainer.trace_log],
        "batches": recorder.batches,
        "model_spread": replica_spread(trainer.model.variables),
        "ema_spread": replica_spread(trainer.ema.shadows),
        "val": result.val, "test": result.test, "num_val": trainer.splits.val.num_examples,
        "model_path": result.model_path,
    }, f)
