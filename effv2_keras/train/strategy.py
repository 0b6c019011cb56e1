"""tf.distribute strategies by name, and the few facts the trainer needs about them.

* ``default``: no distribution (one device).
* ``mirrored``: MirroredStrategy over every local GPU, or over every logical CPU
  device when there is no GPU (how it is tested: 2 logical CPUs).
* ``multiworker``: MultiWorkerMirroredStrategy; the cluster comes from ``TF_CONFIG``.
* ``tpu``: TPUStrategy on the TPU named by ``tpu`` ('' = the local / Colab TPU).
"""

from __future__ import annotations

import tensorflow as tf


def make_strategy(name: str, tpu: str = ""):
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"--strategy: must be one of default, mirrored, multiworker, tpu, got {name!r}.")


def worker_info(strategy):
    """(is_chief, worker_index, num_workers) of this process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return True, 0, 1
    task_type, task_id = resolver.task_type, resolver.task_id or 0
    spec = resolver.cluster_spec().as_dict()
    num_workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
    if task_type is None:
        return True, 0, 1
    if "chief" in spec:
        is_chief = task_type == "chief"
        index = 0 if is_chief else task_id + 1
    else:
        is_chief = task_type == "worker" and task_id == 0
        index = task_id
    return is_chief, index, max(num_workers, 1)


def accelerator(strategy) -> str:
    """'tpu', 'gpu' or 'cpu': what the replicas run on (decides jit_compile=auto)."""
    if isinstance(strategy, tf.distribute.TPUStrategy):
        return "tpu"
    if tf.config.list_logical_devices("GPU"):
        return "gpu"
    return "cpu"
