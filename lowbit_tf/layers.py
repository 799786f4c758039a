r"""Quantized Keras layers.

Each layer is its Keras twin plus quantizers: the inputs go through
``input_quantizer`` and the kernel through ``kernel_quantizer`` before the usual
computation, and the latent (float) kernel is what the optimizer updates. With
both quantizers ``None`` a layer computes exactly what its Keras twin computes.

The quantization plumbing lives once, in :class:`QuantizedLayerMixin`; a layer
is that mixin in front of a Keras layer plus a ``call``.

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
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from lowbit_tf import constraints as lb_constraints
from lowbit_tf import quantizers as lb_quantizers
from lowbit_tf._keras import keras

__all__ = ["QuantConv2D", "QuantizedLayerMixin"]

log = logging.getLogger(__name__)


def _resolve_activation(activation: Any) -> Any:
    """Keras activation names first, then quantizer names (``activation="ste_sign"``)."""
    if not isinstance(activation, str):
        return activation
    try:
        return keras.activations.get(activation)
    except ValueError:
        return lb_quantizers.get(activation)


class QuantizedLayerMixin:
    """Quantization plumbing shared by every lowbit_tf layer.

    Put it first in the bases, in front of the Keras layer it quantizes::

        class QuantConv2D(QuantizedLayerMixin, keras.layers.Conv2D): ...

    It

    - resolves ``input_quantizer`` and ``kernel_quantizer`` with
      :func:`lowbit_tf.quantizers.get` and exposes them as read-only properties;
    - resolves ``*_constraint`` arguments with :func:`lowbit_tf.constraints.get`
      (so ``"weight_clip"`` works) and an ``activation`` string naming a quantizer
      (``activation="ste_sign"``, as Larq allows);
    - adds both quantizers to ``get_config``;
    - offers :meth:`quantize_inputs` and :meth:`quantized_kernel` to ``call`` and
      to the converter;
    - logs a warning, as Larq does, when a binary kernel quantizer is used
      without a kernel constraint (its latent weights may starve).
    """

    def __init__(
        self,
        *args: Any,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_quantizer: lb_quantizers.QuantizerLike = None,
        **kwargs: Any,
    ):
        resolved = {}
        for arg, value in (
            ("input_quantizer", input_quantizer),
            ("kernel_quantizer", kernel_quantizer),
        ):
            try:
                resolved[arg] = lb_quantizers.get(value)
            except ValueError as e:
                raise ValueError(f"{type(self).__name__}: invalid `{arg}`={value!r}. {e}") from e
        for key in [k for k in kwargs if k.endswith("_constraint")]:
            kwargs[key] = lb_constraints.get(kwargs[key])
        if "activation" in kwargs:
            kwargs["activation"] = _resolve_activation(kwargs["activation"])
        super().__init__(*args, **kwargs)
        self._input_quantizer = resolved["input_quantizer"]
        self._kernel_quantizer = resolved["kernel_quantizer"]
        if (
            getattr(self._kernel_quantizer, "precision", None) == 1
            and getattr(self, "kernel_constraint", None) is None
        ):
            log.warning(
                "Layer '%s': using a binary weight quantizer without setting "
                "`kernel_constraint` may result in starved weights (where the "
                "gradient is always zero).",
                self.name,
            )

    @property
    def input_quantizer(self) -> Callable[[Any], Any] | None:
        """The quantizer applied to the inputs, or None."""
        return self._input_quantizer

    @property
    def kernel_quantizer(self) -> Callable[[Any], Any] | None:
        """The quantizer applied to the kernel, or None."""
        return self._kernel_quantizer

    def quantize_inputs(self, inputs: Any) -> Any:
        """Applies ``input_quantizer`` (if any) to ``inputs``."""
        if self._input_quantizer is None:
            return inputs
        return self._input_quantizer(inputs)

    def quantized_kernel(self) -> tf.Tensor:
        """The kernel as the forward pass uses it: ``kernel_quantizer(kernel)``.

        Differentiable with respect to the latent kernel (through the
        quantizer's pseudo-gradient). Without a kernel quantizer it is the
        kernel's value.

        Raises:
            ValueError: if the layer is not built yet.
        """
        if not self.built:
            raise ValueError(
                f"Layer '{self.name}' is not built yet; call it on an input (or "
                "build it) before asking for its quantized kernel."
            )
        kernel = tf.convert_to_tensor(self.kernel)
        if self._kernel_quantizer is None:
            return kernel
        return self._kernel_quantizer(kernel)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "input_quantizer": lb_quantizers.serialize(self._input_quantizer),
            "kernel_quantizer": lb_quantizers.serialize(self._kernel_quantizer),
        }


def _same_padding(
    size: int | tf.Tensor, kernel_size: int, stride: int, dilation: int
) -> tuple[Any, Any]:
    """(before, after) padding of TensorFlow's "SAME" along one spatial axis.

    ``total = max((ceil(size / stride) - 1) * stride + (kernel_size - 1) * dilation
    + 1 - size, 0)``, ``before = total // 2``, ``after = total - before``.
    ``size`` may be a Python int or a scalar int tensor (dynamic shapes).
    """
    effective = (kernel_size - 1) * dilation + 1
    out_size = (size + stride - 1) // stride
    total = (out_size - 1) * stride + effective - size
    total = tf.maximum(total, 0) if tf.is_tensor(total) else max(total, 0)
    before = total // 2
    return before, total - before


@keras.saving.register_keras_serializable(package="lowbit_tf")
class QuantConv2D(QuantizedLayerMixin, keras.layers.Conv2D):
    r"""2D convolution with quantized inputs and kernel (Larq's ``QuantConv2D``).

    .. math::

        y = \text{activation}\big(\text{conv}(\text{pad}(q_i(x)),\; q_k(W)) + b\big)

    where :math:`q_i` is ``input_quantizer``, :math:`q_k` is ``kernel_quantizer``
    (identity when None) and the latent kernel :math:`W` is what training
    updates. With ``padding="same"`` and ``pad_values != 0`` the quantized input
    is padded explicitly with the constant ``pad_values`` using TensorFlow's
    SAME geometry (per spatial axis ``total = max((ceil(n/s) - 1) s + (k - 1) d
    + 1 - n, 0)``, ``before = total // 2``, ``after = total - before``) and a
    "valid" convolution follows; the output shape equals that of "same". This
    matters for binary layers: padding a {-1, +1} input with 0 introduces a third
    value, while ``pad_values=1.0`` keeps it binary (and is free for the
    bit-packed kernels).

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
        if isinstance(pad_values, bool) or not isinstance(pad_values, numbers.Real):
            raise ValueError(
                f"QuantConv2D: `pad_values` must be a number, received pad_values={pad_values!r}."
            )
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
        self.pad_values = float(pad_values)
        # Exact rank (Keras's Conv2D only asks for at least 4 dimensions).
        self.input_spec = keras.InputSpec(ndim=self.rank + 2)

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
            pads.append(_same_padding(int(input_shape[axis]), k, s, d))
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

    def build(self, input_shape: Sequence[int | None]) -> None:
        if len(input_shape) != self.rank + 2:
            raise ValueError(self._rank_message(input_shape))
        super().build(input_shape)
        channel_axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = keras.InputSpec(
            ndim=self.rank + 2, axes={channel_axis: input_shape[channel_axis]}
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
            paddings[axis] = list(_same_padding(size, k, s, d))
        return tf.pad(inputs, paddings, constant_values=tf.constant(self.pad_values, inputs.dtype))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        inputs = self.quantize_inputs(inputs)
        kernel = self.quantized_kernel()
        padding = self.padding
        if self.explicit_padding:
            inputs = self._pad(tf.convert_to_tensor(inputs))
            padding = "valid"
        outputs = keras.ops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = keras.ops.add(outputs, keras.ops.reshape(self.bias, bias_shape))
        if self.activation is not None:
            outputs = self.activation(outputs)
        return outputs

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad_values": self.pad_values}
