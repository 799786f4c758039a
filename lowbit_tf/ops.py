"""Python face of the lowbit custom TensorFlow ops.

Bit convention (docs/custom_ops.md): sign(x) = +1 for x >= 0 and -1 for x < 0;
32 consecutive channels per int32 word, lowest channel in the lowest bit, bit 1
meaning -1, channels padded with 0 bits (+1) to a whole word.

The ops run on TensorFlow's intra-op thread pool. `bconv2d` and `bgemm` have
gradients (registered below): the straight-through estimator of ste_sign for a
float input and a float (Keras) kernel, exact ones for the multiplier and the
bias, so that a model can train through the fast path; packed int32 inputs and
filters and bit-packed outputs have none. The Keras layers (`lowbit_tf.layers`)
train with float ops and are what the converter lowers onto these ops.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_tf._native import load_tf_ops
from lowbit_tf.layers import _same_padding
from lowbit_tf.quantizers import _clipped_gradient, _sign

__all__ = [
    "BITS_PER_WORD",
    "packed_words",
    "bitpack",
    "pack_filter",
    "pack_dense_kernel",
    "bconv2d",
    "bgemm",
    "bmaxpool2d",
]

BITS_PER_WORD = 32
_PADDINGS = ("SAME", "VALID")
_ACTIVATIONS = {None: "NONE", "linear": "NONE", "relu": "RELU"}
_OUTPUT_TYPES = ("float", "bitpacked")


def packed_words(channels: int) -> int:
    """Number of int32 words holding `channels` packed binary values."""
    return -(-int(channels) // BITS_PER_WORD)


def bitpack(x: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Packs the signs of a float32 tensor along its last axis.

    Returns an int32 tensor of shape `x.shape[:-1] + [ceil(C / 32)]`.
    """
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        raise TypeError(f"bitpack expects a float32 tensor, got dtype {x.dtype.name}")
    if x.shape.rank == 0:
        raise ValueError("bitpack expects a tensor of rank >= 1, got a scalar")
    return load_tf_ops().lowbit_bitpack(x)


