r"""Larq's other convolution layers for Keras 3: 1D and 3D, transposed, separable.

:class:`QuantConv1D`, :class:`QuantConv3D`, :class:`QuantConv2DTranspose`,
:class:`QuantConv3DTranspose`, :class:`QuantSeparableConv1D` and
:class:`QuantSeparableConv2D` take Larq's arguments with Larq's defaults and
compute what Larq's layers compute (held to real Larq's outputs and gradients
by tests/keras/test_larq_layers.py). They are built like
:class:`lowbit_tf.layers.QuantConv2D`: :class:`~lowbit_tf.layers.QuantizedLayerMixin`
in front of the Keras layer, ``pad_values`` through the same padding mixin,
and a ``call`` that runs Keras's own operation on the quantized values (the
float emulation) or, with binary inputs and kernel and ``use_ops`` (the
default), the bitwise TF ops: QuantConv1D as a 2-D conv of height 1 (not
``padding="causal"``), QuantConv3D as one 2-D conv per depth tap, the
separable layers' depthwise half (lowbit_tf/_layer_ops.py says how and why
the numbers are the emulation's). :mod:`lowbit_tf.layers` exports them with
the other layers.

What a separable layer quantizes, as in Larq: the input (``input_quantizer``),
the depthwise kernel (``depthwise_quantizer``) and the pointwise kernel
(``pointwise_quantizer``); the depthwise result that feeds the pointwise
convolution is not quantized, so only the depthwise half is a binary
convolution when the input and depthwise kernel are binary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from lowbit_tf import _layer_ops, _transpose_ops
from lowbit_tf import context as lb_context
from lowbit_tf import quantizers as lb_quantizers
from lowbit_tf._keras import keras, kops
from lowbit_tf.layers import (
    QuantizedLayerMixin,
    _check_pad_values,
    _ConvPaddingMixin,
    _ExactRankMixin,
    apply_quantizer,
)

__all__ = [
    "QuantConv1D",
    "QuantConv2DTranspose",
    "QuantConv3D",
    "QuantConv3DTranspose",
    "QuantSeparableConv1D",
    "QuantSeparableConv2D",
]

log = logging.getLogger("lowbit_tf.layers")

_PACKAGE = "lowbit_tf"


class _QuantConv(_ExactRankMixin, QuantizedLayerMixin, _ConvPaddingMixin):
    """``call`` of the N-d quantized convolutions (as QuantConv2D's, plus causal):
    on the binary conv op where `_op_problem` finds no reason against it
    (`_on_op`, lowbit_tf/_layer_ops.py), else the float emulation."""

    _has_op_path = True
    _op_problem: Callable[[Any, Any], str | None]
    _on_op: Callable[[Any, Any, Any], tf.Tensor]

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(self._op_problem, inputs):
            return self.quantize_output_gradient(self._on_op(self, inputs, training), training)
        inputs = self.quantize_inputs(inputs, training)
        kernel = self.quantized_kernel(training)
        if self.padding == "causal":  # Conv1D only; zeros on the left, as Keras and Larq
            left = self.dilation_rate[0] * (self.kernel_size[0] - 1)
            pads = [[0, 0], [left, 0], [0, 0]]
            if self.data_format == "channels_first":
                pads = [[0, 0], [0, 0], [left, 0]]
            inputs, padding = kops.pad(inputs, pads), "valid"
        else:
            inputs, padding = self._padded_inputs(inputs)
        outputs = kops.conv(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self.quantize_output_gradient(self._bias_and_activation(outputs), training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantConv1D(_QuantConv, keras.layers.Conv1D):
    """1D convolution with quantized inputs and kernel (Larq's ``QuantConv1D``).

    As :class:`lowbit_tf.layers.QuantConv2D` over one spatial axis (inputs
    ``(batch, steps, channels)``); ``padding`` may also be ``"causal"`` (zeros
    on the left), which, as in Larq, takes ``pad_values=0`` only.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        pad_values: float = 0.0,
        data_format: str = "channels_last",
        dilation_rate: int | Sequence[int] = 1,
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
        if str(padding).lower() == "causal" and pad_values != 0.0:
            raise ValueError(
                f"{type(self).__name__}: padding='causal' pads with zeros; it does not "
                f"take pad_values={pad_values!r} (as in Larq). Use padding='same' for "
                "pad_values."
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
        self.pad_values = pad_values
        self._exact_rank_spec()

    _op_problem = staticmethod(_layer_ops.conv2d_problem)  # a 2-D conv of height 1
    _on_op = staticmethod(_layer_ops.conv2d)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantConv3D(_QuantConv, keras.layers.Conv3D):
    """3D convolution with quantized inputs and kernel (Larq's ``QuantConv3D``).

    As :class:`lowbit_tf.layers.QuantConv2D` over three spatial axes (inputs
    ``(batch, depth, rows, cols, channels)``), ``pad_values`` included.
    """

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1, 1),
        padding: str = "valid",
        pad_values: float = 0.0,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1, 1),
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

    _op_problem = staticmethod(_layer_ops.conv3d_problem)  # 2-D convs, one per depth tap
    _on_op = staticmethod(_layer_ops.conv3d)


class _QuantConvTranspose(_ExactRankMixin, QuantizedLayerMixin, _ConvPaddingMixin):
    """``call`` of the transposed convolutions: Keras's ``conv_transpose`` of the
    quantized input and kernel. No ``pad_values`` (Larq has none here: a
    transposed convolution's "padding" crops its output, it pads no input)."""

    pad_values = 0.0

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._has_op_path and self._runs_on_op(_transpose_ops.conv2d_transpose_problem,
                                                  inputs):
            outputs = _transpose_ops.conv2d_transpose(self, inputs, training)
            return self.quantize_output_gradient(outputs, training)
        inputs = self.quantize_inputs(inputs, training)
        kernel = self.quantized_kernel(training)
        outputs = kops.conv_transpose(
            inputs,
            kernel,
            strides=list(self.strides),
            padding=self.padding,
            output_padding=self.output_padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self.quantize_output_gradient(self._bias_and_activation(outputs), training)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("pad_values", None)
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantConv2DTranspose(_QuantConvTranspose, keras.layers.Conv2DTranspose):
    """Transposed 2D convolution with quantized inputs and kernel (Larq's
    ``QuantConv2DTranspose``): ``conv_transpose(q_i(x), q_k(W)) + b``.

    Arguments as ``keras.layers.Conv2DTranspose`` plus ``input_quantizer``,
    ``kernel_quantizer``, ``gradient_quantizer``, ``metrics`` and ``use_ops``.
    The kernel is ``(rows, cols, filters, in_channels)``, as in Keras 2 and
    Larq. With sign inputs and a sign kernel it runs on LowbitBconv2d, one op
    per stride phase (lowbit_tf/_transpose_ops.py).
    """

    _has_op_path = True

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        output_padding: Any = None,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
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
            filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
            output_padding=output_padding, data_format=data_format,
            dilation_rate=dilation_rate, activation=activation,
            use_bias=use_bias, input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
        )  # fmt: skip
        self._exact_rank_spec()


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantConv3DTranspose(_QuantConvTranspose, keras.layers.Conv3DTranspose):
    """Transposed 3D convolution with quantized inputs and kernel (Larq's
    ``QuantConv3DTranspose``); see :class:`QuantConv2DTranspose`."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1, 1),
        padding: str = "valid",
        output_padding: Any = None,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1, 1),
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
            filters=filters, kernel_size=kernel_size, strides=strides, padding=padding,
            output_padding=output_padding, data_format=data_format,
            dilation_rate=dilation_rate, activation=activation,
            use_bias=use_bias, input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint, **kwargs,
        )  # fmt: skip
        self._exact_rank_spec()


class _QuantSeparableConv(_ExactRankMixin, QuantizedLayerMixin, _ConvPaddingMixin):
    """Separable convolutions: the mixin's kernel quantizer is the depthwise one
    (``depthwise_quantizer``); the pointwise one is handled here."""

    _kernel_quantizer_name = "depthwise_quantizer"
    _kernel_constraint_name = "depthwise_constraint"

    def _separable_init(self, pad_values: Any, pointwise_quantizer: Any, **kwargs: Any) -> None:
        owner = type(self).__name__
        pad_values = _check_pad_values(owner, pad_values)
        try:
            pointwise = lb_quantizers.get(pointwise_quantizer)
        except ValueError as e:
            raise ValueError(
                f"{owner}: invalid `pointwise_quantizer`={pointwise_quantizer!r}. {e}"
            ) from e
        super().__init__(**kwargs)
        self.pad_values = pad_values
        self._pointwise_quantizer = pointwise
        if (getattr(pointwise, "precision", None) == 1
                and not isinstance(pointwise, lb_quantizers.NoOp)
                and self.pointwise_constraint is None):
            log.warning(
                "Layer '%s': using a binary `pointwise_quantizer` without setting "
                "`pointwise_constraint` may result in starved weights (where the "
                "gradient is always zero).",
                self.name,
            )
        self._exact_rank_spec()

    @property
    def depthwise_quantizer(self) -> Callable[..., Any] | None:
        """The quantizer applied to the depthwise kernel, or None."""
        return self._kernel_quantizer

    @property
    def pointwise_quantizer(self) -> Callable[..., Any] | None:
        """The quantizer applied to the pointwise kernel, or None."""
        return self._pointwise_quantizer

    def quantized_kernel(self, training: Any = None) -> tf.Tensor:
        """The depthwise kernel as the forward pass uses it (``depthwise_quantizer``)."""
        self._check_built("quantized kernel")
        kernel = apply_quantizer(
            self._kernel_quantizer, tf.convert_to_tensor(self.depthwise_kernel), training
        )
        self._update_training_metrics(kernel, training)
        return kernel

    def quantized_pointwise_kernel(self, training: Any = None) -> tf.Tensor:
        """The pointwise kernel as the forward pass uses it (``pointwise_quantizer``)."""
        self._check_built("quantized pointwise kernel")
        return apply_quantizer(
            self._pointwise_quantizer, tf.convert_to_tensor(self.pointwise_kernel), training
        )

    def _flip_ratio_shape(self) -> list[int]:
        return list(self.depthwise_kernel.shape)

    def build(self, input_shape: Sequence[int | None]) -> None:
        super().build(input_shape)
        for kernel, quantizer in ((self.depthwise_kernel, self._kernel_quantizer),
                                  (self.pointwise_kernel, self._pointwise_quantizer)):
            precision = getattr(quantizer, "precision", None)
            if precision is not None:
                kernel.precision = precision  # read by Bop.is_binary_variable
            lb_context.mark_quantized_reads(kernel, quantizer)

    _has_op_path = True

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        if self._runs_on_op(_layer_ops.separable_problem, inputs):
            outputs = _layer_ops.separable_conv(self, inputs, training)
            return self.quantize_output_gradient(outputs, training)
        inputs = self.quantize_inputs(inputs, training)
        depthwise = self.quantized_kernel(training)
        pointwise = self.quantized_pointwise_kernel(training)
        inputs, padding = self._padded_inputs(inputs)
        outputs = kops.separable_conv(
            inputs,
            depthwise,
            pointwise,
            strides=self.strides,
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self.quantize_output_gradient(self._bias_and_activation(outputs), training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pointwise_quantizer": lb_quantizers.serialize(self._pointwise_quantizer),
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantSeparableConv1D(_QuantSeparableConv, keras.layers.SeparableConv1D):
    """Depthwise separable 1D convolution with quantized input and kernels (Larq's
    ``QuantSeparableConv1D``); see the module docstring for what is quantized."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        pad_values: float = 0.0,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = 1,
        depth_multiplier: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        depthwise_quantizer: lb_quantizers.QuantizerLike = None,
        pointwise_quantizer: lb_quantizers.QuantizerLike = None,
        depthwise_initializer: Any = "glorot_uniform",
        pointwise_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        depthwise_regularizer: Any = None,
        pointwise_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        depthwise_constraint: Any = None,
        pointwise_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ):
        self._separable_init(
            pad_values, pointwise_quantizer, filters=filters, kernel_size=kernel_size,
            strides=strides, padding=padding, data_format=data_format,
            dilation_rate=dilation_rate, depth_multiplier=depth_multiplier,
            activation=activation, use_bias=use_bias, input_quantizer=input_quantizer,
            kernel_quantizer=depthwise_quantizer, depthwise_initializer=depthwise_initializer,
            pointwise_initializer=pointwise_initializer, bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            pointwise_regularizer=pointwise_regularizer, bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            pointwise_constraint=pointwise_constraint, bias_constraint=bias_constraint,
            **kwargs,
        )  # fmt: skip


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantSeparableConv2D(_QuantSeparableConv, keras.layers.SeparableConv2D):
    """Depthwise separable 2D convolution with quantized input and kernels (Larq's
    ``QuantSeparableConv2D``); see the module docstring for what is quantized."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        pad_values: float = 0.0,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        depth_multiplier: int = 1,
        activation: Any = None,
        use_bias: bool = True,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        depthwise_quantizer: lb_quantizers.QuantizerLike = None,
        pointwise_quantizer: lb_quantizers.QuantizerLike = None,
        depthwise_initializer: Any = "glorot_uniform",
        pointwise_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        depthwise_regularizer: Any = None,
        pointwise_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        depthwise_constraint: Any = None,
        pointwise_constraint: Any = None,
        bias_constraint: Any = None,
        **kwargs: Any,
    ):
        self._separable_init(
            pad_values, pointwise_quantizer, filters=filters, kernel_size=kernel_size,
            strides=strides, padding=padding, data_format=data_format,
            dilation_rate=dilation_rate, depth_multiplier=depth_multiplier,
            activation=activation, use_bias=use_bias, input_quantizer=input_quantizer,
            kernel_quantizer=depthwise_quantizer, depthwise_initializer=depthwise_initializer,
            pointwise_initializer=pointwise_initializer, bias_initializer=bias_initializer,
            depthwise_regularizer=depthwise_regularizer,
            pointwise_regularizer=pointwise_regularizer, bias_regularizer=bias_regularizer,
            activity_regularizer=activity_regularizer,
            depthwise_constraint=depthwise_constraint,
            pointwise_constraint=pointwise_constraint, bias_constraint=bias_constraint,
            **kwargs,
        )  # fmt: skip
