"""Lowering of multi-bit layers to LowbitMultibitConv2d.

A multi-bit convolution or dense layer whose weights and activations are
scaled sums of {-1, +1} planes runs as P * M binary convolutions (see
core/multibit_conv2d.h and docs/custom_ops.md):

    weights      W[..., c] = sum_m alphas[m, c] B_m[..., c]
    activations  A         = sum_p betas[p] H_p

Which layers qualify:
  * ABCConv2D / ABCDense: B_m and alphas are the layer's weight bases, H_p its
    activation bases ("abc" mode: shifts v_p and betas from the layer).
  * QuantConv2D / QuantDense whose input quantizer is a sign ("sign" mode) or
    DoReFa k-bit activations ("dorefa" mode), and whose quantized kernel is not
    plain binary with a sign input (that is LowbitBconv2d's job) but lies on a
    symmetric uniform grid: every value is A (2 q / n - 1) for an integer
    q in [0, n] -- DoReFa k-bit weights (n = 2^k - 1), ternary weights (n = 2),
    binary weights (n = 1), per tensor or per output channel A.
    Decomposition of such a kernel (`grid_planes`):
      n = 2^k - 1 (binary code): q = sum_j 2^j b_j and sum_j 2^j = n, so
        A (2q/n - 1) = sum_j (A 2^j / n) (2 b_j - 1): k planes, alpha_j = A 2^j / n;
      any other n (thermometer code): q = sum_{l=1..n} [q >= l], so
        A (2q/n - 1) = sum_l (A / n) (2 [q >= l] - 1): n planes, alpha = A / n.
    Both are exact; the decomposition is checked against the values.

A BatchNormalization that follows (the layer's only consumer) folds in
(alphas *= s, bias = beta + (bias - mean) s with s = gamma / sqrt(var + eps)),
a plain ReLU into the fused activation; a grouped layer becomes one op per
group on its channel slice.

Packed chains (lowering.py): a multi-bit layer is a link like the binary ones.
Its output is bit-packed (the signs of its float output, the same words the
next binary layer would pack) when only a binary layer, or a "sign" multi-bit
one, reads it; in "sign" mode its one activation plane is read packed from
the binary (or multi-bit) layer before it. "abc" and "dorefa" read values,
not signs, so they never take a packed input.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import (
    ConversionError,
    float_kernel_problem,
    fold_batch_norm,
    is_sign_quantizer,
)
from lowbit_converter.plans import (
    LoweredBinaryLayer,
    Lowering,
    PackedChainPlan,
    geometry_problems,
)
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import ABCConv2D, ABCDense, QuantConv2D, QuantDense
from lowbit_tf.quantizers import DoReFa

# Largest number of weight planes we emit: beyond it a layer is cheaper in
# float (each plane is one binary convolution per activation plane).
MAX_WEIGHT_PLANES = 8
# Grid sizes n tried, smallest first: thermometer codes up to MAX_WEIGHT_PLANES
# planes and binary codes (n = 2^k - 1) up to MAX_WEIGHT_PLANES bits.
_GRID_SIZES = sorted(
    set(range(1, MAX_WEIGHT_PLANES + 1)) | {2**k - 1 for k in range(1, MAX_WEIGHT_PLANES + 1)}
)


@dataclass
class Planes:
    """Weights and activations of one layer as binary planes."""

    weights: np.ndarray  # [M, KH, KW, C_in / groups, C_out], +-1
    alphas: np.ndarray  # [M, C_out]
    mode: str  # "sign", "abc" or "dorefa"
    betas: np.ndarray  # [P]
    shifts: np.ndarray | None = None  # "abc"
    bits: int = 0  # "dorefa"
    bias: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))


def grid_planes(kernel: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(planes [M, *kernel.shape], alphas [M, C_out]) with kernel = sum_m alphas[m] planes[m]
    for a kernel on a symmetric uniform grid (module docstring), else None."""
    kernel = np.asarray(kernel, np.float64)
    flat = kernel.reshape(-1, kernel.shape[-1])
    for per_channel in (False, True):
        scale = np.abs(flat).max(axis=0)
        if not per_channel:
            scale = np.full_like(scale, scale.max())
        safe = np.where(scale > 0, scale, 1.0)
        u = (flat / safe + 1.0) / 2.0  # in [0, 1]: q / n
        for n in _GRID_SIZES:
            q = np.rint(u * n)
            if np.abs(u * n - q).max() > 1e-3:
                continue
            q = q.astype(np.int64)
            k = n.bit_length()
            if n == 2**k - 1:  # binary code
                planes = [2.0 * ((q >> j) & 1) - 1.0 for j in range(k)]
                alphas = [scale * 2.0**j / n for j in range(k)]
            elif n <= MAX_WEIGHT_PLANES:  # thermometer code
                planes = [np.where(q >= level, 1.0, -1.0) for level in range(1, n + 1)]
                alphas = [scale / n] * n
            else:
                continue
            planes = np.stack(planes)
            alphas = np.stack(alphas)
            rebuilt = np.einsum("mkc,mc->kc", planes, alphas)
            if np.allclose(rebuilt, flat, rtol=1e-5, atol=1e-6 * max(scale.max(), 1e-30)):
                return (planes.reshape((-1,) + kernel.shape).astype(np.float32),
                        alphas.astype(np.float32))
    return None


