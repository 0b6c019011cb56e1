"""The training-time twin: the same layers and variables, faster training kernels.

The model a run saves, exports and reloads is stock Keras layers (``keras.models.load_model``
opens it without this package). The train step calls a twin built by ``make_twin``: a
functional model over the SAME layer objects (so the SAME variables: nothing is copied,
the optimizer, EMA and checkpoints see one set of weights), in which these layers are
wrapped by a training-time kernel:

* ``BatchNormalization`` -> ``FusedBatchNorm``: Keras 3 on TF normalizes with
  ``ops.moments`` + ``ops.batch_normalization`` (about ten ops forward, their autodiff
  backward and float32 casts under mixed precision, per layer); the wrapper runs one
  ``FusedBatchNormV3`` forward and one ``FusedBatchNormGradV3`` backward on the stock
  layer's gamma/beta (bf16 activations go in as they are: the kernel keeps its statistics
  and arithmetic in float32, as Keras' casts do), and updates the moving statistics by
  Keras' rule (biased batch variance: the kernel returns the unbiased one, corrected here).
* ``Activation("silu")`` -> ``FusibleSiLU``: ``x * sigmoid(x)`` with its forward and its
  backward each one XLA-compiled elementwise kernel (autodiff runs six memory-bound passes).
* under a bf16 policy, ``DepthwiseConv2D`` -> ``Float32Depthwise``: oneDNN's float32
  depthwise kernels beat its bf16 ones here.
* the head ``Dropout`` -> ``VariableRateDropout``: the rate is a ``tf.Variable`` read in
  the graph, so a progressive stage change sets it without re-tracing the step. It draws
  from the stock layer's seed generator (checkpointed with the model).

Convolutions stay with oneDNN: whole-graph XLA is slower on CPU (depthwise convolutions).
The trainer evaluates, checkpoints and saves the stock model itself; in the twin, the BN
and dropout wrappers call the stock layers when ``training=False`` and the others compute
the same function. Each swap is switchable (``TwinOptions``) so the step benchmark can
measure one lever at a time.

Example:
    >>> from effv2_keras.models import build_model
    >>> stock = build_model("efficientnetv2-b0", width=0.25, depth=0.25, input_shape=(None, None, 3),
    ...                     pooling="avg", classes=3, classifier_activation=None, weights=None)
    >>> twin = make_twin(stock)
    >>> [id(v) for v in twin.weights] == [id(v) for v in stock.weights]
    True
"""

from __future__ import annotations

import dataclasses

import keras
import tensorflow as tf

HEAD_DROPOUT = "top_dropout"


@dataclasses.dataclass(frozen=True)
class TwinOptions:
    """Which layers the twin wraps (all by default)."""

    fused_batch_norm: bool = True
    fusible_silu: bool = True
    variable_dropout: bool = True
    xla_silu: bool = True  # the SiLU's forward and backward each one XLA-fused kernel (needs fusible_silu)
    float32_depthwise: bool = True  # under a bf16 policy, depthwise convs in float32 (oneDNN's bf16 ones are slower)


class FusedBatchNorm(keras.layers.Layer):
    """Training with TF's fused kernel on a stock ``BatchNormalization``'s variables.

    Channels-last 4-D inputs only (``make_twin`` wraps nothing else); ``training=False``
    or a frozen layer calls the stock layer.
    """

    def __init__(self, stock: keras.layers.BatchNormalization, **kwargs):
        super().__init__(name=stock.name, dtype=stock.dtype_policy, **kwargs)
        self.stock = stock
        self.built = True

    def call(self, inputs, training=None, mask=None):
        bn = self.stock
        if not (training and bn.trainable) or mask is not None:
            return bn(inputs, training=training, mask=mask)
        channels = inputs.shape[-1]
        scale = tf.cast(bn.gamma.value, tf.float32) if bn.scale else tf.ones([channels], tf.float32)
        offset = tf.cast(bn.beta.value, tf.float32) if bn.center else tf.zeros([channels], tf.float32)
        outputs, mean, unbiased_variance = tf.compat.v1.nn.fused_batch_norm(
            inputs, scale, offset, epsilon=bn.epsilon, is_training=True)[:3]
        shape = tf.shape(inputs)
        count = tf.cast(shape[0] * shape[1] * shape[2], tf.float32)
        # The kernel's variance carries Bessel's correction; Keras' moving variance does not.
        variance = unbiased_variance * ((count - 1.0) / count)
        keep = bn.momentum
        bn.moving_mean.assign(bn.moving_mean * keep + tf.stop_gradient(mean) * (1.0 - keep))
        bn.moving_variance.assign(
            bn.moving_variance * keep + tf.stop_gradient(variance) * (1.0 - keep))
        return tf.cast(outputs, self.compute_dtype)


