"""The traced training and evaluation steps of a run, built once from its model and optimizer.

The train step trains ``network`` (the fast twin over the model's own layers, or the model
itself) and updates ``model``'s variables: loss from logits, the L2 penalty of the RMSProp/SGD
recipes, loss scaling, the optimizer, BN statistics averaged across replicas, the EMA. With
``fast_step`` and one replica it is traced once for every image size (None height and width)
and reads the head's dropout rate from a variable; otherwise each stage traces its own.

The eval step sums loss, top-1, top-k hits and weights (padding examples have weight 0), so
every replica and worker runs the same number of steps.
"""

from __future__ import annotations

from typing import Dict, List

import keras
import tensorflow as tf

from effv2_keras.train import optim


class Steps:
    """The train and eval ``tf.function`` of one run.

    ``stage_index`` is set by the trainer when a stage begins; every trace of the train step is
    recorded in ``trace_log`` (stage, image and label shapes, the head's dropout rate) and
    counted in ``trace_counts`` by stage, so tests can check one trace for every stage size.
    """

    def __init__(self, model, network, optimizer, ema, strategy, *, batch_size: int, num_classes: int,
                 l2: float, jit_compile: bool, fast_step: bool, distributed: bool):
        self.model, self.network, self.optimizer, self.ema, self.strategy = model, network, optimizer, ema, strategy
        self.batch_size, self.num_classes, self.l2 = batch_size, num_classes, l2
        self.jit_compile, self.fast_step, self.distributed = jit_compile, fast_step, distributed
        self.replicas = strategy.num_replicas_in_sync
        self.decayed = optim.decayed_variables(model) if l2 else []
        self.bn_statistics = [v for v in model.non_trainable_variables if tf.as_dtype(v.dtype).is_floating]
        self.dropout_layer = _find_layer(model, "top_dropout")
        self.stage_index = 0
        self.trace_log: List[dict] = []
        self.trace_counts: Dict[int, int] = {}

    def train_function(self):
        """``train_step(images, labels, step) -> (loss sum, correct, optimizer iteration)``."""
        model, network, optimizer, ema = self.model, self.network, self.optimizer, self.ema
        global_batch, replicas = float(self.batch_size), self.replicas
        loss_scaled = isinstance(optimizer, keras.optimizers.LossScaleOptimizer)

        def replica_step(images, labels, step):
            self.trace_log.append({
                "stage": self.stage_index, "image_shape": tuple(images.shape),
                "label_shape": tuple(labels.shape),
                "dropout": None if self.dropout_layer is None else float(self.dropout_layer.rate),
                "dropout_variable": self.fast_step})
            with tf.GradientTape() as tape:
                logits = network(images, training=True)
                per_example = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
                loss = tf.reduce_sum(per_example) / global_batch
                penalty = optim.l2_penalty(self.decayed, self.l2)
                if penalty is not None:
                    loss += penalty / replicas
                scaled = optimizer.scale_loss(loss)
            grads = tape.gradient(scaled, model.trainable_variables)
            if loss_scaled and replicas > 1:
                grads = skip_together(grads)
            optimizer.apply(grads, model.trainable_variables)
            if replicas > 1 and self.bn_statistics:
                context = tf.distribute.get_replica_context()
                # tf.identity gives each read the replica's device (a bare variable read has
                # none, and MultiWorkerMirroredStrategy's all-reduce then has no destination).
                means = context.all_reduce(tf.distribute.ReduceOp.MEAN,
                                           [tf.identity(v.value) for v in self.bn_statistics])
                for variable, mean in zip(self.bn_statistics, means):
                    variable.assign(mean)
            if ema is not None:
                ema.update(step)
            correct = tf.reduce_sum(tf.cast(
                tf.equal(tf.argmax(logits, -1), tf.argmax(labels, -1)), tf.float32))
            return tf.reduce_sum(per_example), correct

        if self.jit_compile:
            replica_step = tf.function(replica_step, jit_compile=True)

        counter = optim.inner_optimizer(optimizer).iterations

        def train_step(images, labels, step):
            index = self.stage_index
            self.trace_counts[index] = self.trace_counts.get(index, 0) + 1
            # The optimizer's own step before this update (a loss-scale skip does not advance
            # it), so the rate logged for a step queued between host reads is the one it used.
            iteration = tf.identity(counter)
            loss_sum, correct = self.strategy.run(replica_step, args=(images, labels, step))
            reduce = self.strategy.reduce
            return (reduce(tf.distribute.ReduceOp.SUM, loss_sum, axis=None),
                    reduce(tf.distribute.ReduceOp.SUM, correct, axis=None), iteration)

        if not self.fast_step or self.distributed:
            return tf.function(train_step)  # distributed inputs: one trace per stage shape
        batch = self.batch_size // self.replicas
        return tf.function(train_step, input_signature=(
            tf.TensorSpec([batch, None, None, 3], tf.float32),
            tf.TensorSpec([batch, self.num_classes], tf.float32),
            tf.TensorSpec([], tf.int64)))

    def eval_function(self):
        """``eval_step(images, labels, weights) -> [loss sum, top-1 hits, top-k hits, weight sum]``."""
        model, k = self.model, min(5, self.num_classes)

        def replica_eval(images, labels, weights):
            logits = tf.cast(model(images, training=False), tf.float32)
            target = tf.argmax(labels, -1, output_type=tf.int32)
            loss = keras.losses.categorical_crossentropy(labels, logits, from_logits=True)
            top1 = tf.cast(tf.math.in_top_k(target, logits, 1), tf.float32)
            top5 = tf.cast(tf.math.in_top_k(target, logits, k), tf.float32)
            return [tf.reduce_sum(x * weights) for x in (loss, top1, top5)] + [tf.reduce_sum(weights)]

        if self.jit_compile:
            replica_eval = tf.function(replica_eval, jit_compile=True)

        def eval_step(images, labels, weights):
            sums = self.strategy.run(replica_eval, args=(images, labels, weights))
            return [self.strategy.reduce(tf.distribute.ReduceOp.SUM, s, axis=None) for s in sums]

        # Nothing to convert (no Python control flow on tensors); AutoGraph only warned about the closures.
        return tf.function(eval_step, autograph=False)


def skip_together(grads):
    """Per-replica gradients, made non-finite on every replica when any replica's are.

    Keras' LossScaleOptimizer decides "finite, apply" or "overflow, skip and lower the
    scale" from the FIRST replica's gradients only (it expects them all-reduced already),
    while the inner optimizer then sums every replica's. When only another replica
    overflowed (fp16 under MirroredStrategy: measured on digits, step 2) the inf was summed
    into the weights. Adding 0 (all finite) or NaN (any overflow) to every gradient makes
    all replicas, and so the first, agree.
    """
    finite = tf.reduce_all([tf.reduce_all(tf.math.is_finite(g)) for g in grads if g is not None])
    overflows = tf.distribute.get_replica_context().all_reduce(
        tf.distribute.ReduceOp.SUM, 1.0 - tf.cast(finite, tf.float32))
    poison = tf.where(overflows > 0.0, float("nan"), 0.0)
    return [None if g is None else g + tf.cast(poison, g.dtype) for g in grads]


def _find_layer(model, name):
    try:
        return model.get_layer(name)
    except ValueError:
        return None
