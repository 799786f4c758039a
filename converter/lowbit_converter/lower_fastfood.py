"""Lowering of FastfoodDense to one LowbitFastfood custom op.

Traced as it is, a `lowbit_tf.layers.FastfoodDense` is a dozen TF ops per
butterfly transform (reshapes, slices, stacks), a gather and the diagonal
products, all of which TFLite runs as separate builtins. Its whole forward pass
is the `LowbitFastfood` op (docs/custom_ops.md), which performs the same float32
operations in the same order, so the lowered layer reproduces the Keras layer
bit for bit. The diagonals b, g, s, the permutation and the bias become constant
inputs of the op; a "relu" activation is fused into it, any other activation
runs as float ops after it.

A layer without a bias gets a zero bias: the flatbuffer pass wants every weight
input to be a non-empty constant, and y + 0 == y (only a -0.0 turns into +0.0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import ConversionError, activation_name
from lowbit_converter.plans import Lowering
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import FastfoodDense


@dataclass
class FastfoodPlan:
    """What one FastfoodDense layer lowers to (nothing folds into it: a
    BatchNorm after it stays a float op)."""

    op = "LowbitFastfood"

    layer: FastfoodDense
    fused_activation: str | None = None  # "relu" or None
    trailing_activation: Any = None  # any other activation, run after the op


def _check_convertible(layer: FastfoodDense) -> None:
    problems = []
    if not layer.built:
        problems.append("the layer is not built")
    for what, dtype in (("compute", layer.compute_dtype), ("variable", layer.variable_dtype)):
        if dtype != "float32":
            problems.append(f"{what} dtype {dtype!r} (only float32)")
    if problems:
        raise ConversionError(
            f"layer {layer.name!r} (FastfoodDense) cannot be converted to LowbitFastfood: "
            + "; ".join(problems)
        )


def plan(layer: keras.layers.Layer) -> FastfoodPlan | None:
    """The plan of a FastfoodDense layer, None for any other layer.

    Raises:
      ConversionError: naming the layer and the value that cannot be mapped.
    """
    if not isinstance(layer, FastfoodDense):
        return None
    _check_convertible(layer)
    name = activation_name(layer.activation)
    return FastfoodPlan(
        layer,
        fused_activation="relu" if name == "relu" else None,
        trailing_activation=None if name in (None, "relu") else layer.activation,
    )


class LoweredFastfood(keras.layers.Layer):
    """Inference-only stand-in for a FastfoodDense: one LowbitFastfood op with
    constant diagonals, permutation and bias."""

    def __init__(self, plan: FastfoodPlan, **kwargs: Any) -> None:
        layer = plan.layer
        super().__init__(name=layer.name, **kwargs)
        self.units = int(layer.units)
        self.diagonals = [np.asarray(v, np.float32) for v in (layer.b, layer.g, layer.s)]
        self.permutation = np.asarray(layer.permutation, np.int32)
        self.bias_constant = (
            np.asarray(layer.bias, np.float32)
            if layer.bias is not None
            else np.zeros(self.units, np.float32)
        )
        self.fused_activation = plan.fused_activation
        self.trailing_activation = plan.trailing_activation

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        outputs = ops.fastfood(
            inputs,
            *(tf.constant(v) for v in self.diagonals),
            tf.constant(self.permutation),
            tf.constant(self.bias_constant),
            units=self.units,
            activation=self.fused_activation,
        )
        if self.trailing_activation is not None:
            outputs = self.trailing_activation(outputs)
        return outputs


LOWERING = Lowering(FastfoodPlan, plan, LoweredFastfood)
