r"""Lowering of the depthwise half of a binary QuantSeparableConv1D / 2D to
LowbitBDepthwiseConv2d.

A separable conv is a depthwise conv followed by a pointwise (1x1) conv of its
result. As in Larq, its quantizers act on the input (``input_quantizer``) and on
the two kernels; the depthwise result that feeds the pointwise conv is not
quantized. So when the input quantizer is a sign and the depthwise kernel is
binary (alpha_o * (+-1) per depthwise output channel o), the depthwise half is a
binary depthwise conv, LowbitBDepthwiseConv2d with multiplier alpha_o and bias
0; the pointwise half multiplies float values and stays a float 1x1 conv
(TFLite's CONV_2D, with the quantized pointwise kernel as its weights, the
layer's bias, and a following BatchNormalization folded by TFLite's own
converter), then the layer's activation. A 1-D layer runs as the 2-D one on
[B, 1, L, C] (kernel [1, k, C, DM]), between an ExpandDims and a Squeeze.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import ConversionError, float_kernel_problem, is_sign_quantizer
from lowbit_converter.plans import Lowering, binary_kernel_scale, geometry_problems
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantSeparableConv1D, QuantSeparableConv2D


@dataclass
class BinarySeparablePlan:
    """A QuantSeparableConv1D / 2D whose depthwise half is binary."""

    op = "LowbitBDepthwiseConv2d"

    layer: keras.layers.Layer

    def tail(self) -> str:
        return self.layer.name


class _DepthwiseView:
    """The depthwise half as a grouped conv (kernel [..., 1, C * DM]): what
    `binary_kernel_scale` reads of a layer."""

    def __init__(self, layer: Any) -> None:
        self.built = True
        self.kernel_quantizer = layer.depthwise_quantizer
        self._kernel = np.asarray(layer.quantized_kernel())
        self.kernel = self._kernel.reshape(*self._kernel.shape[:-2], 1, -1)

    def quantized_kernel(self) -> np.ndarray:
        return self.kernel


def plan(layer: keras.layers.Layer) -> BinarySeparablePlan | None:
    """The plan of a separable layer with a binary depthwise half; None for any
    other layer and for one with float inputs (a float separable conv).

    Raises:
      ConversionError: quantized inputs the depthwise op cannot take, naming the
        layer and why.
    """
    if not isinstance(layer, QuantSeparableConv1D | QuantSeparableConv2D):
        return None
    if layer.input_quantizer is None:
        return None
    kind = type(layer).__name__
    problems = []
    float_kernel = float_kernel_problem(layer, "depthwise_quantizer")
    if float_kernel is not None:
        problems.append(float_kernel)
    elif not (is_sign_quantizer(layer.input_quantizer)
              and binary_kernel_scale(_DepthwiseView(layer)) is not None):
        problems.append(
            f"its depthwise half needs a sign input quantizer and a (scaled) binary "
            f"depthwise kernel, got input_quantizer={layer.input_quantizer!r} and "
            f"depthwise_quantizer={layer.depthwise_quantizer!r}")
    problems += geometry_problems(layer)
    if problems:
        raise ConversionError(
            f"layer {layer.name!r} ({kind}) cannot be converted to LowbitBDepthwiseConv2d: "
            + "; ".join(problems) + ". Pass float_fallback=True to convert it as float "
            "TFLite ops.")
    return BinarySeparablePlan(layer)


class LoweredBSeparableConv(keras.layers.Layer):
    """Inference-only stand-in for a separable layer with a binary depthwise half:
    LowbitBDepthwiseConv2d, then the float pointwise conv, bias and activation."""

    def __init__(self, plan: BinarySeparablePlan, **kwargs: Any) -> None:
        layer = plan.layer
        super().__init__(name=layer.name, **kwargs)
        self.rank = layer.rank
        view = _DepthwiseView(layer)
        depthwise = view._kernel  # [(kh,) kw, C, DM]
        if self.rank == 1:
            depthwise = depthwise[None]
        self.packed_filter = ops.pack_depthwise_filter(depthwise).numpy()
        self.alpha = binary_kernel_scale(view).astype(np.float32)
        self.channels_in, self.depth_multiplier = (int(d) for d in depthwise.shape[2:])
        self.kernel_size = tuple(int(k) for k in depthwise.shape[:2])
        self.strides = ((1,) if self.rank == 1 else ()) + tuple(layer.strides)
        self.dilations = ((1,) if self.rank == 1 else ()) + tuple(layer.dilation_rate)
        self.padding = layer.padding.upper()
        self.pad_value = int(layer.pad_values) if layer.padding == "same" else 0
        pointwise = np.asarray(layer.quantized_pointwise_kernel(), np.float32)
        self.pointwise = pointwise.reshape(1, 1, *pointwise.shape[-2:])
        self.bias_values = np.asarray(layer.bias, np.float32) if layer.use_bias else None
        self.activation = layer.activation

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        x = tf.expand_dims(inputs, 1) if self.rank == 1 else inputs
        x = ops.bdepthwise_conv2d(
            x, tf.constant(self.packed_filter), tf.constant(self.alpha),
            tf.constant(np.zeros_like(self.alpha)), kernel_size=self.kernel_size,
            channels_in=self.channels_in, depth_multiplier=self.depth_multiplier,
            strides=self.strides, dilations=self.dilations, padding=self.padding,
            pad_value=self.pad_value,
        )
        x = tf.nn.conv2d(x, tf.constant(self.pointwise), strides=1, padding="VALID")
        if self.bias_values is not None:
            x = tf.nn.bias_add(x, tf.constant(self.bias_values))
        if self.rank == 1:
            x = tf.squeeze(x, axis=1)
        return self.activation(x) if self.activation is not None else x


LOWERING = Lowering(BinarySeparablePlan, plan, LoweredBSeparableConv)
