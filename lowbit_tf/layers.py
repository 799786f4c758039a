r"""Quantized Keras layers.

Each quantized layer is its Keras twin plus quantizers: the inputs go through
``input_quantizer`` and the kernel through ``kernel_quantizer`` before the usual
computation, and the latent (float) kernel is what the optimizer updates. With
both quantizers ``None`` (or ``"identity"``) a layer computes exactly what its
Keras twin computes. ``gradient_quantizer`` quantizes the gradient flowing back
out of the layer (identity on the forward pass).

Layers:

- :class:`QuantConv2D`, :class:`QuantDense`, :class:`QuantDepthwiseConv2D`:
  Larq's layers (same arguments, defaults and semantics) for Keras 3.
- :class:`ABCConv2D`, :class:`ABCDense`: ABC-Net multi-bit layers (``M`` binary
  weight bases times ``N`` binary activation bases, ``M * N`` binary products).
- :class:`FastfoodDense`: the Adaptive Fastfood transform of Deep Fried Convnets,
  an ``O(n log n)``-time, ``O(n)``-parameter replacement of a dense layer.
- The rest of Larq's layers, defined in :mod:`lowbit_tf.conv_layers`
  (:class:`QuantConv1D`, :class:`QuantConv3D`, :class:`QuantConv2DTranspose`,
  :class:`QuantConv3DTranspose`, :class:`QuantSeparableConv1D`,
  :class:`QuantSeparableConv2D`) and :mod:`lowbit_tf.local_layers`
  (:class:`QuantLocallyConnected1D`, :class:`QuantLocallyConnected2D`) and
  exported here.

The quantization plumbing lives once, in :class:`QuantizedLayerMixin`; a layer
is that mixin in front of a Keras layer plus a ``call``.

Bitwise ops or float emulation. ``QuantConv2D``, ``QuantDense`` and
``QuantDepthwiseConv2D`` with sign inputs and a (scaled) sign kernel compute
their forward pass with the custom TF ops (``LowbitBconv2d``, ``LowbitBgemm``,
``LowbitBDepthwiseConv2d``), ``ABCConv2D`` and ``ABCDense`` with
``LowbitMultibitConv2d`` and ``FastfoodDense`` with ``LowbitFastfood``, in
training and at inference, with the quantizers' own gradients and the exact
gradients of the conv of the quantized values; any other configuration, and
every layer built with ``use_ops=False`` (or inside
``lowbit_tf.ops_scope(False)``), computes the same values with float
``conv``/``matmul`` on the quantized values (the emulation). See
``lowbit_tf/_layer_ops.py`` for what runs on an op and why the numbers agree,
and ``lowbit_tf/_packed_kernel.py`` for the packed kernels of inference calls.

Example::

    from lowbit_tf import layers
    x = layers.QuantConv2D(
        64, 3, padding="same", pad_values=1.0,
        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip", use_bias=False,
    )(x)
"""

from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_tf import _layer_ops, _multibit_ops
from lowbit_tf import activations as lb_activations
from lowbit_tf import constraints as lb_constraints
from lowbit_tf import context as lb_context
from lowbit_tf import metrics as lb_metrics
from lowbit_tf import quantizers as lb_quantizers
from lowbit_tf._geometry import same_padding
from lowbit_tf._keras import KERAS_3, InputSpec, keras, kops
from lowbit_tf.context import resolve_use_ops
from lowbit_tf.math import sign

__all__ = [
    "ABCConv2D",
    "ABCDense",
    "FastfoodDense",
    "FakeQuantInt8",
    "QuantConv1D",
    "QuantConv2D",
    "QuantConv2DTranspose",
    "QuantConv3D",
    "QuantConv3DTranspose",
    "QuantDense",
    "QuantDepthwiseConv2D",
    "QuantLocallyConnected1D",
    "QuantLocallyConnected2D",
    "QuantSeparableConv1D",
    "QuantSeparableConv2D",
    "OpsSwitchMixin",
    "QuantizedLayerMixin",
    "apply_quantizer",
    "walsh_hadamard",
]

log = logging.getLogger(__name__)

_PACKAGE = "lowbit_tf"


def _resolve_activation(activation: Any) -> Any:
    """Keras activation names first, then ours (``"hard_tanh"``, ``"leaky_tanh"``),
    then quantizer names (``activation="ste_sign"``, as Larq allows)."""
    if not isinstance(activation, str):
        return activation
    try:
        return keras.activations.get(activation)
    except ValueError:
        pass
    if activation in lb_activations.__all__:
        return getattr(lb_activations, activation)
    return lb_quantizers.get(activation)


def apply_quantizer(quantizer: Callable[..., Any] | None, x: Any, training: Any = None) -> Any:
    """Applies ``quantizer`` to ``x``, passing ``training`` where the quantizer takes it.

    The convention (duck typing, no signature inspection here): a
    :class:`lowbit_tf.quantizers.Quantizer` instance (whose ``__call__`` is
    ``q(x, training=None)``) and any other callable with the attribute
    ``needs_training = True`` are called as ``quantizer(x, training=training)``;
    any other callable (a plain function such as ``ste_sign``) as
    ``quantizer(x)``. ``None`` is the identity.
    """
    if quantizer is None:
        return x
    if isinstance(quantizer, lb_quantizers.Quantizer) or getattr(
        quantizer, "needs_training", False
    ):
        return quantizer(x, training=training)
    return quantizer(x)


