r"""The forward pass of the multi-bit Keras layers on LowbitMultibitConv2d.

The multi-bit half of lowbit_tf/_layer_ops.py (which holds the binary layers,
Fastfood and the helpers both use), with the same two questions for
`lowbit_tf.layers`: can the op run this call (`multibit_problem`,
`abc_problem`), and the layer's output through it (`multibit`, `abc`).

A multi-bit convolution is M weight planes times P activation planes of
binary convolutions (core/multibit_conv2d.h): the weights as
sum_m alphas[m, c] B_m, the activations as sum_p betas[p] H_p. QuantConv2D
and QuantDense qualify with a kernel quantizer on a symmetric grid
(Quantizer.grid_levels: ternary, DoReFa k-bit weights; or a sign) and sign or
DoReFa k-bit inputs (Quantizer.unit_grid_bits); ABCConv2D and ABCDense always
(their bases are planes by construction). The op has no filter gradient (its
filter is bit-packed), so the kernel's is attached here: the output is linear
in the quantized kernel (`_with_filter_gradient`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import tensorflow as tf

from lowbit_tf import ops
from lowbit_tf import quantizers as lb_quantizers
from lowbit_tf._keras import kops
from lowbit_tf._layer_ops import (
    _OP_DTYPES,
    _conv_attrs,
    _finish,
    _float32,
    _form,
    _pair,
    _runtime_problem,
    _signs_and_scale,
)

__all__ = ["MAX_WEIGHT_PLANES", "abc", "abc_problem", "multibit", "multibit_problem"]

#: Most weight planes run as binary convolutions: past it float is cheaper
#: (as the converter's lower_multibit.MAX_WEIGHT_PLANES).
MAX_WEIGHT_PLANES = 8


def _weight_grid(layer: Any) -> int | None:
    """n with the quantized kernel on the grid A (2 q / n - 1), q in [0, n]
    (A = 1, or per output channel for a scaled sign), else None."""
    if _form(layer.kernel_quantizer) in ("sign", "scaled_sign"):
        return 1
    return getattr(layer.kernel_quantizer, "grid_levels", None)


def _plane_count(n: int) -> int:
    """Planes of a grid of n steps: k bits for n = 2^k - 1, else n (thermometer)."""
    return n.bit_length() if n & (n + 1) == 0 else n


def multibit_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitMultibitConv2d cannot run this QuantConv2D / QuantDense call
    with multi-bit values (a kernel on a symmetric grid, sign or DoReFa
    inputs), or None. (Sign inputs with a sign kernel are LowbitBconv2d's.)"""
    quantizer = layer.input_quantizer
    if _form(quantizer) != "sign" and getattr(quantizer, "unit_grid_bits", None) is None:
        return f"input_quantizer={quantizer!r} is neither a sign nor a k-bit grid on [0, 1]"
    n = _weight_grid(layer)
    if n is None:
        return f"the kernel quantizer {layer.kernel_quantizer!r} is not on a symmetric grid"
    if _plane_count(n) > MAX_WEIGHT_PLANES:
        return f"a {n}-step weight grid ({_plane_count(n)} planes: float is cheaper)"
    if hasattr(layer, "filters"):  # conv
        if layer.data_format != "channels_last":
            return f"data_format={layer.data_format!r} (the ops are channels_last)"
        if layer.padding == "same" and layer.pad_values not in (0.0, 1.0):
            return f"pad_values={layer.pad_values} (the ops pad with 0 or 1)"
    return abc_problem(layer, inputs)


