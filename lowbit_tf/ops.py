"""Python face of the lowbit custom TensorFlow ops.

Bit convention (docs/custom_ops.md): sign(x) = +1 for x >= 0 and -1 for x < 0;
32 consecutive channels per int32 word, lowest channel in the lowest bit, bit 1
meaning -1, channels padded with 0 bits (+1) to a whole word.

The ops run on TensorFlow's intra-op thread pool. Train with the Keras layers
(`lowbit_tf.layers`), which use float ops and straight-through estimators, and
run inference through these ops. `bdepthwise_conv2d` also has a gradient (the
straight-through estimator of the float training path); the others have none.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from lowbit_tf._native import load_tf_ops

__all__ = [
    "BITS_PER_WORD",
    "packed_words",
    "bitpack",
    "pack_filter",
    "bconv2d",
    "bmaxpool2d",
    "pack_depthwise_filter",
    "bdepthwise_conv2d",
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


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int | np.integer) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int | np.integer) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of them, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_conv_options(
    padding: str, pad_value: int, activation: str | None, output_type: str
) -> str:
    """Checks the options shared by the binary convolutions; returns the padding
    in upper case."""
    padding = padding.upper()
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    if pad_value not in (0, 1):
        raise ValueError(f"pad_value must be 0 or 1, got {pad_value!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'linear' or 'relu', got {activation!r}")
    if output_type not in _OUTPUT_TYPES:
        raise ValueError(f"output_type must be 'float' or 'bitpacked', got {output_type!r}")
    return padding


def bconv2d(
    inputs: tf.Tensor | np.ndarray,
    filter: tf.Tensor | np.ndarray,  # noqa: A002 - TF's own name for it
    multiplier: tf.Tensor | np.ndarray | None = None,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    kernel_size: int | Sequence[int],
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

    Args:
      inputs: float32 NHWC (binarised and packed inside the op) or int32
        packed NHWC from `bitpack`.
      filter: int32 packed [C_out, ceil(KH * KW * C_in / 32)] from `pack_filter`.
      multiplier, bias: float32 [C_out]; default ones and zeros.
      kernel_size: (KH, KW) of the filter, or an int for both.
      channels_in: the real input channel count; required for a packed input,
        inferred from a float input.
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
      float32 [N, OH, OW, C_out], or int32 [N, OH, OW, ceil(C_out / 32)] for
      output_type="bitpacked".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    if inputs.dtype not in (tf.float32, tf.int32):
        raise TypeError(
            f"bconv2d inputs must be float32 or packed int32, got dtype {inputs.dtype.name}"
        )
    if filter.dtype != tf.int32:
        raise TypeError(f"bconv2d filter must be packed int32, got dtype {filter.dtype.name}")
    if inputs.shape.rank is not None and inputs.shape.rank != 4:
        raise ValueError(f"bconv2d inputs must be 4-D NHWC, got shape {inputs.shape}")
    if filter.shape.rank != 2:
        raise ValueError(f"bconv2d filter must be 2-D [C_out, words], got shape {filter.shape}")
    if channels_in is None:
        if inputs.dtype == tf.int32 or inputs.shape[-1] is None:
            raise ValueError("bconv2d needs channels_in for a packed input or unknown depth")
        channels_in = int(inputs.shape[-1])
    padding = _check_conv_options(padding, pad_value, activation, output_type)
    out_channels = filter.shape[0]
    if multiplier is None:
        multiplier = tf.ones([out_channels], tf.float32)
    if bias is None:
        bias = tf.zeros([out_channels], tf.float32)
    kernel_h, kernel_w = _pair(kernel_size, "kernel_size")
    stride_h, stride_w = _pair(strides, "strides")
    dilation_h, dilation_w = _pair(dilations, "dilations")
    return load_tf_ops().lowbit_bconv2d(
        inputs,
        filter,
        tf.convert_to_tensor(multiplier, tf.float32),
        tf.convert_to_tensor(bias, tf.float32),
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
      inputs: int32 packed [N, H, W, ceil(channels / 32)].
      pool_size: (height, width) of the window, or an int for both.
      channels: the real channel count.
      strides: an int or (height, width); default `pool_size` (as Keras).
      padding: "SAME" or "VALID" (TensorFlow's geometry).

    Returns:
      int32 packed [N, OH, OW, ceil(channels / 32)], padding bits 0.
    """
    inputs = tf.convert_to_tensor(inputs)
    if inputs.dtype != tf.int32:
        raise TypeError(f"bmaxpool2d inputs must be packed int32, got dtype {inputs.dtype.name}")
    if inputs.shape.rank is not None and inputs.shape.rank != 4:
        raise ValueError(f"bmaxpool2d inputs must be 4-D NHWC, got shape {inputs.shape}")
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