def activation_planes_of(quantizer: Any) -> tuple[str, np.ndarray, int] | None:
    """(mode, betas, bits) for an input quantizer the op can expand, else None."""
    if is_sign_quantizer(quantizer):
        return "sign", np.ones(1, np.float32), 0
    if isinstance(quantizer, DoReFa) and quantizer.mode == "activations":
        bits = quantizer.k_bit
        return "dorefa", ops.dorefa_activation_betas(bits), bits
    return None


def layer_planes(layer: keras.layers.Layer) -> Planes | str:
    """The planes of a layer this module lowers, or why it cannot be lowered."""
    if isinstance(layer, ABCConv2D | ABCDense):
        if layer.input_quantizer is not None:
            return (f"input_quantizer={layer.input_quantizer!r} before the activation bases "
                    "(only None)")
        bases, alphas = (np.asarray(t) for t in layer.weight_bases())
        filters = bases.shape[-1]
        alphas = np.broadcast_to(alphas.reshape(len(alphas), -1), (len(alphas), filters))
        shifts = np.asarray(layer.activation_shifts, np.float32)
        weights = bases if isinstance(layer, ABCConv2D) else bases[:, None, None]
        return Planes(weights.astype(np.float32), np.array(alphas, np.float32), "abc",
                      np.asarray(layer.activation_betas, np.float32), shifts=shifts)
    activation = activation_planes_of(layer.input_quantizer)
    float_kernel = float_kernel_problem(layer)
    if float_kernel is not None:
        return float_kernel
    if activation is None:
        return f"input_quantizer={layer.input_quantizer!r} (only sign and DoReFa activations)"
    kernel = np.asarray(layer.quantized_kernel(), np.float32)
    if isinstance(layer, QuantDense):
        kernel = kernel[None, None]
    planes = grid_planes(kernel)
    if planes is None:
        return (f"kernel_quantizer={layer.kernel_quantizer!r} gives a kernel that is not a "
                f"sum of at most {MAX_WEIGHT_PLANES} binary planes (its values do not lie on a "
                f"symmetric grid of at most {MAX_WEIGHT_PLANES} bits); use a binary, ternary or "
                f"at most {MAX_WEIGHT_PLANES}-bit kernel quantizer ('ste_sign', 'ste_tern', "
                f"DoReFa(k_bit<={MAX_WEIGHT_PLANES}, mode='weights'))")
    mode, betas, bits = activation
    return Planes(planes[0], planes[1], mode, betas, bits=bits)


@dataclass
class MultibitPlan(PackedChainPlan):
    """A multi-bit conv or dense layer, its binary planes, and what folds into
    its LowbitMultibitConv2d."""

    op = "LowbitMultibitConv2d"

    planes: Planes | None = None

    def output_channels(self) -> int:
        return int(self.planes.weights.shape[-1])

    def reads_packed(self) -> bool:
        return self.planes.mode == "sign"