def pack_filter(kernel: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Binarises and packs a Keras conv kernel for `bconv2d`.

    Args:
      kernel: float32 [KH, KW, C_in, C_out] (Keras/TF "HWIO" layout); its signs
        are taken with the bit convention above.

    Returns:
      int32 [C_out, ceil(KH * KW * C_in / 32)]: per output channel, the signs
      in (ky, kx, c) order packed back to back (one bit per weight).
    """
    kernel = tf.convert_to_tensor(kernel, dtype=tf.float32)
    if kernel.shape.rank != 4:
        raise ValueError(f"pack_filter expects a 4-D HWIO kernel, got shape {kernel.shape}")
    out_channels = kernel.shape[3]
    return bitpack(tf.reshape(tf.transpose(kernel, (3, 0, 1, 2)), [out_channels, -1]))


def pack_dense_kernel(kernel: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Binarises and packs a Keras dense kernel for `bgemm`.

    Args:
      kernel: float32 [K, N_out] (the Keras Dense layout); its signs are taken
        with the bit convention above.

    Returns:
      int32 [N_out, ceil(K / 32)]: the packing of the transposed kernel, row c
      holding the K signs of output channel c.
    """
    kernel = tf.convert_to_tensor(kernel, dtype=tf.float32)
    if kernel.shape.rank != 2:
        raise ValueError(
            f"pack_dense_kernel expects a 2-D [K, N_out] kernel, got shape {kernel.shape}"
        )
    return bitpack(tf.transpose(kernel))


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _checked_common(
    op: str, inputs: tf.Tensor, activation: str | None, output_type: str
) -> None:
    """Checks shared by bconv2d and bgemm."""
    if inputs.dtype not in (tf.float32, tf.int32):
        raise TypeError(
            f"{op} inputs must be float32 or packed int32, got dtype {inputs.dtype.name}"
        )
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'linear' or 'relu', got {activation!r}")
    if output_type not in _OUTPUT_TYPES:
        raise ValueError(f"output_type must be 'float' or 'bitpacked', got {output_type!r}")


def _transform(
    multiplier: tf.Tensor | np.ndarray | None,
    bias: tf.Tensor | np.ndarray | None,
    out_channels: int | None,
) -> tuple[tf.Tensor, tf.Tensor]:
    """multiplier and bias as float32 tensors (default ones and zeros)."""
    if multiplier is None:
        multiplier = tf.ones([out_channels], tf.float32)
    if bias is None:
        bias = tf.zeros([out_channels], tf.float32)
    return tf.convert_to_tensor(multiplier, tf.float32), tf.convert_to_tensor(bias, tf.float32)


def bconv2d(
    inputs: tf.Tensor | np.ndarray,
    filter: tf.Tensor | np.ndarray,  # noqa: A002 - TF's own name for it
    multiplier: tf.Tensor | np.ndarray | None = None,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    kernel_size: int | Sequence[int] | None = None,
    channels_in: int | None = None,
    strides: int | Sequence[int] = 1,
    dilations: int | Sequence[int] = 1,
    padding: str = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
    output_type: str = "float",
) -> tf.Tensor:
    """Binary 2-D convolution with a fused output transform.

    Computes, for every output pixel and channel c,
        y = multiplier[c] * dot + bias[c]     (then max(y, 0) if activation="relu")
    where dot is the +-1 dot product of the binarised receptive field with the
    binarised filter: dot = K - 2 * popcount(x XOR w) over the K taps*channels.

    Differentiable (see the module docstring): with a float input and a float
    filter this is a binary conv layer that trains through the fast path.

    Args:
      inputs: float32 [..., H, W, C] (binarised and packed inside the op) or
        int32 packed [..., H, W, ceil(C / 32)] from `bitpack`; rank >= 4, the
        kernel slides over H and W, the leading dimensions are a batch.
      filter: int32 packed [C_out, ceil(KH * KW * C_in / 32)] from
        `pack_filter`, or the float32 Keras kernel [KH, KW, C_in, C_out] (HWIO),
        binarised and packed inside the op (then it gets a gradient).
      multiplier, bias: float32 [C_out]; default ones and zeros.
      kernel_size: (KH, KW) of the filter, or an int for both; required for a
        packed filter, taken from a float one.
      channels_in: the real input channel count; required for a packed input
        and packed filter, inferred otherwise.
      strides, dilations: an int or (height, width).
      padding: "SAME" or "VALID" (TensorFlow's geometry).
      pad_value: 0 (padded pixels contribute 0, like zero padding of the
        binarised input) or 1 (padded pixels are +1). Only matters for "SAME".
      activation: None / "linear" or "relu" (fused).
      output_type: "float" (the default) or "bitpacked": the signs of the float
        output, packed (`bitpack(bconv2d(...))` bit for bit), computed from the
        integer dot products with exact per-channel thresholds so that a chain
        of binary layers never unpacks. Needs finite multiplier and bias. With
        activation="relu" every bit is 0 (+1): relu(y) is never negative.

    Returns:
      float32 [..., OH, OW, C_out], or int32 [..., OH, OW, ceil(C_out / 32)]
      for output_type="bitpacked".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    _checked_common("bconv2d", inputs, activation, output_type)
    if filter.dtype not in (tf.int32, tf.float32):
        raise TypeError(
            "bconv2d filter must be packed int32 or a float32 HWIO kernel, got dtype "
            f"{filter.dtype.name}"
        )
    if inputs.shape.rank is not None and inputs.shape.rank < 4:
        raise ValueError(
            f"bconv2d inputs must be 4-D NHWC or of higher rank [..., H, W, C], got shape "
            f"{inputs.shape}"
        )
    if filter.dtype == tf.float32:
        if filter.shape.rank != 4 or None in filter.shape:
            raise ValueError(
                f"a float bconv2d filter must be a 4-D HWIO kernel, got shape {filter.shape}"
            )
        shape = tuple(int(d) for d in filter.shape)
        if kernel_size is not None and _pair(kernel_size, "kernel_size") != shape[:2]:
            raise ValueError(f"kernel_size {kernel_size!r} does not match the filter {shape}")
        if channels_in is not None and channels_in != shape[2]:
            raise ValueError(f"channels_in {channels_in!r} does not match the filter {shape}")
        kernel_size, channels_in, out_channels = shape[:2], shape[2], shape[3]
    else:
        if filter.shape.rank != 2:
            raise ValueError(
                f"bconv2d filter must be 2-D [C_out, words], got shape {filter.shape}"
            )
        if kernel_size is None:
            raise ValueError("bconv2d needs kernel_size for a packed filter")
        out_channels = filter.shape[0]
    if channels_in is None:
        if inputs.dtype == tf.int32 or inputs.shape[-1] is None:
            raise ValueError("bconv2d needs channels_in for a packed input or unknown depth")
        channels_in = int(inputs.shape[-1])
    padding = padding.upper()
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    if pad_value not in (0, 1):
        raise ValueError(f"pad_value must be 0 or 1, got {pad_value!r}")
    multiplier, bias = _transform(multiplier, bias, out_channels)
    kernel_h, kernel_w = _pair(kernel_size, "kernel_size")
    stride_h, stride_w = _pair(strides, "strides")
    dilation_h, dilation_w = _pair(dilations, "dilations")
    return load_tf_ops().lowbit_bconv2d(
        inputs,
        filter,
        multiplier,
        bias,
        channels_in=int(channels_in),
        kernel_h=kernel_h,
        kernel_w=kernel_w,
        stride_h=stride_h,
        stride_w=stride_w,
        dilation_h=dilation_h,
        dilation_w=dilation_w,
        padding=padding,
        pad_value=int(pad_value),
        activation=_ACTIVATIONS[activation],
        output_type=output_type,
        Tout=tf.int32 if output_type == "bitpacked" else tf.float32,
    )


def bgemm(
    inputs: tf.Tensor | np.ndarray,
    filter: tf.Tensor | np.ndarray,  # noqa: A002 - as in bconv2d
    multiplier: tf.Tensor | np.ndarray | None = None,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    channels_in: int | None = None,
    activation: str | None = None,
    output_type: str = "float",
) -> tf.Tensor:
    """Binary dense layer (GEMM) over the last axis, with a fused output transform.

    For every row x of `inputs` (the leading dimensions are kept) and output
    channel c,
        y[c] = multiplier[c] * dot(sign(x), sign(w[:, c])) + bias[c]
    (then max(y, 0) if activation="relu"), dot = K - 2 * popcount(x XOR w).
    It is the dense counterpart of `bconv2d` (a 1x1 convolution over the rows),
    with the same output types and gradients.

    Args:
      inputs: float32 [..., K] or int32 packed [..., ceil(K / 32)]; rank >= 1.
      filter: int32 packed [N_out, ceil(K / 32)] from `pack_dense_kernel`, or
        the float32 Keras kernel [K, N_out], packed inside the op (then it gets
        a gradient).
      multiplier, bias: float32 [N_out]; default ones and zeros.
      channels_in: K; required for a packed input and packed filter, inferred
        otherwise.
      activation: None / "linear" or "relu" (fused).
      output_type: "float" or "bitpacked" (as for `bconv2d`).

    Returns:
      float32 [..., N_out], or int32 [..., ceil(N_out / 32)] for
      output_type="bitpacked".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    _checked_common("bgemm", inputs, activation, output_type)
    if filter.dtype not in (tf.int32, tf.float32):
        raise TypeError(
            "bgemm filter must be packed int32 or a float32 [K, N_out] kernel, got dtype "
            f"{filter.dtype.name}"
        )
    if inputs.shape.rank == 0:
        raise ValueError("bgemm inputs must have rank >= 1 [..., K], got a scalar")
    if filter.shape.rank != 2:
        raise ValueError(f"bgemm filter must be 2-D, got shape {filter.shape}")
    if filter.dtype == tf.float32:
        k, out_channels = filter.shape
        if channels_in is not None and k is not None and channels_in != k:
            raise ValueError(
                f"channels_in {channels_in!r} does not match the filter {filter.shape}"
            )
        channels_in = channels_in if k is None else k
    else:
        out_channels = filter.shape[0]
    if channels_in is None:
        if inputs.dtype == tf.int32 or inputs.shape.rank is None or inputs.shape[-1] is None:
            raise ValueError("bgemm needs channels_in for a packed input or unknown depth")
        channels_in = int(inputs.shape[-1])
    if not isinstance(channels_in, int | np.integer) or channels_in < 1:
        raise ValueError(f"channels_in must be a positive int, got {channels_in!r}")
    multiplier, bias = _transform(multiplier, bias, out_channels)
    return load_tf_ops().lowbit_bgemm(
        inputs,
        filter,
        multiplier,
        bias,
        channels_in=int(channels_in),
        activation=_ACTIVATIONS[activation],
        output_type=output_type,
        Tout=tf.int32 if output_type == "bitpacked" else tf.float32,
    )


def bmaxpool2d(
    inputs: tf.Tensor | np.ndarray,
    pool_size: int | Sequence[int],
    *,
    channels: int,
    strides: int | Sequence[int] | None = None,
    padding: str = "VALID",
) -> tf.Tensor:
    """Max-pooling of bit-packed +-1 values (NHWC, from `bitpack` or a
    `bconv2d(..., output_type="bitpacked")`).

    The max of +-1 values is +1 unless all are -1, and bit 1 means -1, so each
    pooled bit is the AND of the window's bits; SAME padding is ignored (as in
    TensorFlow's max-pool). Equals `bitpack(tf.nn.max_pool2d(x, ...))` for the
    float x that was packed, since sign is monotone.

    Args:
      inputs: int32 packed [..., H, W, ceil(channels / 32)], rank >= 4: the
        window slides over H and W, the leading dimensions are a batch.
      pool_size: (height, width) of the window, or an int for both.
      channels: the real channel count.
      strides: an int or (height, width); default `pool_size` (as Keras).
      padding: "SAME" or "VALID" (TensorFlow's geometry).

    Returns:
      int32 packed [..., OH, OW, ceil(channels / 32)], padding bits 0.
    """
    inputs = tf.convert_to_tensor(inputs)
    if inputs.dtype != tf.int32:
        raise TypeError(f"bmaxpool2d inputs must be packed int32, got dtype {inputs.dtype.name}")
    if inputs.shape.rank is not None and inputs.shape.rank < 4:
        raise ValueError(
            f"bmaxpool2d inputs must be 4-D NHWC or of higher rank [..., H, W, words], got "
            f"shape {inputs.shape}"
        )
    if not isinstance(channels, int | np.integer) or channels < 1:
        raise ValueError(f"channels must be a positive int, got {channels!r}")
    padding = padding.upper()
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    filter_h, filter_w = _pair(pool_size, "pool_size")
    stride_h, stride_w = _pair(pool_size if strides is None else strides, "strides")
    return load_tf_ops().lowbit_b_max_pool2d(
        inputs,
        channels=int(channels),
        filter_h=filter_h,
        filter_w=filter_w,
        stride_h=stride_h,
        stride_w=stride_w,
        padding=padding,
    )


# --------------------------------------------------------------------------
# Gradients of LowbitBconv2d and LowbitBgemm.
#
# The op computes y = m * D + b (then relu), D = conv(s(x), s(W)) with s the
# sign binarisation, which is how the float training path computes a binary
# layer with ste_sign input and kernel quantizers, times a multiplier, plus a
# bias. So, with g = dL/dy (zero where a fused ReLU's output is <= 0):
#   dL/db = sum of g over every axis but the last;
#   dL/dm = sum of g * D (D recomputed by the op with m = 1, b = 0, no ReLU);
#   dL/ds(x) = the gradient of conv(s(x), s(W)) w.r.t. s(x) for the output
#     gradient g * m, and dL/dx = dL/ds(x) * 1{|x| <= 1} (ste_sign's
#     straight-through estimator); likewise dL/dW = dL/ds(W) * 1{|W| <= 1}.
# Padding: a SAME conv pads s(x) with pad_value (0 or +1). Padded pixels are
# constants, so they have no gradient, but with pad_value 1 they do take part
# in dL/ds(W); both follow from padding s(x) explicitly and running the VALID
# backprop ops on it. Packed int32 inputs and filters are not differentiable
# (None); so is a bit-packed output (all None).
# --------------------------------------------------------------------------


def _unpack_signs(packed: tf.Tensor, channels: int) -> tf.Tensor:
    """+-1 float32 values [..., channels] of packed int32 words [..., words]."""
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(packed[..., None], tf.range(BITS_PER_WORD, dtype=tf.int32)), 1
    )
    shape = tf.concat([tf.shape(packed)[:-1], [-1]], axis=0)
    bits = tf.reshape(bits, shape)[..., :channels]
    return 1.0 - 2.0 * tf.cast(bits, tf.float32)  # bit 1 means -1


