"""Lowering: a trained Keras model -> the same model on lowbit custom ops.

Each binary QuantConv2D becomes a `LoweredBConv2D` layer that calls the
`LowbitBconv2d` TF op with a bit-packed constant filter, and each binary
QuantDense a `LoweredBDense` (lower_dense.py) that calls `LowbitBgemm` over its
input's last axis, whatever the leading dimensions. Binary means: the input
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
the next LowbitBconv2d or LowbitBgemm reads the packed int32 tensor: no float
tensor between them. Chains the packed ops cannot express (grouped convs on either side, a
conv whose own non-ReLU activation runs afterwards, a channels_first pool,
several consumers, a model output in between) stay on the float path.

Epilogue. What follows a binary conv's fused ReLU in residual networks
such as QuickNet, conv -> ReLU -> BatchNormalization -> Add(shortcut), would
be three more passes over its float output as TFLite builtins; instead it is
fused into the op's epilogue (docs/custom_ops.md): the BatchNormalization
after the ReLU becomes the post_multiplier and post_bias, and an Add of the
result with one other tensor of the same shape takes that tensor as the op's
residual input. In the lowered model the Add's slot then runs the op, on the
conv's input passed through to it (the conv, its folded layers and the
post-ReLU BatchNorm become pass-throughs).

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

from lowbit_converter.folding import (
    ConversionError,
    activation_name,
    fold_batch_norm,
    fused_and_trailing_activation,
    is_plain_relu,
    is_sign_quantizer,
)
from lowbit_converter.graph import model_graph
from lowbit_converter.lower_fastfood import LoweredFastfood, plan_fastfood
from lowbit_converter.lower_multibit import (
    LoweredMultibitConv2D,
    Planes,
    is_multibit_layer,
)
from lowbit_converter.lower_multibit import (
    check_convertible as check_multibit_convertible,
)
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import QuantConv2D, QuantDense


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
    # A multi-bit layer (lower_multibit.py): its planes; None for a binary conv.
    multibit: Planes | None = None
    # The epilogue (see the module docstring): a BatchNormalization after the
    # fused ReLU, and an Add with `residual_index`, the position of the other
    # operand (the residual) among the Add's two inputs.
    post_batch_norm: keras.layers.BatchNormalization | None = None
    residual_add: keras.layers.Add | None = None
    residual_index: int = 0

    def has_epilogue(self) -> bool:
        return self.post_batch_norm is not None or self.residual_add is not None

    def epilogue_constants(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(post_multiplier, post_bias) of the post-ReLU BatchNorm, or None."""
        if self.post_batch_norm is None:
            return None
        filters = int(self.conv.kernel.shape[-1])
        scale, bias = fold_batch_norm(
            np.ones(filters, np.float64), np.zeros(filters, np.float64), self.post_batch_norm
        )
        return scale.astype(np.float32), bias.astype(np.float32)

    def chainable(self) -> bool:
        """True for the layers packed chains are made of: binary convs and
        dense layers (not multi-bit or depthwise ones)."""
        return self.multibit is None and isinstance(self.conv, QuantConv2D | QuantDense)

    def tail(self) -> str:
        """Name of the last layer this plan absorbs."""
        last = self.residual_add or self.post_batch_norm or self.relu or self.batch_norm
        return (last or self.conv).name

    def multiplier_and_bias(self) -> tuple[np.ndarray, np.ndarray]:
        filters = int(self.conv.kernel.shape[-1])
        bias = (
            np.asarray(self.conv.bias, np.float64)
            if self.conv.use_bias
            else np.zeros(filters, np.float64)
        )
        alpha = binary_kernel_scale(self.conv).astype(np.float64)
        multiplier, bias = fold_batch_norm(alpha, bias, self.batch_norm)
        return multiplier.astype(np.float32), bias.astype(np.float32)


