"""Traced graphs: the inference-mode check every exporter runs before writing, the
trackable holder of a model's variables, and the one-output probabilities SavedModel
that the TFLite and ONNX converters start from.

    >>> import tensorflow as tf
    >>> clean = tf.function(lambda x: x * 2.0).get_concrete_function(tf.TensorSpec([2], tf.float32))
    >>> training_ops(clean)
    []
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Tuple

import keras
import tensorflow as tf

from effv2_keras.export.errors import ExportError
from effv2_keras.export.head import Head, input_channels, pooled_features

# Op types that only appear when a model is traced in training mode or with
# randomness: moving-statistic updates of BatchNormalization, dropout and
# drop-path masks, random augmentation.
_STATE_UPDATE_OPS = {"AssignVariableOp", "AssignAddVariableOp", "AssignSubVariableOp"}

# Inference-only SavedModels skip the custom-gradient functions (SiLU has one per
# activation): tracing them is most of the save time, and nothing trains on these.
# The TF-Hub exporter keeps them: its modules are fine-tuned.
INFERENCE_SAVE_OPTIONS = tf.saved_model.SaveOptions(experimental_custom_gradients=False)


def graph_op_types(concrete_function) -> Dict[str, List]:
    """Op type -> node defs, over the graph and every function in its library."""
    graph_def = concrete_function.graph.as_graph_def()
    nodes = list(graph_def.node)
    for function in graph_def.library.function:
        nodes.extend(function.node_def)
    ops: Dict[str, List] = {}
    for node in nodes:
        ops.setdefault(node.op, []).append(node)
    return ops


def training_ops(concrete_function) -> List[str]:
    """Op types that betray a training-mode trace (empty for a clean inference graph)."""
    found = set()
    for op, nodes in graph_op_types(concrete_function).items():
        if "Random" in op or op in _STATE_UPDATE_OPS or op.startswith("Dropout"):
            found.add(op)
        if op.startswith("FusedBatchNorm") and any(n.attr["is_training"].b for n in nodes):
            found.add(f"{op}(is_training=True)")
    return sorted(found)


def assert_inference_graph(concrete_function, what: str) -> None:
    """Raises unless the traced graph is free of random ops, dropout and BN updates."""
    bad = training_ops(concrete_function)
    if bad:
        raise ExportError(f"{what}: the traced graph is not in inference mode (found {', '.join(bad)}).")


class VariableHolder(tf.__internal__.tracking.AutoTrackable):
    """A trackable object holding the model's underlying ``tf.Variable``s.

    It tracks ``v.value`` (the tf.Variable inside each Keras variable), never the
    Keras variables or the Keras model: if the saved object also tracked the
    Keras variables, every gradient of the reloaded object would silently be None.
    """

    def __init__(self, variables: Iterable, trainable_variables: Iterable = ()):
        super().__init__()
        self.variables = [v.value for v in variables]
        self.trainable_variables = [v.value for v in trainable_variables]


class ProbabilitiesModule(VariableHolder):
    """``serve(images)`` -> {"probabilities"}: the one-output graph converters start from."""

    def __init__(self, model: keras.Model, head: Head):
        super().__init__(model.variables)
        self._head = head  # a plain dataclass: the Keras model inside is not tracked
        self.serve = tf.function(self._serve)

    def _serve(self, images):
        logits = self._head.logits(pooled_features(self._head, images))
        return {"probabilities": self._head.probabilities(logits)}


def save_probabilities_model(model: keras.Model, head: Head, size: Tuple[int, int], directory,
                             what: str) -> None:
    """Saves ``ProbabilitiesModule`` (fixed H, W; free batch) as a SavedModel, after
    checking that its graph is an inference graph."""
    module = ProbabilitiesModule(model, head)
    function = module.serve.get_concrete_function(
        tf.TensorSpec([None, size[0], size[1], input_channels(model)], tf.float32, name="images"))
    assert_inference_graph(function, what)
    tf.saved_model.save(module, str(directory), signatures={"serving_default": function},
                        options=INFERENCE_SAVE_OPTIONS)
