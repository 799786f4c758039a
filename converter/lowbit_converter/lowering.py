"""Lowering: a trained Keras model -> the same model on lowbit custom ops.

The registry `LOWERINGS` lists one `plans.Lowering` per kind of layer a custom
op runs, each in its own module with one planning and one lowering entry
point: lower_conv.py (binary QuantConv2D -> LowbitBconv2d), lower_dense.py
(binary QuantDense -> LowbitBgemm), lower_depthwise.py (binary
QuantDepthwiseConv2D -> LowbitBDepthwiseConv2d), lower_multibit.py (ABC-Net,
DoReFa, ternary -> LowbitMultibitConv2d), lower_fastfood.py (FastfoodDense ->
LowbitFastfood), lower_conv_nd.py (binary QuantConv1D / QuantConv3D ->
LowbitBconv2d), lower_separable.py (the binary depthwise half of
QuantSeparableConv1D / 2D -> LowbitBDepthwiseConv2d), lower_conv_transpose.py
(binary QuantConv2DTranspose -> one LowbitBconv2d per stride phase). For each layer the
first lowering whose `plan` claims it decides; a layer no lowering claims is
kept as it is (it shares its weights with the original model) and becomes
TFLite builtins. This module does what
spans layers: folding, the epilogue, packed chains, models used as layers.

Folding. A BatchNormalization that is a FoldedPlan's only consumer is folded
into the op's per-channel multiplier and bias, and a plain ReLU after that
into its fused activation. Per output channel c, with the integer dot product
d and kernel scale alpha:
    BN(alpha d + b) = gamma * (alpha d + b - mean) / sqrt(var + eps) + beta
                    = m alpha d + (beta + (b - mean) m),   m = gamma / sqrt(var + eps)
so multiplier = m * alpha and bias = beta + (b - mean) * m.

Packed chains. When the output of a binary conv, depthwise or dense layer,
or of a multi-bit one (after its folded BatchNorm / ReLU), goes only into a
layer that binarises it (a binary layer, or a multi-bit one whose activation
planes are "sign"), or only into a MaxPooling2D that goes only into one, the
next layer would just binarise it again. The layer then emits
`output_type="bitpacked"` (the signs of its float output: for the binary ops
computed from the integer dot product with exact per-channel thresholds, for
the multi-bit op packed from its float output, see docs/custom_ops.md), the
pool becomes `LowbitBMaxPool2d` on the packed words (max-pool commutes with
the monotone sign: sign(max(x)) = max(sign(x))), and the next LowbitBconv2d,
LowbitBDepthwiseConv2d, LowbitBgemm or LowbitMultibitConv2d reads the packed
int32 tensor: no float tensor between them. Chains the packed ops cannot
express (grouped convs on either side, a layer whose own non-ReLU activation
runs afterwards, a channels_first pool, several consumers, a model output in
between, a multi-bit "abc" or "dorefa" layer after, which reads values) stay
on the float path.

Epilogue (lower_conv.py). A BatchNormalization after a binary conv's fused
ReLU and an Add of the result with one other tensor of the same shape fuse into
the LowbitBconv2d. In the lowered model the Add's slot then runs the op, on
the conv's input passed through to it (the conv, its folded layers and the
post-ReLU BatchNorm become pass-throughs).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lowbit_converter import (
    lower_conv,
    lower_conv_nd,
    lower_conv_transpose,
    lower_dense,
    lower_depthwise,
    lower_fastfood,
    lower_multibit,
    lower_separable,
)
from lowbit_converter.folding import ConversionError, activation_name, is_plain_relu
from lowbit_converter.graph import model_graph
from lowbit_converter.lower_conv import BinaryConvPlan
from lowbit_converter.plans import FoldedPlan, Lowering, PackedChainPlan
from lowbit_tf import ops
from lowbit_tf._keras import keras
from lowbit_tf.layers import (
    ABCDense,
    QuantConv3DTranspose,
    QuantDense,
    QuantLocallyConnected1D,
    QuantLocallyConnected2D,
)

#: The lowerings, in the order they are asked: the binary ones before the
#: multi-bit one, which also claims QuantConv2D / QuantDense layers.
LOWERINGS: tuple[Lowering, ...] = (
    lower_conv.LOWERING,
    lower_dense.LOWERING,
    lower_depthwise.LOWERING,
    lower_multibit.LOWERING,
    lower_fastfood.LOWERING,
    lower_conv_nd.LOWERING,
    lower_separable.LOWERING,
    lower_conv_transpose.LOWERING,
)
_LOWER_BY_PLAN = {lowering.plan_type: lowering.lower for lowering in LOWERINGS}


class LoweredBMaxPool2D(keras.layers.Layer):
    """A MaxPooling2D between two binary layers of a packed chain: the same
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


