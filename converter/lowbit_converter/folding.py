"""What the lowered layers share: the conversion error, recognising sign
quantizers and plain ReLUs, and folding a BatchNorm and activation into an
op's per-channel output transform."""

from __future__ import annotations

from typing import Any

import numpy as np

from lowbit_tf._keras import keras


class ConversionError(ValueError):
    """A model, or one of its layers, cannot be converted as asked."""


def is_sign_quantizer(quantizer: Any) -> bool:
    """True for a quantizer whose forward pass (at inference) is sign(x) = +1 if
    x >= 0 else -1: it says so itself (`Quantizer.inference_is_sign`, also set
    on the function forms such as `ste_sign`)."""
    return getattr(quantizer, "inference_is_sign", False) is True


def float_kernel_problem(layer: Any, kernel_quantizer: str = "kernel_quantizer") -> str | None:
    """For a layer with an input quantizer but no kernel quantizer (a float
    kernel, which no lowbit op multiplies): what is wrong, in the layer's
    terms; else None."""
    if layer.input_quantizer is None or getattr(layer, "kernel_quantizer", None) is not None:
        return None
    return (
        f"it has input_quantizer={layer.input_quantizer!r} but {kernel_quantizer}=None: a "
        f"binary-input layer needs a binary (or multi-bit) {kernel_quantizer} such as "
        f"'ste_sign' to run as a lowbit op; set {kernel_quantizer}, or remove input_quantizer "
        "to keep it a float layer"
    )


def activation_name(activation: Any) -> str | None:
    """'relu', None (linear) or another name (kept as a separate float op)."""
    if activation is None:
        return None
    name = getattr(activation, "__name__", None) or type(activation).__name__
    return None if name == "linear" else name


def is_plain_relu(layer: keras.layers.Layer) -> bool:
    """True for a ReLU / Activation("relu") layer that is max(x, 0) exactly."""
    if isinstance(layer, keras.layers.ReLU):
        return (
            layer.max_value is None
            and float(layer.negative_slope) == 0.0
            and float(layer.threshold) == 0.0
        )
    return isinstance(layer, keras.layers.Activation) and activation_name(
        layer.activation
    ) == "relu"


def fold_batch_norm(
    scale: np.ndarray, bias: np.ndarray, bn: keras.layers.BatchNormalization | None
) -> tuple[np.ndarray, np.ndarray]:
    """(scale', bias') with BN(scale * d + bias) = scale' * d + bias' per output
    channel (the last axis of `scale`):
        BN(y) = gamma (y - mean) / sqrt(var + eps) + beta = s y + (beta - s mean),
    s = gamma / sqrt(var + eps), so scale' = s scale and bias' = beta + (bias - mean) s."""
    if bn is None:
        return scale, bias
    gamma = np.asarray(bn.gamma, np.float64) if bn.scale else 1.0
    beta = np.asarray(bn.beta, np.float64) if bn.center else 0.0
    mean = np.asarray(bn.moving_mean, np.float64)
    var = np.asarray(bn.moving_variance, np.float64)
    bn_scale = gamma / np.sqrt(var + bn.epsilon)
    return bn_scale * scale, beta + (bias - mean) * bn_scale


def fused_and_trailing_activation(plan: Any) -> tuple[str | None, Any]:
    """For a plan with `layer`, `batch_norm` and `relu` (folded followers or
    None): ("relu" or None, the op's fused activation; the layer's own
    activation when it is neither linear nor ReLU, run as float ops after the
    op, or None)."""
    name = activation_name(plan.layer.activation)
    fused_relu = plan.relu is not None or (plan.batch_norm is None and name == "relu")
    own = plan.batch_norm is None and name not in (None, "relu")
    trailing = plan.layer.activation if own else None
    return ("relu" if fused_relu else None), trailing
