"""Python face of the lowbit custom TensorFlow ops.

Bit convention (docs/custom_ops.md): sign(x) = +1 for x >= 0 and -1 for x < 0;
32 consecutive channels per int32 word, lowest channel in the lowest bit, bit 1
meaning -1, channels padded with 0 bits (+1) to a whole word.

The ops run on TensorFlow's intra-op thread pool. They have registered
gradients, so that a model can train through the fast path: `bconv2d` and
`bgemm` the straight-through estimator of ste_sign for a float input and a
float (Keras) kernel and exact ones for the multiplier and the bias;
`multibit_conv2d` the straight-through estimator of its activation quantizer
and exact ones for its scales and bias; `bdepthwise_conv2d` that of ste_sign
for a float input and exact ones for the multiplier and bias; `fastfood` (float input and output)
its exact gradient. Packed int32 inputs and filters and bit-packed outputs have none.
The Keras layers (`lowbit_tf.layers`) compute with these ops where they can run
the layer's configuration, in training and at inference (lowbit_tf/_layer_ops.py),
and are what the converter lowers onto them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_tf._geometry import same_padding
from lowbit_tf._native import load_tf_ops
from lowbit_tf.math import sign
from lowbit_tf.quantizers import _clipped_gradient

__all__ = [
    "BITS_PER_WORD",
    "packed_words",
    "bitpack",
    "pack_filter",
    "pack_dense_kernel",
    "bconv2d",
    "bgemm",
    "bmaxpool2d",
    "ACTIVATION_MODES",
    "pack_filter_planes",
    "dorefa_activation_betas",
    "multibit_conv2d",
    "fastfood",
    "pack_depthwise_filter",
    "bdepthwise_conv2d",
]

BITS_PER_WORD = 32
_PADDINGS = ("SAME", "VALID")
# LowbitBconv2d's EXPLICIT padding: rows / columns padded on each side.
_EXPLICIT_PADS = ("explicit_pad_top", "explicit_pad_bottom", "explicit_pad_left",
                  "explicit_pad_right")
_ACTIVATIONS = {None: "NONE", "linear": "NONE", "relu": "RELU"}
_OUTPUT_TYPES = ("float", "bitpacked")
# bconv2d and bgemm also read and write int8 tensors (quantized models).
_INT8_OUTPUT_TYPES = ("float", "bitpacked", "int8")
_TOUT = {"float": tf.float32, "bitpacked": tf.int32, "int8": tf.int8}
ACTIVATION_MODES = ("sign", "abc", "dorefa")


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
    op: str, inputs: tf.Tensor, activation: str | None, output_type: str, int8: bool = False
) -> None:
    """Checks shared by bconv2d, bgemm (`int8`: which also take int8 inputs and
    outputs) and bdepthwise_conv2d."""
    dtypes = (tf.float32, tf.int32, tf.int8) if int8 else (tf.float32, tf.int32)
    if inputs.dtype not in dtypes:
        raise TypeError(
            f"{op} inputs must be float32{', int8' if int8 else ''} or packed int32, got "
            f"dtype {inputs.dtype.name}"
        )
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'linear' or 'relu', got {activation!r}")
    output_types = _INT8_OUTPUT_TYPES if int8 else _OUTPUT_TYPES
    if output_type not in output_types:
        raise ValueError(f"output_type must be one of {output_types}, got {output_type!r}")


def _check_scale(name: str, scale: float) -> None:
    """An int8 tensor's scale: a finite number > 0."""
    if not isinstance(scale, float | int | np.floating) or not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"{name} must be finite and > 0, got {scale!r}")


def _int8_attrs(
    inputs: tf.Tensor, input_zero_point: int, output_scale: float, output_zero_point: int
) -> dict:
    """The int8 quantization attributes of bconv2d / bgemm, checked: the
    input's zero point (its scale does not matter: a code q is -1 iff q <
    zero_point), the output's scale and zero point (q = round(y * (1 / scale))
    + zero_point, saturated; docs/custom_ops.md)."""
    for name, value in (("input_zero_point", input_zero_point),
                        ("output_zero_point", output_zero_point)):
        if not isinstance(value, int | np.integer) or not -128 <= value <= 127:
            raise ValueError(f"{name} must be an int in [-128, 127], got {value!r}")
    _check_scale("output_scale", output_scale)
    if input_zero_point != 0 and inputs.dtype != tf.int8:
        raise ValueError(
            f"input_zero_point applies to an int8 input, got {input_zero_point} with dtype "
            f"{inputs.dtype.name}"
        )
    return dict(input_zero_point=int(input_zero_point), output_scale=float(output_scale),
                output_zero_point=int(output_zero_point))


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


def _check_padding(padding: str, pad_value: int, explicit: bool = False) -> str:
    """Checks the padding options of the convolutions; returns the padding in
    upper case. `explicit`: bconv2d's "EXPLICIT", made by explicit_padding_attrs."""
    padding = padding.upper()
    if padding not in _PADDINGS and not (explicit and padding == "EXPLICIT"):
        raise ValueError(f"padding must be 'SAME' or 'VALID', got {padding!r}")
    if pad_value not in (0, 1):
        raise ValueError(f"pad_value must be 0 or 1, got {pad_value!r}")
    return padding


