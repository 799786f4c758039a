r"""The forward pass of a quantized Keras layer on the bitwise TF ops.

`lowbit_tf.layers` asks two things of this module: can an op run this call
(`conv2d_problem`, `dense_problem`, `depthwise_problem`: None, or the reason
in words), and, when it can, the layer's output through the op (`conv2d`,
`dense`, `depthwise_conv2d`). Everything else (the quantizers, their
gradients, the flip-ratio metric, the gradient quantizer) stays in the layer,
which hands over the quantized values: the inputs ``q_i(x)`` and the kernel
``q_k(W)``.

Why the numbers and gradients are the emulation's. The op binarises its float
inputs with sign (+1 for x >= 0), which leaves values already in {-1, +1}
unchanged, so with a quantizer of ``binary_form == "sign"`` the op computes
``conv(q_i(x), q_k(W))``: integer sums, exact in float32 like the emulation's.
A ``"scaled_sign"`` kernel, :math:`\alpha_c \cdot (\pm 1)`, goes in as
``q_k(W) / alpha`` (exactly +-1) with the op's multiplier ``alpha``, a
constant for the gradient, so the op computes :math:`\alpha_c \cdot dot`
(one rounding; the emulation sums the scaled products). The ops' registered
gradients (lowbit_tf/ops.py) are those of the conv / matmul of the signs,
times the straight-through mask 1{|v| <= 1}, which is 1 on +-1 values: so they
are exactly d(conv of the quantized values), and the quantizers' own
gradients (clip, approx_sign, swish_sign, ...) apply before them unchanged.
The depthwise op has no filter gradient (its filter is bit-packed); its
kernel gradient is supplied here with TensorFlow's depthwise backprop.

Bit-packed weights. The conv and dense ops take the float quantized kernel and
pack it inside the op, once per call: in training that is once per weight
update (one forward pass per step), and at inference one pass over the
kernel's floats, which the op does as part of its work.

Fallbacks (the layer keeps the emulation, silently; the reason is logged at
DEBUG level): an input or kernel quantizer whose values are not binary, a
`pad_values` other than 0 and 1, `channels_first`, a float64 compute dtype
(float16 / bfloat16 run the op in float32: +-1 values and their integer sums
are exact there), and XLA: the ops have no XLA kernels, so a call traced under
``jit_compile`` runs the emulation (with a warning, once per layer). The
layers tell Keras they do not support XLA (``supports_jit``), so
``model.compile(jit_compile=True)`` proceeds without XLA, with Keras's own
warning, and ``jit_compile="auto"`` resolves to False.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import tensorflow as tf

from lowbit_tf import ops
from lowbit_tf._geometry import same_padding
from lowbit_tf._keras import keras

__all__ = [
    "conv2d",
    "conv2d_problem",
    "dense",
    "dense_problem",
    "depthwise_conv2d",
    "depthwise_problem",
    "in_xla_context",
]

log = logging.getLogger(__name__)

_OP_DTYPES = (tf.float16, tf.bfloat16, tf.float32)


def in_xla_context() -> bool:
    """True while tracing a function that XLA compiles (``jit_compile=True``).

    TensorFlow has no public query for it; its own control-flow code uses
    this one. Without it (a future TensorFlow), False: the op then fails to
    compile with TensorFlow's "no XLA kernel" error instead of falling back.
    """
    if tf.executing_eagerly():
        return False
    try:
        from tensorflow.python.ops import control_flow_util
    except ImportError:  # pragma: no cover - depends on the TensorFlow version
        return False
    return bool(control_flow_util.GraphOrParentsInXlaContext(tf.compat.v1.get_default_graph()))


def _form(quantizer: Any) -> str | None:
    return getattr(quantizer, "binary_form", None)


def _common_problem(layer: Any, inputs: Any) -> str | None:
    """Reasons shared by every layer: the quantizers' values, the dtype, XLA."""
    if _form(layer.input_quantizer) != "sign":
        return f"input_quantizer={layer.input_quantizer!r} does not output only -1 and +1"
    if _form(layer.kernel_quantizer) not in ("sign", "scaled_sign"):
        return f"the kernel quantizer {layer.kernel_quantizer!r} does not output (scaled) signs"
    dtype = tf.as_dtype(inputs.dtype)
    if dtype not in _OP_DTYPES:
        return f"inputs of dtype {dtype.name} (the ops compute in float32)"
    if in_xla_context():
        if not getattr(layer, "_warned_xla", False):
            layer._warned_xla = True
            warnings.warn(
                f"Layer '{layer.name}' ({type(layer).__name__}): the lowbit TF ops have no XLA "
                "kernels, so this call, traced for XLA (jit_compile=True), runs the float "
                "emulation. Compile without XLA (jit_compile=False) to run the bitwise ops.",
                RuntimeWarning,
                stacklevel=4,
            )
        return "XLA compilation (jit_compile)"
    return None