class LoweredBinaryLayer(keras.layers.Layer):
    """What LoweredBConv2D and LoweredBDense share: the fused ReLU, the layer's
    own other activation (run as float ops afterwards) and the packed chain
    flags of the plan."""

    def __init__(self, plan: BConv2DPlan, **kwargs: Any) -> None:
        super().__init__(name=plan.conv.name, **kwargs)
        self.packed_output = plan.packed_output
        self.packed_input = plan.packed_input
        self.output_type = "bitpacked" if plan.packed_output else "float"
        # Any other activation of the layer itself runs as float ops afterwards.
        self.fused_activation, self.trailing_activation = fused_and_trailing_activation(plan)

    def finish(self, outputs: tf.Tensor) -> tf.Tensor:
        """The op's outputs, with the trailing activation if any."""
        if self.trailing_activation is not None:
            outputs = self.trailing_activation(outputs)
        return outputs


class LoweredBConv2D(LoweredBinaryLayer):
    """Inference-only stand-in for a binary QuantConv2D (+ BatchNorm + ReLU).

    Holds the bit-packed filter and the folded output transform as constants,
    so that tracing it gives one LowbitBconv2d op with constant inputs. A
    grouped conv (groups = g) becomes g ops on the g channel slices of the
    input, concatenated: output channels [i * C_out / g, (i + 1) * C_out / g)
    read input channels [i * C_in / g, (i + 1) * C_in / g) only.
    """

    def __init__(self, plan: BConv2DPlan, **kwargs: Any) -> None:
        super().__init__(plan, **kwargs)
        conv = plan.conv
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
        # The epilogue (groups == 1 only, see _plan_epilogue).
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
        return  # every binary dense layer maps to one LowbitBgemm
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


def _plan_for(layer: keras.layers.Layer) -> BConv2DPlan | None:
    """The plan of a layer a custom op runs, None for a layer that stays as it
    is (a float layer, or a quantized one with float inputs).

    Raises:
      ConversionError: for a quantized layer no custom op can run, naming it.
    """
    # lower_depthwise builds on this module, so it is imported here.
    from lowbit_converter.lower_depthwise import plan_binary_depthwise

    if is_binary_conv(layer):
        _check_convertible(layer)
        return BConv2DPlan(layer)
    depthwise = plan_binary_depthwise(layer)
    if depthwise is not None:
        return depthwise
    if is_multibit_layer(layer):
        return BConv2DPlan(layer, multibit=check_multibit_convertible(layer))
    return None


def plan_lowering(
    model: keras.Model, *, packed_chains: bool = True, float_fallback: bool = False
) -> dict[str, BConv2DPlan]:
    """Finds the binary and multi-bit layers and what folds into each, keyed by
    layer name.

    packed_chains: also mark the chains of binary layers that can stay
    bit-packed (see the module docstring).
    float_fallback: keep a quantized layer no custom op can run as float ops
    instead of raising ConversionError."""
    graph = model_graph(model)
    layers = {layer.name: layer for layer in model.layers}
    plans: dict[str, BConv2DPlan] = {}
    for layer in model.layers:
        try:
            plan = _plan_for(layer)
        except ConversionError:
            if float_fallback:
                continue
            raise
        if plan is None:
            continue
        tail = layer.name
        nxt = layers.get(graph.only_consumer(tail) or "")
        if (
            activation_name(layer.activation) is None
            and isinstance(nxt, keras.layers.BatchNormalization)
            and nxt.axis in (-1, len(layer.output.shape) - 1)  # per output channel
        ):
            plan.batch_norm = nxt
            tail = nxt.name
            nxt = layers.get(graph.only_consumer(tail) or "")
        if activation_name(layer.activation) is None and nxt is not None and is_plain_relu(nxt):
            plan.relu = nxt
        _plan_epilogue(graph, layers, plan)
        plans[layer.name] = plan
    if packed_chains:
        _plan_packed_chains(graph, layers, plans)
    return plans


