"""The ``keras.ops`` functions the layers use, for tf-keras (Keras 2 has no
``keras.ops``), written with TensorFlow ops as Keras 3's TensorFlow backend
computes them. ``lowbit_tf._keras.kops`` is this module under tf-keras and
``keras.ops`` under Keras 3.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import tensorflow as tf


def _tuple(value: Any, rank: int) -> list[int]:
    return [int(value)] * rank if isinstance(value, int) else [int(v) for v in value]


def _channels_last(fn: Any, inputs: tf.Tensor, data_format: str | None) -> tf.Tensor:
    """``fn`` on channels-last data (TensorFlow's CPU kernels take only that)."""
    if data_format != "channels_first":
        return fn(inputs)
    rank = len(inputs.shape)
    to_last = [0, *range(2, rank), 1]
    to_first = [0, rank - 1, *range(1, rank - 1)]
    return tf.transpose(fn(tf.transpose(inputs, to_last)), to_first)


def conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid",
         data_format: str | None = None, dilation_rate: Any = 1) -> tf.Tensor:
    inputs = tf.convert_to_tensor(inputs)
    rank = len(inputs.shape) - 2

    def run(x: tf.Tensor) -> tf.Tensor:
        # data_format spelt out: the 3-D conv's gradient reads the attribute.
        return tf.nn.convolution(x, kernel, _tuple(strides, rank), padding.upper(),
                                 data_format=("NWC", "NHWC", "NDHWC")[rank - 1],
                                 dilations=_tuple(dilation_rate, rank))

    if (inputs.shape[-1] if data_format != "channels_first" else inputs.shape[1]) \
            != kernel.shape[-2]:
        # Grouped: TensorFlow's CPU kernels run it only compiled (as Keras 3 does).
        run = tf.function(run, jit_compile=True)
    return _channels_last(run, inputs, data_format)


def depthwise_conv(inputs: Any, kernel: Any, strides: Any = 1, padding: str = "valid",
                   data_format: str | None = None, dilation_rate: Any = 1) -> tf.Tensor:
    inputs = tf.convert_to_tensor(inputs)
    return _channels_last(
        lambda x: tf.nn.depthwise_conv2d(x, kernel, [1, *_tuple(strides, 2), 1],
                                         padding.upper(), dilations=_tuple(dilation_rate, 2)),
        inputs, data_format)


def separable_conv(inputs: Any, depthwise_kernel: Any, pointwise_kernel: Any,
                   strides: Any = 1, padding: str = "valid", data_format: str | None = None,
                   dilation_rate: Any = 1) -> tf.Tensor:
    inputs = tf.convert_to_tensor(inputs)
    rank = len(inputs.shape) - 2

    def run(x: tf.Tensor) -> tf.Tensor:
        depthwise, pointwise = depthwise_kernel, pointwise_kernel
        s, d = _tuple(strides, rank), _tuple(dilation_rate, rank)
        if rank == 1:  # as 2-D on [B, 1, L, C]
            x, depthwise, pointwise = (tf.expand_dims(x, 1), tf.expand_dims(depthwise, 0),
                                       tf.expand_dims(pointwise, 0))
            s, d = [1, *s], [1, *d]
        y = tf.nn.separable_conv2d(x, depthwise, pointwise, [1, *s, 1], padding.upper(),
                                   dilations=d)
        return tf.squeeze(y, 1) if rank == 1 else y

    return _channels_last(run, inputs, data_format)


def _deconv_length(size: int, kernel: int, padding: str, output_padding: int | None,
                   stride: int, dilation: int) -> int:
    """Output length of a transposed convolution (Keras's rule)."""
    kernel = kernel + (kernel - 1) * (dilation - 1)
    if output_padding is None:
        if padding == "valid":
            return size * stride + max(kernel - stride, 0)
        return size * stride
    pad = kernel // 2 if padding == "same" else 0
    return (size - 1) * stride + kernel - 2 * pad + output_padding


def conv_transpose(inputs: Any, kernel: Any, strides: Any, padding: str = "valid",
                   output_padding: Sequence[int] | None = None,
                   data_format: str | None = None, dilation_rate: Any = 1) -> tf.Tensor:
    inputs = tf.convert_to_tensor(inputs)
    rank = len(inputs.shape) - 2
    s, d = _tuple(strides, rank), _tuple(dilation_rate, rank)
    pads = [None] * rank if output_padding is None else _tuple(output_padding, rank)

    def run(x: tf.Tensor) -> tf.Tensor:
        sizes = [_deconv_length(int(x.shape[1 + i]), int(kernel.shape[i]), padding.lower(),
                                pads[i], s[i], d[i]) for i in range(rank)]
        shape = tf.stack([tf.shape(x)[0], *sizes, kernel.shape[-2]])
        return tf.nn.conv_transpose(x, kernel, shape, s, padding.upper(), dilations=d)

    return _channels_last(run, inputs, data_format)


def matmul(x: Any, y: Any) -> tf.Tensor:
    x = tf.convert_to_tensor(x)
    if len(x.shape) == 2:
        return tf.matmul(x, y)
    return tf.tensordot(x, y, [[len(x.shape) - 1], [0]])


def add(x: Any, y: Any) -> tf.Tensor:
    return tf.add(x, y)


def pad(x: Any, pad_width: Any, mode: str = "constant") -> tf.Tensor:
    return tf.pad(x, pad_width, mode=mode.upper())


def convert_to_numpy(x: Any) -> Any:
    return x.numpy() if hasattr(x, "numpy") else x