def _grid_planes(layer: Any, kernel: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(+-1 planes [M, *kernel.shape], alphas [M, C_out]) with
    kernel = sum_m alphas[m] planes[m] (as the converter's grid_planes):
      n = 2^k - 1: q = sum_j 2^j b_j, A (2q/n - 1) = sum_j (A 2^j / n)(2 b_j - 1);
      other n (thermometer): A (2q/n - 1) = sum_l (A / n)(2 [q >= l] - 1)."""
    n = _weight_grid(layer)
    out = int(kernel.shape[-1])
    signs, alpha = _signs_and_scale(layer, kernel, list(range(kernel.shape.rank - 1)))
    if n == 1:
        scale = alpha if alpha is not None else tf.ones([out])
        return signs[None], scale[None]
    q = tf.round((kernel + 1.0) * (n / 2.0))
    if n & (n + 1) == 0:  # binary code
        planes = [2.0 * tf.math.floormod(tf.floor(q / 2.0**j), 2.0) - 1.0
                  for j in range(_plane_count(n))]  # fmt: skip
        alphas = [tf.fill([out], 2.0**j / n) for j in range(len(planes))]
    else:  # thermometer code
        planes = [tf.where(q >= level, 1.0, -1.0) for level in range(1, n + 1)]
        alphas = [tf.fill([out], 1.0 / n)] * n
    return tf.stack(planes), tf.stack(alphas)


def multibit(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    """A QuantConv2D's or QuantDense's output (bias and activation included) with
    multi-bit values by LowbitMultibitConv2d: the quantized kernel as binary
    planes (`_grid_planes`), the quantized inputs as the op's "sign" or
    "dorefa" planes (the op makes the same planes of quantized values, and its
    input gradient's clip mask is 1 on them, so the quantizer's own gradient
    applies). The kernel's gradient is attached: the output is linear in the
    quantized kernel, dL/dq_k(W) = conv_backprop_filter(q_i(x), g)."""
    dtype = inputs.dtype
    x = _float32(layer.quantize_inputs(inputs, training))
    kernel = _float32(layer.quantized_kernel(training))
    dense = kernel.shape.rank == 2
    if dense:
        d, out = (int(v) for v in kernel.shape)
        lead = tf.shape(x)[:-1]
        x = tf.reshape(x, [-1, 1, 1, d])
        kernel4 = tf.reshape(kernel, [1, 1, d, out])
        conv = dict(strides=1, dilations=1, padding="VALID", pad_value=0)
    else:
        kernel4, out = kernel, int(kernel.shape[-1])
        conv = _conv_attrs(layer)
    planes, alphas = _grid_planes(layer, kernel4)
    bits = getattr(layer.input_quantizer, "unit_grid_bits", None)
    if bits is None:
        mode, betas = "sign", tf.ones([1])
    else:
        mode, betas = "dorefa", tf.constant(ops.dorefa_activation_betas(bits))
    y = ops.multibit_conv2d(
        x, ops.pack_filter_planes(planes), tf.stop_gradient(alphas), betas,
        activation_mode=mode, activation_bits=bits or 0,
        kernel_size=tuple(int(k) for k in kernel4.shape[:2]), **conv,
    )  # fmt: skip
    y = _with_filter_gradient(y, lambda: x, kernel4, conv, float(conv["pad_value"]))
    if dense:
        y = tf.reshape(y, tf.concat([lead, [out]], 0))
    return _finish(layer, y, dtype, fused_relu=False)


def _with_filter_gradient(
    y: tf.Tensor,
    x: Callable[[], tf.Tensor],
    kernel: tf.Tensor,
    conv: dict[str, Any],
    pad_value: Any,
) -> tf.Tensor:
    """`y` = conv(x(), kernel) as an op without a filter gradient, given the
    float conv's: dL/dkernel = conv_backprop_filter(x() padded with pad_value,
    g). x is made in the backward pass only (inference never pays for it)."""
    strides, dilations = _pair(conv["strides"]), _pair(conv["dilations"])

    @tf.custom_gradient
    def attach(y: tf.Tensor, w: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            attrs = dict(
                kernel_h=int(w.shape[0]), kernel_w=int(w.shape[1]), stride_h=strides[0],
                stride_w=strides[1], dilation_h=dilations[0], dilation_w=dilations[1],
                padding=conv["padding"], pad_value=pad_value,
            )  # fmt: skip
            _, d_w = ops.sign_conv2d_grads(x(), w, dy, attrs, want_x=False)
            return dy, d_w

        return tf.identity(y), grad

    return attach(y, kernel)


def abc_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitMultibitConv2d cannot run this ABCConv2D / ABCDense call, or None."""
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups} (the op has no groups)"
    if getattr(layer, "padding", "valid") == "same" and layer.pad_values not in (0.0, 1.0):
        return f"pad_values={layer.pad_values} (the op pads with 0 or 1)"
    dtype = tf.as_dtype(inputs.dtype)
    if dtype not in _OP_DTYPES:
        return f"inputs of dtype {dtype.name} (the ops compute in float32)"
    return _runtime_problem(layer)


def abc(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    r"""An ABCConv2D's or ABCDense's output (bias and activation included) by
    LowbitMultibitConv2d: :math:`\sum_{i,j} \alpha_i \beta_j conv(H_{v_j}(x), B_i)`
    in one op, the activation bases made inside it from the float inputs.

    The op's registered gradient gives the inputs, shifts and betas theirs (the
    clip of :math:`H_v`, as the emulation); the alphas are constants (least
    squares on the kernel, as in the emulation), and the packed bases have
    none, so their gradient is attached here: the output is linear in each
    :math:`B_i`, with :math:`\partial L/\partial B_i = \alpha_i\,
    \text{conv\_backprop\_filter}(A, g)` where :math:`A = \sum_j \beta_j
    H_{v_j}(x)` is the quantized input, padded as the op pads every plane. A
    dense layer is a 1x1 convolution of one pixel per row.
    """
    dtype = inputs.dtype
    x = _float32(layer.quantize_inputs(inputs, training))
    bases, alphas = layer.weight_bases(training)
    m = layer.num_weight_bases
    dense = bases.shape.rank == 3  # (M, d, units)
    if dense:
        d, units = (int(v) for v in bases.shape[1:])
        lead = tf.shape(x)[:-1]
        x = tf.reshape(x, [-1, 1, 1, d])
        bases = tf.reshape(bases, [m, 1, 1, d, units])
        conv = dict(strides=1, dilations=1, padding="VALID", pad_value=0)
    else:
        conv = _conv_attrs(layer)
    bases = _float32(bases)
    out = int(bases.shape[-1])
    alphas = _float32(alphas)
    alphas = alphas if layer.per_channel else tf.tile(alphas[:, None], [1, out])
    betas = _float32(layer.activation_betas)
    shifts = _float32(layer.activation_shifts)
    y = ops.multibit_conv2d(
        x, ops.pack_filter_planes(bases), alphas, betas, activation_mode="abc", shifts=shifts,
        kernel_size=tuple(int(k) for k in bases.shape[1:3]), **conv,
    )  # fmt: skip

    # The bases' gradient: alpha_i times the filter gradient of the quantized
    # input A = sum_j beta_j H_j(x), each plane padded with pad_value.
    def quantized_input() -> tf.Tensor:
        return tf.tensordot(betas, lb_quantizers.abc_activation_bases(x, shifts), axes=1)

    summed = tf.reduce_sum(alphas[:, None, None, None, :] * bases, axis=0)  # the kernel
    pad_value = float(conv["pad_value"]) * tf.reduce_sum(betas)
    y = _with_filter_gradient(y, quantized_input, summed, conv, pad_value)
    if dense:
        y = tf.reshape(y, tf.concat([lead, [out]], 0))
    if y.dtype != dtype:
        y = tf.cast(y, dtype)
    if layer.use_bias:
        y = kops.add(y, layer.bias)
    if layer.activation is not None:
        y = layer.activation(y)
    return y
