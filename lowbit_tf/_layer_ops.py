r"""The forward pass of a quantized Keras layer on the bitwise TF ops.

`lowbit_tf.layers` asks two things of this module: can an op run this call
(`conv2d_problem`, `conv3d_problem`, `dense_problem`, `depthwise_problem`,
`separable_problem`, `fastfood_problem`: None, or the reason in words), and,
when it can, the layer's output through the op (`conv2d`, `conv3d`, `dense`,
`depthwise_conv2d`, `separable_conv`, `fastfood`). The multi-bit
layers' are in lowbit_tf/_multibit_ops.py, which uses the helpers here.
Everything else (the quantizers, their gradients, the flip-ratio metric, the
gradient quantizer) stays in the layer, which hands over the quantized values:
the inputs ``q_i(x)`` and the kernel ``q_k(W)``.

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

The other ranks of Larq's convolutions (lowbit_tf/conv_layers.py) on the same
2-D ops. A 1-D conv is a 2-D one of height 1: inputs [B, 1, L, C], kernel
[1, k, C, F] (`_op_kernel`, `_plane`); "causal" padding cannot run there (the
op pads SAME or VALID, and a zero pad written into the input would be
binarised to +1). A 3-D conv is a sum over its depth taps of 2-D convs of
depth-strided input slices (`conv3d`: the op's leading dimensions are a
batch). A separable conv's depthwise half runs on the depthwise op, its
float pointwise half as the emulation runs it (`separable_conv`).

Bit-packed weights. In training the conv and dense ops take the float
quantized kernel and pack it inside the op, once per forward pass, which is
once per weight update. Inference calls (``training=False``) read the kernel
packed once per weight update from the layer's PackedKernelCache
(lowbit_tf/_packed_kernel.py). QuantConv2D's training gradient is
`_bconv2d_of_signs`'s (see there why not the op's registered one).

Fallbacks (the layer keeps the emulation, silently; the reason is logged at
DEBUG level): an input or kernel quantizer whose values are not binary, a
`pad_values` other than 0 and 1, `channels_first`, a causal 1-D conv, a
float64 compute dtype
(float16 / bfloat16 run the op in float32: +-1 values and their integer sums
are exact there), and XLA: the ops have no XLA kernels, so a call traced under
``jit_compile`` runs the emulation (with a warning, once per layer). The
layers tell Keras they do not support XLA (``supports_jit``), so
``model.compile(jit_compile=True)`` proceeds without XLA, with Keras's own
warning, and ``jit_compile="auto"`` resolves to False.
"""

from __future__ import annotations

import functools
import logging
import math
import warnings
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from lowbit_tf import ops
from lowbit_tf import quantizers as lb_quantizers
from lowbit_tf._geometry import same_padding
from lowbit_tf._keras import keras, kops
from lowbit_tf._native import tf_ops_problem
from lowbit_tf._packed_kernel import PackedKernelCache

