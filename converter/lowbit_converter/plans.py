"""Plan types: what one Keras layer, with the layers folded into it, lowers to.

Each `lower_*.py` module plans one kind of layer and lowers its plans (see
`Lowering`); lowering.py runs them in the order of its registry, folds a
following BatchNormalization and ReLU into every `FoldedPlan`, and plans the
epilogue and packed chains of the binary ones. This module holds what the
lowerings share and imports none of them, so the modules depend one way:
lowering.py -> lower_*.py -> plans.py -> folding.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf

from lowbit_converter.folding import (
    fold_batch_norm,
    fused_and_trailing_activation,
    is_sign_quantizer,
)
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantConv2D, QuantDense


@dataclass
class FoldedPlan:
    """A layer that becomes one custom op (per group), with the BatchNormalization
    that is its only consumer and a plain ReLU after that folded into the op's
    per-channel output transform (found by lowering.plan_lowering)."""

    #: The custom op the plan emits (for reports and the size prediction).
    op: ClassVar[str] = ""

    layer: keras.layers.Layer
    batch_norm: keras.layers.BatchNormalization | None = None
    relu: keras.layers.Layer | None = None

    def tail(self) -> str:
        """Name of the last layer this plan absorbs."""
        last = self.relu or self.batch_norm
        return (last or self.layer).name

    def activations(self) -> tuple[str | None, Any]:
        """(the op's fused activation, "relu" or None; the layer's own other
        activation, run as float ops after the op, or None)."""
        return fused_and_trailing_activation(self)


def geometry_problems(layer: Any) -> list[str]:
    """What of a conv layer's geometry the lowbit conv ops cannot run, in the
    layer's terms: they take channels_last data, 'same' or 'valid' padding, and
    pad with 0 or 1."""
    problems = []
    if layer.data_format != "channels_last":
        problems.append(f"data_format={layer.data_format!r} (only 'channels_last')")
    if layer.padding not in ("same", "valid"):
        problems.append(f"padding={layer.padding!r} (only 'same' and 'valid')")
    elif layer.padding == "same" and layer.pad_values not in (0.0, 1.0):
        problems.append(f"pad_values={layer.pad_values} (only 0 or 1 with padding='same')")
    return problems


def binary_kernel_scale(layer: Any) -> np.ndarray | None:
    """alpha with quantized kernel[..., c] in {-alpha_c, +alpha_c}, else None.
    `layer` offers `kernel_quantizer`, `built` and `quantized_kernel()`."""
    if layer.kernel_quantizer is None or not layer.built:
        return None
    kernel = np.asarray(layer.quantized_kernel(), np.float32)
    magnitudes = np.abs(kernel).reshape(-1, kernel.shape[-1])
    alpha = magnitudes.max(axis=0)
    return alpha if np.array_equal(magnitudes, np.broadcast_to(alpha, magnitudes.shape)) else None


def is_binary_layer(layer: keras.layers.Layer) -> bool:
    """True for a QuantConv2D or QuantDense with sign-binarised inputs and a
    (scaled) binary kernel."""
    return (
        isinstance(layer, QuantConv2D | QuantDense)
        and is_sign_quantizer(layer.input_quantizer)
        and binary_kernel_scale(layer) is not None
    )


def binary_transform(
    kernel_layer: Any, batch_norm: keras.layers.BatchNormalization | None
) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier, bias) of a binary op: the kernel scale alpha, the layer's
    bias and the folded BatchNorm (folding.fold_batch_norm), per output channel.
    `kernel_layer` is the layer or a view of it as a conv (depthwise)."""
    filters = int(kernel_layer.kernel.shape[-1])
    bias = (
        np.asarray(kernel_layer.bias, np.float64)
        if kernel_layer.use_bias
        else np.zeros(filters, np.float64)
    )
    alpha = binary_kernel_scale(kernel_layer).astype(np.float64)
    multiplier, bias = fold_batch_norm(alpha, bias, batch_norm)
    return multiplier.astype(np.float32), bias.astype(np.float32)


@dataclass
class PackedChainPlan(FoldedPlan):
    """A layer that can be a link of a packed chain (lowering.py): the binary
    layers and the multi-bit ones. `packed_output` emits the bit-packed signs
    of its output, optionally through `pool` (a MaxPooling2D lowered to
    LowbitBMaxPool2d); `packed_input` reads the packed output of the layer
    before it."""

    packed_output: bool = False
    pool: keras.layers.MaxPooling2D | None = None
    packed_input: bool = False

    def output_channels(self) -> int:
        """Channels of the layer's output (what its packed words hold)."""
        return int(self.layer.kernel.shape[-1])

    def reads_packed(self) -> bool:
        """Whether the op can take the packed signs as its input (the binary
        layers binarise it anyway)."""
        return True


@dataclass
class BinaryPlan(PackedChainPlan):
    """A binary conv or dense layer: sign inputs, a (scaled) binary kernel."""

    def multiplier_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        return binary_transform(self.layer, self.batch_norm)


class LoweredBinaryLayer(keras.layers.Layer):
    """What the lowered binary conv and dense layers (and the multi-bit ones)
    share: the fused ReLU, the layer's own other activation (run as float ops
    afterwards) and the packed chain flags of the plan."""

    def __init__(self, plan: PackedChainPlan, **kwargs: Any) -> None:
        super().__init__(name=plan.layer.name, **kwargs)
        self.packed_output = plan.packed_output
        self.packed_input = plan.packed_input
        self.output_type = "bitpacked" if plan.packed_output else "float"
        self.fused_activation, self.trailing_activation = plan.activations()

    def finish(self, outputs: tf.Tensor) -> tf.Tensor:
        """The op's outputs, with the trailing activation if any."""
        if self.trailing_activation is not None:
            outputs = self.trailing_activation(outputs)
        return outputs


@dataclass(frozen=True)
class Lowering:
    """One entry of the converter's registry of lowerings (lowering.LOWERINGS).

    plan: the plan of a layer this lowering runs, None for a layer it does not
      handle; raises ConversionError for one it handles but cannot run.
    lower: the inference-only Keras layer that stands in for the planned
      layer in the lowered model (it calls the custom op).
    """

    plan_type: type
    plan: Callable[[keras.layers.Layer], Any]
    lower: Callable[[Any], keras.layers.Layer]
