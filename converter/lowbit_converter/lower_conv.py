"""Lowering of a binary QuantConv2D (+ folded BatchNorm / ReLU, + epilogue):
LowbitBconv2d.

Binary means: the input quantizer's forward pass is sign(x) (a quantizer that
declares `inference_is_sign`), and the quantized kernel is, per output channel
c, alpha_c * (+-1) -- checked on the values, so ste_sign (alpha = 1) and scaled
binarisations such as XNOR-Net's mean|W| alike qualify; alpha_c becomes the
op's multiplier, since conv(x, alpha_c * s) = alpha_c * dot(x, s).

Epilogue. What follows the conv's fused ReLU in residual networks such as
QuickNet, conv -> ReLU -> BatchNormalization -> Add(shortcut), would be three
more passes over its float output as TFLite builtins; instead it is fused into
the op's epilogue (docs/custom_ops.md): the BatchNormalization after the ReLU
becomes the post_multiplier and post_bias, and an Add of the result with one
other tensor of the same shape takes that tensor as the op's residual input
(lowering.py finds them; in the lowered model the Add's slot runs the op).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import ConversionError, fold_batch_norm
from lowbit_converter.plans import (
    BinaryPlan,
    LoweredBinaryLayer,
    Lowering,
    geometry_problems,
    is_binary_layer,
)
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantConv2D


@dataclass
class BinaryConvPlan(BinaryPlan):
    """A binary QuantConv2D and what folds into its LowbitBconv2d. The epilogue:
    a BatchNormalization after the fused ReLU, and an Add with `residual_index`,
    the position of the other operand (the residual) among the Add's two inputs."""

    op = "LowbitBconv2d"

    post_batch_norm: keras.layers.BatchNormalization | None = None
    residual_add: keras.layers.Add | None = None
    residual_index: int = 0

    def has_epilogue(self) -> bool:
        return self.post_batch_norm is not None or self.residual_add is not None

    def tail(self) -> str:
        last = self.residual_add or self.post_batch_norm
        return last.name if last is not None else super().tail()

    def epilogue_constants(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(post_multiplier, post_bias) of the post-ReLU BatchNorm, or None."""
        if self.post_batch_norm is None:
            return None
        filters = int(self.layer.kernel.shape[-1])
        scale, bias = fold_batch_norm(
            np.ones(filters, np.float64), np.zeros(filters, np.float64), self.post_batch_norm
        )
        return scale.astype(np.float32), bias.astype(np.float32)


def _check_convertible(conv: QuantConv2D) -> None:
    problems = geometry_problems(conv)
    if problems:
        raise ConversionError(
            f"layer {conv.name!r} (QuantConv2D) cannot be converted to LowbitBconv2d: "
            + "; ".join(problems)
        )


def plan(layer: keras.layers.Layer) -> BinaryConvPlan | None:
    """The plan of a binary QuantConv2D, None for any other layer.

    Raises:
      ConversionError: naming the layer and the option that cannot be mapped.
    """
    if not isinstance(layer, QuantConv2D) or not is_binary_layer(layer):
        return None
    _check_convertible(layer)
    return BinaryConvPlan(layer)


class LoweredBConv2D(LoweredBinaryLayer):
    """Inference-only stand-in for a binary QuantConv2D (+ BatchNorm + ReLU).

    Holds the bit-packed filter and the folded output transform as constants,
    so that tracing it gives one LowbitBconv2d op with constant inputs. A
    grouped conv (groups = g) becomes g ops on the g channel slices of the
    input, concatenated: output channels [i * C_out / g, (i + 1) * C_out / g)
    read input channels [i * C_in / g, (i + 1) * C_in / g) only.
    """

    def __init__(self, plan: BinaryConvPlan, **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        conv = plan.layer
        kernel = np.asarray(conv.quantized_kernel())
        self.groups = conv.groups
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
        self.channels_in = int(kernel.shape[2])  # per group
        self.kernel_size = tuple(conv.kernel_size)
        self.strides = tuple(conv.strides)
        self.dilations = tuple(conv.dilation_rate)
        self.padding = conv.padding.upper()
        self.pad_value = int(conv.pad_values) if conv.padding == "same" else 0
        # The epilogue (groups == 1 only, see lowering._plan_epilogue).
        self.post_affine = plan.epilogue_constants()
        self.residual_index = plan.residual_index if plan.residual_add is not None else None

    def call(self, inputs: tf.Tensor | list[tf.Tensor], **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        epilogue: dict[str, Any] = {}
        if self.post_affine is not None:
            epilogue.update(post_multiplier=tf.constant(self.post_affine[0]),
                            post_bias=tf.constant(self.post_affine[1]))
        if self.residual_index is not None:
            # In the Add's slot: the conv's input (passed through) and the residual.
            epilogue["residual"] = inputs[self.residual_index]
            inputs = inputs[1 - self.residual_index]
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
                output_type=self.output_type,
                **epilogue,
            )
            for part, (packed_filter, multiplier, bias) in zip(
                slices, self.group_constants, strict=True
            )
        ]
        return self.finish(tf.concat(parts, axis=-1) if len(parts) > 1 else parts[0])


LOWERING = Lowering(BinaryConvPlan, plan, LoweredBConv2D)
