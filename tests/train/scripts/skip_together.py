"""One replica's gradients overflow, the other's do not: every replica must skip the step.

Run as a script (2 logical CPU devices must be set before TensorFlow starts); prints one
JSON line: for each replica, whether its returned gradients are all finite, for a step
where only replica 1 overflowed and for a step where none did.
"""

import json

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from effv2_keras.train.step import skip_together  # noqa: E402

strategy = tf.distribute.MirroredStrategy(["/CPU:0", "/CPU:1"])


@tf.function
def step(overflow_on_replica_1):
    def replica_fn():
        replica = tf.distribute.get_replica_context().replica_id_in_sync_group
        bad = tf.logical_and(overflow_on_replica_1, tf.equal(replica, 1))
        grad = tf.cast(tf.where(bad, float("inf"), 1.0), tf.float16) * tf.ones([3], tf.float16)
        out = skip_together([grad, None, tf.ones([2])])
        assert out[1] is None
        return tf.reduce_all(tf.math.is_finite(out[0])) & tf.reduce_all(tf.math.is_finite(out[2]))
    return strategy.experimental_local_results(strategy.run(replica_fn))


with strategy.scope():
    result = {"one_overflow": [bool(x) for x in step(tf.constant(True))],
              "none": [bool(x) for x in step(tf.constant(False))]}
print(json.dumps(result))