def _plan_epilogue(
    graph: Any, layers: dict[str, keras.layers.Layer], plan: BConv2DPlan
) -> None:
    """Finds what the op's epilogue can take over after a binary conv (see the
    module docstring): a BatchNormalization after its fused ReLU, then an Add
    of two tensors of the conv's output shape."""
    conv = plan.conv
    fused, trailing = fused_and_trailing_activation(plan)
    if (
        type(plan) is not BConv2DPlan  # depthwise plans have their own op
        or plan.multibit is not None
        or not isinstance(conv, QuantConv2D)
        or conv.groups != 1
        or trailing is not None
    ):
        return
    tail = plan.tail()
    nxt = layers.get(graph.only_consumer(tail) or "")
    if (
        fused == "relu"
        and isinstance(nxt, keras.layers.BatchNormalization)
        and nxt.axis in (-1, len(conv.output.shape) - 1)
    ):
        plan.post_batch_norm = nxt
        tail = nxt.name
    consumer = graph.sole_consumer(tail)
    if consumer is None:
        return
    add = layers.get(consumer)
    operands = graph.inputs_of.get(consumer, [])
    if (
        not isinstance(add, keras.layers.Add)
        or len(operands) != 2
        or operands.count(tail) != 1
        or any(tuple(t.shape) != tuple(conv.output.shape) for t in add.input)
    ):
        return
    plan.residual_add = add
    plan.residual_index = 1 - operands.index(tail)


def _groups(layer: keras.layers.Layer) -> int:
    return 1 if isinstance(layer, QuantDense) else int(getattr(layer, "groups", 1))


def _plan_packed_chains(
    graph: Any, layers: dict[str, keras.layers.Layer], plans: dict[str, BConv2DPlan]
) -> None:
    """Marks the binary convs whose output is only re-binarised (see the module
    docstring) and the MaxPooling2D between them."""
    for plan in plans.values():
        conv = plan.conv
        tail = plan.tail()
        if (
            plan.has_epilogue()
            or not plan.chainable()
            or _groups(conv) != 1
            or fused_and_trailing_activation(plan)[1] is not None
        ):
            continue
        nxt = layers.get(graph.only_consumer(tail) or "")
        pool = None
        if isinstance(nxt, keras.layers.MaxPooling2D):
            if nxt.data_format != "channels_last" or nxt.padding not in ("same", "valid"):
                continue
            pool = nxt
            nxt = layers.get(graph.only_consumer(nxt.name) or "")
        if (
            nxt is None
            or nxt.name not in plans
            or not plans[nxt.name].chainable()
            or _groups(nxt) != 1
        ):
            continue
        if pool is not None and isinstance(conv, QuantDense):
            continue  # a pool after a dense layer is not a 2-D pool of its channels
        plan.packed_output = True
        plan.pool = pool
        plans[nxt.name].packed_input = True