def _check_positive_int(owner: str, arg: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{owner}: `{arg}` must be a positive integer, received {arg}={value!r}.")
    return int(value)


class OpsSwitchMixin:
    """The ``use_ops`` switch of the layers that compute on the custom TF ops:
    True (the ops wherever they can run the call), False (the float
    emulation), or None at construction for the value of the enclosing
    :func:`lowbit_tf.ops_scope` (True by default). Saved in the config."""

    #: Whether some configuration of the layer runs on a custom TF op.
    _has_op_path = False

    @property
    def use_ops(self) -> bool:
        """Whether calls run on the custom TF ops where one can run them
        (``False``: always the float emulation). Saved in the config."""
        return self._use_ops

    @use_ops.setter
    def use_ops(self, value: bool | None) -> None:
        self._use_ops = resolve_use_ops(type(self).__name__, value)
        # The ops have no XLA kernels: Keras then compiles the model without
        # XLA (jit_compile=True warns and proceeds, "auto" resolves to False).
        self.supports_jit = not (self._use_ops and self._has_op_path)

    def _runs_on_op(self, problem: Callable[[Any, Any], str | None], inputs: Any) -> bool:
        """True when this call may run on the op; `problem(self, inputs)` says
        why not (a _layer_ops.*_problem), logged at DEBUG level."""
        if not self._use_ops:
            return False
        reason = problem(self, inputs)
        if reason is not None:
            log.debug("Layer '%s' runs the float emulation: %s.", self.name, reason)
            return False
        return True


class QuantizedLayerMixin(OpsSwitchMixin):
    """Quantization plumbing shared by the lowbit_tf quantized layers.

    Put it first in the bases, in front of the Keras layer it quantizes::

        class QuantConv2D(QuantizedLayerMixin, keras.layers.Conv2D): ...

    It

    - resolves ``input_quantizer``, ``kernel_quantizer`` and
      ``gradient_quantizer`` with :func:`lowbit_tf.quantizers.get` and exposes
      them as read-only properties (a layer may give the kernel quantizer another
      argument name through the class attribute ``_kernel_quantizer_name``, as
      :class:`QuantDepthwiseConv2D` does with ``depthwise_quantizer``);
    - resolves ``*_constraint`` arguments with :func:`lowbit_tf.constraints.get`
      (so ``"weight_clip"`` works) and an ``activation`` string naming a quantizer
      (``activation="ste_sign"``, as Larq allows);
    - adds the quantizers (and ``metrics``) to ``get_config``;
    - offers :meth:`quantize_inputs`, :meth:`quantized_kernel` and
      :meth:`quantize_output_gradient` to ``call`` and to the converter;
    - marks the latent kernel variable of a 1-bit kernel quantizer with
      ``variable.precision = 1`` (what :meth:`lowbit_tf.optimizers.Bop.is_binary_variable`
      looks for);
    - keeps the training metrics asked for by ``metrics=["flip_ratio"]`` (or by
      :func:`lowbit_tf.metrics.scope`);
    - logs a warning, as Larq does, when a binary kernel quantizer is used
      without a kernel constraint (its latent weights may starve);
    - takes ``use_ops`` (True, False, or None for the value of the
      enclosing :func:`lowbit_tf.ops_scope`, True by default): whether calls
      run on the custom TF ops where they can (:mod:`lowbit_tf._layer_ops`).

    Quantizer conventions (shared with :mod:`lowbit_tf.quantizers`):

    - A quantizer is any callable ``q(x) -> tensor``. Those whose behaviour may
      depend on the training phase (e.g. ``stochastic_sign``: random in
      training, deterministic at inference) receive the layer's ``training``
      argument as ``q(x, training=training)``: every
      :class:`lowbit_tf.quantizers.Quantizer` instance (their ``__call__`` takes
      ``training``), and any other callable that declares the attribute
      ``needs_training = True`` (see :func:`apply_quantizer`). Plain functions
      are called as ``q(x)``. ``quantized_kernel()`` without arguments (the
      converter's call) passes ``training=None``, which stochastic quantizers
      treat as inference.
    - ``precision`` (bits, ``1`` for binary, ``None`` for full precision) is
      read by :func:`lowbit_tf.summary.summary`, Bop's variable marking and the
      starved-weights warning.
    - A gradient quantizer is applied as ``outputs = gradient_quantizer(outputs)``
      at the very end of ``call`` (after the activation). It must be the identity
      on the forward pass and quantize the gradient ``dL/d outputs`` on the
      backward pass (``"dorefa_gradient"``, ``"power_of_two_gradient"``), so
      every gradient that reaches this layer's weights and inputs is computed
      from the quantized one.
    """

    #: Argument (and config) name of the kernel quantizer / constraint.
    _kernel_quantizer_name = "kernel_quantizer"
    _kernel_constraint_name = "kernel_constraint"

    def __init__(
        self,
        *args: Any,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_quantizer: lb_quantizers.QuantizerLike = None,
        gradient_quantizer: lb_quantizers.QuantizerLike = None,
        metrics: Sequence[str] | None = None,
        use_ops: bool | None = None,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        use_ops = resolve_use_ops(owner, use_ops)  # checked before Keras's __init__ runs
        resolved = {}
        for arg, value in (
            ("input_quantizer", input_quantizer),
            (self._kernel_quantizer_name, kernel_quantizer),
            ("gradient_quantizer", gradient_quantizer),
        ):
            try:
                resolved[arg] = lb_quantizers.get(value)
            except ValueError as e:
                raise ValueError(f"{owner}: invalid `{arg}`={value!r}. {e}") from e
        training_metrics = lb_metrics.check_training_metrics(metrics, owner)
        for name in sorted(lb_metrics.get_training_metrics()):
            if name not in training_metrics:
                training_metrics.append(name)
        for key in [k for k in kwargs if k.endswith("_constraint")]:
            kwargs[key] = lb_constraints.get(kwargs[key])
        if "activation" in kwargs:
            kwargs["activation"] = _resolve_activation(kwargs["activation"])
        super().__init__(*args, **kwargs)
        self._input_quantizer = resolved["input_quantizer"]
        self._kernel_quantizer = resolved[self._kernel_quantizer_name]
        self._gradient_quantizer = resolved["gradient_quantizer"]
        self._training_metrics = training_metrics
        self._flip_ratio: lb_metrics.FlipRatio | None = None
        self.use_ops = use_ops
        # The bit-packed kernel for inference calls on the ops (built in build).
        self._packed_kernel = None
        if (
            getattr(self._kernel_quantizer, "precision", None) == 1
            and not isinstance(self._kernel_quantizer, lb_quantizers.NoOp)
            and getattr(self, self._kernel_constraint_name, None) is None
        ):
            log.warning(
                "Layer '%s': using a binary weight quantizer without setting "
                "`%s` may result in starved weights (where the "
                "gradient is always zero).",
                self.name,
                self._kernel_constraint_name,
            )

    @property
    def input_quantizer(self) -> Callable[..., Any] | None:
        """The quantizer applied to the inputs, or None."""
        return self._input_quantizer

    @property
    def kernel_quantizer(self) -> Callable[..., Any] | None:
        """The quantizer applied to the kernel, or None."""
        return self._kernel_quantizer

    @property
    def gradient_quantizer(self) -> Callable[..., Any] | None:
        """The quantizer of the gradient flowing back out of the layer, or None."""
        return self._gradient_quantizer

    @property
    def flip_ratio(self) -> lb_metrics.FlipRatio | None:
        """The layer's :class:`~lowbit_tf.metrics.FlipRatio` metric (built layers with
        ``metrics=["flip_ratio"]``), else None."""
        return self._flip_ratio

    def quantize_inputs(self, inputs: Any, training: Any = None) -> Any:
        """Applies ``input_quantizer`` (if any) to ``inputs``."""
        return apply_quantizer(self._input_quantizer, inputs, training)

    def quantize_output_gradient(self, outputs: Any, training: Any = None) -> Any:
        """Applies ``gradient_quantizer`` (if any): identity forward, quantized gradient."""
        return apply_quantizer(self._gradient_quantizer, outputs, training)

    def _check_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet; call it on an input (or "
                f"build it) before asking for its {what}."
            )

    def quantized_kernel(self, training: Any = None) -> tf.Tensor:
        """The kernel as the forward pass uses it: ``kernel_quantizer(kernel)``.

        Differentiable with respect to the latent kernel (through the
        quantizer's pseudo-gradient). Without a kernel quantizer it is the
        kernel's value. With ``training=True`` it also updates the layer's flip
        ratio metric, if any.

        Raises:
            ValueError: if the layer is not built yet.
        """
        self._check_built("quantized kernel")
        kernel = tf.convert_to_tensor(self.kernel)
        kernel = apply_quantizer(self._kernel_quantizer, kernel, training)
        self._update_training_metrics(kernel, training)
        return kernel

    def _update_training_metrics(self, values: tf.Tensor, training: Any) -> None:
        if self._flip_ratio is not None and training is True:
            self._flip_ratio.update_state(sign(values))

    def _flip_ratio_shape(self) -> list[int]:
        return list(self.kernel.shape)

    def build(self, input_shape: Any) -> None:
        super().build(input_shape)
        precision = getattr(self._kernel_quantizer, "precision", None)
        kernel = getattr(self, "kernel", None)
        if precision is not None and kernel is not None:
            kernel.precision = precision  # read by Bop.is_binary_variable
        if kernel is not None:  # quantized NumPy reads inside quantized_scope(True)
            lb_context.mark_quantized_reads(kernel, self._kernel_quantizer)
        if "flip_ratio" in self._training_metrics and self._flip_ratio is None:
            self._flip_ratio = lb_metrics.FlipRatio(
                values_shape=self._flip_ratio_shape(), name=f"{self.name}_flip_ratio"
            )
        if self._has_op_path and self._packed_kernel is None:
            cache = _layer_ops.packed_kernel_cache(self)
            if KERAS_3:
                self._packed_kernel = cache
            else:  # tf-keras would list its variables among the layer's weights
                object.__setattr__(self, "_packed_kernel", cache)
                if cache is not None:  # ... yet SavedModels and checkpoints need it
                    self._track_trackable(cache, name="packed_kernel")

    def kernel_changed(self) -> None:
        """Tells the layer that its kernel was assigned by code it cannot see
        (``layer.kernel.assign(...)``): the next inference call on the ops
        packs it again. Optimizer steps, ``set_weights`` and Keras's weight
        loading need no call (lowbit_tf/_packed_kernel.py)."""
        if self._packed_kernel is not None:
            self._packed_kernel.mark_stale()

    def set_weights(self, weights: Any) -> None:
        super().set_weights(weights)
        self.kernel_changed()

    def load_own_variables(self, store: Any) -> None:
        super().load_own_variables(store)
        self.kernel_changed()

    def get_config(self) -> dict[str, Any]:
        config = {
            **super().get_config(),
            "input_quantizer": lb_quantizers.serialize(self._input_quantizer),
            self._kernel_quantizer_name: lb_quantizers.serialize(self._kernel_quantizer),
            "gradient_quantizer": lb_quantizers.serialize(self._gradient_quantizer),
            "use_ops": self._use_ops,
        }
        if self._training_metrics:
            config["metrics"] = list(self._training_metrics)
        return config


def _check_pad_values(owner: str, pad_values: Any) -> float:
    if isinstance(pad_values, bool) or not isinstance(pad_values, numbers.Real):
        raise ValueError(
            f"{owner}: `pad_values` must be a number, received pad_values={pad_values!r}."
        )
    return float(pad_values)


class _ConvPaddingMixin:
    """``pad_values`` padding of the Larq conv layers (2D, any data format).

    Expects the Keras conv attributes ``rank``, ``kernel_size``, ``strides``,
    ``dilation_rate``, ``padding``, ``data_format`` and ``pad_values``.
    """

    @property
    def explicit_padding(self) -> bool:
        """True when ``call`` pads with ``pad_values`` itself and runs a "valid" conv."""
        return self.padding == "same" and self.pad_values != 0.0

    def _spatial_axes(self) -> list[int]:
        first = 1 if self.data_format == "channels_last" else 2
        return list(range(first, first + self.rank))

    def spatial_padding(self, input_shape: Sequence[int | None]) -> list[tuple[int, int]]:
        """(before, after) padding per spatial axis for an input of ``input_shape``.

        All zeros for ``padding="valid"``. For ``"same"`` this is TensorFlow's
        SAME geometry, both for the explicit ``pad_values`` path and for the
        native zero-padded one.
        """
        if len(input_shape) != self.rank + 2:
            raise ValueError(self._rank_message(input_shape))
        if self.padding != "same":
            return [(0, 0)] * self.rank
        pads = []
        for axis, k, s, d in zip(
            self._spatial_axes(), self.kernel_size, self.strides, self.dilation_rate, strict=True
        ):
            if input_shape[axis] is None:
                raise ValueError(
                    f"Layer '{self.name}': spatial axis {axis} of input shape "
                    f"{tuple(input_shape)} is unknown."
                )
            pads.append(same_padding(int(input_shape[axis]), k, s, d))
        return pads

    def _rank_message(self, input_shape: Sequence[Any]) -> str:
        layout = "(batch, rows, cols, channels)"
        if self.data_format == "channels_first":
            layout = "(batch, channels, rows, cols)"
        return (
            f"Layer '{self.name}' ({type(self).__name__}) expects inputs of rank "
            f"{self.rank + 2} {layout}, but received an input of rank "
            f"{len(input_shape)} with shape {tuple(input_shape)}."
        )

    def _pad(self, inputs: tf.Tensor) -> tf.Tensor:
        static = inputs.shape
        dynamic = None
        paddings: list[Any] = [[0, 0]] * (self.rank + 2)
        for axis, k, s, d in zip(
            self._spatial_axes(), self.kernel_size, self.strides, self.dilation_rate, strict=True
        ):
            size = static[axis]
            if size is None:
                dynamic = tf.shape(inputs) if dynamic is None else dynamic
                size = dynamic[axis]
            paddings[axis] = list(same_padding(size, k, s, d))
        return tf.pad(inputs, paddings, constant_values=tf.constant(self.pad_values, inputs.dtype))

    def _padded_inputs(self, inputs: Any) -> tuple[Any, str]:
        """(inputs, padding for the conv op): explicitly padded ones and "valid", or as is."""
        if self.explicit_padding:
            return self._pad(tf.convert_to_tensor(inputs)), "valid"
        return inputs, self.padding

    def _check_rank(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) != self.rank + 2:
            raise ValueError(self._rank_message(input_shape))

    def _add_bias(self, outputs: Any) -> Any:
        # tf.nn.bias_add names the channel axis. Not keras.ops.add with a
        # reshaped bias: Keras 3.15's add turns that into a bias_add itself and
        # guesses the axis from the sizes, so with channels_first and as many
        # channels as the last spatial size it adds along the wrong axis.
        data_format = "N...C" if self.data_format == "channels_last" else "NC..."
        return tf.nn.bias_add(outputs, self.bias, data_format=data_format)

    def _bias_and_activation(self, outputs: Any) -> Any:
        """The end of the conv layers' emulated forward pass."""
        if self.use_bias:
            outputs = self._add_bias(outputs)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad_values": self.pad_values}


class _ExactRankMixin:
    """Inputs of exactly ``rank + 2`` dimensions (Keras's conv layers only ask for
    at least that many), the channel axis fixed once built. First in the bases."""

    def _exact_rank_spec(self) -> None:
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self._check_rank(input_shape)
        super().build(input_shape)
        channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = InputSpec(
            ndim=self.rank + 2, axes={channel_axis: input_shape[channel_axis]}
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantConv2D(_ExactRankMixin, QuantizedLayerMixin, _ConvPaddingMixin, keras.layers.Conv2D):
    r"""2D convolution with quantized inputs and kernel (Larq's ``QuantConv2D``).

    .. math::

        y = q_g\Big(\text{activation}\big(\text{conv}(\text{pad}(q_i(x)),\; q_k(W)) + b\big)\Big)

    where :math:`q_i` is ``input_quantizer``, :math:`q_k` is ``kernel_quantizer``,
    :math:`q_g` is ``gradient_quantizer`` (each the identity when None) and the
    latent kernel :math:`W` is what training updates. With ``padding="same"``
    and ``pad_values != 0`` the quantized input is padded explicitly with the
    constant ``pad_values`` using TensorFlow's SAME geometry (per spatial axis
    ``total = max((ceil(n/s) - 1) s + (k - 1) d + 1 - n, 0)``, ``before = total
    // 2``, ``after = total - before``) and a "valid" convolution follows; the
    output shape equals that of "same". This matters for binary layers: padding
    a {-1, +1} input with 0 introduces a third value, while ``pad_values=1.0``
    keeps it binary (and is free for the bit-packed kernels).

    Arguments:
        filters: Number of output channels.
        kernel_size: Int or pair, height and width of the window.
        strides: Int or pair.
        padding: ``"valid"`` or ``"same"`` (case-insensitive).
        pad_values: Constant used to pad with ``padding="same"``. Any float is
            accepted (as in Larq); the fast ops and the converter support 0 and 1.
        data_format: ``"channels_last"`` (default) or ``"channels_first"``. The
            bit-packed fast path and the converter handle ``channels_last``
            only; ``channels_first`` works here (padding on axes 2 and 3, the
            convolution through ``keras.ops.conv``, which transposes on CPU)
            and gives the same values as ``channels_last`` on transposed data.
        dilation_rate: Int or pair.
        groups: Number of groups of the (grouped) convolution.
        activation: Activation, a Keras name, or a quantizer name.
        use_bias: Whether to add a bias after the convolution.
        input_quantizer: Quantizer for the inputs (name, instance, callable or None).
        kernel_quantizer: Quantizer for the kernel (name, instance, callable or None).
        gradient_quantizer: Quantizer of the gradient flowing back out of the
            layer (identity forward), e.g. ``"dorefa_gradient"``.
        metrics: Training metrics of the layer, e.g. ``["flip_ratio"]``.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: As for ``keras.layers.Conv2D``; constraints also accept
            ``"weight_clip"``.
        **kwargs: Passed on to ``keras.layers.Conv2D`` (``name``, ``dtype``, ...).

    Input shape:
        4D tensor ``(batch, rows, cols, channels)`` for ``channels_last``.
        Inputs of any other rank raise a ValueError naming the layer and rank.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        pad_values: float = 0.0,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        groups: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ):
        pad_values = _check_pad_values(type(self).__name__, pad_values)
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            groups=groups,
            activation=activation,
            use_bias=use_bias,
            input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.pad_values = pad_values
        self._exact_rank_spec()

    _has_op_path = True

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(_layer_ops.conv2d_problem, inputs):
            outputs = _layer_ops.conv2d(self, inputs, training)
        elif self._runs_on_op(_multibit_ops.multibit_problem, inputs):
            outputs = _multibit_ops.multibit(self, inputs, training)
        else:
            inputs = self.quantize_inputs(inputs, training)
            outputs = self._emulated(inputs, self.quantized_kernel(training))
        return self.quantize_output_gradient(outputs, training)

    def _emulated(self, inputs: Any, kernel: tf.Tensor) -> tf.Tensor:
        inputs, padding = self._padded_inputs(inputs)
        outputs = kops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantDense(QuantizedLayerMixin, keras.layers.Dense):
    r"""Densely connected layer with quantized inputs and kernel (Larq's ``QuantDense``).

    .. math::  y = q_g\big(\text{activation}(q_i(x)\, q_k(W) + b)\big)

    With ``input_quantizer="ste_sign"`` and ``kernel_quantizer="ste_sign"`` every
    product is a binary one (an XNOR-popcount dot product of length ``in``).

    Arguments:
        units: Output width.
        activation: Activation, a Keras name, or a quantizer name.
        use_bias: Whether to add a bias.
        input_quantizer, kernel_quantizer, gradient_quantizer, metrics: As for
            :class:`QuantConv2D`.
        kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: As for ``keras.layers.Dense``; constraints also accept
            ``"weight_clip"``.
        **kwargs: Passed on to ``keras.layers.Dense`` (``name``, ``dtype``, ...).
            Keras's own post-training ``quantize()``/LoRA modes are not used by
            this layer's ``call``.

    Input shape:
        ``(..., in)``, at least 2D (a 1D input raises a ValueError naming the layer).
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ):
        super().__init__(
            units=units,
            activation=activation,
            use_bias=use_bias,
            input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer,
            kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )

    def build(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) expects inputs of rank >= 2 "
                f"(batch, ..., features), but received an input of rank "
                f"{len(input_shape)} with shape {tuple(input_shape)}."
            )
        super().build(input_shape)

    _has_op_path = True

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(_layer_ops.dense_problem, inputs):
            outputs = _layer_ops.dense(self, inputs, training)
        elif self._runs_on_op(_multibit_ops.multibit_problem, inputs):
            outputs = _multibit_ops.multibit(self, inputs, training)
        else:
            inputs = self.quantize_inputs(inputs, training)
            outputs = kops.matmul(inputs, self.quantized_kernel(training))
            if self.bias is not None:
                outputs = kops.add(outputs, self.bias)
            if self.activation is not None:
                outputs = self.activation(outputs)
        return self.quantize_output_gradient(outputs, training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantDepthwiseConv2D(
    _ExactRankMixin, QuantizedLayerMixin, _ConvPaddingMixin, keras.layers.DepthwiseConv2D
):
    r"""Depthwise 2D convolution with quantized inputs and kernel (Larq's
    ``QuantDepthwiseConv2D``).

    .. math::

        y = q_g\Big(\text{activation}\big(\text{depthwise\_conv}(\text{pad}(q_i(x)),
            q_d(W)) + b\big)\Big)

    Each input channel is convolved with its own ``depth_multiplier`` filters.
    The kernel quantizer and constraint are called ``depthwise_quantizer`` and
    ``depthwise_constraint``, as in Larq; ``pad_values`` works as in
    :class:`QuantConv2D`. The latent kernel is ``layer.kernel`` (Keras 3's name)
    and also ``layer.depthwise_kernel`` (Keras 2's and Larq's).

    Arguments:
        kernel_size, strides, padding, depth_multiplier, data_format,
        dilation_rate, activation, use_bias, depthwise_initializer,
        bias_initializer, depthwise_regularizer, bias_regularizer,
        activity_regularizer, depthwise_constraint, bias_constraint: As for
            ``keras.layers.DepthwiseConv2D``; constraints also accept ``"weight_clip"``.
        pad_values: Constant used to pad with ``padding="same"``.
        input_quantizer: Quantizer for the inputs.
        depthwise_quantizer: Quantizer for the depthwise kernel.
        gradient_quantizer, metrics: As for :class:`QuantConv2D`.

    Input shape:
        4D tensor; other ranks raise a ValueError naming the layer and rank.
    """

    _kernel_quantizer_name = "depthwise_quantizer"
    _kernel_constraint_name = "depthwise_constraint"

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        pad_values: float = 0.0,
        depth_multiplier: int = 1,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        activation: Any = None,
        use_bias: bool = True,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        depthwise_quantizer: lb_quantizers.QuantizerLike = None,
        depthwise_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        depthwise_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        depthwise_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ):
        pad_values = _check_pad_values(type(self).__name__, pad_values)
        super().__init__(
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            depth_multiplier=depth_multiplier,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            input_quantizer=input_quantizer,
            kernel_quantizer=depthwise_quantizer,
            depthwise_initializer=depthwise_initializer,
            bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            bias_constraint=bias_constraint,
            **kwargs,
        )
        self.pad_values = pad_values
        self._exact_rank_spec()

    @property
    def depthwise_quantizer(self) -> Callable[..., Any] | None:
        """The quantizer applied to the depthwise kernel, or None."""
        return self._kernel_quantizer

    if KERAS_3:

        @property
        def depthwise_kernel(self) -> Any:
            """The latent depthwise kernel (alias of ``kernel``)."""
            return self.kernel

    else:  # tf-keras names it depthwise_kernel

        @property
        def kernel(self) -> Any:
            """The latent depthwise kernel (alias of tf-keras's ``depthwise_kernel``)."""
            return self.depthwise_kernel

    _has_op_path = True

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(_layer_ops.depthwise_problem, inputs):
            outputs = _layer_ops.depthwise_conv2d(self, inputs, training)
        else:
            inputs = self.quantize_inputs(inputs, training)
            outputs = self._emulated(inputs, self.quantized_kernel(training))
        return self.quantize_output_gradient(outputs, training)

    def _emulated(self, inputs: Any, kernel: tf.Tensor) -> tf.Tensor:
        inputs, padding = self._padded_inputs(inputs)
        outputs = kops.depthwise_conv(
            inputs,
            kernel,
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._bias_and_activation(outputs)


# ------------------------------------------------------------------------- ABC-Net


class _ABCMixin:
    """ABC-Net weight and activation bases shared by :class:`ABCConv2D` and :class:`ABCDense`."""

    def _init_abc(self, num_weight_bases: Any, num_activation_bases: Any, per_channel: Any) -> None:
        owner = type(self).__name__
        self.num_weight_bases = _check_positive_int(owner, "num_weight_bases", num_weight_bases)
        self.num_activation_bases = _check_positive_int(
            owner, "num_activation_bases", num_activation_bases
        )
        if not isinstance(per_channel, bool):
            raise ValueError(f"{owner}: `per_channel` must be a bool, received {per_channel!r}.")
        self.per_channel = per_channel

    def _build_abc(self) -> None:
        n = self.num_activation_bases
        # Thresholds t_j = 0.5 - v_j spread over [-1, 1] (0 for N = 1: H = sign(x)).
        self.activation_shifts = self.add_weight(
            name="activation_shifts", shape=(n,),
            initializer=keras.initializers.Constant(lb_quantizers.abc_activation_shifts(n)),
            trainable=True,
        )  # fmt: skip
        self.activation_betas = self.add_weight(
            name="activation_betas", shape=(n,),
            initializer=keras.initializers.Constant(1.0 / n), trainable=True,
        )  # fmt: skip

    def weight_bases(self, training: Any = None) -> tuple[tf.Tensor, tf.Tensor]:
        r"""The binary weight bases and their least-squares scales.

        Returns:
            ``(bases, alphas)``: ``bases`` of shape ``(M, *kernel.shape)`` with
            values in {-1, +1}, :math:`B_i = \text{sign}(W - \bar W + u_i\,
            \sigma_W)`; ``alphas`` of shape ``(M,)``, or ``(M, out)`` with
            ``per_channel=True``, minimising :math:`\|W - \sum_i \alpha_i B_i\|^2`.
            Gradients reach the latent kernel straight through the signs; the
            alphas, mean and standard deviation are treated as constants.
        """
        self._check_built("weight bases")
        bases, alphas = lb_quantizers.abc_weight_bases(
            self.kernel, self.num_weight_bases, self.per_channel
        )
        self._update_training_metrics(bases, training)
        return bases, alphas

    def activation_bases(self, inputs: Any) -> tf.Tensor:
        r"""The binary activation bases :math:`H_{v_j}(x) = \text{sign}(\text{clip}(x + v_j,
        0, 1) - 0.5)`, stacked on a new first axis of size N.

        Values in {-1, +1} (``+1`` where :math:`x + v_j \ge 0.5`). The gradient
        with respect to :math:`x` and :math:`v_j` is that of the clip (1 where
        :math:`0 \le x + v_j \le 1`, 0 elsewhere): sign is straight-through.
        """
        self._check_built("activation bases")
        return lb_quantizers.abc_activation_bases(inputs, self.activation_shifts)

    def quantized_kernel(self, training: Any = None) -> tf.Tensor:
        r"""The effective kernel :math:`\sum_i \alpha_i B_i` (same shape as the kernel)."""
        bases, alphas = self.weight_bases(training)
        shape = (self.num_weight_bases,) + (1,) * (bases.shape.rank - 1)
        if self.per_channel:
            shape = shape[:-1] + (alphas.shape[-1],)
        return tf.reduce_sum(bases * tf.reshape(alphas, shape), axis=0)

    def _flip_ratio_shape(self) -> list[int]:
        return [self.num_weight_bases, *self.kernel.shape]

    def _combine(self, products: tf.Tensor, alphas: tf.Tensor) -> tf.Tensor:
        """sum_ij beta_j alpha_i P[j, ..., i, out] for P of shape (N, ..., M, out)."""
        m, n = self.num_weight_bases, self.num_activation_bases
        alphas = alphas if self.per_channel else alphas[:, None]  # (M, out or 1)
        scale = self.activation_betas[:, None, None] * alphas[None]  # (N, M, out or 1)
        middle = products.shape.rank - 3
        scale = tf.reshape(scale, (n,) + (1,) * middle + (m, scale.shape[-1]))
        return tf.reduce_sum(products * scale, axis=[0, products.shape.rank - 2])

    # Keras's Conv2D/Dense save only kernel and bias (their quantization modes
    # override these); the generic Layer versions save every variable.
    def save_own_variables(self, store: Any) -> None:
        keras.layers.Layer.save_own_variables(self, store)

    def load_own_variables(self, store: Any) -> None:
        keras.layers.Layer.load_own_variables(self, store)

    def _abc_config(self) -> dict[str, Any]:
        return {
            "num_weight_bases": self.num_weight_bases,
            "num_activation_bases": self.num_activation_bases,
            "per_channel": self.per_channel,
        }


def _reject_kernel_quantizer(owner: str, kwargs: dict[str, Any]) -> None:
    if kwargs.pop("kernel_quantizer", None) is not None:
        raise ValueError(
            f"{owner}: `kernel_quantizer` is not an argument of ABC-Net layers; the "
            "kernel is approximated by `num_weight_bases` binary bases."
        )


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ABCConv2D(_ABCMixin, QuantizedLayerMixin, _ConvPaddingMixin, keras.layers.Conv2D):
    r"""ABC-Net multi-bit 2D convolution (Lin, Zhao and Pan, 2017).

    The latent float kernel :math:`W` is approximated by ``M = num_weight_bases``
    binary bases and the input :math:`A` by ``N = num_activation_bases`` binary
    bases:

    .. math::

        W \approx \sum_{i=1}^{M} \alpha_i B_i, \quad
            B_i = \text{sign}(W - \bar W + u_i\, \sigma_W), \quad
            u_i = -1 + \tfrac{2(i-1)}{M-1}

        A \approx \sum_{j=1}^{N} \beta_j H_{v_j}(A), \quad
            H_v(x) = \text{sign}(\text{clip}(x + v, 0, 1) - 0.5)

        y = \text{activation}\Big(\sum_{i,j} \alpha_i \beta_j\,
            \text{conv}(H_{v_j}(A), B_i) + b\Big)

    so the layer is ``M * N`` binary convolutions, each scaled, which is how it
    is computed here too (one ``conv`` op over the ``N`` activation bases
    stacked on the batch axis and the ``M`` weight bases stacked on the output
    channels). :math:`\bar W` and :math:`\sigma_W` are the mean and standard
    deviation of the kernel (per output channel with ``per_channel=True``, an
    extension of the paper), the alphas are fitted by least squares on every
    call, the shifts :math:`v_j` and betas :math:`\beta_j` are trainable weights
    (``activation_shifts``, ``activation_betas``; initialised to thresholds
    :math:`0.5 - v_j` evenly spread over [-1, 1] and :math:`\beta_j = 1/N`).
    Gradients are straight-through: :math:`\partial L/\partial W = \sum_i
    \alpha_i\, \partial L/\partial B_i`, and through the clip for :math:`A` and
    :math:`v_j`. :meth:`weight_bases` and :meth:`activation_bases` expose the
    binary tensors for a fast-op lowering.

    Arguments:
        filters, kernel_size, strides, padding, dilation_rate, activation,
        use_bias, kernel_initializer, bias_initializer, kernel_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint,
        bias_constraint: As for ``keras.layers.Conv2D`` (``channels_last`` only,
            ``groups`` as for Conv2D: each group's M * N binary convolutions).
        pad_values: Constant used to pad the activation bases with
            ``padding="same"`` (0 by default, as Keras; 1 keeps them binary).
        num_weight_bases: ``M >= 1``.
        num_activation_bases: ``N >= 1``.
        per_channel: Fit mean, std and alphas per output channel.
        input_quantizer: Optional quantizer applied before the activation bases.
        gradient_quantizer, metrics: As for :class:`QuantConv2D`.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        pad_values: float = 0.0,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        activation: Any = None,
        use_bias: bool = True,
        num_weight_bases: int = 3,
        num_activation_bases: int = 3,
        per_channel: bool = False,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        _reject_kernel_quantizer(owner, kwargs)
        pad_values = _check_pad_values(owner, pad_values)
        super().__init__(
            filters=filters,
            kernel_size=kernel_size,
            strides=strides,
            padding=padding,
            data_format=data_format,
            dilation_rate=dilation_rate,
            activation=activation,
            use_bias=use_bias,
            input_quantizer=input_quantizer,
            **kwargs,
        )
        if self.data_format != "channels_last":
            raise ValueError(
                f"{owner}: only data_format='channels_last' is supported, received "
                f"data_format={self.data_format!r}."
            )
        self.pad_values = pad_values
        self._init_abc(num_weight_bases, num_activation_bases, per_channel)
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def build(self, input_shape: Sequence[int | None]) -> None:
        self._check_rank(input_shape)
        super().build(input_shape)
        self._build_abc()
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={-1: input_shape[-1]})

    _has_op_path = True

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(_multibit_ops.abc_problem, inputs):
            outputs = _multibit_ops.abc(self, inputs, training)
            return self.quantize_output_gradient(outputs, training)
        m, n = self.num_weight_bases, self.num_activation_bases
        inputs = tf.convert_to_tensor(self.quantize_inputs(inputs, training))
        h = self.activation_bases(inputs)  # (N, batch, rows, cols, C)
        x = tf.reshape(h, tf.concat([[-1], tf.shape(inputs)[1:]], 0))
        x.set_shape([None, *inputs.shape[1:]])
        x, padding = self._padded_inputs(x)
        bases, alphas = self.weight_bases(training)  # (M, kh, kw, C / G, F)
        kh, kw, c, f = self.kernel.shape
        g = self.groups
        # A grouped conv wants each group's output channels contiguous, so the
        # M bases are stacked inside each group: output channel index
        # (group, base, channel-in-group), F = G * (F / G).
        w = tf.reshape(bases, (m, kh, kw, c, g, f // g))
        w = tf.reshape(tf.transpose(w, (1, 2, 3, 4, 0, 5)), (kh, kw, c, g * m * (f // g)))
        y = kops.conv(
            x, w, strides=list(self.strides), padding=padding, dilation_rate=self.dilation_rate
        )  # (N * batch, oh, ow, G * M * F / G): the M * N binary convolutions
        shape = tf.shape(y)
        y = tf.reshape(y, tf.concat([[n, -1], shape[1:3], [g, m, f // g]], 0))
        y = tf.reshape(tf.transpose(y, (0, 1, 2, 3, 5, 4, 6)),
                       tf.concat([[n, -1], shape[1:3], [m, f]], 0))
        outputs = self._combine(y, alphas)
        return self.quantize_output_gradient(self._bias_and_activation(outputs), training)

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), **self._abc_config()}
        for key in ("kernel_quantizer", "data_format"):
            config.pop(key, None)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ABCDense(_ABCMixin, QuantizedLayerMixin, keras.layers.Dense):
    r"""ABC-Net multi-bit dense layer: :math:`y = \text{activation}(\sum_{i,j}
    \alpha_i \beta_j\, H_{v_j}(x)\, B_i + b)`, ``M * N`` binary matrix products.

    The bases, their fitting and gradients are those of :class:`ABCConv2D`
    (``per_channel`` means per output unit).

    Arguments:
        units, activation, use_bias, kernel_initializer, bias_initializer,
        kernel_regularizer, bias_regularizer, activity_regularizer,
        kernel_constraint, bias_constraint: As for ``keras.layers.Dense``.
        num_weight_bases, num_activation_bases, per_channel, input_quantizer,
        gradient_quantizer, metrics: As for :class:`ABCConv2D`.
    """

    def __init__(
        self,
        units: int,
        activation: Any = None,
        use_bias: bool = True,
        num_weight_bases: int = 3,
        num_activation_bases: int = 3,
        per_channel: bool = False,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        **kwargs: Any,
    ):
        _reject_kernel_quantizer(type(self).__name__, kwargs)
        super().__init__(
            units=units,
            activation=activation,
            use_bias=use_bias,
            input_quantizer=input_quantizer,
            **kwargs,
        )
        self._init_abc(num_weight_bases, num_activation_bases, per_channel)

    def build(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) expects inputs of rank >= 2, "
                f"but received an input of rank {len(input_shape)} with shape "
                f"{tuple(input_shape)}."
            )
        super().build(input_shape)
        self._build_abc()

    _has_op_path = True

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(_multibit_ops.abc_problem, inputs):
            outputs = _multibit_ops.abc(self, inputs, training)
            return self.quantize_output_gradient(outputs, training)
        m, n = self.num_weight_bases, self.num_activation_bases
        inputs = tf.convert_to_tensor(self.quantize_inputs(inputs, training))
        d = self.kernel.shape[0]
        h = tf.reshape(self.activation_bases(inputs), (-1, d))  # (N * rows, d)
        bases, alphas = self.weight_bases(training)  # (M, d, units)
        w = tf.reshape(tf.transpose(bases, (1, 0, 2)), (d, m * self.units))
        y = tf.reshape(tf.matmul(h, w), (n, -1, m, self.units))  # the M * N binary products
        outputs = self._combine(y, alphas)
        outputs = tf.reshape(outputs, tf.concat([tf.shape(inputs)[:-1], [self.units]], 0))
        if self.bias is not None:
            outputs = kops.add(outputs, self.bias)
        if self.activation is not None:
            outputs = self.activation(outputs)
        return self.quantize_output_gradient(outputs, training)

    def get_config(self) -> dict[str, Any]:
        config = {**super().get_config(), **self._abc_config()}
        config.pop("kernel_quantizer", None)
        return config


# ------------------------------------------------------------------------ Fastfood


def walsh_hadamard(x: Any, normalize: bool = False) -> tf.Tensor:
    r"""Fast Walsh-Hadamard transform along the last axis, :math:`y = x H_n`.

    :math:`H_n` is the Sylvester Hadamard matrix (:math:`H_1 = [1]`,
    :math:`H_{2m} = [[H_m, H_m], [H_m, -H_m]]`, symmetric, entries ±1), computed
    with ``log2 n`` butterfly stages of ``n`` additions each (``O(n log n)``, no
    dense matrix). With ``normalize=True`` the result is divided by
    :math:`\sqrt n` (then :math:`H_n/\sqrt n` is orthogonal and its own inverse).

    Raises:
        ValueError: if the last axis is unknown or not a power of two.
    """
    x = tf.convert_to_tensor(x)
    n = x.shape[-1]
    if n is None or n < 1 or n & (n - 1):
        raise ValueError(f"walsh_hadamard: the last axis must be a power of two, received {n}.")
    lead = tf.shape(x)[:-1]
    y = tf.reshape(x, (-1, n))
    h = 1
    while h < n:
        y = tf.reshape(y, (-1, n // (2 * h), 2, h))
        a, b = y[:, :, 0, :], y[:, :, 1, :]
        y = tf.stack([a + b, a - b], axis=2)
        h *= 2
    y = tf.reshape(y, tf.concat([lead, [n]], 0))
    if normalize:
        y = y * tf.constant(1.0 / math.sqrt(n), y.dtype)
    return y


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FastfoodDense(OpsSwitchMixin, keras.layers.Layer):
    r"""Adaptive Fastfood layer (Deep Fried Convnets, Yang et al. 2015).

    A dense layer ``y = x W`` with ``W`` of size ``d x units`` replaced by stacked
    Fastfood blocks. The input (last axis, width ``d``) is zero-padded to
    ``n = block_size`` (by default the smallest power of two ``>= d``) and each
    of the ``k = ceil(units / n)`` blocks computes

    .. math::

        V_b\, x = \frac{1}{n}\, S_b\, H\, G_b\, \Pi_b\, H\, B_b\, x

    with :math:`H` the ``n x n`` Walsh-Hadamard matrix (applied with the fast
    butterfly transform :func:`walsh_hadamard`, ``O(n log n)``), :math:`\Pi_b` a
    fixed random permutation, and :math:`S_b, G_b, B_b` learned diagonal
    matrices (the "adaptive" variant: all three are trained by back-propagation).
    The ``k n`` outputs are concatenated and the first ``units`` kept; a bias and
    the activation follow. The ``1/n`` is the normalisation of both Hadamard
    transforms (:math:`H/\sqrt n` is orthogonal).

    Initialisation (Le, Sarlos and Smola 2013, so that :math:`V_b` is
    distributed like a Gaussian matrix with entries of variance ``1/n``, as
    Glorot-style inits): :math:`B` random ±1, :math:`G` standard normal,
    :math:`S_{ii} = s_i / \|G\|_F` with :math:`s_i \sim \chi_n`. The
    permutations and these initial values come from ``seed`` (stored in the
    config, so a loaded model rebuilds the same permutations).

    Cost per example: ``2 k n log2 n`` additions for the transforms and ``3 k n``
    multiplications; parameters: ``3 k n`` (+ ``units`` bias) instead of
    ``d * units`` (+ ``units``) for a dense layer.

    Arguments:
        units: Output width (positive int).
        block_size: ``n``; a power of two ``>= d``. Default: the smallest such.
        activation: Keras activation.
        use_bias: Whether to add a bias.
        seed: Int seed of the permutations and initial values; drawn from NumPy's
            global generator when None (so ``keras.utils.set_random_seed`` makes
            it reproducible) and stored in the config.
        bias_initializer, bias_regularizer, bias_constraint: For the bias.
        use_ops: Compute with the ``LowbitFastfood`` op (True; float32 inputs,
            bit for bit this computation, exact gradients) or with TensorFlow
            ops (False); None: the enclosing :func:`lowbit_tf.ops_scope`'s value.
        **kwargs: Passed on to ``keras.layers.Layer``.

    Raises:
        ValueError: naming the argument and value for a ``units`` that is not a
            positive int, a ``block_size`` that is not a power of two or is
            smaller than the input width, and an input whose last axis is
            unknown or zero.
    """

    def __init__(
        self,
        units: int,
        block_size: int | None = None,
        activation: Any = None,
        use_bias: bool = True,
        seed: int | None = None,
        bias_initializer: Any = "zeros",
        bias_regularizer: Any = None,
        bias_constraint: Any = None,
        use_ops: bool | None = None,
        **kwargs: Any,
    ):
        use_ops = resolve_use_ops(type(self).__name__, use_ops)
        super().__init__(**kwargs)
        self.use_ops = use_ops
        owner = type(self).__name__
        self.units = _check_positive_int(owner, "units", units)
        if block_size is not None:
            block_size = _check_positive_int(owner, "block_size", block_size)
            if block_size & (block_size - 1):
                raise ValueError(
                    f"{owner}: `block_size` must be a power of two, received "
                    f"block_size={block_size}."
                )
        self.block_size = block_size
        if seed is None:
            seed = int(np.random.randint(0, 2**31 - 1))
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"{owner}: `seed` must be an int >= 0, received seed={seed!r}.")
        self.seed = int(seed)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = lb_constraints.get(bias_constraint)
        self.input_spec = InputSpec(min_ndim=2)

    def _geometry(self, input_dim: Any) -> tuple[int, int]:
        owner = f"{type(self).__name__} '{self.name}'"
        if input_dim is None or input_dim < 1:
            raise ValueError(
                f"{owner}: the last input axis (the input width d) must be known and "
                f"positive, received d={input_dim!r}."
            )
        n = self.block_size or 1 << max(int(input_dim) - 1, 0).bit_length()
        if n < input_dim:
            raise ValueError(
                f"{owner}: `block_size` must be at least the input width d={input_dim}, "
                f"received block_size={self.block_size}."
            )
        return n, -(-self.units // n)

    def build(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) < 2:
            raise ValueError(
                f"Layer '{self.name}' (FastfoodDense) expects inputs of rank >= 2, but "
                f"received an input of rank {len(input_shape)} with shape {tuple(input_shape)}."
            )
        d = input_shape[-1]
        n, k = self._geometry(d)
        self.input_dim, self.num_blocks, self.padded_dim = int(d), k, n
        rng = np.random.default_rng(self.seed)
        self.permutation = np.stack([rng.permutation(n) for _ in range(k)]).astype(np.int32)
        b0 = rng.choice([-1.0, 1.0], size=(k, n))
        g0 = rng.standard_normal((k, n))
        s0 = np.sqrt(rng.chisquare(n, size=(k, n))) / np.linalg.norm(g0, axis=1, keepdims=True)

        def constant(value: np.ndarray) -> Callable[..., Any]:
            return lambda shape, dtype=None: tf.constant(value, dtype or "float32")

        self.b = self.add_weight(name="b", shape=(k, n), initializer=constant(b0))
        self.g = self.add_weight(name="g", shape=(k, n), initializer=constant(g0))
        self.s = self.add_weight(name="s", shape=(k, n), initializer=constant(s0))
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias", shape=(self.units,), initializer=self.bias_initializer,
                regularizer=self.bias_regularizer, constraint=self.bias_constraint,
            )  # fmt: skip
        else:
            self.bias = None
        self.input_spec = InputSpec(min_ndim=2, axes={-1: int(d)})

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[Any, ...]:
        return (*input_shape[:-1], self.units)

    _has_op_path = True

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        x = tf.convert_to_tensor(inputs)
        if self._runs_on_op(_layer_ops.fastfood_problem, x):
            return _layer_ops.fastfood(self, x)
        n, k, d = self.padded_dim, self.num_blocks, self.input_dim
        lead = tf.shape(x)[:-1]
        x = tf.reshape(x, (-1, d))
        if n > d:
            x = tf.pad(x, [[0, 0], [0, n - d]])
        y = x[None, :, :] * self.b[:, None, :]  # (k, rows, n): B x
        y = walsh_hadamard(y)  # H B x
        y = tf.gather(y, self.permutation, axis=2, batch_dims=1)  # Pi H B x
        y = walsh_hadamard(y * self.g[:, None, :])  # H G Pi H B x
        y = y * (self.s[:, None, :] * tf.constant(1.0 / n, y.dtype))
        y = tf.reshape(tf.transpose(y, (1, 0, 2)), (-1, k * n))[:, : self.units]
        if self.bias is not None:
            y = y + self.bias
        if self.activation is not None:
            y = self.activation(y)
        return tf.reshape(y, tf.concat([lead, [self.units]], 0))

    def dense_kernel(self) -> tf.Tensor:
        """The equivalent ``d x units`` dense kernel (for tests and inspection; ``O(d n k)``)."""
        eye = tf.eye(self.input_dim, dtype=self.b.dtype)
        y = self.call(eye)
        return y - self.bias if self.bias is not None else y

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "block_size": self.block_size,
            "activation": keras.activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "seed": self.seed,
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "use_ops": self.use_ops,
        }


# The rest of Larq's layers build on the mixins above, so their modules import
# this one; exported here last, so that `lowbit_tf.layers` holds every layer.
from lowbit_tf.conv_layers import (  # noqa: E402
    QuantConv1D,
    QuantConv2DTranspose,
    QuantConv3D,
    QuantConv3DTranspose,
    QuantSeparableConv1D,
    QuantSeparableConv2D,
)
from lowbit_tf.local_layers import QuantLocallyConnected1D, QuantLocallyConnected2D  # noqa: E402


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FakeQuantInt8(keras.layers.Layer):
    """Fake int8 quantization of a float tensor, for quantization-aware training
    of a mixed int8 + binary model (docs/int8.md).

    Output: ``x`` rounded to the 256 levels of [min, max] (TensorFlow's
    ``fake_quant_with_min_max_vars``: the range nudged so that 0 is a level,
    values outside clamped), with the straight-through gradient inside the
    range and zero outside. ``min`` and ``max`` (non-trainable) follow the
    tensor's range in training: the first batch sets them, then each batch
    moves them by ``1 - momentum`` towards its own min and max. In inference
    they are fixed.

    Put one after each float layer whose output should be int8 (and after the
    model input): ``lowbit_tf.convert(model, int8=True)`` then needs no
    representative dataset, TFLiteConverter's quantization-aware path takes
    these ranges as the int8 tensors' (the layer becomes TFLite's int8
    parameters, not an op). A binary layer's input needs none (it reads only
    signs).

    Arguments:
      momentum: of the moving min and max (default 0.99).
    """

    def __init__(self, momentum: float = 0.99, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"{self.name}: momentum must be in [0, 1), got {momentum!r}")
        self.momentum = float(momentum)

    def build(self, input_shape: Any) -> None:
        zeros = keras.initializers.Zeros()
        self.min = self.add_weight(name="min", shape=(), initializer=zeros, trainable=False)
        self.max = self.add_weight(name="max", shape=(), initializer=zeros, trainable=False)
        self.seen = self.add_weight(name="seen", shape=(), initializer=zeros, trainable=False)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        x = tf.convert_to_tensor(inputs)
        if training:
            lo, hi = tf.reduce_min(x), tf.reduce_max(x)
            first = tf.equal(self.seen, 0.0)
            keep = self.momentum
            self.min.assign(tf.where(first, lo, keep * self.min + (1 - keep) * lo))
            self.max.assign(tf.where(first, hi, keep * self.max + (1 - keep) * hi))
            self.seen.assign(1.0)
        # A range that holds 0 (TFLite's int8 tensors do) and is not empty.
        lo = tf.minimum(tf.convert_to_tensor(self.min), 0.0)
        hi = tf.maximum(tf.convert_to_tensor(self.max), lo + 1e-6)
        return tf.quantization.fake_quant_with_min_max_vars(x, lo, hi, num_bits=8)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict:
        return {**super().get_config(), "momentum": self.momentum}