#: Quantized layers no custom op runs, and why (docs/custom_ops.md, "Layers
#: that convert as float"); float_fallback=True converts them as float ops.
_NO_OP_RUNS = {
    QuantConv3DTranspose: "the binary route of transposed convolutions (one binary conv "
    "per stride phase) is written for QuantConv2DTranspose only",
    QuantLocallyConnected1D: "its weights differ per output position, while the conv ops "
    "slide one bit-packed filter over the input",
    QuantLocallyConnected2D: "its weights differ per output position, while the conv ops "
    "slide one bit-packed filter over the input",
}


def _plan_for(layer: keras.layers.Layer) -> Any:
    """The plan of the first lowering that claims `layer`, None if none does.

    Raises:
      ConversionError: for a quantized layer no custom op can run, naming it.
    """
    reason = _NO_OP_RUNS.get(type(layer))
    if reason is not None and (layer.input_quantizer or layer.kernel_quantizer) is not None:
        raise ConversionError(
            f"layer {layer.name!r} ({type(layer).__name__}) has no lowbit op: {reason} "
            "(docs/custom_ops.md). Pass float_fallback=True to convert it as float TFLite ops."
        )
    for lowering in LOWERINGS:
        plan = lowering.plan(layer)
        if plan is not None:
            return plan
    return None


def plan_lowering(
    model: keras.Model, *, packed_chains: bool = True, float_fallback: bool = False
) -> dict[str, Any]:
    """Finds the layers a custom op runs (the plan of each, see plans.py) and
    what folds into each, keyed by layer name.

    packed_chains: also mark the chains of binary layers that can stay
    bit-packed (see the module docstring).
    float_fallback: keep a quantized layer no custom op can run as float ops
    instead of raising ConversionError."""
    graph = model_graph(model)
    layers = {layer.name: layer for layer in model.layers}
    plans: dict[str, Any] = {}
    for layer in model.layers:
        try:
            plan = _plan_for(layer)
        except ConversionError:
            if float_fallback:
                continue
            raise
        if plan is None:
            continue
        plans[layer.name] = plan
        if not isinstance(plan, FoldedPlan):
            continue
        tail = layer.name
        nxt = layers.get(graph.only_consumer(tail) or "")
        if activation_name(layer.activation) is None and _per_channel_batch_norm(nxt, layer):
            plan.batch_norm = nxt
            tail = nxt.name
            nxt = layers.get(graph.only_consumer(tail) or "")
        if activation_name(layer.activation) is None and nxt is not None and is_plain_relu(nxt):
            plan.relu = nxt
        if isinstance(plan, BinaryConvPlan):
            _plan_epilogue(graph, layers, plan)
    if packed_chains:
        _plan_packed_chains(graph, layers, plans)
    return plans


def _per_channel_batch_norm(layer: Any, producer: Any) -> bool:
    """Whether `layer` is a BatchNormalization over the last axis (the output
    channels) of `producer`'s output. Keras 3 keeps its axis as an int, tf-keras
    as a list of one int."""
    if not isinstance(layer, keras.layers.BatchNormalization):
        return False
    axes = layer.axis if isinstance(layer.axis, list | tuple) else [layer.axis]
    return len(axes) == 1 and axes[0] in (-1, len(producer.output.shape) - 1)