__all__ = [
    "conv2d",
    "conv2d_problem",
    "conv3d",
    "conv3d_problem",
    "dense",
    "dense_problem",
    "fastfood",
    "fastfood_problem",
    "depthwise_conv2d",
    "depthwise_problem",
    "in_xla_context",
    "separable_conv",
    "separable_problem",
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


def _library_problem() -> str | None:
    """Why the op library cannot be used (warned once per process), or None."""
    problem = tf_ops_problem()
    if problem is not None:
        _warn_once(
            "lowbit_tf's quantized layers compute with the float emulation: the lowbit TF "
            f"op library cannot be loaded. {problem}"
        )
    return problem


@functools.cache
def _warn_once(message: str) -> None:
    warnings.warn(message, RuntimeWarning, stacklevel=6)


def _common_problem(layer: Any, inputs: Any) -> str | None:
    """Reasons shared by the binary layers: the quantizers' values, the dtype,
    then those of every layer."""
    if _form(layer.input_quantizer) != "sign":
        return f"input_quantizer={layer.input_quantizer!r} does not output only -1 and +1"
    if _form(layer.kernel_quantizer) not in ("sign", "scaled_sign"):
        return f"the kernel quantizer {layer.kernel_quantizer!r} does not output (scaled) signs"
    dtype = tf.as_dtype(inputs.dtype)
    if dtype not in _OP_DTYPES:
        return f"inputs of dtype {dtype.name} (the ops compute in float32)"
    return _runtime_problem(layer)


def _runtime_problem(layer: Any) -> str | None:
    """Reasons of every layer: XLA, the op library."""
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
    return _library_problem()


def _conv_problem(layer: Any, inputs: Any) -> str | None:
    if layer.data_format != "channels_last":
        return f"data_format={layer.data_format!r} (the ops are channels_last)"
    if layer.padding == "same" and layer.pad_values not in (0.0, 1.0):
        return f"pad_values={layer.pad_values} (the ops pad with 0 or 1)"
    return _common_problem(layer, inputs)


def conv2d_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBconv2d cannot run this QuantConv2D / QuantConv1D call, or None."""
    if layer.padding == "causal":
        return ('padding="causal" (the op pads SAME or VALID, and a zero pad written into '
                "the input would be binarised to +1)")  # fmt: skip
    return _conv_problem(layer, inputs)


def conv3d_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBconv2d (one call per depth tap) cannot run this QuantConv3D call, or None."""
    return _conv_problem(layer, inputs)


def depthwise_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBDepthwiseConv2d cannot run this QuantDepthwiseConv2D call, or None."""
    return _conv_problem(layer, inputs)


def separable_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBDepthwiseConv2d cannot run the depthwise half of this
    QuantSeparableConv1D / QuantSeparableConv2D call (its kernel quantizer is
    the depthwise one), or None."""
    return _conv_problem(layer, inputs)


def dense_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitBgemm cannot run this QuantDense call, or None."""
    return _common_problem(layer, inputs)


def _pair(value: Any) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (int(value[0]), int(value[1]))


def fastfood_problem(layer: Any, inputs: Any) -> str | None:
    """Why LowbitFastfood cannot run this FastfoodDense call, or None. The op
    computes in float32 with the layer's operations in their order (bit for
    bit); another compute dtype keeps the TensorFlow ops."""
    dtype = tf.as_dtype(inputs.dtype)
    if dtype != tf.float32 or layer.b.dtype != tf.float32:
        return f"inputs of dtype {dtype.name} (the op is float32)"
    return _runtime_problem(layer)


def fastfood(layer: Any, inputs: tf.Tensor) -> tf.Tensor:
    """A FastfoodDense's output (bias and activation included) by LowbitFastfood,
    with its exact registered gradients for the inputs, B, G, S and the bias."""
    relu = layer.activation is keras.activations.relu
    outputs = ops.fastfood(
        inputs, layer.b, layer.g, layer.s, layer.permutation, layer.bias,
        units=layer.units, activation="relu" if relu else None,
    )  # fmt: skip
    if not relu and layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


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
        outputs = kops.add(outputs, layer.bias)  # the last axis: channels_last
    if not fused_relu and layer.activation is not None:
        outputs = layer.activation(outputs)
    return outputs


def is_inference(training: Any) -> bool:
    """True for an inference call: ``training`` False (a bool, or a tensor whose
    value is known to be False). None is not: custom training loops call
    ``model(x)`` under a GradientTape and need the kernel's gradient."""
    if tf.is_tensor(training):
        training = tf.get_static_value(training)
    return training is not None and not bool(training)


def _is_ops_ste_sign(quantizer: Any) -> bool:
    """ste_sign with clip 1: sign forward, 1{|x| <= 1} backward, which is what
    the ops do themselves with a float input (lowbit_tf/ops.py)."""
    if quantizer is lb_quantizers.ste_sign:
        return True
    return type(quantizer) is lb_quantizers.SteSign and quantizer.clip_value == 1.0


def _op_inputs(layer: Any, inputs: Any, training: Any) -> tf.Tensor:
    """The float32 inputs for the op: the quantized ones, or, at inference with
    a plain ste_sign input quantizer, the inputs themselves (the op takes the
    same signs and has the same gradient, and two passes over the activations
    are saved)."""
    if not (is_inference(training) and _is_ops_ste_sign(layer.input_quantizer)):
        inputs = layer.quantize_inputs(inputs, training)
    return _float32(inputs)