def pack_depthwise_filter(kernel: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Binarises and packs a Keras depthwise kernel for `bdepthwise_conv2d`.

    Args:
      kernel: float32 [KH, KW, C, DM] (Keras `DepthwiseConv2D` layout, DM the
        depth multiplier); its signs are taken with the bit convention above.

    Returns:
      int32 [KH, KW, ceil(C * DM / 32)]: the kernel flattened to
      [KH, KW, C * DM] and packed along the last axis, so that bit o of a tap
      is the weight of output channel o = c * DM + j.
    """
    kernel = tf.convert_to_tensor(kernel, dtype=tf.float32)
    if kernel.shape.rank != 4:
        raise ValueError(
            f"pack_depthwise_filter expects a 4-D [KH, KW, C, DM] kernel, got shape {kernel.shape}"
        )
    kh, kw, channels, multiplier = kernel.shape
    return bitpack(tf.reshape(kernel, [kh, kw, channels * multiplier]))


def _bdepthwise_attrs(
    inputs: tf.Tensor,
    filter: tf.Tensor,  # noqa: A002 - TF's own name for it
    kernel_size: int | Sequence[int] | None,
    channels_in: int | None,
    depth_multiplier: int,
    strides: int | Sequence[int],
    dilations: int | Sequence[int],
    padding: str,
    pad_value: int,
    activation: str | None,
    output_type: str,
) -> dict:
    """Checks the arguments of `bdepthwise_conv2d` and returns the op's attributes."""
    name = "bdepthwise_conv2d"
    if inputs.dtype not in (tf.float32, tf.int32):
        raise TypeError(
            f"{name} inputs must be float32 or packed int32, got dtype {inputs.dtype.name}"
        )
    if filter.dtype != tf.int32:
        raise TypeError(f"{name} filter must be packed int32, got dtype {filter.dtype.name}")
    if inputs.shape.rank is not None and inputs.shape.rank < 4:
        raise ValueError(f"{name} inputs must have rank >= 4 [..., H, W, C], got {inputs.shape}")
    if filter.shape.rank != 3:
        raise ValueError(f"{name} filter must be 3-D [KH, KW, words], got shape {filter.shape}")
    if channels_in is None:
        if inputs.dtype == tf.int32 or inputs.shape.rank is None or inputs.shape[-1] is None:
            raise ValueError(f"{name} needs channels_in for a packed input or unknown depth")
        channels_in = int(inputs.shape[-1])
    if not isinstance(channels_in, int | np.integer) or channels_in < 1:
        raise ValueError(f"channels_in must be a positive int, got {channels_in!r}")
    if not isinstance(depth_multiplier, int | np.integer) or depth_multiplier < 1:
        raise ValueError(f"depth_multiplier must be a positive int, got {depth_multiplier!r}")
    if kernel_size is None:
        if filter.shape[0] is None or filter.shape[1] is None:
            raise ValueError(f"{name} needs kernel_size for a filter of unknown shape")
        kernel_size = (int(filter.shape[0]), int(filter.shape[1]))
    kernel_h, kernel_w = _pair(kernel_size, "kernel_size")
    expected = [kernel_h, kernel_w, packed_words(channels_in * depth_multiplier)]
    if filter.shape.is_fully_defined() and filter.shape.as_list() != expected:
        raise ValueError(
            f"{name} filter must have shape {expected} for kernel_size {(kernel_h, kernel_w)}, "
            f"channels_in={channels_in} and depth_multiplier={depth_multiplier}, "
            f"got {filter.shape}"
        )
    padding = _check_conv_options(padding, pad_value, activation, output_type)
    stride_h, stride_w = _pair(strides, "strides")
    dilation_h, dilation_w = _pair(dilations, "dilations")
    return dict(
        channels_in=int(channels_in),
        depth_multiplier=int(depth_multiplier),
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


def bdepthwise_conv2d(
    inputs: tf.Tensor | np.ndarray,
    filter: tf.Tensor | np.ndarray,  # noqa: A002 - TF's own name for it
    multiplier: tf.Tensor | np.ndarray | None = None,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    kernel_size: int | Sequence[int] | None = None,
    channels_in: int | None = None,
    depth_multiplier: int = 1,
    strides: int | Sequence[int] = 1,
    dilations: int | Sequence[int] = 1,
    padding: str = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
    output_type: str = "float",
) -> tf.Tensor:
    """Binary depthwise 2-D convolution with a fused output transform.

    Output channel o = c * depth_multiplier + j (Keras order) reads input
    channel c only: for every output pixel,
        y[o] = multiplier[o] * dot[o] + bias[o]   (then max(y, 0) if activation="relu")
    where dot[o] is the +-1 dot product of the binarised input channel c over
    the window with the binarised filter of channel o:
    dot = K - 2 * (number of mismatching taps), over the K taps used.

    Differentiable (see `_bdepthwise_conv2d_grad`): w.r.t. a float input with
    the straight-through estimator of `ste_sign`, and w.r.t. multiplier and
    bias.

    Args:
      inputs: float32 [..., H, W, C] (binarised and packed inside the op) or
        int32 packed [..., H, W, ceil(C / 32)] from `bitpack`; rank >= 4, the
        leading dimensions are a batch.
      filter: int32 packed [KH, KW, ceil(C * DM / 32)] from `pack_depthwise_filter`.
      multiplier, bias: float32 [C * DM]; default ones and zeros.
      kernel_size: (KH, KW), or an int for both; default from the filter shape.
      channels_in: the real input channel count C; required for a packed
        input, inferred from a float input.
      depth_multiplier: DM, output channels per input channel.
      strides, dilations: an int or (height, width).
      padding: "SAME" or "VALID" (TensorFlow's geometry).
      pad_value: 0 (padded pixels contribute 0, like zero padding of the
        binarised input) or 1 (padded pixels are +1). Only matters for "SAME".
      activation: None / "linear" or "relu" (fused).
      output_type: "float" (the default) or "bitpacked": the signs of the
        float output packed (`bitpack(bdepthwise_conv2d(...))` bit for bit),
        from the integer dot products with exact per-channel thresholds. Needs
        finite multiplier and bias.

    Returns:
      float32 [..., OH, OW, C * DM], or int32 [..., OH, OW, ceil(C * DM / 32)]
      for output_type="bitpacked".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    attrs = _bdepthwise_attrs(
        inputs, filter, kernel_size, channels_in, depth_multiplier, strides, dilations,
        padding, pad_value, activation, output_type,
    )
    out_channels = attrs["channels_in"] * attrs["depth_multiplier"]
    if multiplier is None:
        multiplier = tf.ones([out_channels], tf.float32)
    if bias is None:
        bias = tf.zeros([out_channels], tf.float32)
    return load_tf_ops().lowbit_b_depthwise_conv2d(
        inputs,
        filter,
        tf.convert_to_tensor(multiplier, tf.float32),
        tf.convert_to_tensor(bias, tf.float32),
        **attrs,
    )


def _unpack_depthwise_filter(
    packed: tf.Tensor, kh: int, kw: int, channels: int, multiplier: int
) -> tf.Tensor:
    """The +-1 float32 kernel [KH, KW, C, DM] of a packed depthwise filter."""
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(packed[..., None], tf.range(BITS_PER_WORD, dtype=tf.int32)), 1
    )
    bits = tf.reshape(bits, [kh, kw, -1])[..., : channels * multiplier]
    signs = 1.0 - 2.0 * tf.cast(bits, tf.float32)  # bit 1 means -1
    return tf.reshape(signs, [kh, kw, channels, multiplier])


def _dilate(kernel: tf.Tensor, dilation_h: int, dilation_w: int) -> tf.Tensor:
    """[KH, KW, C, DM] -> [(KH-1)*dh+1, (KW-1)*dw+1, C, DM] with zeros between the
    taps: the dilated convolution as an undilated one (which allows any stride)."""
    kh, kw, channels, multiplier = kernel.shape
    taps = np.array([[ky * dilation_h, kx * dilation_w] for ky in range(kh) for kx in range(kw)])
    shape = [(kh - 1) * dilation_h + 1, (kw - 1) * dilation_w + 1, channels, multiplier]
    return tf.scatter_nd(taps, tf.reshape(kernel, [kh * kw, channels, multiplier]), shape)


@tf.RegisterGradient("LowbitBDepthwiseConv2d")
def _bdepthwise_conv2d_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    """Gradient of LowbitBDepthwiseConv2d, as the float training path computes it.

    The op is y = relu?(m * depthwise_conv(sign(x), W) + b) with W the +-1
    filter. With g the incoming gradient, masked where y <= 0 by a fused ReLU:
      d/dm = sum over pixels of g * dot,  d/db = sum of g  (exact);
      d/dx = depthwise_conv_backprop_input(g * m, W) * 1{|x| <= 1}, the
        straight-through estimator of ste_sign (padding pixels are constants,
        so both pad values give the same input gradient).
    A packed int32 input, the filter and a bit-packed output get None.
    """
    def attr(name: str):
        value = op.get_attr(name)
        return value.decode() if isinstance(value, bytes) else value

    if attr("output_type") == "bitpacked":
        return [None] * 4
    x, packed_filter, multiplier, _ = op.inputs
    if attr("activation") == "RELU":
        grad = tf.where(op.outputs[0] > 0, grad, tf.zeros_like(grad))
    attrs = {name: attr(name) for name in (
        "channels_in", "depth_multiplier", "kernel_h", "kernel_w", "stride_h", "stride_w",
        "dilation_h", "dilation_w", "padding", "pad_value", "output_type")}
    # The integer dot products: the op again with the identity transform.
    dot = load_tf_ops().lowbit_b_depthwise_conv2d(
        x, packed_filter, tf.ones_like(multiplier), tf.zeros_like(multiplier),
        activation="NONE", Tout=tf.float32, **attrs,
    )
    axes = tf.range(tf.rank(grad) - 1)
    grad_multiplier = tf.reduce_sum(grad * dot, axis=axes)
    grad_bias = tf.reduce_sum(grad, axis=axes)
    if x.dtype != tf.float32:
        return [None, None, grad_multiplier, grad_bias]
    channels, depth_multiplier = attrs["channels_in"], attrs["depth_multiplier"]
    kernel = _dilate(
        _unpack_depthwise_filter(
            packed_filter, attrs["kernel_h"], attrs["kernel_w"], channels, depth_multiplier
        ),
        attrs["dilation_h"],
        attrs["dilation_w"],
    )
    # Leading dimensions -> one batch dimension, as the op does.
    x_shape = tf.shape(x)
    batch = tf.reduce_prod(x_shape[:-3], keepdims=True)
    out_backprop = tf.reshape(grad * multiplier, tf.concat([batch, tf.shape(grad)[-3:]], 0))
    grad_sign = tf.nn.depthwise_conv2d_backprop_input(
        tf.concat([batch, x_shape[-3:]], 0), kernel, out_backprop,
        strides=[1, attrs["stride_h"], attrs["stride_w"], 1], padding=attrs["padding"],
    )
    grad_x = tf.where(tf.abs(x) <= 1.0, tf.reshape(grad_sign, x_shape), tf.zeros_like(x))
    return [grad_x, None, grad_multiplier, grad_bias]
