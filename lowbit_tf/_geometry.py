"""Convolution geometry shared by the Keras layers and the ops' gradients.

A module of its own so that `lowbit_tf.ops` and `lowbit_tf.layers` both use it
without importing each other (the layers run on the ops).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

__all__ = ["same_padding"]


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