class FusibleSiLU(keras.layers.Layer):
    """SiLU written as ``x * sigmoid(x)`` (the saved model keeps ``Activation("silu")``).

    With ``xla=True`` the forward and the backward are each one XLA-compiled elementwise
    kernel: autodiff of ``x * sigmoid(x)`` runs six passes over the activation (Sigmoid,
    Mul; Mul, Mul, SigmoidGrad, AddN), which on a CPU are memory-bound; XLA fuses them
    into two.
    """

    def __init__(self, xla: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.xla = xla

    def call(self, inputs):
        if self.xla:
            return _xla_silu(inputs)
        return inputs * tf.sigmoid(inputs)


# float32 arithmetic inside the kernels: XLA's CPU bf16 elementwise code is slower than
# converting on the fly (measured 10 ms against 16 ms per fwd+bwd of a 6M-element tensor).
@tf.function(jit_compile=True, reduce_retracing=True)
def _silu_forward(x):
    x32 = tf.cast(x, tf.float32)
    return tf.cast(x32 * tf.sigmoid(x32), x.dtype)


@tf.function(jit_compile=True, reduce_retracing=True)
def _silu_backward(dy, x):
    x32 = tf.cast(x, tf.float32)
    s = tf.sigmoid(x32)
    return tf.cast(tf.cast(dy, tf.float32) * (s * (1.0 + x32 * (1.0 - s))), dy.dtype)


@tf.custom_gradient
def _xla_silu(x):
    return _silu_forward(x), lambda dy: _silu_backward(dy, x)


class VariableRateDropout(keras.layers.Layer):
    """A stock ``Dropout`` whose rate is read from a ``tf.Variable`` in the graph.

    Draws its noise from the stock layer's seed generator. The rate variable lives in
    a plain holder object, outside Keras' tracking, so the twin's weights stay exactly
    the stock model's.
    """

    def __init__(self, stock: keras.layers.Dropout, **kwargs):
        super().__init__(name=stock.name, dtype=stock.dtype_policy, **kwargs)
        self.stock = stock
        self._holder = _RateHolder(float(stock.rate))
        self.built = True

    @property
    def rate(self) -> float:
        return float(self._holder.variable.numpy())

    def set_rate(self, rate: float) -> None:
        """The rate of the next steps (no re-trace); the stock layer's attribute follows."""
        self._holder.variable.assign(float(rate))
        self.stock.rate = float(rate)

    def call(self, inputs, training=None):
        if not training:
            return inputs
        keep = 1.0 - tf.cast(self._holder.variable, inputs.dtype)
        noise = keras.random.uniform(tf.shape(inputs), seed=self.stock.seed_generator, dtype=inputs.dtype)
        return tf.where(noise < keep, inputs / keep, tf.zeros_like(inputs))


class Float32Depthwise(keras.layers.Layer):
    """A stock ``DepthwiseConv2D`` (no bias, "same" padding) computed in float32 under a bf16 policy.

    oneDNN's bf16 depthwise backward kernels are slower on this class of CPU than its
    float32 ones (docs/PERFORMANCE.md); the casts around the conv cost less than that.
    """

    def __init__(self, stock: keras.layers.DepthwiseConv2D, **kwargs):
        # autocast=False: the kernel is read as the float32 variable, not rounded to bf16 first.
        super().__init__(name=stock.name, dtype=stock.dtype_policy, autocast=False, **kwargs)
        self.stock = stock
        self.built = True

    def call(self, inputs):
        conv = self.stock
        strides = (1,) + tuple(conv.strides) + (1,)
        outputs = tf.nn.depthwise_conv2d(tf.cast(inputs, tf.float32), tf.cast(conv.kernel.value, tf.float32),
                                         strides=strides, padding="SAME", dilations=conv.dilation_rate)
        return tf.cast(outputs, self.compute_dtype)


class _RateHolder:
    def __init__(self, rate: float):
        self.variable = tf.Variable(rate, trainable=False, dtype=tf.float32, name="dropout_rate")


def make_twin(model: keras.Model, options: TwinOptions = TwinOptions()) -> keras.Model:
    """A functional model over ``model``'s own layers, with the training kernels wrapped in.

    The twin holds no variables of its own: ``twin.weights`` are ``model.weights`` (the
    same objects, in the same order), so training the twin trains ``model``.
    """

    def wrap(layer):
        if (options.fused_batch_norm and type(layer) is keras.layers.BatchNormalization
                and _fusable(layer)):
            return FusedBatchNorm(layer)
        if (options.fusible_silu and type(layer) is keras.layers.Activation
                and layer.get_config().get("activation") == "silu"):
            return FusibleSiLU(xla=options.xla_silu, name=layer.name, dtype=layer.dtype_policy)
        if (options.float32_depthwise and type(layer) is keras.layers.DepthwiseConv2D
                and layer.compute_dtype == "bfloat16" and _plain_depthwise(layer)):
            return Float32Depthwise(layer)
        if options.variable_dropout and type(layer) is keras.layers.Dropout and layer.name == HEAD_DROPOUT:
            return VariableRateDropout(layer)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)


def _plain_depthwise(layer: keras.layers.DepthwiseConv2D) -> bool:
    return (layer.padding == "same" and not layer.use_bias and layer.data_format == "channels_last"
            and layer.depth_multiplier == 1 and layer.activation in (None, keras.activations.linear))


def _fusable(layer: keras.layers.BatchNormalization) -> bool:
    return (layer.axis in (-1, 3) and len(layer.input.shape) == 4 and not layer.synchronized
            and not layer.renorm)


def set_head_dropout(model: keras.Model, rate: float) -> None:
    """Sets the head dropout rate: a twin's variable (no re-trace) or a stock layer's attribute."""
    try:
        layer = model.get_layer(HEAD_DROPOUT)
    except ValueError:
        return
    if isinstance(layer, VariableRateDropout):
        layer.set_rate(rate)
    else:
        layer.rate = float(rate)