def _plane(values: Any) -> tuple[int, int]:
    """A conv attribute (kernel size, strides, dilations) on the op's (height,
    width) plane: the last two spatial axes; a 1-D conv's one axis is the
    width, of height 1. (A 3-D conv's depth is handled by `conv3d`.)"""
    return tuple(int(v) for v in (1, *values)[-2:])


def _op_kernel(layer: Any, training: Any) -> tf.Tensor:
    """The quantized kernel in float32 and in the op's layout: a 1-D conv's
    [k, C, F] as [1, k, C, F] (height 1), every other one as it is."""
    kernel = _float32(layer.quantized_kernel(training))
    return tf.expand_dims(kernel, 0) if getattr(layer, "rank", None) == 1 else kernel


def _kernel_for_training(
    layer: Any, training: Any, channel_axes: list[int]
) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(+-1 float kernel, scale or None) from the quantized kernel, differentiable;
    the inference cache is marked stale (an optimizer step may follow)."""
    if layer._packed_kernel is not None:
        layer._packed_kernel.mark_stale()
    return _signs_and_scale(layer, _op_kernel(layer, training), channel_axes)


def _cached_kernel(
    layer: Any, pack: Callable[[tf.Tensor], tf.Tensor], channel_axes: list[int]
) -> tuple[tf.Tensor, tf.Tensor]:
    """(packed filter, scale) for an inference call, from the layer's cache."""

    def compute() -> tuple[tf.Tensor, tf.Tensor]:
        signs, alpha = _signs_and_scale(layer, _op_kernel(layer, False), channel_axes)
        if alpha is None:  # one scale per output channel all the same
            alpha = tf.ones_like(tf.reduce_max(signs, axis=channel_axes))
        return pack(signs), tf.reshape(alpha, [-1])

    return layer._packed_kernel.read(compute)


def packed_kernel_cache(layer: Any) -> PackedKernelCache | None:
    """The inference cache of a built layer on the binary ops (QuantConv1D/2D/3D,
    QuantDense, QuantDepthwiseConv2D, QuantSeparableConv1D/2D) whose kernel
    quantizer outputs (scaled) signs, else None. A separable layer's cached
    kernel is its depthwise one."""
    if _form(layer.kernel_quantizer) not in ("sign", "scaled_sign"):
        return None
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return None
    if isinstance(layer, keras.layers.Conv2DTranspose):  # packs per phase, every call
        return None
    depthwise = getattr(layer, "depthwise_kernel", None)
    kernel = layer.kernel if depthwise is None else depthwise
    *window, channels, out = (int(d) for d in kernel.shape)
    if depthwise is not None:  # [(kh,) kw, C, multiplier]: one packed word row per tap
        packed = [*_plane(window), ops.packed_words(channels * out)]
        out *= channels
    elif len(window) == 3:  # conv 3-D: one packed 2-D filter per depth tap
        kd, kh, kw = window
        packed = [kd, out, ops.packed_words(kh * kw * channels)]
    else:  # conv 1-D/2-D (a row of k * (C_in / groups) bits per output channel), dense
        packed = [out, ops.packed_words(math.prod(window) * channels)]
    return PackedKernelCache(packed, out, layer.name)


def _conv_attrs(layer: Any) -> dict[str, Any]:
    return dict(
        strides=_plane(layer.strides),
        dilations=_plane(layer.dilation_rate),
        padding=layer.padding.upper(),
        pad_value=int(layer.pad_values) if layer.padding == "same" else 0,
    )