def _conv_attrs(
    channels_in: int,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int],
    dilations: int | Sequence[int],
    padding: str,
    pad_value: int,
    activation: str | None,
    explicit: bool = False,
) -> dict:
    """The attributes the conv ops share (LowbitBconv2d, LowbitBDepthwiseConv2d,
    LowbitMultibitConv2d), checked; `activation` must already be checked;
    `explicit`: padding may be "EXPLICIT" (LowbitBconv2d)."""
    kernel_h, kernel_w = _pair(kernel_size, "kernel_size")
    stride_h, stride_w = _pair(strides, "strides")
    dilation_h, dilation_w = _pair(dilations, "dilations")
    return dict(
        channels_in=int(channels_in),
        kernel_h=kernel_h,
        kernel_w=kernel_w,
        stride_h=stride_h,
        stride_w=stride_w,
        dilation_h=dilation_h,
        dilation_w=dilation_w,
        padding=_check_padding(padding, pad_value, explicit),
        pad_value=int(pad_value),
        activation=_ACTIVATIONS[activation],
    )


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
    padding: str | Sequence[Sequence[int]] = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
    output_type: str = "float",
    post_multiplier: tf.Tensor | np.ndarray | None = None,
    post_bias: tf.Tensor | np.ndarray | None = None,
    residual: tf.Tensor | np.ndarray | None = None,
    input_zero_point: int = 0,
    output_scale: float = 1.0,
    output_zero_point: int = 0,
    output_activation: str | None = None,
) -> tf.Tensor:
    """Binary 2-D convolution with a fused output transform.

    Computes, for every output pixel and channel c,
        y = multiplier[c] * dot + bias[c]     (then max(y, 0) if activation="relu")
    where dot is the +-1 dot product of the binarised receptive field with the
    binarised filter: dot = K - 2 * popcount(x XOR w) over the K taps*channels.
    Then, fused (the "epilogue"), when given:
        y = y * post_multiplier[c] + post_bias[c]   (a BatchNorm after the ReLU)
        y = y + residual                            (a residual Add)
    each step one float32 rounding, in this order.

    Differentiable (see the module docstring): with a float input and a float
    filter this is a binary conv layer that trains through the fast path.

    Args:
      inputs: float32 [..., H, W, C] (binarised and packed inside the op),
        int32 packed [..., H, W, ceil(C / 32)] from `bitpack`, or int8
        [..., H, W, C] codes of a quantized tensor (a code below
        `input_zero_point` is -1, any other +1); rank >= 4, the kernel slides
        over H and W, the leading dimensions are a batch.
      filter: int32 packed [C_out, ceil(KH * KW * C_in / 32)] from
        `pack_filter`, or the float32 Keras kernel [KH, KW, C_in, C_out] (HWIO),
        binarised and packed inside the op (then it gets a gradient).
      multiplier, bias: float32 [C_out]; default ones and zeros.
      kernel_size: (KH, KW) of the filter, or an int for both; required for a
        packed filter, taken from a float one.
      channels_in: the real input channel count; required for a packed input
        and packed filter, inferred otherwise.
      strides, dilations: an int or (height, width).
      padding: "SAME" or "VALID" (TensorFlow's geometry), or explicit sizes
        ``((top, bottom), (left, right))``: the rows and columns padded on
        each side (any sizes >= 0, as ``tf.nn.conv2d``'s explicit padding).
      pad_value: 0 (padded pixels contribute 0, like zero padding of the
        binarised input) or 1 (padded pixels are +1). Only matters with padding.
      activation: None / "linear" or "relu" (fused).
      output_type: "float" (the default) or "bitpacked": the signs of the float
        output, packed (`bitpack(bconv2d(...))` bit for bit), computed from the
        integer dot products with exact per-channel thresholds so that a chain
        of binary layers never unpacks. Needs finite multiplier and bias. With
        activation="relu" every bit is 0 (+1): relu(y) is never negative.
        "int8": the float output (epilogue included) quantized to int8,
        q = clamp(round(y * inv_scale) + output_zero_point, -128, 127) with
        inv_scale = 1 / output_scale in float32, rounding halves away from
        zero (TFLite's optimized QUANTIZE; its reference divides by the scale).
      post_multiplier, post_bias: float32 [C_out] (either one given, the other
        defaults to ones / zeros); float or int8 output.
      residual: float32 of the output's shape, added last; float or int8 output.
      input_zero_point: of an int8 input, in [-128, 127].
      output_scale, output_zero_point: of an int8 output (scale finite > 0).
      output_activation: None or "relu": a ReLU after the epilogue (the
        int8 code max(q, output_zero_point)); int8 output only.

    Returns:
      float32 [..., OH, OW, C_out], int32 [..., OH, OW, ceil(C_out / 32)] for
      output_type="bitpacked", int8 [..., OH, OW, C_out] for "int8".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    _checked_common("bconv2d", inputs, activation, output_type, int8=True)
    int8_attrs = _int8_attrs(inputs, input_zero_point, output_scale, output_zero_point)
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
    multiplier, bias = _transform(multiplier, bias, out_channels)
    epilogue, epilogue_inputs = _epilogue(post_multiplier, post_bias, residual, out_channels)
    if output_activation not in _ACTIVATIONS:
        raise ValueError(
            f"output_activation must be None, 'linear' or 'relu', got {output_activation!r}")
    if _ACTIVATIONS[output_activation] == "RELU" and output_type != "int8":
        raise ValueError(f"output_activation='relu' needs output_type='int8', got {output_type!r}")
    if epilogue != "none" and output_type == "bitpacked":
        raise ValueError(
            f"bconv2d post_multiplier/post_bias/residual need output_type 'float' or 'int8', "
            f"got {output_type!r}"
        )
    padding, explicit_pads = explicit_padding_attrs(padding)
    return load_tf_ops().lowbit_bconv2d(
        inputs,
        filter,
        multiplier,
        bias,
        epilogue_inputs,
        **_conv_attrs(channels_in, kernel_size, strides, dilations, padding, pad_value,
                      activation, explicit=True),
        **explicit_pads,
        output_type=output_type,
        epilogue=epilogue,
        Tout=_TOUT[output_type],
        output_activation=_ACTIVATIONS[output_activation],
        **int8_attrs,
    )


def explicit_padding_attrs(padding: Any) -> tuple[str, dict[str, int]]:
    """(the `padding` attribute, the explicit_pad_* attributes) of LowbitBconv2d
    for "SAME", "VALID" or ((top, bottom), (left, right)); bconv2d's argument
    and its gradient's attributes (lowbit_tf/_layer_ops.py) both go through it."""
    if isinstance(padding, str):
        if padding.upper() == "EXPLICIT":  # the sizes are the padding
            raise ValueError("bconv2d padding must be 'SAME', 'VALID' or the sizes "
                             "((top, bottom), (left, right)), got 'EXPLICIT'")
        return padding, {}
    try:
        (top, bottom), (left, right) = padding
        sizes = [int(v) for v in (top, bottom, left, right)]
        valid = all(v >= 0 and v == value for v, value in
                    zip(sizes, (top, bottom, left, right), strict=True))
    except (TypeError, ValueError):
        valid = False
    if not valid:
        raise ValueError(
            "bconv2d padding must be 'SAME', 'VALID' or ((top, bottom), (left, right)) "
            f"with sizes >= 0, got {padding!r}"
        )
    return "EXPLICIT", dict(zip(_EXPLICIT_PADS, sizes, strict=True))