def _conv_problem(layer: Any, inputs: Any) -> str | None:
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r} (the ops are channels_last)"
    if layer.padding == "same" and layer.pad_values not in (0.0, 1.0):
        return f"pad_values={layer.pad_values} (the ops pad with 0 or 1)"
    return _common_problem(layer, inputs)


def conv2d_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBconv2d cannot run this QuantConv2D call, or None."""
    return _conv_problem(layer, inputs)


def depthwise_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBDepthwiseConv2d cannot run this QuantDepthwiseConv2D call, or None."""
    return _conv_problem(layer, inputs)


def dense_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBgemm cannot run this QuantDense call, or None."""
    return _common_problem(layer, inputs)


def _signs_and_scale(
    layer: Any, kernel: tf.Tensor, channel_axes: list[int]
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(the kernel's +-1 values, the per-output-channel scale or None).

    For a "scaled_sign" kernel, alpha = max |q_k(W)| over `channel_axes` (every
    value of a channel has that magnitude), a constant for the gradient; a
    channel of zeros (alpha 0) is divided by 1 instead and keeps multiplier 0.
    """
    if _form(layer.kernel_quantizer) == "sign":
        return kernel, None
    alpha = tf.stop_gradient(tf.reduce_max(tf.abs(kernel), axis=channel_axes))
    divisor = tf.where(alpha > 0, alpha, tf.ones_like(alpha))
    return kernel / divisor, tf.reshape(alpha, [-1])


def _float32(value: Any) -> tf.Tensor:
    value = tf.convert_to_tensor(value)
    return value if value.dtype == tf.float32 else tf.cast(value, tf.float32)


def _fused_relu(layer: Any) -> bool:
    """Whether the op fuses the layer's activation: Keras's plain relu
    (max(x, 0), gradient where the output is > 0) is the ops' "relu", when no
    bias comes between. The bias is added after the op, as the emulation adds
    it, rather than by the op's bias input: the values would be the same, but
    its gradient, a float sum over the batch and pixels, would be summed in
    another order (differences of a few 1e-6 relative)."""
    return not layer.use_bias and layer.activation is keras.activations.relu