def _signs(x: tf.Tensor, channels: int) -> tf.Tensor:
    """The +-1 values an op input stands for: sign(x) or the unpacked words."""
    return _unpack_signs(x, channels) if x.dtype == tf.int32 else _sign(x)


def _attr(op: tf.Operation, name: str) -> Any:
    """An attribute of the op, strings as str (graph ops give bytes)."""
    value = op.get_attr(name)
    return value.decode() if isinstance(value, bytes) else value


def _skipped(op: tf.Operation) -> set[int]:
    """Inputs whose gradient nobody asked for (known in eager mode only)."""
    return set(getattr(op, "skip_input_indices", None) or ())


def _transform_grads(
    op: tf.Operation, grad: tf.Tensor, raw_dot: Any
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """(g masked by the fused ReLU, dL/dm, dL/db); raw_dot() recomputes D."""
    if _attr(op, "activation") == "RELU":
        grad = tf.where(op.outputs[0] > 0, grad, tf.zeros_like(grad))
    axes = tf.range(tf.rank(grad) - 1)
    skipped = _skipped(op)
    grad_m = None if 2 in skipped else tf.reduce_sum(grad * raw_dot(), axis=axes)
    grad_b = None if 3 in skipped else tf.reduce_sum(grad, axis=axes)
    return grad, grad_m, grad_b


def _dot_attrs(op: tf.Operation, names: Sequence[str]) -> dict[str, Any]:
    """The op's attributes for recomputing its raw dot product (float output,
    no ReLU)."""
    attrs = {name: _attr(op, name) for name in names}
    attrs.update(activation="NONE", output_type="float", Tout=tf.float32)
    return attrs


_CONV_ATTRS = (
    "channels_in", "kernel_h", "kernel_w", "stride_h", "stride_w", "dilation_h", "dilation_w",
    "padding", "pad_value",
)


@tf.RegisterGradient("LowbitBconv2d")
def _bconv2d_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    if _attr(op, "output_type") == "bitpacked":
        return [None] * 4
    x, w, m, b = op.inputs
    a = {name: _attr(op, name) for name in _CONV_ATTRS}
    kh, kw, channels = a["kernel_h"], a["kernel_w"], a["channels_in"]

    def raw_dot() -> tf.Tensor:
        ones, zeros = tf.ones_like(m), tf.zeros_like(b)
        return load_tf_ops().lowbit_bconv2d(x, w, ones, zeros, **_dot_attrs(op, _CONV_ATTRS))

    grad, grad_m, grad_b = _transform_grads(op, grad, raw_dot)
    skipped = _skipped(op)
    want_x = x.dtype == tf.float32 and 0 not in skipped
    want_w = w.dtype == tf.float32 and 1 not in skipped
    grad_x = grad_w = None
    if want_x or want_w:
        if w.dtype == tf.float32:
            w_signs = _sign(w)
        else:  # [C_out, KH*KW*C] in (ky, kx, c) order -> HWIO
            rows = _unpack_signs(w, kh * kw * channels)
            w_signs = tf.transpose(tf.reshape(rows, [-1, kh, kw, channels]), (1, 2, 3, 0))
        # Leading dimensions flattened into the batch, as in the kernel.
        x_shape = tf.shape(x)
        x_signs = tf.reshape(_signs(x, channels), tf.concat([[-1], x_shape[-3:-1], [channels]], 0))
        g_shape = tf.shape(grad)
        g_dot = tf.reshape(grad * m, tf.concat([[-1], g_shape[-3:]], 0))
        size = tf.shape(x_signs)
        pads = [[0, 0], [0, 0], [0, 0], [0, 0]]
        if a["padding"] == "SAME":
            pads[1] = list(_same_padding(size[1], kh, a["stride_h"], a["dilation_h"]))
            pads[2] = list(_same_padding(size[2], kw, a["stride_w"], a["dilation_w"]))
        x_padded = tf.pad(x_signs, pads, constant_values=float(a["pad_value"]))
        conv = dict(
            strides=[1, a["stride_h"], a["stride_w"], 1],
            padding="VALID",
            dilations=[1, a["dilation_h"], a["dilation_w"], 1],
        )
        if want_x:
            grad_padded = tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x_padded), filter=w_signs, out_backprop=g_dot, **conv
            )
            grad_signs = grad_padded[:, pads[1][0]:pads[1][0] + size[1],
                                     pads[2][0]:pads[2][0] + size[2], :]
            grad_x = _clipped_gradient(x, tf.reshape(grad_signs, x_shape), 1.0)
        if want_w:
            grad_signs = tf.raw_ops.Conv2DBackpropFilter(
                input=x_padded, filter_sizes=tf.shape(w), out_backprop=g_dot, **conv
            )
            grad_w = _clipped_gradient(w, grad_signs, 1.0)
    return [grad_x, grad_w, grad_m, grad_b]