def is_multibit_layer(layer: keras.layers.Layer) -> bool:
    """Layers this module is responsible for (lowered here or refused with a
    reason); the registry asks the binary lowerings first."""
    if isinstance(layer, ABCConv2D | ABCDense):
        return True
    return isinstance(layer, QuantConv2D | QuantDense) and layer.input_quantizer is not None


def plan(layer: keras.layers.Layer) -> MultibitPlan | None:
    """The plan of a multi-bit layer, None for a layer this module does not
    handle.

    Raises:
      ConversionError: naming the layer and why it cannot be lowered.
    """
    if not is_multibit_layer(layer):
        return None
    return MultibitPlan(layer, planes=check_convertible(layer))


def check_convertible(layer: keras.layers.Layer) -> Planes:
    """The planes of `layer`, or a ConversionError naming it and why not."""
    problems = []
    planes = layer_planes(layer)
    if isinstance(planes, str):
        problems.append(planes)
    if isinstance(layer, QuantConv2D | ABCConv2D):
        problems += geometry_problems(layer)
    if problems:
        raise ConversionError(
            f"layer {layer.name!r} ({type(layer).__name__}) cannot be converted to a lowbit "
            "op (LowbitMultibitConv2d): " + "; ".join(problems)
            + ". Pass float_fallback=True to convert it as float TFLite ops."
        )
    return planes


class LoweredMultibitConv2D(LoweredBinaryLayer):
    """Inference-only stand-in for a multi-bit conv or dense layer (+ BatchNorm +
    ReLU): one LowbitMultibitConv2d per group with constant planes and scales."""

    def __init__(self, plan: MultibitPlan, **kwargs: Any) -> None:
        layer, planes = plan.layer, plan.planes
        super().__init__(plan, **kwargs)
        filters = planes.weights.shape[-1]
        bias = np.asarray(layer.bias, np.float64) if layer.use_bias else np.zeros(filters)
        alphas, bias = fold_batch_norm(planes.alphas.astype(np.float64), bias, plan.batch_norm)
        self.dense = isinstance(layer, QuantDense | ABCDense)
        self.groups = 1 if self.dense else int(layer.groups)
        self.group_constants = [
            (ops.pack_filter_planes(w).numpy(), a.astype(np.float32), b.astype(np.float32))
            for w, a, b in zip(
                np.split(planes.weights, self.groups, axis=-1),
                np.split(alphas, self.groups, axis=-1),
                np.split(bias, self.groups),
                strict=True,
            )
        ]
        self.planes = planes
        if self.dense:
            self.kernel_size = self.strides = self.dilations = (1, 1)
            self.padding, self.pad_value = "VALID", 0
        else:
            self.kernel_size = tuple(layer.kernel_size)
            self.strides = tuple(layer.strides)
            self.dilations = tuple(layer.dilation_rate)
            self.padding = layer.padding.upper()
            self.pad_value = int(layer.pad_values) if layer.padding == "same" else 0
        self.channels_in = int(planes.weights.shape[3])  # per group

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        if self.dense:
            leading = tf.shape(inputs)[:-1]
            inputs = tf.reshape(inputs, [-1, 1, 1, inputs.shape[-1]])
        slices = tf.split(inputs, self.groups, axis=-1) if self.groups > 1 else [inputs]
        p = self.planes
        parts = [
            ops.multibit_conv2d(
                part, tf.constant(packed), tf.constant(alphas), tf.constant(p.betas),
                tf.constant(bias), activation_mode=p.mode,
                shifts=None if p.shifts is None else tf.constant(p.shifts),
                activation_bits=p.bits, kernel_size=self.kernel_size, strides=self.strides,
                dilations=self.dilations, padding=self.padding, pad_value=self.pad_value,
                activation=self.fused_activation, channels_in=self.channels_in,
                output_type=self.output_type,
            )
            for part, (packed, alphas, bias) in zip(slices, self.group_constants, strict=True)
        ]
        outputs = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
        if self.dense:
            outputs = tf.reshape(outputs, tf.concat([leading, [outputs.shape[-1]]], axis=0))
        return self.finish(outputs)


LOWERING = Lowering(MultibitPlan, plan, LoweredMultibitConv2D)