def _epilogue(
    post_multiplier: tf.Tensor | np.ndarray | None,
    post_bias: tf.Tensor | np.ndarray | None,
    residual: tf.Tensor | np.ndarray | None,
    out_channels: int | None,
) -> tuple[str, list[tf.Tensor]]:
    """(LowbitBconv2d's `epilogue` attribute, its epilogue inputs)."""
    inputs = []
    affine = post_multiplier is not None or post_bias is not None
    if affine:
        inputs.extend(_transform(post_multiplier, post_bias, out_channels))
    if residual is not None:
        inputs.append(tf.convert_to_tensor(residual, tf.float32))
    kind = {(False, False): "none", (True, False): "affine", (False, True): "add",
            (True, True): "affine_add"}[(affine, residual is not None)]
    return kind, inputs


def bgemm(
    inputs: tf.Tensor | np.ndarray,
    filter: tf.Tensor | np.ndarray,  # noqa: A002 - as in bconv2d
    multiplier: tf.Tensor | np.ndarray | None = None,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    channels_in: int | None = None,
    activation: str | None = None,
    output_type: str = "float",
    input_zero_point: int = 0,
    output_scale: float = 1.0,
    output_zero_point: int = 0,
) -> tf.Tensor:
    """Binary dense layer (GEMM) over the last axis, with a fused output transform.

    For every row x of `inputs` (the leading dimensions are kept) and output
    channel c,
        y[c] = multiplier[c] * dot(sign(x), sign(w[:, c])) + bias[c]
    (then max(y, 0) if activation="relu"), dot = K - 2 * popcount(x XOR w).
    It is the dense counterpart of `bconv2d` (a 1x1 convolution over the rows),
    with the same output types and gradients.

    Args:
      inputs: float32 [..., K], int32 packed [..., ceil(K / 32)] or int8
        [..., K] quantized codes (as for `bconv2d`); rank >= 1.
      filter: int32 packed [N_out, ceil(K / 32)] from `pack_dense_kernel`, or
        the float32 Keras kernel [K, N_out], packed inside the op (then it gets
        a gradient).
      multiplier, bias: float32 [N_out]; default ones and zeros.
      channels_in: K; required for a packed input and packed filter, inferred
        otherwise.
      activation: None / "linear" or "relu" (fused).
      output_type: "float", "bitpacked" or "int8" (as for `bconv2d`).
      input_zero_point, output_scale, output_zero_point: as for `bconv2d`.

    Returns:
      float32 [..., N_out], int32 [..., ceil(N_out / 32)] for
      output_type="bitpacked", int8 [..., N_out] for "int8".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    _checked_common("bgemm", inputs, activation, output_type, int8=True)
    int8_attrs = _int8_attrs(inputs, input_zero_point, output_scale, output_zero_point)
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
        Tout=_TOUT[output_type],
        **int8_attrs,
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


def pack_filter_planes(planes: tf.Tensor | np.ndarray) -> tf.Tensor:
    """Packs M binary weight planes for `multibit_conv2d`.

    Args:
      planes: float32 [M, KH, KW, C_in, C_out], the +-1 planes B_m (HWIO each);
        their signs are taken with the bit convention above.

    Returns:
      int32 [M, C_out, ceil(KH * KW * C_in / 32)]: each plane packed as
      `pack_filter` packs a kernel.
    """
    planes = tf.convert_to_tensor(planes, dtype=tf.float32)
    if planes.shape.rank != 5:
        raise ValueError(
            f"pack_filter_planes expects [M, KH, KW, C_in, C_out] planes, got shape {planes.shape}"
        )
    return tf.stack([pack_filter(plane) for plane in tf.unstack(planes)])


def dorefa_activation_betas(bits: int) -> np.ndarray:
    """The plane scales of a DoReFa k-bit activation in `multibit_conv2d`.

    a = q / n with n = 2^k - 1 and q = sum_p 2^p b_p (bits b_p in {0, 1}); with
    H_p = 2 b_p - 1 in {-1, +1} and sum_p 2^p = n,
        a = 1/2 + sum_p (2^p / (2 n)) H_p,
    so the k bit planes have betas 2^p / (2n) and a constant +1 plane has 1/2.
    """
    if isinstance(bits, bool) or not isinstance(bits, int | np.integer) or not 1 <= bits <= 16:
        raise ValueError(f"activation_bits must be an int in [1, 16], got {bits!r}")
    n = 2**bits - 1
    return np.array([2.0**p / (2 * n) for p in range(bits)] + [0.5], np.float32)


def multibit_conv2d(
    inputs: tf.Tensor | np.ndarray,
    filter: tf.Tensor | np.ndarray,  # noqa: A002 - TF's own name for it
    alphas: tf.Tensor | np.ndarray,
    betas: tf.Tensor | np.ndarray,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    activation_mode: str,
    shifts: tf.Tensor | np.ndarray | None = None,
    activation_bits: int = 0,
    kernel_size: int | Sequence[int],
    strides: int | Sequence[int] = 1,
    dilations: int | Sequence[int] = 1,
    padding: str = "VALID",
    pad_value: int = 0,
    activation: str | None = None,
    channels_in: int | None = None,
    output_type: str = "float",
    input_scale: float = 1.0,
    input_zero_point: int = 0,
    output_scale: float = 1.0,
    output_zero_point: int = 0,
) -> tf.Tensor:
    """Multi-bit 2-D convolution as a sum of M * P binary convolutions.

    With the weights written as sum_m alphas[m, c] B_m (B_m in {-1, +1}) and the
    activations as sum_p betas[p] H_p (H_p in {-1, +1}), computes
        y[c] = sum_p betas[p] * (sum_m alphas[m, c] * dot(H_p, B_m[c])) + bias[c]
    (then max(y, 0) for activation="relu"), each dot an XOR + popcount binary
    convolution. The activation planes H_p come from the float input:

      "sign":   one plane, sign(x) (betas [1]);
      "abc":    ABC-Net's H_v(x) = sign(clip(x + v, 0, 1) - 0.5), one plane per
                shift v in `shifts` (betas [N]);
      "dorefa": DoReFa's k-bit a = round(clip(x, 0, 1) * n) / n, n = 2^k - 1,
                k = activation_bits: the k bits of the integer, then a constant
                +1 plane (betas from `dorefa_activation_betas(k)` reproduce a).

    Args:
      inputs: float32 [..., H, W, C_in]; leading dimensions are shared. Or
        int8 codes q of that shape: the planes of the real values
        input_scale * (q - input_zero_point) (float32), the same bits as the
        float input of those values gives. Or, for activation_mode="sign", int32
        packed [..., H, W, ceil(C_in / 32)] from `bitpack` (or a binary op's
        bit-packed output): the one plane as it is.
      filter: int32 [M, C_out, words] from `pack_filter_planes`.
      alphas: float32 [M, C_out].
      betas: float32 [P] as above.
      bias: float32 [C_out]; default zeros.
      activation_mode, shifts, activation_bits: as above.
      kernel_size, strides, dilations, padding, pad_value, activation: as for
        `bconv2d`; the padding applies to every plane (pad_value 0: padded
        pixels contribute 0, i.e. zero padding of the quantized input; 1: every
        plane is +1 there).
      channels_in: C_in; needed for a packed input only (else the input's depth).
      output_type: "float" (the default); "int8": y quantized with
        output_scale and output_zero_point (as `bconv2d`'s int8 output);
        "bitpacked": the signs of y packed, as the next binary layer would
        pack them.
      input_scale, input_zero_point: of an int8 input (scale finite > 0,
        zero point in [-128, 127]).
      output_scale, output_zero_point: of an int8 output.

    Returns:
      float32 [..., OH, OW, C_out], int8 of that shape for output_type="int8",
      int32 [..., OH, OW, ceil(C_out / 32)] for "bitpacked".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    _checked_common("multibit_conv2d", inputs, activation, output_type, int8=True)
    if inputs.dtype == tf.int32 and activation_mode != "sign":
        raise ValueError(
            "multibit_conv2d takes a packed int32 input with activation_mode='sign' only (it is "
            f"that one plane), got activation_mode={activation_mode!r}"
        )
    int8_attrs = _int8_attrs(inputs, input_zero_point, output_scale, output_zero_point)
    _check_scale("input_scale", input_scale)
    if inputs.shape.rank is not None and inputs.shape.rank < 4:
        raise ValueError(
            f"multibit_conv2d inputs must have rank >= 4 [..., H, W, C], got shape {inputs.shape}"
        )
    if channels_in is None:
        if inputs.dtype == tf.int32 or inputs.shape[-1] is None:
            raise ValueError("multibit_conv2d needs channels_in for a packed input or unknown "
                             "depth")
        channels_in = int(inputs.shape[-1])
    if filter.dtype != tf.int32 or filter.shape.rank != 3:
        raise ValueError(
            "multibit_conv2d filter must be packed int32 [M, C_out, words] from "
            f"pack_filter_planes, got {filter.dtype.name} of shape {filter.shape}"
        )
    if activation_mode not in ACTIVATION_MODES:
        raise ValueError(
            f"activation_mode must be one of {ACTIVATION_MODES}, got {activation_mode!r}"
        )
    if (activation_mode == "abc") != (shifts is not None):
        raise ValueError(
            "shifts are required with activation_mode='abc' and only then, got "
            f"activation_mode={activation_mode!r} and shifts={shifts!r}"
        )
    if activation_mode == "dorefa":
        dorefa_activation_betas(activation_bits)  # validates the bit count
    elif activation_bits != 0:
        raise ValueError(
            f"activation_bits is only for activation_mode='dorefa', got {activation_bits!r}"
        )
    if bias is None:
        bias = tf.zeros([filter.shape[1]], tf.float32)
    return load_tf_ops().lowbit_multibit_conv2d(
        inputs,
        filter,
        tf.convert_to_tensor(alphas, tf.float32),
        tf.zeros([0], tf.float32) if shifts is None else tf.convert_to_tensor(shifts, tf.float32),
        tf.convert_to_tensor(betas, tf.float32),
        tf.convert_to_tensor(bias, tf.float32),
        **_conv_attrs(channels_in, kernel_size, strides, dilations, padding, pad_value,
                      activation),
        activation_mode=activation_mode,
        activation_bits=int(activation_bits),
        output_type=output_type,
        Tout=_TOUT[output_type],
        input_scale=float(input_scale),
        **int8_attrs,
    )


def _unpack_filter_planes(
    packed: tf.Tensor, kernel_h: int, kernel_w: int, channels_in: int
) -> tf.Tensor:
    """The +-1 float planes [M, KH, KW, C_in, C_out] of a packed filter [M, C_out, words]
    (the inverse of `pack_filter_planes`)."""
    size = kernel_h * kernel_w * channels_in
    bits = tf.bitwise.bitwise_and(
        tf.bitwise.right_shift(packed[..., None], tf.range(BITS_PER_WORD, dtype=tf.int32)), 1
    )
    shape = tf.shape(packed)
    bits = tf.reshape(bits, [shape[0], shape[1], -1])[:, :, :size]
    signs = 1.0 - 2.0 * tf.cast(bits, tf.float32)  # bit 1 means -1
    signs = tf.reshape(signs, [shape[0], shape[1], kernel_h, kernel_w, channels_in])
    return tf.transpose(signs, (0, 2, 3, 4, 1))


@tf.RegisterGradient("LowbitMultibitConv2d")
def _multibit_conv2d_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    """Gradients of y = sum_p betas[p] sum_m alphas[m] conv(H_p(x), B_m) + bias.

    Exact for alphas, betas and bias (y is linear in each). For the input,
    the straight-through estimator of the Keras layer the op stands for: with
    G = the gradient of conv(A, W_eff) w.r.t. A, W_eff = sum_m alphas[m] B_m,
      "sign":   dx = betas[0] * G * 1{|x| <= 1}                 (ste_sign)
      "abc":    dx = sum_p betas[p] * G * 1{0 <= x + v_p <= 1}   (the clip in
                H_v(x) = sign(clip(x + v, 0, 1) - 0.5)); dv_p is the same
                term summed over the input
      "dorefa": dx = G * 1{0 <= x <= 1}                          (the clip of the
                k-bit quantizer; its rounding is straight-through)
    Padded pixels are constants and get no gradient. The packed filter has none,
    and neither has an op with an int8 or packed input or output (inference).
    """
    x, packed, alphas, shifts, betas, _ = op.inputs
    if _attr(op, "output_type") != "float" or x.dtype != tf.float32:
        return [None] * len(op.inputs)
    attr = op.get_attr
    kernel_h, kernel_w, channels_in = attr("kernel_h"), attr("kernel_w"), attr("channels_in")
    mode = attr("activation_mode").decode()
    if attr("activation").decode() == "RELU":
        grad = grad * tf.cast(op.outputs[0] > 0, grad.dtype)
    common = dict(
        channels_in=channels_in, kernel_h=kernel_h, kernel_w=kernel_w,
        stride_h=attr("stride_h"), stride_w=attr("stride_w"),
        dilation_h=attr("dilation_h"), dilation_w=attr("dilation_w"),
        padding=attr("padding"), pad_value=attr("pad_value"), activation="NONE",
        activation_mode=mode, activation_bits=attr("activation_bits"),
    )
    out_channels = tf.shape(alphas)[1]
    no_bias = tf.zeros([out_channels], tf.float32)
    native = load_tf_ops()

    def summed(y: tf.Tensor) -> tf.Tensor:
        """sum over every axis but the channels of grad * y."""
        return tf.reduce_sum(tf.reshape(grad * y, [-1, out_channels]), axis=0)

    # d/d alphas[m, c]: the output of weight plane m alone with scale 1.
    unit = tf.ones([1, out_channels], tf.float32)
    d_alphas = tf.stack([
        summed(native.lowbit_multibit_conv2d(
            x, packed[m : m + 1], unit, shifts, betas, no_bias, **common))
        for m in range(packed.shape[0])
    ])
    # d/d betas[p]: the output with betas = e_p.
    count = betas.shape[0]
    d_betas = tf.stack([
        tf.reduce_sum(summed(native.lowbit_multibit_conv2d(
            x, packed, alphas, shifts, tf.one_hot(p, count), no_bias, **common)))
        for p in range(count)
    ])
    d_bias = summed(tf.ones_like(grad))

    # The input: G, the float convolution's input gradient with W_eff.
    planes = _unpack_filter_planes(packed, kernel_h, kernel_w, channels_in)
    w_eff = tf.einsum("mc,mhwic->hwic", alphas, planes)
    lead = tf.shape(x)[:-3]
    x4 = tf.reshape(x, tf.concat([[-1], tf.shape(x)[-3:]], 0))
    g4 = tf.reshape(grad, tf.concat([[-1], tf.shape(grad)[-3:]], 0))
    g_in = tf.raw_ops.Conv2DBackpropInput(
        input_sizes=tf.shape(x4), filter=w_eff, out_backprop=g4,
        strides=[1, attr("stride_h"), attr("stride_w"), 1], padding=attr("padding").decode(),
        dilations=[1, attr("dilation_h"), attr("dilation_w"), 1],
    )
    g_in = tf.reshape(g_in, tf.concat([lead, tf.shape(x)[-3:]], 0))

    def inside(lo: float, value: tf.Tensor, hi: float) -> tf.Tensor:
        return tf.cast((value >= lo) & (value <= hi), tf.float32)

    d_shifts = tf.zeros_like(shifts)
    if mode == "sign":
        d_x = betas[0] * g_in * inside(-1.0, x, 1.0)
    elif mode == "abc":
        per_plane = [betas[p] * g_in * inside(0.0, x + shifts[p], 1.0)
                     for p in range(shifts.shape[0])]
        d_x = tf.add_n(per_plane)
        d_shifts = tf.stack([tf.reduce_sum(term) for term in per_plane])
    else:
        d_x = g_in * inside(0.0, x, 1.0)
    return [d_x, None, d_alphas, d_shifts, d_betas, d_bias]


def _permutation_int32(permutation: tf.Tensor | np.ndarray) -> tf.Tensor:
    """An int32 tensor of `permutation`, refusing values that int32 cannot hold
    (a silent wrap-around could turn a bad permutation into a valid one)."""
    if isinstance(permutation, tf.Tensor | tf.Variable):
        if permutation.dtype != tf.int32:
            raise TypeError(
                f"fastfood permutation must be int32, got dtype {permutation.dtype.name}"
            )
        return tf.convert_to_tensor(permutation)
    array = np.asarray(permutation)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"fastfood permutation must hold integers, got dtype {array.dtype}")
    info = np.iinfo(np.int32)
    if array.size and (array.min() < info.min or array.max() > info.max):
        raise ValueError(
            f"fastfood permutation values must fit in int32, got range "
            f"[{array.min()}, {array.max()}]"
        )
    return tf.constant(array.astype(np.int32))


def fastfood(
    x: tf.Tensor | np.ndarray,
    b: tf.Tensor | np.ndarray,
    g: tf.Tensor | np.ndarray,
    s: tf.Tensor | np.ndarray,
    permutation: tf.Tensor | np.ndarray,
    bias: tf.Tensor | np.ndarray | None = None,
    *,
    units: int | None = None,
    activation: str | None = None,
    output_type: str = "float",
    input_scale: float = 1.0,
    input_zero_point: int = 0,
    output_scale: float = 1.0,
    output_zero_point: int = 0,
) -> tf.Tensor:
    r"""The Adaptive Fastfood transform, the forward pass of
    `lowbit_tf.layers.FastfoodDense` as one op.

    Each row of `x` (last axis, width d) is zero-padded to n and each block
    b = 0..k-1 computes :math:`V_b x = \frac1n S_b H G_b \Pi_b H B_b x`
    (H the Walsh-Hadamard matrix, :math:`(\Pi_b v)_j = v_{permutation[b, j]}`,
    B, G, S diagonal); the k * n results are concatenated, the first `units`
    kept, the bias added and the activation applied. Computed in float32 with
    the Keras layer's operations in its order, so the result equals the layer's
    bit for bit (docs/custom_ops.md). Differentiable w.r.t. x, b, g, s and bias
    (float x and output).

    Args:
      x: float32 [..., d]; any rank >= 1, the leading axes are kept. Or int8
        codes q of that shape: the real values float32(q - input_zero_point)
        * input_scale (what TFLite's DEQUANTIZE computes).
      b, g, s: float32 [k, n], the diagonals (n a power of two, n >= d).
      permutation: int32 [k, n], each row a permutation of [0, n).
      bias: float32 [units], or None.
      units: output width, <= k * n; default the bias length, or k * n.
      activation: None / "linear" or "relu" (fused).
      output_type: "float" (the default) or "int8": the float output y
        quantized, q = round(y * (1 / output_scale)) + output_zero_point
        (halves away from zero), saturated to int8, as `bconv2d`'s.
      input_scale, input_zero_point: of an int8 x (scale finite > 0, zero
        point in [-128, 127]).
      output_scale, output_zero_point: of an int8 output.

    Returns:
      float32 [..., units], or int8 of that shape for output_type="int8".

    Raises:
      TypeError, ValueError: for arguments of the wrong dtype, rank, shape or
        value that can be seen here; tf.errors.InvalidArgumentError from the
        op for the rest (e.g. a permutation row that is not a permutation).
    """
    x = tf.convert_to_tensor(x)
    if x.dtype not in (tf.float32, tf.int8):
        raise TypeError(f"fastfood x must be float32 or int8, got dtype {x.dtype.name}")
    if output_type not in ("float", "int8"):
        raise ValueError(f"fastfood output_type must be 'float' or 'int8', got {output_type!r}")
    int8_attrs = _int8_attrs(x, input_zero_point, output_scale, output_zero_point)
    _check_scale("input_scale", input_scale)
    if x.shape.rank == 0:
        raise ValueError("fastfood x must have rank >= 1, got a scalar")
    diagonals = {
        name: tf.convert_to_tensor(value, tf.float32)
        for name, value in (("b", b), ("g", g), ("s", s))
    }
    permutation = _permutation_int32(permutation)
    shape = diagonals["b"].shape
    if shape.rank != 2:
        raise ValueError(f"fastfood b must be 2-D [k, n], got shape {shape}")
    for name, value in (*diagonals.items(), ("permutation", permutation)):
        if not value.shape.is_compatible_with(shape):
            raise ValueError(
                f"fastfood {name} has shape {value.shape}, expected the shape of b {shape}"
            )
    k, n = shape
    d = x.shape[-1] if x.shape.rank is not None else None
    if n is not None and (n < 1 or n & (n - 1)):
        raise ValueError(f"fastfood block size n = b.shape[1] must be a power of two, got {n}")
    if n is not None and d is not None and not 1 <= d <= n:
        raise ValueError(f"fastfood x width d = {d} must be in [1, n = {n}]")
    if bias is not None:
        bias = tf.convert_to_tensor(bias, tf.float32)
        if bias.shape.rank != 1:
            raise ValueError(f"fastfood bias must be 1-D [units], got shape {bias.shape}")
    if units is None:
        units = bias.shape[0] if bias is not None else (k * n if k and n else None)
        if units is None:
            raise ValueError("fastfood needs units when the bias and b shapes are unknown")
    if isinstance(units, bool) or not isinstance(units, int | np.integer) or units < 1:
        raise ValueError(f"fastfood units must be a positive int, got {units!r}")
    if k is not None and n is not None and units > k * n:
        raise ValueError(f"fastfood units = {units} must be <= k * n = {k} * {n} = {k * n}")
    if bias is None:
        bias = tf.zeros([0], tf.float32)
    elif bias.shape[0] is not None and bias.shape[0] != units:
        raise ValueError(f"fastfood bias has shape {bias.shape}, expected [units] = [{units}]")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be None, 'linear' or 'relu', got {activation!r}")
    return load_tf_ops().lowbit_fastfood(
        x, diagonals["b"], diagonals["g"], diagonals["s"], permutation, bias,
        units=int(units), activation=_ACTIVATIONS[activation], output_type=output_type,
        Tout=_TOUT[output_type], input_scale=float(input_scale), **int8_attrs,
    )  # fmt: skip


@tf.RegisterGradient("LowbitFastfood")
def _fastfood_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    r"""Exact gradients of LowbitFastfood w.r.t. x, b, g, s and bias.

    Per block, with t = B x (x zero-padded to n), u = H t, v = Pi u, w = G v,
    z = H w and y = z * s / n (the kept outputs; dropped ones get gradient 0):
    every step is linear in its input and in its diagonal, and H is symmetric,
    so with dy the incoming gradient (masked by y > 0 for a fused ReLU):
        ds = sum_rows dy z / n,        dz = dy s / n,     dw = H dz,
        dg = sum_rows dw v,            dv = dw g,         du = Pi^T dv,
        dt = H du,   db = sum_rows dt x,   dx = sum_blocks dt b (first d entries).
    Pi^T gathers with the inverse permutation, argsort(permutation). The
    forward intermediates u, v, z are recomputed with TF ops. An op with an
    int8 input or output (inference) has none.
    """
    from lowbit_tf.layers import walsh_hadamard  # lowbit_tf.layers is heavier to import

    x, b, g, s, permutation, bias = op.inputs
    if x.dtype == tf.int8 or op.outputs[0].dtype == tf.int8:
        return [None] * 6
    units = op.get_attr("units")
    if op.get_attr("activation") in (b"RELU", "RELU"):
        grad = tf.where(op.outputs[0] > 0, grad, tf.zeros_like(grad))
    n = b.shape[1]
    if n is None:
        raise ValueError("the gradient of fastfood needs a statically known block size n")
    k, d = tf.shape(b)[0], tf.shape(x)[-1]
    x2 = tf.reshape(x, [-1, d])
    xp = tf.pad(x2, [[0, 0], [0, n - d]])  # (rows, n)
    dy = tf.reshape(grad, [-1, units])
    dbias = tf.reduce_sum(dy, axis=0) if bias.shape[0] != 0 else tf.zeros_like(bias)
    dy = tf.pad(dy, [[0, 0], [0, k * n - units]])
    dy = tf.transpose(tf.reshape(dy, [-1, k, n]), (1, 0, 2))  # (k, rows, n)
    u = walsh_hadamard(xp[None, :, :] * b[:, None, :])
    v = tf.gather(u, permutation, axis=2, batch_dims=1)
    z = walsh_hadamard(v * g[:, None, :])
    inv_n = tf.constant(1.0 / n, tf.float32)
    ds = tf.reduce_sum(dy * z, axis=1) * inv_n
    dw = walsh_hadamard(dy * (s * inv_n)[:, None, :])
    dg = tf.reduce_sum(dw * v, axis=1)
    du = tf.gather(dw * g[:, None, :], tf.argsort(permutation, axis=1), axis=2, batch_dims=1)
    dt = walsh_hadamard(du)
    db = tf.reduce_sum(dt * xp[None, :, :], axis=1)
    dx = tf.reshape(tf.reduce_sum(dt * b[:, None, :], axis=0)[:, :d], tf.shape(x))
    return [dx, db, dg, ds, None, dbias]


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


def _signs(x: tf.Tensor, channels: int, zero_point: int = 0) -> tf.Tensor:
    """The +-1 values an op input stands for: sign(x), the unpacked words, or
    for int8 codes -1 where x < zero_point."""
    if x.dtype == tf.int8:
        return tf.where(x < tf.constant(zero_point, tf.int8), -1.0, 1.0)
    return _unpack_signs(x, channels) if x.dtype == tf.int32 else sign(x)


def _attr(op: tf.Operation, name: str) -> Any:
    """An attribute of the op, strings as str (graph ops give bytes)."""
    value = op.get_attr(name)
    return value.decode() if isinstance(value, bytes) else value


def _skipped(op: tf.Operation) -> set[int]:
    """Inputs whose gradient nobody asked for (known in eager mode only)."""
    return set(getattr(op, "skip_input_indices", None) or ())


def _transform_grads(
    op: tf.Operation, grad: tf.Tensor, raw_dot: Any, activated: tf.Tensor | None = None
) -> tuple[tf.Tensor, tf.Tensor | None, tf.Tensor | None]:
    """(g masked by the fused ReLU, dL/dm, dL/db); raw_dot() recomputes D;
    `activated` is the value after the ReLU (default the op's output)."""
    if _attr(op, "activation") == "RELU":
        activated = op.outputs[0] if activated is None else activated
        grad = tf.where(activated > 0, grad, tf.zeros_like(grad))
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


def sign_conv2d_grads(
    x_signs: tf.Tensor,
    w_signs: tf.Tensor,
    grad_dot: tf.Tensor,
    attrs: dict[str, Any],
    *,
    want_x: bool = True,
    want_w: bool = True,
) -> tuple[tf.Tensor | None, tf.Tensor | None]:
    """The exact gradients of D = conv(x_signs, w_signs), as LowbitBconv2d
    computes D (its attributes `attrs`: kernel_h/w, stride_h/w, dilation_h/w,
    padding, pad_value), for the output gradient `grad_dot` = dL/dD.

    x_signs: float [..., H, W, C] (leading dimensions are a batch, as in the
    kernel); w_signs: float HWIO. Returns (dL/dx_signs of x_signs's shape,
    dL/dw_signs), None where not wanted. Padding: a SAME conv pads with
    pad_value, constants with no gradient, but with pad_value 1 they take part
    in dL/dw_signs; both follow from padding explicitly and running the VALID
    backprop ops on the padded input. Used by the op's registered gradient
    (which adds the straight-through masks of its float inputs) and by the
    Keras layers, whose inputs are already quantized (lowbit_tf/_layer_ops.py).
    """
    kh, kw = attrs["kernel_h"], attrs["kernel_w"]
    x_shape = tf.shape(x_signs)
    x4 = tf.reshape(x_signs, tf.concat([[-1], x_shape[-3:]], 0))
    g4 = tf.reshape(grad_dot, tf.concat([[-1], tf.shape(grad_dot)[-3:]], 0))
    size = tf.shape(x4)
    pads = [[0, 0], [0, 0], [0, 0], [0, 0]]
    if attrs["padding"] == "SAME":
        pads[1] = list(same_padding(size[1], kh, attrs["stride_h"], attrs["dilation_h"]))
        pads[2] = list(same_padding(size[2], kw, attrs["stride_w"], attrs["dilation_w"]))
    elif attrs["padding"] == "EXPLICIT":
        pads[1] = [attrs["explicit_pad_top"], attrs["explicit_pad_bottom"]]
        pads[2] = [attrs["explicit_pad_left"], attrs["explicit_pad_right"]]
    x_padded = tf.pad(x4, pads, constant_values=tf.cast(attrs["pad_value"], x4.dtype))
    conv = dict(
        strides=[1, attrs["stride_h"], attrs["stride_w"], 1],
        padding="VALID",
        dilations=[1, attrs["dilation_h"], attrs["dilation_w"], 1],
    )
    grad_x = grad_w = None
    if want_x:
        grad_padded = tf.raw_ops.Conv2DBackpropInput(
            input_sizes=tf.shape(x_padded), filter=w_signs, out_backprop=g4, **conv
        )
        grad_x = tf.reshape(
            grad_padded[:, pads[1][0]:pads[1][0] + size[1], pads[2][0]:pads[2][0] + size[2], :],
            x_shape,
        )
    if want_w:
        grad_w = tf.raw_ops.Conv2DBackpropFilter(
            input=x_padded, filter_sizes=tf.shape(w_signs), out_backprop=g4, **conv
        )
    return grad_x, grad_w


@tf.RegisterGradient("LowbitBconv2d")
def _bconv2d_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    if _attr(op, "output_type") != "float":
        return [None] * len(op.inputs)
    x, w, m, b = op.inputs[:4]
    a = {name: _attr(op, name) for name in _CONV_ATTRS + _EXPLICIT_PADS}
    kh, kw, channels = a["kernel_h"], a["kernel_w"], a["channels_in"]

    def conv(multiplier: tf.Tensor, bias: tf.Tensor, activation: str) -> tf.Tensor:
        attrs = _dot_attrs(op, (*_CONV_ATTRS, *_EXPLICIT_PADS, "input_zero_point"))
        attrs.update(activation=activation, epilogue="none")
        return load_tf_ops().lowbit_bconv2d(x, w, multiplier, bias, [], **attrs)

    # The epilogue, y = z * pm + pb (+ r) with z = act(m * dot + b): dL/dr = g,
    # dL/dpb = sum(g), dL/dpm = sum(g * z), and dL/dz = g * pm for the rest,
    # whose ReLU mask is z > 0 (z recomputed without the epilogue).
    epilogue = _attr(op, "epilogue")
    activated = None
    if (epilogue != "none" and _attr(op, "activation") == "RELU") or "affine" in epilogue:
        activated = conv(m, b, _attr(op, "activation"))
    grad_epilogue = []
    if "affine" in epilogue:
        axes = tf.range(tf.rank(grad) - 1)
        grad_epilogue = [tf.reduce_sum(grad * activated, axis=axes),
                         tf.reduce_sum(grad, axis=axes)]
    if "add" in epilogue:
        grad_epilogue.append(grad)
    if "affine" in epilogue:
        grad = grad * op.inputs[4]

    def raw_dot() -> tf.Tensor:
        return conv(tf.ones_like(m), tf.zeros_like(b), "NONE")

    grad, grad_m, grad_b = _transform_grads(op, grad, raw_dot, activated)
    skipped = _skipped(op)
    want_x = x.dtype == tf.float32 and 0 not in skipped
    want_w = w.dtype == tf.float32 and 1 not in skipped
    grad_x = grad_w = None
    if want_x or want_w:
        if w.dtype == tf.float32:
            w_signs = sign(w)
        else:  # [C_out, KH*KW*C] in (ky, kx, c) order -> HWIO
            rows = _unpack_signs(w, kh * kw * channels)
            w_signs = tf.transpose(tf.reshape(rows, [-1, kh, kw, channels]), (1, 2, 3, 0))
        grad_x_signs, grad_w_signs = sign_conv2d_grads(
            _signs(x, channels, _attr(op, "input_zero_point")), w_signs, grad * m, a,
            want_x=want_x, want_w=want_w
        )
        if want_x:
            grad_x = _clipped_gradient(x, grad_x_signs, 1.0)
        if want_w:
            grad_w = _clipped_gradient(w, grad_w_signs, 1.0)
    return [grad_x, grad_w, grad_m, grad_b, *grad_epilogue]


@tf.RegisterGradient("LowbitBgemm")
def _bgemm_grad(op: tf.Operation, grad: tf.Tensor) -> list[tf.Tensor | None]:
    if _attr(op, "output_type") != "float":
        return [None] * 4
    x, w, m, b = op.inputs
    channels = _attr(op, "channels_in")

    def raw_dot() -> tf.Tensor:
        ones, zeros = tf.ones_like(m), tf.zeros_like(b)
        return load_tf_ops().lowbit_bgemm(
            x, w, ones, zeros, **_dot_attrs(op, ["channels_in", "input_zero_point"])
        )

    grad, grad_m, grad_b = _transform_grads(op, grad, raw_dot)
    skipped = _skipped(op)
    want_x = x.dtype == tf.float32 and 0 not in skipped
    want_w = w.dtype == tf.float32 and 1 not in skipped
    grad_x = grad_w = None
    if want_x or want_w:
        # [K, N_out]: the float kernel's signs, or the packed rows transposed.
        w_signs = sign(w) if w.dtype == tf.float32 else tf.transpose(_unpack_signs(w, channels))
        g_dot = grad * m
        g_rows = tf.reshape(g_dot, [-1, tf.shape(g_dot)[-1]])
        if want_x:
            grad_x = _clipped_gradient(
                x, tf.reshape(tf.matmul(g_rows, w_signs, transpose_b=True), tf.shape(x)), 1.0
            )
        if want_w:
            x_rows = tf.reshape(_signs(x, channels, _attr(op, "input_zero_point")),
                                [-1, channels])
            grad_w = _clipped_gradient(w, tf.matmul(x_rows, g_rows, transpose_a=True), 1.0)
    return [grad_x, grad_w, grad_m, grad_b]


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
    int8_attrs: dict,
) -> dict:
    """Checks the arguments of `bdepthwise_conv2d` and returns the op's attributes."""
    name = "bdepthwise_conv2d"
    _checked_common(name, inputs, activation, output_type, int8=True)
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
    return dict(
        **_conv_attrs(channels_in, (kernel_h, kernel_w), strides, dilations, padding, pad_value,
                      activation),
        depth_multiplier=int(depth_multiplier),
        output_type=output_type,
        Tout=_TOUT[output_type],
        **int8_attrs,
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
    input_zero_point: int = 0,
    output_scale: float = 1.0,
    output_zero_point: int = 0,
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
      inputs: float32 [..., H, W, C] (binarised and packed inside the op),
        int32 packed [..., H, W, ceil(C / 32)] from `bitpack`, or int8 codes
        (as for `bconv2d`); rank >= 4, the leading dimensions are a batch.
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
        finite multiplier and bias. "int8": the float output quantized (as for
        `bconv2d`).
      input_zero_point, output_scale, output_zero_point: as for `bconv2d`.

    Returns:
      float32 [..., OH, OW, C * DM], int32 [..., OH, OW, ceil(C * DM / 32)]
      for output_type="bitpacked", int8 [..., OH, OW, C * DM] for "int8".
    """
    inputs = tf.convert_to_tensor(inputs)
    filter = tf.convert_to_tensor(filter)
    attrs = _bdepthwise_attrs(
        inputs, filter, kernel_size, channels_in, depth_multiplier, strides, dilations,
        padding, pad_value, activation, output_type,
        _int8_attrs(inputs, input_zero_point, output_scale, output_zero_point),
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

    if attr("output_type") != "float":
        return [None] * 4
    x, packed_filter, multiplier, _ = op.inputs
    if attr("activation") == "RELU":
        grad = tf.where(op.outputs[0] > 0, grad, tf.zeros_like(grad))
    attrs = {name: attr(name) for name in (
        "channels_in", "depth_multiplier", "kernel_h", "kernel_w", "stride_h", "stride_w",
        "dilation_h", "dilation_w", "padding", "pad_value", "output_type",
        "input_zero_point")}
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
