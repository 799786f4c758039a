r"""Lowering of binary QuantConv1D and QuantConv3D to LowbitBconv2d: the 1-D and
3-D convolutions as 2-D ones.

Binary means what it means for QuantConv2D (lower_conv.py): the input
quantizer's forward pass is sign(x) and the quantized kernel is alpha_c * (+-1)
per output channel. A BatchNormalization that is the layer's only consumer and
a plain ReLU after it fold into the output transform (lowering.py), as for the
2-D conv; epilogues and packed chains are not planned for these layers.

Conv1D. A 1-D conv of x [B, L, C] with kernel [k, C, F] is the 2-D conv of
x [B, 1, L, C] with kernel [1, k, C, F], strides (1, s), dilations (1, d): one
LowbitBconv2d between an ExpandDims and a Squeeze. ``padding="same"`` with
``pad_values`` 0 or 1 maps to the op's SAME padding and pad value (the height
axis has one row and kernel height 1: nothing is padded there).

Conv3D. The op slides its kernel over H and W and treats the leading
dimensions as a batch, so a 3-D conv is a sum over the kernel's depth taps
i = 0 .. kd - 1 of 2-D convs, each of the input's depth slices that tap reads:

    dot[b, o, y, x, c] = sum_i dot2d(x[b, o * s_d + i * dil_d - p_d], W[i])

where p_d is the depth padding before (TensorFlow's SAME geometry, as the
layer pads). Each tap is one LowbitBconv2d on x gathered at those depths
[B, D_out, H, W, C], with multiplier 1 and bias 0, so that it returns the
integer dot product of its taps (exact in float32: |dot| <= K < 2^24); their
sum is the 3-D dot product, and then y = multiplier * dot + bias (alpha, the
layer's bias and a folded BatchNorm) and the fused ReLU run as float ops. A tap
whose input depth lies in the padding reads +1 everywhere with pad_values=1
(the input is padded with +1 slices, which binarise to +1) and contributes 0
with pad_values=0 (its output is masked to 0 there: the op's own zero padding
skips taps the same way).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import ConversionError, float_kernel_problem, is_sign_quantizer
from lowbit_converter.plans import (
    FoldedPlan,
    Lowering,
    binary_kernel_scale,
    binary_transform,
    geometry_problems,
)
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantConv1D, QuantConv3D


@dataclass
class BinaryConvNdPlan(FoldedPlan):
    """A binary QuantConv1D or QuantConv3D and what folds into its LowbitBconv2d ops."""

    op = "LowbitBconv2d"

    def multiplier_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return binary_transform(self.layer, self.batch_norm)


def _problems(layer: Any) -> list[str]:
    problems = geometry_problems(layer)
    if layer.groups != 1:
        problems.append(f"groups={layer.groups} (only 1)")
    return problems


def plan(layer: keras.layers.Layer) -> BinaryConvNdPlan | None:
    """The plan of a binary QuantConv1D / QuantConv3D; None for any other layer
    and for one without quantizers (a float conv).

    Raises:
      ConversionError: a quantized one no op runs, naming the layer and why.
    """
    if not isinstance(layer, QuantConv1D | QuantConv3D):
        return None
    if layer.input_quantizer is None and layer.kernel_quantizer is None:
        return None
    kind = type(layer).__name__
    fallback = " Pass float_fallback=True to convert it as float TFLite ops."
    problem = float_kernel_problem(layer)
    if problem is None and not (is_sign_quantizer(layer.input_quantizer)
                                and binary_kernel_scale(layer) is not None):
        problem = (f"it needs a sign input quantizer and a (scaled) binary kernel, got "
                   f"input_quantizer={layer.input_quantizer!r} and "
                   f"kernel_quantizer={layer.kernel_quantizer!r}")
    problems = [problem] if problem else _problems(layer)
    if problems:
        raise ConversionError(f"layer {layer.name!r} ({kind}) cannot be converted to "
                              f"LowbitBconv2d: " + "; ".join(problems) + "." + fallback)
    return BinaryConvNdPlan(layer)


class LoweredBConvNd(keras.layers.Layer):
    """Inference-only stand-in for a binary QuantConv1D / QuantConv3D (+ BatchNorm +
    ReLU): LowbitBconv2d ops on constant packed filters, as the module docstring
    describes."""

    def __init__(self, plan: BinaryConvNdPlan, **kwargs: Any) -> None:
        layer = plan.layer
        super().__init__(name=layer.name, **kwargs)
        self.rank = layer.rank
        kernel = np.asarray(layer.quantized_kernel())
        self.multiplier, self.bias_values = plan.multiplier_and_bias()
        self.fused_activation, self.trailing_activation = plan.activations()
        self.padding = layer.padding.upper()
        self.pad_value = int(layer.pad_values) if layer.padding == "same" else 0
        self.channels_in = int(kernel.shape[-2])
        if self.rank == 1:  # [k, C, F] -> [1, k, C, F]
            self.kernel_size = (1, int(kernel.shape[0]))
            self.strides = (1, int(layer.strides[0]))
            self.dilations = (1, int(layer.dilation_rate[0]))
            self.packed_filters = [ops.pack_filter(kernel[None]).numpy()]
        else:  # one [kh, kw, C, F] filter per depth tap
            self.kernel_size = tuple(int(k) for k in kernel.shape[1:3])
            self.strides = tuple(int(s) for s in layer.strides[1:])
            self.dilations = tuple(int(d) for d in layer.dilation_rate[1:])
            self.depth = (int(kernel.shape[0]), int(layer.strides[0]), int(layer.dilation_rate[0]))
            self.packed_filters = [ops.pack_filter(tap).numpy() for tap in kernel]

    def _dot(self, inputs: tf.Tensor, packed_filter: np.ndarray, transform: bool) -> tf.Tensor:
        """One LowbitBconv2d; the layer's output transform, or the plain dot product."""
        channels = len(self.multiplier)
        multiplier = self.multiplier if transform else np.ones(channels, np.float32)
        bias = self.bias_values if transform else np.zeros(channels, np.float32)
        return ops.bconv2d(
            inputs, tf.constant(packed_filter), tf.constant(multiplier), tf.constant(bias),
            kernel_size=self.kernel_size, channels_in=self.channels_in, strides=self.strides,
            dilations=self.dilations, padding=self.padding, pad_value=self.pad_value,
            activation=self.fused_activation if transform else None,
        )

    def _conv3d(self, inputs: tf.Tensor) -> tf.Tensor:
        taps, stride, dilation = self.depth
        size = int(inputs.shape[1])
        if self.padding == "SAME":
            out = -(-size // stride)
            total = max((out - 1) * stride + (taps - 1) * dilation + 1 - size, 0)
            before = total // 2
        else:
            out, before = (size - (taps - 1) * dilation - 1) // stride + 1, 0
        if self.pad_value == 1 and self.padding == "SAME":  # +1 slices around the input
            inputs = tf.pad(inputs, [[0, 0], [before, total - before], [0, 0], [0, 0], [0, 0]],
                            constant_values=1.0)
            before, size = 0, size + total
        dot = None
        for i, packed_filter in enumerate(self.packed_filters):
            depths = np.arange(out) * stride + i * dilation - before
            inside = (depths >= 0) & (depths < size)
            part = self._dot(tf.gather(inputs, np.clip(depths, 0, size - 1), axis=1),
                             packed_filter, transform=False)
            if not inside.all():  # zero padding: these taps contribute nothing
                part = part * inside.astype(np.float32)[None, :, None, None, None]
            dot = part if dot is None else dot + part
        outputs = dot * self.multiplier + self.bias_values
        return tf.nn.relu(outputs) if self.fused_activation == "relu" else outputs

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        if self.rank == 1:
            outputs = tf.squeeze(
                self._dot(tf.expand_dims(inputs, 1), self.packed_filters[0], transform=True),
                axis=1)
        else:
            outputs = self._conv3d(inputs)
        if self.trailing_activation is not None:
            outputs = self.trailing_activation(outputs)
        return outputs


LOWERING = Lowering(BinaryConvNdPlan, plan, LoweredBConvNd)