def conv2d(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    """A QuantConv2D's or QuantConv1D's output (bias and activation included)
    by LowbitBconv2d; a 1-D conv runs on inputs [B, 1, L, C]."""
    dtype = inputs.dtype
    x = _op_inputs(layer, inputs, training)
    if layer.rank == 1:
        x = tf.expand_dims(x, -3)
    relu = _fused_relu(layer)
    packed = is_inference(training) and layer._packed_kernel is not None
    if packed:
        filters, scale = _cached_kernel(layer, functools.partial(_pack, layer), [0, 1, 2])
    else:
        filters, scale = _kernel_for_training(layer, training, [0, 1, 2])
    outputs = _grouped_bconv2d(layer, x, filters, scale, relu, packed)
    if layer.rank == 1:
        outputs = tf.squeeze(outputs, -3)
    return _finish(layer, outputs, dtype, relu)


def _pack(layer: Any, signs: tf.Tensor) -> tf.Tensor:
    """A 2-D conv's +-1 kernel [kh, kw, C_in / groups, F] packed for the op,
    the groups' packed filters one after the other: [F, words]."""
    parts = tf.split(signs, layer.groups, axis=-1) if layer.groups > 1 else [signs]
    return tf.concat([ops.pack_filter(part) for part in parts], axis=0)


def _grouped_bconv2d(
    layer: Any,
    x: tf.Tensor,
    filters: tf.Tensor,
    scale: tf.Tensor | None,
    relu: bool,
    packed: bool,
) -> tf.Tensor:
    """The layer's 2-D conv of x [..., H, W, C] on the op (`filters` the +-1
    kernel [kh, kw, C_in / groups, F], or `_pack`'s packed one): a grouped
    conv is one op per group, on the group's channels."""
    groups, attrs = layer.groups, _conv_attrs(layer)
    if packed:
        *window, channels, _ = layer.kernel.shape
        attrs.update(kernel_size=_plane(window), channels_in=int(channels))
        conv, split_axis = _bconv2d_packed, 0
    else:
        conv, split_axis = _bconv2d_of_signs, -1

    def part(values: tf.Tensor | None, index: int, axis: int = 0) -> tf.Tensor | None:
        if values is None or groups == 1:
            return values
        return tf.split(values, groups, axis=axis)[index]

    outputs = [
        conv(part(x, i, -1), part(filters, i, split_axis), part(scale, i), relu, attrs)
        for i in range(groups)
    ]
    return tf.concat(outputs, axis=-1) if groups > 1 else outputs[0]


def conv3d(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    r"""A QuantConv3D's output (bias and activation included) by LowbitBconv2d,
    one call per depth tap.

    Output depth o reads, through tap t, the (padded) input depth
    :math:`o s_d + t d_d`: so the 3-D conv is the sum over the kd taps of 2-D
    convs (the tap's [kh, kw, C, F] kernel) of the depth-strided slices
    ``x[:, t d_d :: s_d][:, :D_out]``, [B, D_out, H, W, C], whose leading
    dimensions the op takes as a batch. Each call gives integer dot products
    (multiplier 1), summed exactly in float32; the per-channel scale of a
    scaled kernel, the bias and the activation follow once, as in the
    emulation. Depth padding ("same"): pad value 1 pads the depth with +1
    inputs; pad value 0 pads it too (any value), and multiplies each tap's
    sums by a 0/1 mask over the output depths, 0 where the tap reads a padded
    depth, which then contributes nothing, as a zero does in the emulation.
    At inference the input is bit-packed once, before the slicing.
    The gradients are those of these operations: the per-tap convs' exact
    ones (`_bconv2d_of_signs`), and slicing, padding, masking and the sum's.
    """
    dtype = inputs.dtype
    x = _op_inputs(layer, inputs, training)
    kd, sd, dd = layer.kernel_size[0], layer.strides[0], layer.dilation_rate[0]
    packed = is_inference(training) and layer._packed_kernel is not None
    pad = 1.0
    if packed and layer.groups == 1:
        # Inference: the signs packed once here rather than by each of the kd
        # calls, whose depth slices are then 32x smaller copies (+1 is a 0 bit).
        x, pad = ops.bitpack(x), 0
    depth = x.shape[1] if x.shape[1] is not None else tf.shape(x)[1]
    before, after = same_padding(depth, kd, sd, dd) if layer.padding == "same" else (0, 0)
    out_depth = (depth + before + after - (kd - 1) * dd - 1) // sd + 1
    x = tf.pad(x, [[0, 0], [before, after], [0, 0], [0, 0], [0, 0]], constant_values=pad)
    mask = None
    if layer.padding == "same" and layer.pad_values == 0.0:
        # Tap t at output depth o reads the padded depth o * sd + t * dd,
        # a real one in [before, before + depth).
        read = tf.range(out_depth)[None, :] * sd + tf.range(kd)[:, None] * dd
        mask = tf.cast((read >= before) & (read < before + depth), tf.float32)
        mask = tf.reshape(mask, [kd, -1, 1, 1, 1])
    if packed:

        def pack(signs: tf.Tensor) -> tf.Tensor:  # [kd, F, words]
            return tf.stack([_pack(layer, signs[t]) for t in range(kd)])

        filters, scale = _cached_kernel(layer, pack, [0, 1, 2, 3])
    else:
        filters, scale = _kernel_for_training(layer, training, [0, 1, 2, 3])
    outputs = None
    for t in range(kd):
        start = t * dd
        taps = x[:, start : start + (out_depth - 1) * sd + 1 : sd]
        partial = _grouped_bconv2d(layer, taps, filters[t], None, False, packed)
        if mask is not None:
            partial = partial * mask[t]
        outputs = partial if outputs is None else outputs + partial
    if _form(layer.kernel_quantizer) == "scaled_sign":
        outputs = outputs * scale
    return _finish(layer, outputs, dtype, fused_relu=False)


def _bconv2d_packed(
    x: tf.Tensor, packed: tf.Tensor, scale: tf.Tensor, relu: bool, attrs: dict[str, Any]
) -> tf.Tensor:
    """LowbitBconv2d on a packed filter (inference; x gets the op's gradient)."""
    return ops.bconv2d(x, packed, scale, activation="relu" if relu else None, **attrs)


def _bconv2d_of_signs(
    x: tf.Tensor, w: tf.Tensor, scale: tf.Tensor | None, relu: bool, attrs: dict[str, Any]
) -> tf.Tensor:
    """y = relu?(scale * conv(x, w)) by LowbitBconv2d, x and w the quantized
    (+-1) inputs and kernel signs, with the exact gradient of that conv.

    The op's registered gradient would give the same values, but it takes its
    float inputs for arbitrary floats: it binarises them again and applies the
    straight-through mask 1{|v| <= 1}, seven passes over the activations that
    are the identity on +-1 values and cost a third of a QuickNet training
    step's gain. Both use ops.sign_conv2d_grads, the one derivation of the
    conv's gradient."""
    kh, kw = int(w.shape[0]), int(w.shape[1])
    # "SAME", "VALID" or ((top, bottom), (left, right)): the op's attributes.
    padding, explicit_pads = ops.explicit_padding_attrs(attrs["padding"])
    grad_attrs = dict(
        kernel_h=kh, kernel_w=kw, stride_h=attrs["strides"][0], stride_w=attrs["strides"][1],
        dilation_h=attrs["dilations"][0], dilation_w=attrs["dilations"][1],
        padding=padding, pad_value=attrs["pad_value"], **explicit_pads,
    )  # fmt: skip

    @tf.custom_gradient
    def conv(x: tf.Tensor, w: tf.Tensor) -> Any:
        y = ops.bconv2d(x, w, scale, activation="relu" if relu else None, **attrs)

        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            if relu:
                dy = tf.where(y > 0, dy, tf.zeros_like(dy))
            if scale is not None:
                dy = dy * scale
            return ops.sign_conv2d_grads(x, w, dy, grad_attrs)

        return y, grad

    return conv(x, w)


def dense(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    """A QuantDense's output (bias and activation included) by LowbitBgemm."""
    dtype = inputs.dtype
    x = _op_inputs(layer, inputs, training)
    relu = _fused_relu(layer)
    if is_inference(training) and layer._packed_kernel is not None:
        filters, scale = _cached_kernel(layer, ops.pack_dense_kernel, [0])
        packed = dict(channels_in=int(layer.kernel.shape[0]))
    else:
        (filters, scale), packed = _kernel_for_training(layer, training, [0]), {}
    outputs = ops.bgemm(x, filters, scale, activation="relu" if relu else None, **packed)
    return _finish(layer, outputs, dtype, relu)


def depthwise_conv2d(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    """A QuantDepthwiseConv2D's output (bias and activation included) by
    LowbitBDepthwiseConv2d."""
    dtype = inputs.dtype
    outputs = _bdepthwise(layer, _op_inputs(layer, inputs, training), training)
    return _finish(layer, outputs, dtype, fused_relu=False)


def separable_conv(layer: Any, inputs: tf.Tensor, training: Any) -> tf.Tensor:
    """A QuantSeparableConv1D's / 2D's output (bias and activation included):
    the depthwise half by LowbitBDepthwiseConv2d (a 1-D layer on inputs
    [B, 1, L, C]), then, as the emulation (``tf.nn.separable_conv2d``) does,
    the float 1x1 conv of its outputs, in the compute dtype, with the
    quantized pointwise kernel (not binarised: the depthwise outputs are not)."""
    dtype = inputs.dtype
    x = _op_inputs(layer, inputs, training)
    if layer.rank == 1:
        x = tf.expand_dims(x, -3)
    depthwise = tf.cast(_bdepthwise(layer, x, training), dtype)
    pointwise = tf.convert_to_tensor(layer.quantized_pointwise_kernel(training))
    if layer.rank == 1:
        pointwise = tf.expand_dims(pointwise, 0)
    outputs = tf.nn.conv2d(depthwise, pointwise, strides=1, padding="VALID")
    if layer.rank == 1:
        outputs = tf.squeeze(outputs, -3)
    return _finish(layer, outputs, dtype, fused_relu=False)


def _bdepthwise(layer: Any, x: tf.Tensor, training: Any) -> tf.Tensor:
    """The layer's depthwise conv of x [B, H, W, C] (float32) by
    LowbitBDepthwiseConv2d, no bias.

    The op reads a bit-packed filter and gives the inputs, multiplier and bias
    their gradients; the kernel's is attached here: the op computes
    conv(x, q_k(W)) (alpha times the dot of signs, alpha constant), linear in
    q_k(W), so dL/dq_k(W) is TensorFlow's depthwise filter gradient of the
    quantized inputs, padded as the op pads them.
    """
    attrs = dict(kernel_size=_plane(layer.kernel_size), depth_multiplier=layer.depth_multiplier,
                 **_conv_attrs(layer))  # fmt: skip
    if is_inference(training) and layer._packed_kernel is not None:
        packed, scale = _cached_kernel(layer, ops.pack_depthwise_filter, [0, 1])
        return ops.bdepthwise_conv2d(x, packed, scale, **attrs)
    if layer._packed_kernel is not None:
        layer._packed_kernel.mark_stale()
    kernel = _op_kernel(layer, training)
    signs, alpha = _signs_and_scale(layer, kernel, [0, 1])
    outputs = ops.bdepthwise_conv2d(x, ops.pack_depthwise_filter(signs), alpha, **attrs)
    return _with_kernel_gradient(outputs, x, kernel, attrs)


def _with_kernel_gradient(
    outputs: tf.Tensor, x: tf.Tensor, kernel: tf.Tensor, attrs: dict[str, Any]
) -> tf.Tensor:
    """`outputs` unchanged, with dL/dkernel = the depthwise filter backprop
    (`attrs`: the op's kernel_size, strides, dilations, padding, pad_value)."""

    @tf.custom_gradient
    def attach(y: tf.Tensor, w: tf.Tensor) -> Any:
        def grad(dy: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            padded = x
            if attrs["padding"] == "SAME":
                size = tf.shape(x)
                pads = [[0, 0], [0, 0], [0, 0], [0, 0]]
                geometry = (attrs["kernel_size"], attrs["strides"], attrs["dilations"])
                for axis, k, s, d in zip((1, 2), *geometry, strict=True):
                    pads[axis] = list(same_padding(size[axis], k, s, d))
                padded = tf.pad(x, pads, constant_values=float(attrs["pad_value"]))
            # The float depthwise conv's filter gradient (TensorFlow handles
            # the dilation); only its backward pass runs.
            with tf.GradientTape() as tape:
                tape.watch(w)
                y_float = tf.nn.depthwise_conv2d(
                    padded, w, strides=[1, *attrs["strides"], 1], padding="VALID",
                    dilations=attrs["dilations"],
                )  # fmt: skip
            return dy, tape.gradient(y_float, w, output_gradients=dy)

        return tf.identity(y), grad

    return attach(outputs, kernel)
