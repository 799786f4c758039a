r"""Lowering of a binary QuantConv2DTranspose to LowbitBconv2d: one binary
convolution per stride phase, interleaved.

A transposed convolution (the input gradient of a conv; Keras's and TF's
``conv_transpose``) spreads each input pixel over the output through the
kernel. Along one axis, with input length L, kernel W[0..k-1] (Keras's
transposed kernel [kh, kw, filters, in_channels]), stride s and the output's
leading crop p (0 for "valid", TensorFlow's SAME padding of the output
otherwise),

    y[o] = sum over (i, j) with i * s + j - p = o of x[i] W[j].

Write t = o + p = u * s + r with the phase r in [0, s): the taps that reach t
are j = r + m * s, m = 0 .. M_r - 1 with M_r = ceil((k - r) / s), and they read
x[u - m]. So the outputs of phase r, as a sequence over u, are an ordinary
correlation of x with the phase's taps reversed,

    y_r[u] = sum_{m'=0}^{M_r-1} x[u - (M_r - 1) + m'] V_r[m'],
    V_r[m'] = W[r + (M_r - 1 - m') * s],

in which x is 0 outside [0, L): a stride-1 LowbitBconv2d with pad value 0 and
EXPLICIT padding. Every phase computes the same range of u, u0 = floor(p / s)
.. u1 = floor((L_out - 1 + p) / s), Q = u1 - u0 + 1 outputs, which asks for
M_r - 1 - u0 rows before the input and u1 + 1 - L after it (both >= 0 for
every Keras geometry; a window may lie wholly in the padding: it gives a dot of
0, as the transposed conv does there). In 2-D the phases (r_y, r_x) multiply;
their outputs, concatenated on the channel axis in (r_y, r_x) order, are what
DEPTH_TO_SPACE (block s) interleaves into [Q_y * s, Q_x * s], and the output is
its window from (p_y - s * u0_y, p_x - s * u0_x) of size L_out. A phase with no
tap (stride larger than the kernel) is the output transform of a dot of 0.

The inputs are binary (the sign input quantizer), so each phase is a binary
convolution whose dot products are exact integers, and the fused output
transform (kernel scale alpha per output channel, the layer's bias, a folded
BatchNorm, ReLU) is the same for every phase: the result equals Keras's
conv_transpose of the quantized values up to the float rounding of that
transform (one rounding instead of the float conv's sum). Dilation with stride 1
is one phase with the dilated, reversed kernel. Not run by an op: strides that
differ per axis (DEPTH_TO_SPACE needs a square block), stride and dilation both
above 1, channels_first; those convert as float with float_fallback=True.
QuantConv3DTranspose converts as float (docs/custom_ops.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import ConversionError, float_kernel_problem, is_sign_quantizer
from lowbit_converter.plans import FoldedPlan, Lowering, binary_kernel_scale, binary_transform
from lowbit_tf import ops
from lowbit_tf._geometry import (
    AxisPhases,
    axis_phases,
    interleave_phases,
    phase_problem,
    phase_taps,
)
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantConv2DTranspose


class _ConvView:
    """A QuantConv2DTranspose's kernel as a conv's, [kh, kw, in_channels,
    filters] (output channels last): what `binary_kernel_scale` and
    `binary_transform` read of a conv layer."""

    def __init__(self, layer: QuantConv2DTranspose) -> None:
        self.layer = layer
        self.built = True
        self.kernel_quantizer = layer.kernel_quantizer
        self.use_bias = layer.use_bias
        self.bias = layer.bias if layer.use_bias else None
        self.kernel = tf.transpose(layer.kernel, [0, 1, 3, 2])

    def quantized_kernel(self) -> tf.Tensor:
        return tf.transpose(self.layer.quantized_kernel(), [0, 1, 3, 2])


@dataclass
class BinaryConvTransposePlan(FoldedPlan):
    """A binary QuantConv2DTranspose and what folds into its LowbitBconv2d ops."""

    op = "LowbitBconv2d"

    def multiplier_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return binary_transform(_ConvView(self.layer), self.batch_norm)


def _problems(layer: QuantConv2DTranspose) -> list[str]:
    problems = []
    if layer.data_format != "channels_last":
        problems.append(f"data_format={layer.data_format!r} (only 'channels_last')")
    geometry = phase_problem(layer.strides, layer.dilation_rate)
    if geometry is not None:
        problems.append(geometry)
    return problems


def plan(layer: keras.layers.Layer) -> BinaryConvTransposePlan | None:
    """The plan of a binary QuantConv2DTranspose; None for any other layer and
    for one without quantizers (a float transposed conv).

    Raises:
      ConversionError: a quantized one no op runs, naming the layer and why.
    """
    if not isinstance(layer, QuantConv2DTranspose):
        return None
    if layer.input_quantizer is None and layer.kernel_quantizer is None:
        return None
    problem = float_kernel_problem(layer)
    binary_kernel = (layer.kernel_quantizer is not None
                     and binary_kernel_scale(_ConvView(layer)) is not None)
    if problem is None and not (is_sign_quantizer(layer.input_quantizer) and binary_kernel):
        problem = (f"it needs a sign input quantizer and a (scaled) binary kernel, got "
                   f"input_quantizer={layer.input_quantizer!r} and "
                   f"kernel_quantizer={layer.kernel_quantizer!r}")
    problems = [problem] if problem else _problems(layer)
    if problems:
        raise ConversionError(
            f"layer {layer.name!r} (QuantConv2DTranspose) cannot be converted to LowbitBconv2d: "
            + "; ".join(problems) + ". Pass float_fallback=True to convert it as float TFLite ops."
        )
    return BinaryConvTransposePlan(layer)


class LoweredBConvTranspose(keras.layers.Layer):
    """Inference-only stand-in for a binary QuantConv2DTranspose (+ BatchNorm +
    ReLU): one LowbitBconv2d per stride phase, DEPTH_TO_SPACE and a crop, as
    the module docstring derives."""

    def __init__(self, plan: BinaryConvTransposePlan, **kwargs: Any) -> None:
        layer = plan.layer
        super().__init__(name=layer.name, **kwargs)
        output_padding = layer.output_padding or (None, None)
        # Per axis: kernel, stride, dilation, padding, output_padding (axis_phases).
        self.geometry = [
            (int(layer.kernel_size[a]), int(layer.strides[a]), int(layer.dilation_rate[a]),
             layer.padding, None if output_padding[a] is None else int(output_padding[a]))
            for a in (0, 1)
        ]
        # Each phase's taps of the conv view's quantized kernel [kh, kw, in,
        # filters], packed: {(ry, rx): (kernel size, packed filter)}.
        kernel = np.asarray(_ConvView(layer).quantized_kernel(), np.float32)
        self.channels_in = int(kernel.shape[2])
        self.phase_filters = {}
        for ry in range(self.geometry[0][1]):
            for rx in range(self.geometry[1][1]):
                taps_y = phase_taps(self.geometry[0][0], self.geometry[0][1], ry)
                taps_x = phase_taps(self.geometry[1][0], self.geometry[1][1], rx)
                if taps_y and taps_x:
                    part = kernel[np.ix_(taps_y, taps_x)]
                    self.phase_filters[ry, rx] = (part.shape[:2], ops.pack_filter(part).numpy())
        self.multiplier, self.bias_values = plan.multiplier_and_bias()
        self.fused_activation, self.trailing_activation = plan.activations()

    def _phase(self, inputs: tf.Tensor, rows: AxisPhases, cols: AxisPhases, ry: int,
               rx: int) -> tf.Tensor:
        if (ry, rx) not in self.phase_filters:  # no tap reaches this phase: a dot of 0
            value = np.maximum(self.bias_values, 0) if self.fused_activation else self.bias_values
            batch = tf.shape(inputs)[0]
            return tf.broadcast_to(tf.constant(value, tf.float32),
                                   tf.stack([batch, rows.count, cols.count, len(value)]))
        kernel_size, packed = self.phase_filters[ry, rx]
        return ops.bconv2d(
            inputs, tf.constant(packed), tf.constant(self.multiplier),
            tf.constant(self.bias_values), kernel_size=kernel_size,
            channels_in=self.channels_in, dilations=(rows.dilation, cols.dilation),
            padding=(rows.pads(ry), cols.pads(rx)), pad_value=0,
            activation=self.fused_activation,
        )  # fmt: skip

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        height, width = inputs.shape[1], inputs.shape[2]
        if height is None or width is None:
            raise ConversionError(
                f"layer {self.name!r} (QuantConv2DTranspose): the input's height and width must "
                f"be known to convert it to LowbitBconv2d ops, got shape {inputs.shape}; give "
                "the model's Input a full shape, or pass float_fallback=True."
            )
        rows = axis_phases(int(height), *self.geometry[0])
        cols = axis_phases(int(width), *self.geometry[1])
        for axis in (rows, cols):
            pads = [axis.pads(r) for r in range(axis.stride) if axis.taps_of(r)]
            if min(min(p) for p in pads) < 0:  # not for Keras's geometries; a guard
                raise ConversionError(
                    f"layer {self.name!r} (QuantConv2DTranspose): no phase decomposition for "
                    f"{axis}; pass float_fallback=True."
                )
        phases = [self._phase(inputs, rows, cols, ry, rx)
                  for ry in range(rows.stride) for rx in range(cols.stride)]
        outputs = interleave_phases(phases, rows, cols)
        if self.trailing_activation is not None:
            outputs = self.trailing_activation(outputs)
        return outputs


LOWERING = Lowering(BinaryConvTransposePlan, plan, LoweredBConvTranspose)
