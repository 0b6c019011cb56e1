"""TF-Hub reusable SavedModels (the TF2 reusable SavedModel API), two flavours.

The saved object has ``__call__(inputs, training=False)``, ``variables``,
``trainable_variables`` and ``regularization_losses``, and follows TF-Hub's
common image signatures: ``inputs`` are float32 [batch, H, W, 3] with values in
[0, 1] (not 0-255); the ``classification`` flavour returns logits, the
``feature_vector`` flavour the pooled features [batch, channels].

Both values of ``training`` run the network in inference mode (BatchNorm uses
its moving statistics, no dropout or drop-path): the usual way to fine-tune
EfficientNets, and it keeps random ops and state updates out of the graph.
Gradients reach every trainable variable.

Keras 3 route: ``hub.KerasLayer`` is a Keras 2 (tf_keras) layer and fails on
Keras 3 symbolic tensors, and ``keras.layers.TFSMLayer`` loads but cannot be
trained (its weight names keep the ``:0`` suffix, which Keras optimizers reject),
so use ``HubLayer`` below, a 30-line Keras 3 layer (copy it if you do not
depend on this package):

    >>> import keras
    >>> from effv2_keras.export import HubLayer
    >>> inputs = keras.Input((224, 224, 3))  # values in [0, 1]
    >>> features = HubLayer("exported/hub_fv", trainable=True)(inputs)  # doctest: +SKIP
"""

from __future__ import annotations

import time
from pathlib import Path
import keras
import tensorflow as tf

from effv2_keras.export.artifacts import prepare_out_dir, write_metadata
from effv2_keras.export.errors import ExportError
from effv2_keras.export.graph import VariableHolder, assert_inference_graph
from effv2_keras.export.head import Head, input_channels, pooled_features, resolve_image_size, static_image_size
from effv2_keras.export.source import load_source

FLAVOURS = ("classification", "feature_vector")
OUTPUT_KEYS = {"classification": "logits", "feature_vector": "feature_vector"}


class HubModule(VariableHolder):
    """A reusable SavedModel around a model's inference function."""

    def __init__(self, model, head: Head, flavour: str):
        net = model if flavour == "classification" else head.features
        super().__init__(net.variables, net.trainable_variables)
        self._head = head  # a plain dataclass: the Keras model inside is not tracked
        self._flavour = flavour
        self.regularization_losses = []
        self.__call__ = tf.function(self._call)

    def _call(self, inputs, training=False):
        del training  # inference mode either way (see the module docstring)
        features = pooled_features(self._head, tf.cast(inputs, tf.float32) * 255.0)
        if self._flavour == "feature_vector":
            return features
        return self._head.logits(features)


def export_tfhub(model, out_dir, *, flavour: str = "classification", image_size=None,
                 use_ema: bool = True, class_names=None) -> Path:
    """Writes a TF-Hub reusable SavedModel to ``out_dir``.

    Args:
        model: a built Keras model, a ``.keras`` file or a run directory.
        out_dir: directory of the SavedModel (``hub.load(out_dir)``).
        flavour: ``classification`` (logits) or ``feature_vector`` (pooled features).
        image_size: fixes H and W of the input signature; by default the
            model's own (free when the model accepts any size).
        use_ema: an in-memory model compiled with ``use_ema=True`` exports its averages.
        class_names: recorded in the metadata file (default: the run's ``run.json``).
    """
    if flavour not in FLAVOURS:
        raise ExportError(f"{{flavour}} must be one of {', '.join(FLAVOURS)}; got {flavour!r}.", "flavour")
    start = time.perf_counter()
    source = load_source(model, class_names, use_ema)
    model, head = source.model, source.head
    if flavour == "classification":
        source.classifier("the classification flavour (export flavour 'feature_vector')")
    names = source.class_names if flavour == "classification" else None
    static = static_image_size(model)
    height, width = resolve_image_size(model, image_size) if image_size is not None else (
        static if static else (None, None))
    channels = input_channels(model)
    module = HubModule(model, head, flavour)
    spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="inputs")
    traced = [module.__call__.get_concrete_function(spec, training) for training in (False, True)]
    default = module.__call__.get_concrete_function(spec)
    for function in traced + [default]:
        assert_inference_graph(function, f"TF-Hub {flavour}")
    key = OUTPUT_KEYS[flavour]
    serving = tf.function(lambda inputs: {key: module.__call__(inputs, training=False)})
    out = prepare_out_dir(out_dir)
    tf.saved_model.save(module, str(out), signatures={"serving_default": serving.get_concrete_function(spec)})
    write_metadata(
        out, format="tfhub", flavour=flavour, model=model.name, input_range="0-1", output=key,
        image_size=[height, width] if height else None, class_names=names, num_classes=head.num_classes,
        activation=head.activation if flavour == "classification" else None,
        ema=source.ema, seconds=round(time.perf_counter() - start, 2))
    return out


def load_module(handle):
    """``hub.load`` when tensorflow_hub imports, else ``tf.saved_model.load`` (same object)."""
    try:
        import tensorflow_hub as hub
    except ImportError:
        return tf.saved_model.load(str(handle))
    return hub.load(str(handle))


@keras.saving.register_keras_serializable(package="effv2_keras")
class HubLayer(keras.layers.Layer):
    """A TF2 reusable SavedModel as a (fine-tunable) Keras 3 layer.

    The layer's weights are the loaded object's own ``tf.Variable``s, wrapped
    as Keras variables with optimizer-safe names, so gradients and optimizer
    updates reach the module.
    """

    def __init__(self, handle, trainable: bool = False, **kwargs):
        super().__init__(trainable=trainable, **kwargs)
        self.handle = str(handle)
        self._module = load_module(self.handle)
        trainable_refs = {v.ref() for v in self._module.trainable_variables}
        for variable in self._module.variables:
            self._track_variable(keras.Variable(
                initializer=variable, shape=variable.shape, dtype=variable.dtype,
                trainable=variable.ref() in trainable_refs,
                name=variable.name.split(":")[0].replace("/", "_")))
        self._build_at_init()

    def call(self, inputs, training=False):
        return self._module(inputs, training=bool(training) if training is not None else False)

    def get_config(self):
        return {**super().get_config(), "handle": self.handle}
