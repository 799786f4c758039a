"""Convolution geometry shared by the Keras layers, the ops' gradients and the
converter.

A module of its own so that `lowbit_tf.ops` and `lowbit_tf.layers` both use it
without importing each other (the layers run on the ops). The stride phases of
a transposed convolution (`AxisPhases`) are derived in
converter/lowbit_converter/lower_conv_transpose.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

__all__ = ["AxisPhases", "axis_phases", "interleave_phases", "phase_problem", "phase_taps",
           "same_padding"]


def same_padding(
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


def phase_taps(taps: int, stride: int, phase: int) -> list[int]:
    """Kernel indices j of stride phase r, in correlation order (V_r[m'])."""
    return list(range(phase, taps, stride))[::-1]  # j = r + m * s, m descending


@dataclass(frozen=True)
class AxisPhases:
    """The stride phases of one axis of a transposed conv (derived in
    converter/lowbit_converter/lower_conv_transpose.py): input length, output
    length, stride, dilation, kernel taps, the output's leading crop p."""

    length: int
    out_length: int
    stride: int
    dilation: int
    taps: int
    crop: int

    @property
    def first(self) -> int:  # u0
        return self.crop // self.stride

    @property
    def count(self) -> int:  # Q, outputs per phase
        return (self.out_length - 1 + self.crop) // self.stride - self.first + 1

    def taps_of(self, phase: int) -> list[int]:
        return phase_taps(self.taps, self.stride, phase)

    def pads(self, phase: int) -> tuple[int, int]:
        """(before, after) explicit padding of the phase's correlation."""
        reach = (len(self.taps_of(phase)) - 1) * self.dilation
        before = reach - self.first
        after = (self.first + self.count - 1) - (self.length - 1)
        return before, after

    @property
    def offset(self) -> int:
        """Where the output starts in the interleaved phases."""
        return self.crop - self.stride * self.first


def axis_phases(length: int, kernel: int, stride: int, dilation: int, padding: str,
                output_padding: int | None) -> AxisPhases:
    """The phases of one spatial axis of a transposed conv (Keras's arguments
    for that axis) for an input of `length`: Keras's output length and
    TensorFlow's crop."""
    effective = (kernel - 1) * dilation + 1
    if output_padding is None:
        out = length * stride + (max(effective - stride, 0) if padding == "valid" else 0)
    else:
        pad = effective // 2 if padding == "same" else 0
        out = (length - 1) * stride + effective - 2 * pad + output_padding
    # conv_transpose is the gradient of the conv from `out` to `length`:
    # TensorFlow pads that conv's input by total // 2 rows before (SAME).
    crop = 0
    if padding == "same":
        crop = max((length - 1) * stride + effective - out, 0) // 2
    return AxisPhases(length, out, stride, dilation, kernel, crop)


def phase_problem(strides: Any, dilation_rate: Any) -> str | None:
    """Why a 2-D transposed conv has no stride-phase decomposition here, or None:
    the phases interleave with a square block, and dilated taps at stride > 1
    would not fall in one phase each."""
    strides, dilations = tuple(strides), tuple(dilation_rate)
    if strides[0] != strides[1]:
        return f"strides={strides} (the phases interleave with a square block)"
    if max(strides) > 1 and max(dilations) > 1:
        return f"strides={strides} with dilation_rate={dilations}"
    return None


def interleave_phases(phases: list[tf.Tensor], rows: AxisPhases, cols: AxisPhases) -> tf.Tensor:
    """The transposed conv's output from its phase outputs [B, Q_y, Q_x, F] in
    (r_y, r_x) order: channel block r_y * s + r_x -> pixel (q * s + r_y,
    q * s + r_x) by depth-to-space, then Keras's window of the result."""
    outputs = phases[0]
    if rows.stride > 1:
        outputs = tf.nn.depth_to_space(tf.concat(phases, axis=-1), rows.stride)
    return outputs[:, rows.offset:rows.offset + rows.out_length,
                   cols.offset:cols.offset + cols.out_length, :]