@tf.RegisterGradient("LowbitBgemm")
def _bgemm_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    if _attr(op, "output_type") == "bitpacked":
        return [None] * 4
    x, w, m, b = op.inputs
    channels = _attr(op, "channels_in")

    def raw_dot() -> tf.Tensor:
        ones, zeros = tf.ones_like(m), tf.zeros_like(b)
        return load_tf_ops().lowbit_bgemm(x, w, ones, zeros, **_dot_attrs(op, ["channels_in"]))

    grad, grad_m, grad_b = _transform_grads(op, grad, raw_dot)
    skipped = _skipped(op)
    want_x = x.dtype == tf.float32 and 0 not in skipped
    want_w = w.dtype == tf.float32 and 1 not in skipped
    grad_x = grad_w = None
    if want_x or want_w:
        # [K, N_out]: the float kernel's signs, or the packed rows transposed.
        w_signs = _sign(w) if w.dtype == tf.float32 else tf.transpose(_unpack_signs(w, channels))
        g_dot = grad * m
        g_rows = tf.reshape(g_dot, [-1, tf.shape(g_dot)[-1]])
        if want_x:
            grad_x = _clipped_gradient(
                x, tf.reshape(tf.matmul(g_rows, w_signs, transpose_b=True), tf.shape(x)), 1.0
            )
        if want_w:
            x_rows = tf.reshape(_signs(x, channels), [-1, channels])
            grad_w = _clipped_gradient(w, tf.matmul(x_rows, g_rows, transpose_a=True), 1.0)
    return [grad_x, grad_w, grad_m, grad_b]