def lower_model(
    model: keras.Model, *, packed_chains: bool = True, float_fallback: bool = False
) -> tuple[keras.Model, dict[str, Any]]:
    """Returns (the lowered model, the plans applied: a BConv2DPlan per binary
    or multi-bit layer and a FastfoodPlan per FastfoodDense, see
    lower_fastfood.py).

    packed_chains: let chains of binary layers pass packed int32 tensors
    between them (what `convert` does by default); off, every lowered layer's
    output keeps the meaning (and dtype) of the Keras layer's output, which is
    handy for inspecting intermediate tensors.

    The lowered model shares every non-lowered layer (and its weights) with
    `model`; folded BatchNorm and ReLU layers become pass-throughs.
    """
    if not model.built:
        raise ConversionError(f"model {model.name!r} is not built; call it once or give inputs")
    # Models used as layers are lowered on their own (recursively) and stand in
    # for themselves; their plans are reported as "<model>/<layer>". Folding and
    # packed chains stay inside each model: a BatchNorm in the outer model after
    # a nested binary conv is kept as a float op (correct, one pass slower).
    nested: dict[str, keras.Model] = {}
    nested_plans: dict[str, Any] = {}
    for layer in model.layers:
        if not isinstance(layer, keras.Model):
            continue
        if not _is_graph_model(layer):
            _check_opaque_model(layer, float_fallback)
            continue
        lowered_inner, inner_plans = lower_model(
            layer, packed_chains=packed_chains, float_fallback=float_fallback
        )
        if inner_plans:
            nested[layer.name] = lowered_inner
            nested_plans.update({f"{layer.name}/{name}": plan
                                 for name, plan in inner_plans.items()})
    plans = plan_lowering(model, packed_chains=packed_chains, float_fallback=float_fallback)
    fastfood = plan_fastfood(model)
    folded = {
        fused.name
        for plan in plans.values()
        for fused in (plan.batch_norm, plan.relu, plan.post_batch_norm)
        if fused is not None
    }
    # Plans whose op runs in the slot of the residual Add (see the module
    # docstring), by the Add's name; their conv's own slot passes its input on.
    residual_adds = {
        plan.residual_add.name: plan for plan in plans.values() if plan.residual_add is not None
    }
    pools = {
        plan.pool.name: (plan.pool, int(plan.conv.kernel.shape[-1]))
        for plan in plans.values()
        if plan.pool is not None
    }

    # The dense and depthwise paths live in their own modules, which build on this one.
    from lowbit_converter.lower_dense import LoweredBDense
    from lowbit_converter.lower_depthwise import BDepthwisePlan, LoweredBDepthwiseConv2D

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer.name in nested:
            return nested[layer.name]
        if isinstance(plans.get(layer.name), BDepthwisePlan):
            return LoweredBDepthwiseConv2D(plans[layer.name])
        if layer.name in residual_adds:
            return LoweredBConv2D(residual_adds[layer.name])
        if layer.name in plans and plans[layer.name].residual_add is not None:
            return FoldedAway(name=f"{layer.name}_input")
        if layer.name in plans:
            plan = plans[layer.name]
            if plan.multibit is not None:
                return LoweredMultibitConv2D(plan, plan.multibit)
            lowered_class = LoweredBDense if isinstance(plan.conv, QuantDense) else LoweredBConv2D
            return lowered_class(plan)
        if layer.name in fastfood:
            return LoweredFastfood(fastfood[layer.name])
        if layer.name in pools:
            return LoweredBMaxPool2D(*pools[layer.name])
        if layer.name in folded:
            return FoldedAway(name=layer.name)
        return layer

    lowered = keras.models.clone_model(model, clone_function=clone_function)
    return lowered, {**plans, **fastfood, **nested_plans}


def _is_graph_model(model: keras.Model) -> bool:
    """A Sequential or functional model, whose layers and wiring the converter
    can read (a subclassed model's call() is opaque to it)."""
    return isinstance(model, keras.Sequential) or "layers" in model.get_config()


def _check_opaque_model(model: keras.Model, float_fallback: bool) -> None:
    """A subclassed model used as a layer is converted as TensorFlow traces it:
    fine for float layers, but its quantized layers would silently stay float
    ops. Refused unless float_fallback."""
    from lowbit_tf.layers import FastfoodDense, QuantizedLayerMixin

    def layers_in(layer: Any) -> Any:
        for inner in getattr(layer, "layers", []):
            yield inner
            yield from layers_in(inner)

    quantized = [inner.name for inner in layers_in(model)
                 if isinstance(inner, QuantizedLayerMixin | FastfoodDense)]
    if quantized and not float_fallback:
        raise ConversionError(
            f"model {model.name!r} ({type(model).__name__}) is a subclassed model used as a "
            f"layer; its lowbit layers {quantized} cannot be lowered (the converter reads "
            "Sequential and functional models only). Build it as a functional or Sequential "
            "model, or pass float_fallback=True to keep them as float ops"
        )
