r"""QuantConv2DTranspose's forward pass on LowbitBconv2d: one binary convolution
per stride phase, as the converter lowers it.

A transposed convolution with stride s is, per output phase (r_y, r_x), an
ordinary stride-1 convolution of the input with the kernel taps r, r + s, ...
reversed, zero padded (pad value 0, EXPLICIT padding); the s x s phase outputs
interleave by depth-to-space, and Keras's output is a window of that
(converter/lowbit_converter/lower_conv_transpose.py derives it;
lowbit_tf/_geometry.py computes the phases). With sign inputs and a sign kernel
every phase is a binary convolution of +-1 values, whose integer sums are the
float conv_transpose's sums exactly, so the outputs equal the emulation's bit for
bit; the gradients are those of the same convolutions (``_bconv2d_of_signs``,
exact), gathered back through the tap selection by TensorFlow.

Runs when `conv2d_transpose_problem` finds nothing: as for QuantConv2D
(_layer_ops), plus a sign kernel (Larq's magnitude_aware_sign scales the
transposed kernel [kh, kw, filters, in] per input channel, its last axis, which
no per-output transform applies), equal strides, not both stride and dilation
above 1, and an input whose height and width are known when traced.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lowbit_tf._geometry import AxisPhases, axis_phases, interleave_phases, phase_problem
from lowbit_tf._layer_ops import (
    _bconv2d_of_signs,
    _common_problem,
    _finish,
    _float32,
    _form,
    _fused_relu,
    _op_inputs,
)

__all__ = ["conv2d_transpose", "conv2d_transpose_problem"]


def conv2d_transpose_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBconv2d cannot run this QuantConv2DTranspose call, or None."""
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r} (the ops are channels_last)"
    geometry = phase_problem(layer.strides, layer.dilation_rate)
    if geometry is not None:
        return geometry
    if inputs.shape[1] is None or inputs.shape[2] is None:
        return f"inputs of shape {inputs.shape} (the phases need the height and width)"
    problem = _common_problem(layer, inputs)
    if problem is None and _form(layer.kernel_quantizer) != "sign":
        return (f"the kernel quantizer {layer.kernel_quantizer!r} scales the transposed "
                "kernel per input channel")
    return problem


def _geometry(layer: Any, axis: int, length: int) -> AxisPhases:
    output_padding = None if layer.output_padding is None else layer.output_padding[axis]
    return axis_phases(length, layer.kernel_size[axis], layer.strides[axis],
                       layer.dilation_rate[axis], layer.padding, output_padding)


def conv2d_transpose(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    """A QuantConv2DTranspose's output (bias and activation included) by
    LowbitBconv2d, one op per stride phase."""
    dtype = inputs.dtype
    x = _op_inputs(layer, inputs, training)
    relu = _fused_relu(layer)
    # [kh, kw, filters, in] -> a conv kernel [kh, kw, in, filters].
    kernel = tf.transpose(_float32(layer.quantized_kernel(training)), [0, 1, 3, 2])
    rows = _geometry(layer, 0, int(inputs.shape[1]))
    cols = _geometry(layer, 1, int(inputs.shape[2]))
    phases = []
    for ry in range(rows.stride):
        for rx in range(cols.stride):
            taps_y, taps_x = rows.taps_of(ry), cols.taps_of(rx)
            if not taps_y or not taps_x:  # no tap reaches this phase: a sum of 0
                batch = tf.shape(x)[0]
                phases.append(tf.zeros(tf.stack([batch, rows.count, cols.count,
                                                  layer.filters])))
                continue
            taps = tf.gather(tf.gather(kernel, taps_y, axis=0), taps_x, axis=1)
            attrs = dict(strides=(1, 1), dilations=(rows.dilation, cols.dilation),
                         padding=(rows.pads(ry), cols.pads(rx)), pad_value=0)
            phases.append(_bconv2d_of_signs(x, taps, None, relu, attrs))
    return _finish(layer, interleave_phases(phases, rows, cols), dtype, relu)
