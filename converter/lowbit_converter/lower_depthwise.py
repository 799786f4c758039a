"""Lowering of binary depthwise convolutions to `LowbitBDepthwiseConv2d`.

A `QuantDepthwiseConv2D` is binary when its input quantizer's forward pass is
sign(x) (`is_sign_quantizer`) and its quantized kernel is, per output channel
o = c * depth_multiplier + j, alpha_o * (+-1). It becomes one
`LoweredBDepthwiseConv2D` layer calling the `LowbitBDepthwiseConv2d` TF op with
the bit-packed kernel as a constant; a BatchNormalization that is its only
consumer, and a plain ReLU after that, fold into the op's per-channel
multiplier and bias and its fused activation, exactly as for the binary conv
(see lower_conv.py and lowering.py). Other depthwise layers (float inputs, a kernel that is not
+-alpha per channel) stay TFLite builtins.

A depthwise convolution with multiplier DM is the grouped convolution with
C groups and the kernel [KH, KW, C, DM] read as [KH, KW, 1, C * DM] (output
channel c * DM + j sees input channel c only). `_GroupedConvView` presents the
layer that way, so that the binary-kernel check and BatchNorm folding of the
binary conv (`plans.binary_kernel_scale`, `plans.binary_transform`) apply as
they are.

Packed chains (lowering.py): a binary depthwise layer is a `BinaryPlan`, so it
takes part in them like a binary conv. Its op reads a packed int32 input (the
signs of the previous binary layer's output, which is what its sign input
quantizer would make of the float one) and emits bit-packed signs
(`output_type="bitpacked"`, exact integer thresholds) when its only consumer
is another binary layer, e.g. the 1x1 conv of a MobileNet-style block.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import ConversionError, float_kernel_problem, is_sign_quantizer
from lowbit_converter.plans import (
    BinaryPlan,
    LoweredBinaryLayer,
    Lowering,
    binary_kernel_scale,
    binary_transform,
    geometry_problems,
)
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantDepthwiseConv2D


class _GroupedConvView:
    """A QuantDepthwiseConv2D as the grouped conv it equals: kernel
    [KH, KW, 1, C * DM], one output channel per (c, j). Offers what
    `binary_kernel_scale` and `binary_transform` read of a conv layer."""

    def __init__(self, layer: QuantDepthwiseConv2D) -> None:
        self.layer = layer
        self.name = layer.name
        self.built = True
        self.kernel_quantizer = layer.kernel_quantizer
        self.activation = layer.activation
        self.use_bias = layer.use_bias
        self.bias = layer.bias if layer.use_bias else None
        self.kernel = tf.reshape(layer.kernel, [*layer.kernel.shape[:2], 1, -1])

    def quantized_kernel(self) -> tf.Tensor:
        return tf.reshape(self.layer.quantized_kernel(), self.kernel.shape)


@dataclass
class BinaryDepthwisePlan(BinaryPlan):
    """A binary QuantDepthwiseConv2D, what folds into its
    LowbitBDepthwiseConv2d and its part in a packed chain."""

    op = "LowbitBDepthwiseConv2d"

    def multiplier_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return binary_transform(_GroupedConvView(self.layer), self.batch_norm)

    def output_channels(self) -> int:
        """C * DM of the kernel [KH, KW, C, DM]."""
        channels, multiplier = self.layer.kernel.shape[2:]
        return int(channels) * int(multiplier)


def is_binary_depthwise(layer: keras.layers.Layer) -> bool:
    """True for a QuantDepthwiseConv2D with sign-binarised inputs and a (scaled)
    binary kernel."""
    return (
        isinstance(layer, QuantDepthwiseConv2D)
        and layer.built
        and is_sign_quantizer(layer.input_quantizer)
        and binary_kernel_scale(_GroupedConvView(layer)) is not None
    )


def _check_convertible(layer: QuantDepthwiseConv2D) -> None:
    problems = geometry_problems(layer)
    if problems:
        raise ConversionError(
            f"layer {layer.name!r} (QuantDepthwiseConv2D) cannot be converted to "
            "LowbitBDepthwiseConv2d: " + "; ".join(problems)
        )


def plan(layer: keras.layers.Layer) -> BinaryDepthwisePlan | None:
    """The plan of a binary depthwise layer (its BatchNorm and ReLU are found by
    `plan_lowering`, as for convs), None for any layer that is not a
    QuantDepthwiseConv2D with quantized inputs.

    Raises:
      ConversionError: naming the layer and the option that cannot be mapped.
    """
    if not isinstance(layer, QuantDepthwiseConv2D) or layer.input_quantizer is None:
        return None  # float inputs: a float depthwise conv with its quantized kernel
    float_kernel = float_kernel_problem(layer, "depthwise_quantizer")
    if float_kernel is not None:
        raise ConversionError(
            f"layer {layer.name!r} (QuantDepthwiseConv2D) cannot be converted to a lowbit op: "
            f"{float_kernel}. Pass float_fallback=True to convert it as float TFLite ops."
        )
    if not is_binary_depthwise(layer):
        raise ConversionError(
            f"layer {layer.name!r} (QuantDepthwiseConv2D) cannot be converted to "
            "LowbitBDepthwiseConv2d: it needs a sign input quantizer and a (scaled) binary "
            f"kernel, got input_quantizer={layer.input_quantizer!r} and "
            f"depthwise_quantizer={layer.kernel_quantizer!r}. Pass float_fallback=True to "
            "convert it as float TFLite ops."
        )
    _check_convertible(layer)
    return BinaryDepthwisePlan(layer)


class LoweredBDepthwiseConv2D(LoweredBinaryLayer):
    """Inference-only stand-in for a binary QuantDepthwiseConv2D (+ BatchNorm +
    ReLU): one LowbitBDepthwiseConv2d op with the bit-packed kernel and the
    folded output transform as constants, on a float or packed input, with a
    float or bit-packed output (the plan's packed chain)."""

    def __init__(self, plan: BinaryDepthwisePlan, **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        layer = plan.layer
        kernel = np.asarray(layer.quantized_kernel())
        self.packed_filter = ops.pack_depthwise_filter(kernel).numpy()
        self.multiplier, self.bias_values = plan.multiplier_and_bias()
        self.channels_in, self.depth_multiplier = int(kernel.shape[2]), int(kernel.shape[3])
        self.kernel_size = tuple(layer.kernel_size)
        self.strides = tuple(layer.strides)
        self.dilations = tuple(layer.dilation_rate)
        self.padding = layer.padding.upper()
        self.pad_value = int(layer.pad_values) if layer.padding == "same" else 0

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        outputs = ops.bdepthwise_conv2d(
            inputs,
            tf.constant(self.packed_filter),
            tf.constant(self.multiplier),
            tf.constant(self.bias_values),
            kernel_size=self.kernel_size,
            channels_in=self.channels_in,
            depth_multiplier=self.depth_multiplier,
            strides=self.strides,
            dilations=self.dilations,
            padding=self.padding,
            pad_value=self.pad_value,
            activation=self.fused_activation,
            output_type=self.output_type,
        )
        return self.finish(outputs)


LOWERING = Lowering(BinaryDepthwisePlan, plan, LoweredBDepthwiseConv2D)
