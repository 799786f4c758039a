"""Lowering of a binary QuantDense (+ folded BatchNorm / ReLU): one LowbitBgemm.

The layer's quantized kernel [K, N_out] is, per output channel, alpha_c * (+-1)
(plans.binary_kernel_scale); its signs are packed transposed,
[N_out, ceil(K / 32)] (ops.pack_dense_kernel), and alpha with the folded
BatchNorm and bias go into the op's multiplier and bias exactly as for a conv
(BinaryPlan.multiplier_and_bias). The op works over the input's last axis
whatever the leading dimensions, like the Keras layer, and takes part in packed
chains (a packed int32 input, a bit-packed output) like LoweredBConv2D.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_converter.plans import BinaryPlan, LoweredBinaryLayer, Lowering, is_binary_layer
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantDense


@dataclass
class BinaryDensePlan(BinaryPlan):
    """A binary QuantDense and what folds into its LowbitBgemm."""

    op = "LowbitBgemm"


def plan(layer: keras.layers.Layer) -> BinaryDensePlan | None:
    """The plan of a binary QuantDense (every one maps to LowbitBgemm), None for
    any other layer."""
    if not isinstance(layer, QuantDense) or not is_binary_layer(layer):
        return None
    return BinaryDensePlan(layer)


class LoweredBDense(LoweredBinaryLayer):
    """Inference-only stand-in for a binary QuantDense (+ BatchNorm + ReLU),
    holding the packed kernel and the folded transform as constants, so that
    tracing it gives one LowbitBgemm op with constant inputs."""

    def __init__(self, plan: BinaryDensePlan, **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        kernel = np.asarray(plan.layer.quantized_kernel())
        self.channels_in = int(kernel.shape[0])
        self.packed_filter = ops.pack_dense_kernel(kernel).numpy()
        self.multiplier, self.bias = plan.multiplier_and_bias()

    def call(self, inputs: tf.Tensor, **kwargs: Any) -> tf.Tensor:
        # kwargs: whatever the replaced layer's call received (e.g. training).
        outputs = ops.bgemm(
            inputs,
            tf.constant(self.packed_filter),
            tf.constant(self.multiplier),
            tf.constant(self.bias),
            channels_in=self.channels_in,
            activation=self.fused_activation,
            output_type=self.output_type,
        )
        return self.finish(outputs)


LOWERING = Lowering(BinaryDensePlan, plan, LoweredBDense)
