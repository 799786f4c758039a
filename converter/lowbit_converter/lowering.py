"""Lowering: a trained Keras model -> the same model on lowbit custom ops.

Each binary QuantConv2D becomes a `LoweredBConv2D` layer that calls the
`LowbitBconv2d` TF op with a bit-packed constant filter, and so does each binary
QuantDense: a dense layer on C features is a 1x1 convolution of a 1x1 "image"
with C channels, [N, C] -> [N, 1, 1, C]. Binary means: the input
quantizer's forward pass is sign(x) (a known sign quantizer), and the quantized
kernel is, per output channel c, alpha_c * (+-1) -- checked on the values, so
ste_sign (alpha = 1) and scaled binarisations such as XNOR-Net's mean|W| alike
qualify; alpha_c becomes the op's multiplier, since conv(x, alpha_c * s) =
alpha_c * dot(x, s). A BatchNormalization that is the conv's only consumer is
folded into the op's per-channel multiplier and bias, and a plain ReLU after
that into its fused activation. Every other layer is kept as it is (it shares
its weights with the original model) and becomes TFLite builtins.

Packed chains. When the output of a binary conv (after its folded BatchNorm /
ReLU) goes only into another binary layer, or only into a MaxPooling2D that
goes only into one, the next layer would just binarise it again. The conv
then emits `output_type="bitpacked"` (the signs of its float output, computed
from the integer dot product with exact per-channel thresholds, see
docs/custom_ops.md), the pool becomes `LowbitBMaxPool2d` on the packed words
(max-pool commutes with the monotone sign: sign(max(x)) = max(sign(x))), and
the next LowbitBconv2d reads the packed int32 tensor: no float tensor between
them. Chains the packed ops cannot express (grouped convs on either side, a
conv whose own non-ReLU activation runs afterwards, a channels_first pool,
several consumers, a model output in between) stay on the float path.

BatchNorm folding, per output channel c, with the conv's integer dot product d
and kernel scale alpha:
    BN(alpha d + b) = gamma * (alpha d + b - mean) / sqrt(var + eps) + beta
                    = m alpha d + (beta + (b - mean) m),   m = gamma / sqrt(var + eps)
so multiplier = m * alpha and bias = beta + (b - mean) * m.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.graph import model_graph
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantConv2D, QuantDense
from lowbit_tf.quantizers import (
    ApproxSign,
    SteSign,
    StochasticSign,
    SwishSign,
    approx_sign,
    ste_sign,
    swish_sign,
)


class ConversionError(ValueError):
    """A model, or one of its layers, cannot be converted as asked."""


# Quantizers whose forward pass is exactly sign(x) = +1 if x >= 0 else -1.
# (StochasticSign: its inference map, the one a converted model runs, is the sign.)
_SIGN_QUANTIZERS = (SteSign, ApproxSign, SwishSign, StochasticSign)
_SIGN_FUNCTIONS = (ste_sign, approx_sign, swish_sign)


def is_sign_quantizer(quantizer: Any) -> bool:
    return isinstance(quantizer, _SIGN_QUANTIZERS) or any(
        quantizer is f for f in _SIGN_FUNCTIONS
    )


def binary_kernel_scale(layer: QuantConv2D | QuantDense) -> np.ndarray | None:
    """alpha with quantized kernel[..., c] in {-alpha_c, +alpha_c}, else None."""
    if layer.kernel_quantizer is None or not layer.built:
        return None
    kernel = np.asarray(layer.quantized_kernel(), np.float32)
    magnitudes = np.abs(kernel).reshape(-1, kernel.shape[-1])
    alpha = magnitudes.max(axis=0)
    return alpha if np.array_equal(magnitudes, np.broadcast_to(alpha, magnitudes.shape)) else None


def is_binary_conv(layer: keras.layers.Layer) -> bool:
    """True for a QuantConv2D or QuantDense with sign-binarised inputs and a
    (scaled) binary kernel."""
    return (
        isinstance(layer, QuantConv2D | QuantDense)
        and is_sign_quantizer(layer.input_quantizer)
        and binary_kernel_scale(layer) is not None
    )


def _activation_name(activation: Any) -> str | None:
    """'relu', None (linear) or another name (kept as a separate float op)."""
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or type(activation).__name__
    return None if name == "linear" else name


def _is_plain_relu(layer: keras.layers.Layer) -> bool:
    if isinstance(layer, keras.layers.ReLU):
        return (
            layer.max_value is None
            and float(layer.negative_slope) == 0.0
            and float(layer.threshold) == 0.0
        )
    return isinstance(layer, keras.layers.Activation) and _activation_name(
        layer.activation
    ) == "relu"


@dataclass
class BConv2DPlan:
    """What one binary conv layer lowers to."""

    conv: QuantConv2D | QuantDense
    batch_norm: keras.layers.BatchNormalization | None = None
    relu: keras.layers.Layer | None = None
    # Packed chains (see the module docstring): this conv emits packed signs,
    # optionally through `pool` (a MaxPooling2D lowered to LowbitBMaxPool2d),
    # and/or reads the packed output of the binary conv before it.
    packed_output: bool = False
    pool: keras.layers.MaxPooling2D | None = None
    packed_input: bool = False

    def multiplier_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        filters = int(self.conv.kernel.shape[-1])
        bias = (
            np.asarray(self.conv.bias, np.float64)
            if self.conv.use_bias
            else np.zeros(filters, np.float64)
        )
        multiplier = binary_kernel_scale(self.conv).astype(np.float64)  # alpha
        bn = self.batch_norm
        if bn is not None:
            gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
            beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
            mean = np.asarray(bn.moving_mean, np.float64)
            var = np.asarray(bn.moving_variance, np.float64)
            bn_scale = gamma / np.sqrt(var + bn.epsilon)
            multiplier = bn_scale * multiplier
            bias = beta + (bias - mean) * bn_scale
        return multiplier.astype(np.float32), bias.astype(np.float32)


class LoweredBConv2D(keras.layers.Layer):
    """Inference-only stand-in for a binary QuantConv2D (+ BatchNorm + ReLU).

    Holds the bit-packed filter and the folded output transform as constants,
    so that tracing it gives one LowbitBconv2d op with constant inputs. A
    grouped conv (groups = g) becomes g ops on the g channel slices of the
    input, concatenated: output channels [i * C_out / g, (i + 1) * C_out / g)
    read input channels [i * C_in / g, (i + 1) * C_in / g) only.
    """

    def __init__(self, plan: BConv2DPlan, **kwargs: Any) -> None:
        conv = plan.conv
        super().__init__(name=conv.name, **kwargs)
        kernel = np.asarray(conv.quantized_kernel())
        self.dense = isinstance(conv, QuantDense)
        if self.dense:  # [C, C_out] -> a 1x1 HWIO kernel
            kernel = kernel.reshape(1, 1, *kernel.shape)
        self.groups = 1 if self.dense else conv.groups
        multiplier, bias = plan.multiplier_and_bias()
        # One (packed filter, multiplier, bias) per group.
        self.group_constants = [
            (ops.pack_filter(part).numpy(), m, b)
            for part, m, b in zip(
                np.split(kernel, self.groups, axis=3),
                np.split(multiplier, self.groups),
                np.split(bias, self.groups),
                strict=True,
            )
        ]
        self.packed_output = plan.packed_output
        self.packed_input = plan.packed_input
        self.channels_in = int(kernel.shape[2])  # per group
        self.out_channels = int(kernel.shape[3])
        if self.dense:
            self.kernel_size = self.strides = self.dilations = (1, 1)
            self.padding, self.pad_value = "VALID", 0
        else:
            self.kernel_size = tuple(conv.kernel_size)
            self.strides = tuple(conv.strides)
            self.dilations = tuple(conv.dilation_rate)
            self.padding = conv.padding.upper()
            self.pad_value = int(conv.pad_values) if conv.padding == "same" else 0
        conv_activation = _activation_name(conv.activation)
        fused_relu = plan.relu is not None or (
            plan.batch_norm is None and conv_activation == "relu"
        )
        self.fused_activation = "relu" if fused_relu else None
        # Any other activation of the conv itself runs as float ops afterwards.
        self.trailing_activation = self.trailing_activation_of(plan)

    @staticmethod
    def trailing_activation_of(plan: BConv2DPlan) -> Any:
        """The conv's own activation when it is neither linear nor ReLU (run as
        float ops after the lowered op), else None."""
        name = _activation_name(plan.conv.activation)
        if plan.batch_norm is None and name not in (None, "relu"):
            return plan.conv.activation
        return None

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        depth = ops.packed_words(self.channels_in) if self.packed_input else self.channels_in
        out_depth = ops.packed_words(self.out_channels) if self.packed_output else self.out_channels
        if self.dense:
            leading = tf.shape(inputs)[:-1]
            inputs = tf.reshape(inputs, [-1, 1, 1, depth])
        slices = tf.split(inputs, self.groups, axis=-1) if self.groups > 1 else [inputs]
        parts = [
            ops.bconv2d(
                part,
                tf.constant(packed_filter),
                tf.constant(multiplier),
                tf.constant(bias),
                kernel_size=self.kernel_size,
                channels_in=self.channels_in,
                strides=self.strides,
                dilations=self.dilations,
                padding=self.padding,
                pad_value=self.pad_value,
                activation=self.fused_activation,
                output_type="bitpacked" if self.packed_output else "float",
            )
            for part, (packed_filter, multiplier, bias) in zip(
                slices, self.group_constants, strict=True
            )
        ]
        outputs = tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0]
        if self.dense:
            outputs = tf.reshape(outputs, tf.concat([leading, [out_depth]], axis=0))
        if self.trailing_activation is not None:
            outputs = self.trailing_activation(outputs)
        return outputs


class LoweredBMaxPool2D(keras.layers.Layer):
    """A MaxPooling2D between two binary convs of a packed chain: the same
    pooling on the packed signs (LowbitBMaxPool2d)."""

    def __init__(self, pool: keras.layers.MaxPooling2D, channels: int, **kwargs: Any) -> None:
        super().__init__(name=pool.name, **kwargs)
        self.channels = int(channels)
        self.pool_size = tuple(pool.pool_size)
        self.pool_strides = tuple(pool.strides)
        self.pool_padding = pool.padding.upper()

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        return ops.bmaxpool2d(
            inputs, self.pool_size, channels=self.channels, strides=self.pool_strides,
            padding=self.pool_padding,
        )


class FoldedAway(keras.layers.Layer):
    """Stands in for a BatchNormalization or ReLU folded into the op before it."""

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: what the folded layer's call received (training, mask).
        return inputs


def _check_convertible(conv: QuantConv2D | QuantDense) -> None:
    if isinstance(conv, QuantDense):
        return  # every binary dense layer maps to a 1x1 binary convolution
    problems = []
    if conv.data_format != "channels_last":
        problems.append(f"data_format={conv.data_format!r} (only 'channels_last')")
    if conv.padding == "same" and conv.pad_values not in (0.0, 1.0):
        problems.append(f"pad_values={conv.pad_values} (only 0 or 1 with padding='same')")
    if conv.padding not in ("same", "valid"):
        problems.append(f"padding={conv.padding!r}")
    if problems:
        raise ConversionError(
            f"layer {conv.name!r} (QuantConv2D) cannot be converted to LowbitBconv2d: "
            + "; ".join(problems)
        )


def plan_lowering(model: keras.Model, *, packed_chains: bool = True) -> dict[str, BConv2DPlan]:
    """Finds the binary convs and what folds into each, keyed by layer name.

    packed_chains: also mark the chains of binary layers that can stay
    bit-packed (see the module docstring)."""
    graph = model_graph(model)
    layers = {layer.name: layer for layer in model.layers}
    plans: dict[str, BConv2DPlan] = {}
    for layer in model.layers:
        if not is_binary_conv(layer):
            continue
        _check_convertible(layer)
        plan = BConv2DPlan(layer)
        tail = layer.name
        nxt = layers.get(graph.only_consumer(tail) or "")
        if (
            _activation_name(layer.activation) is None
            and isinstance(nxt, keras.layers.BatchNormalization)
            and nxt.axis in (-1, len(layer.output.shape) - 1)  # per output channel
        ):
            plan.batch_norm = nxt
            tail = nxt.name
            nxt = layers.get(graph.only_consumer(tail) or "")
        if _activation_name(layer.activation) is None and nxt is not None and _is_plain_relu(nxt):
            plan.relu = nxt
        plans[layer.name] = plan
    if packed_chains:
        _plan_packed_chains(graph, layers, plans)
    from lowbit_converter.lower_depthwise import plan_depthwise_lowering  # imports this module

    plans.update(plan_depthwise_lowering(model, graph, layers))
    return plans


def _groups(layer: keras.layers.Layer) -> int:
    return 1 if isinstance(layer, QuantDense) else int(getattr(layer, "groups", 1))


def _plan_packed_chains(
    graph: Any, layers: dict[str, keras.layers.Layer], plans: dict[str, BConv2DPlan]
) -> None:
    """Marks the binary convs whose output is only re-binarised (see the module
    docstring) and the MaxPooling2D between them."""
    for plan in plans.values():
        conv = plan.conv
        tail = (plan.relu or plan.batch_norm or conv).name
        if _groups(conv) != 1 or LoweredBConv2D.trailing_activation_of(plan) is not None:
            continue
        nxt = layers.get(graph.only_consumer(tail) or "")
        pool = None
        if isinstance(nxt, keras.layers.MaxPooling2D):
            if nxt.data_format != "channels_last" or nxt.padding not in ("same", "valid"):
                continue
            pool = nxt
            nxt = layers.get(graph.only_consumer(nxt.name) or "")
        if nxt is None or nxt.name not in plans or _groups(nxt) != 1:
            continue
        if pool is not None and isinstance(conv, QuantDense):
            continue  # a pool after a dense layer is not a 2-D pool of its channels
        plan.packed_output = True
        plan.pool = pool
        plans[nxt.name].packed_input = True


def lower_model(
    model: keras.Model, *, packed_chains: bool = True
) -> tuple[keras.Model, dict[str, BConv2DPlan]]:
    """Returns (the lowered model, the plans applied).

    packed_chains: let chains of binary layers pass packed int32 tensors
    between them (what `convert` does by default); off, every lowered layer's
    output keeps the meaning (and dtype) of the Keras layer's output, which is
    handy for inspecting intermediate tensors.

    The lowered model shares every non-lowered layer (and its weights) with
    `model`; folded BatchNorm and ReLU layers become pass-throughs.
    """
    if not model.built:
        raise ConversionError(f"model {model.name!r} is not built; call it once or give inputs")
    plans = plan_lowering(model, packed_chains=packed_chains)
    folded = {
        fused.name
        for plan in plans.values()
        for fused in (plan.batch_norm, plan.relu)
        if fused is not None
    }
    pools = {
        plan.pool.name: (plan.pool, int(plan.conv.kernel.shape[-1]))
        for plan in plans.values()
        if plan.pool is not None
    }

    from lowbit_converter.lower_depthwise import BDepthwisePlan, LoweredBDepthwiseConv2D

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(plans.get(layer.name), BDepthwisePlan):
            return LoweredBDepthwiseConv2D(plans[layer.name])
        if layer.name in plans:
            return LoweredBConv2D(plans[layer.name])
        if layer.name in pools:
            return LoweredBMaxPool2D(*pools[layer.name])
        if layer.name in folded:
            return FoldedAway(name=layer.name)
        return layer

    lowered = keras.models.clone_model(model, clone_function=clone_function)
    return lowered, plans