def _plan_epilogue(
    graph: Any, layers: dict[str, keras.layers.Layer], plan: BinaryConvPlan
) -> None:
    """Finds what the op's epilogue can take over after a binary conv (see the
    module docstring): a BatchNormalization after its fused ReLU, then an Add
    of two tensors of the conv's output shape."""
    conv = plan.layer
    fused, trailing = plan.activations()
    if conv.groups != 1 or trailing is not None:
        return
    tail = plan.tail()
    nxt = layers.get(graph.only_consumer(tail) or "")
    if fused == "relu" and _per_channel_batch_norm(nxt, conv):
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
    graph: Any, layers: dict[str, keras.layers.Layer], plans: dict[str, Any]
) -> None:
    """Marks the binary and multi-bit layers whose output is only re-binarised
    (see the module docstring) and the MaxPooling2D between them."""
    for plan in plans.values():
        if not isinstance(plan, PackedChainPlan):
            continue
        conv = plan.layer
        tail = plan.tail()
        if (
            (isinstance(plan, BinaryConvPlan) and plan.has_epilogue())
            or _groups(conv) != 1
            or plan.activations()[1] is not None
        ):
            continue
        nxt = layers.get(graph.only_consumer(tail) or "")
        pool = None
        if isinstance(nxt, keras.layers.MaxPooling2D):
            if nxt.data_format != "channels_last" or nxt.padding not in ("same", "valid"):
                continue
            pool = nxt
            nxt = layers.get(graph.only_consumer(nxt.name) or "")
        consumer = plans.get(nxt.name) if nxt is not None else None
        if (
            not isinstance(consumer, PackedChainPlan)
            or not consumer.reads_packed()
            or _groups(nxt) != 1
        ):
            continue
        if pool is not None and isinstance(conv, QuantDense | ABCDense):
            continue  # a pool after a dense layer is not a 2-D pool of its channels
        plan.packed_output = True
        plan.pool = pool
        plans[nxt.name].packed_input = True


def lower_model(
    model: keras.Model, *, packed_chains: bool = True, float_fallback: bool = False
) -> tuple[keras.Model, dict[str, Any]]:
    """Returns (the lowered model, the plans applied, by layer name: one per
    layer a custom op runs, of the plan type of its lowering; those of models
    used as layers as "<model>/<layer>").

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
    folded = {
        fused.name
        for plan in plans.values()
        if isinstance(plan, FoldedPlan)
        for fused in (plan.batch_norm, plan.relu, getattr(plan, "post_batch_norm", None))
        if fused is not None
    }
    # Plans whose op runs in the slot of the residual Add (see the module
    # docstring), by the Add's name; their conv's own slot passes its input on.
    residual_adds = {
        plan.residual_add.name: plan
        for plan in plans.values()
        if isinstance(plan, BinaryConvPlan) and plan.residual_add is not None
    }
    pools = {
        plan.pool.name: (plan.pool, plan.output_channels())
        for plan in plans.values()
        if isinstance(plan, PackedChainPlan) and plan.pool is not None
    }

    def clone_function(layer: keras.layers.Layer) -> keras.layers.Layer:
        name = layer.name
        plan = plans.get(name)
        if name in nested:
            return nested[name]
        if name in residual_adds:
            return lower_conv.LoweredBConv2D(residual_adds[name])
        if isinstance(plan, BinaryConvPlan) and plan.residual_add is not None:
            return FoldedAway(name=f"{name}_input")
        if plan is not None:
            return _LOWER_BY_PLAN[type(plan)](plan)
        if name in pools:
            return LoweredBMaxPool2D(*pools[name])
        if name in folded:
            return FoldedAway(name=name)
        return layer

    lowered = keras.models.clone_model(model, clone_function=clone_function)
    return lowered, {**plans, **nested_plans}


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