def _finish(layer: Any, outputs: tf.Tensor, dtype: tf.DType, fused_relu: bool) -> tf.Tensor:
    """The op's float32 outputs in the layer's compute dtype, with the bias
    and the activation the op did not fuse."""
    if outputs.dtype != dtype:
        outputs = tf.cast(outputs, dtype)
    if layer.use_bias:
        outputs = keras.ops.add(outputs, layer.bias)  # the last axis: channels_last
    if not fused_relu and layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def conv2d(layer: Any, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A QuantConv2D's output (bias and activation included) by LowbitBconv2d,
    from the quantized inputs and kernel. A grouped conv is one op per group."""
    dtype = inputs.dtype
    signs, alpha = _signs_and_scale(layer, _float32(kernel), [0, 1, 2])
    relu = _fused_relu(layer)
    groups = layer.groups
    x_parts = tf.split(_float32(inputs), groups, axis=-1) if groups > 1 else [_float32(inputs)]
    w_parts = tf.split(signs, groups, axis=-1) if groups > 1 else [signs]

    def part(values: tf.Tensor | None, index: int) -> tf.Tensor | None:
        if values is None or groups == 1:
            return values
        return tf.split(values, groups)[index]

    outputs = [
        ops.bconv2d(
            x, w, part(alpha, i),
            strides=tuple(layer.strides),
            dilations=tuple(layer.dilation_rate),
            padding=layer.padding.upper(),
            pad_value=int(layer.pad_values) if layer.padding == "same" else 0,
            activation="relu" if relu else None,
        )  # fmt: skip
        for i, (x, w) in enumerate(zip(x_parts, w_parts, strict=True))
    ]
    outputs = tf.concat(outputs, axis=-1) if groups > 1 else outputs[0]
    return _finish(layer, outputs, dtype, relu)


def dense(layer: Any, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A QuantDense's output (bias and activation included) by LowbitBgemm."""
    dtype = inputs.dtype
    signs, alpha = _signs_and_scale(layer, _float32(kernel), [0])
    relu = _fused_relu(layer)
    outputs = ops.bgemm(
        _float32(inputs), signs, alpha, activation="relu" if relu else None
    )
    return _finish(layer, outputs, dtype, relu)


def depthwise_conv2d(layer: Any, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    """A QuantDepthwiseConv2D's output (bias and activation included) by
    LowbitBDepthwiseConv2d.

    The op reads a bit-packed filter and gives the inputs, multiplier and bias
    their gradients; the kernel's is attached here: the op computes
    conv(x, q_k(W)) (alpha times the dot of signs, alpha constant), linear in
    q_k(W), so dL/dq_k(W) is TensorFlow's depthwise filter backprop of the
    quantized inputs, padded as the op pads them.
    """
    dtype = inputs.dtype
    x = _float32(inputs)
    w = _float32(kernel)
    signs, alpha = _signs_and_scale(layer, w, [0, 1])
    kh, kw = layer.kernel_size
    pad_value = int(layer.pad_values) if layer.padding == "same" else 0
    outputs = ops.bdepthwise_conv2d(
        x, ops.pack_depthwise_filter(signs), alpha,
        kernel_size=(kh, kw),
        depth_multiplier=layer.depth_multiplier,
        strides=tuple(layer.strides),
        dilations=tuple(layer.dilation_rate),
        padding=layer.padding.upper(),
        pad_value=pad_value,
    )  # fmt: skip
    outputs = _with_kernel_gradient(layer, outputs, x, w, pad_value)
    return _finish(layer, outputs, dtype, fused_relu=False)


def _with_kernel_gradient(
    layer: Any, outputs: tf.Tensor, x: tf.Tensor, kernel: tf.Tensor, pad_value: int
) -> tf.Tensor:
    """`outputs` unchanged, with dL/dkernel = the depthwise filter backprop."""

    @tf.custom_gradient
    def attach(y: tf.Tensor, w: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            padded = x
            if layer.padding == "same":
                size = tf.shape(x)
                pads = [[0, 0], [0, 0], [0, 0], [0, 0]]
                for axis, k, s, d in zip(
                    (1, 2), layer.kernel_size, layer.strides, layer.dilation_rate, strict=True
                ):
                    pads[axis] = list(same_padding(size[axis], k, s, d))
                padded = tf.pad(x, pads, constant_values=float(pad_value))
            # The float depthwise conv's filter gradient (TensorFlow handles
            # the dilation); only its backward pass runs.
            with tf.GradientTape() as tape:
                tape.watch(w)
                y_float = tf.nn.depthwise_conv2d(
                    padded, w, strides=[1, *layer.strides, 1], padding="VALID",
                    dilations=tuple(layer.dilation_rate),
                )  # fmt: skip
            return dy, tape.gradient(y_float, w, output_gradients=dy)

        return tf.identity(y), grad

    return attach(outputs, kernel)
