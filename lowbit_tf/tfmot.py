"""TensorFlow Model Optimization Toolkit (TFMOT) on models that hold lowbit layers.

TFMOT 0.8 works with tf-keras (Keras 2) only: use it in the tf-keras mode
(``TF_USE_LEGACY_KERAS=1``, lowbit_tf/_keras.py). See docs/int8.md, "TFMOT".

- ``quantize_model(model)``: TFMOT's quantization-aware training (its default
  8-bit scheme) on the float layers; each lowbit layer gets
  ``LowbitQuantizeConfig``, which leaves its binary parts alone: no fake-quant
  of its (binarised) kernel or of its input (it reads only signs), and a
  fake-quant of its float output only where an int8 tensor will hold it (not
  when a BatchNormalization that the converter folds into it, or another
  lowbit layer, is all that reads it).
- ``strip_quantization(model)``: the QAT model as a plain model, each TFMOT
  range kept as a ``lowbit_tf.layers.FakeQuantInt8`` holding it: what
  ``lowbit_tf.convert(model, int8=True)`` lowers (it calls this itself on a
  model with TFMOT's wrappers).
- ``prune_low_magnitude(model, **params)``: TFMOT's pruning on the float layers
  it supports, the lowbit layers left out (pruning a binary kernel is
  meaningless: each weight is -1 or +1, never zero). Strip with TFMOT's
  ``strip_pruning`` (``lowbit_tf.convert`` does it too).
- ``quantize_scope()``: TFMOT's ``quantize_scope`` with ``LowbitQuantizeConfig``,
  to load a saved QAT model.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from lowbit_tf._keras import KERAS_3, keras

if KERAS_3:
    raise ImportError(
        "lowbit_tf.tfmot needs the tf-keras mode: TensorFlow Model Optimization 0.8 works with "
        "tf-keras (Keras 2) only. Set TF_USE_LEGACY_KERAS=1 before importing TensorFlow "
        "(pip install tf-keras tensorflow-model-optimization).")
try:
    import tensorflow_model_optimization as _tfmot
except ImportError as error:
    raise ImportError(
        "lowbit_tf.tfmot needs TensorFlow Model Optimization 0.8: pip install 'lowbit-tf[tfmot]' "
        "&& pip install --no-deps tensorflow-model-optimization==0.8.0 (docs/int8.md, TFMOT)"
    ) from error

from tensorflow_model_optimization.python.core.quantization.keras.quantize_layer import (  # noqa: E402
    QuantizeLayer as _QuantizeLayer,
)
from tensorflow_model_optimization.python.core.sparsity.keras.pruning_wrapper import (  # noqa: E402
    PruneLowMagnitude as _PruneLowMagnitude,
)

_qk = _tfmot.quantization.keras
_moving_average = _qk.quantizers.MovingAverageQuantizer

__all__ = ["LowbitQuantizeConfig", "is_lowbit_layer", "prune_low_magnitude", "quantize_model",
           "quantize_scope", "strip", "strip_quantization"]


def is_lowbit_layer(layer: Any) -> bool:
    """A layer of lowbit_tf that holds weights or quantizers (FakeQuantInt8,
    a range, is not one)."""
    from lowbit_tf.layers import FakeQuantInt8

    return (type(layer).__module__.startswith("lowbit_tf.")
            and not isinstance(layer, FakeQuantInt8))


@keras.saving.register_keras_serializable(package="lowbit_tf")
class LowbitQuantizeConfig(_qk.QuantizeConfig):
    """TFMOT QuantizeConfig of a lowbit layer: no weight or activation
    fake-quant (the binary kernel and the input signs are exact in the
    converted op), and, with ``quantize_output``, TFMOT's 8-bit moving-average
    fake-quant of the float output (the range of the int8 tensor the
    converted op writes)."""

    def __init__(self, quantize_output: bool = True) -> None:
        self.quantize_output = bool(quantize_output)

    def get_weights_and_quantizers(self, layer: Any) -> list:
        return []

    def get_activations_and_quantizers(self, layer: Any) -> list:
        return []

    def set_quantize_weights(self, layer: Any, quantize_weights: list) -> None:
        pass

    def set_quantize_activations(self, layer: Any, quantize_activations: list) -> None:
        pass

    def get_output_quantizers(self, layer: Any) -> list:
        if not self.quantize_output:
            return []
        # What TFMOT's default scheme puts on a float layer's output.
        return [_moving_average(num_bits=8, per_axis=False, symmetric=False, narrow_range=False)]

    def get_config(self) -> dict:
        return {"quantize_output": self.quantize_output}


def quantize_scope() -> Any:
    """TFMOT's ``quantize_scope`` that also knows ``LowbitQuantizeConfig`` and
    lowbit_tf's layers, quantizers and constraints (TFMOT's wrappers
    deserialize the layer they hold by its bare class name):
    ``with lowbit_tf.tfmot.quantize_scope(): keras.models.load_model(path)``."""
    from lowbit_tf import constraints, layers, quantizers

    objects = {name: getattr(module, name) for module in (layers, quantizers, constraints)
               for name in module.__all__ if isinstance(getattr(module, name), type)}
    return _qk.quantize_scope({**objects, "LowbitQuantizeConfig": LowbitQuantizeConfig})


def _readers(model: Any) -> dict[int, list]:
    """id(layer) -> the layers of `model` that read its output."""
    readers: dict[int, list] = {id(layer): [] for layer in model.layers}
    for layer in model.layers:
        for node in layer._inbound_nodes:
            for parent in node.inbound_layers if isinstance(node.inbound_layers, list) \
                    else [node.inbound_layers]:
                if id(parent) in readers and layer not in readers[id(parent)]:
                    readers[id(parent)].append(layer)
    return readers


def quantize_model(model: Any) -> Any:
    """TFMOT's ``quantize_model`` for a Sequential or functional tf-keras model
    holding lowbit layers: the float layers get TFMOT's default 8-bit QAT,
    each lowbit layer ``LowbitQuantizeConfig``, and so does a BatchNormalization
    that reads one (TFMOT supports it only after its own convs; the converter
    folds it into the lowbit op). Their output is fake-quantized
    unless it is read only by BatchNormalization layers (folded into it by the
    converter; the BatchNormalization's output is quantized) or by other
    lowbit layers (which read only its signs, or bit-packed signs). Returns the
    model to train (``compile`` and ``fit`` it as usual), then convert with
    ``lowbit_tf.convert(model, int8=True)``."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"quantize_model expects a tf-keras Model, got {type(model).__name__}")
    readers = _readers(model)
    parents = {id(layer): [] for layer in model.layers}
    for layer in model.layers:
        for user in readers[id(layer)]:
            parents[id(user)].append(layer)

    outputs = {id(layer) for layer in getattr(model, "_output_layers", model.layers[-1:])}

    def output_read_as_float(layer: Any) -> bool:
        users = readers.get(id(layer), [])
        return id(layer) in outputs or not users or not all(
            is_lowbit_layer(user) or isinstance(user, keras.layers.BatchNormalization)
            for user in users)

    def after_lowbit_layer(layer: Any) -> bool:
        # A BatchNormalization reading a lowbit layer (TFMOT supports it only
        # after its own convs): the converter folds it into the lowbit op.
        return isinstance(layer, keras.layers.BatchNormalization) and any(
            is_lowbit_layer(parent) for parent in parents[id(layer)])

    def annotate(layer: Any) -> Any:
        if isinstance(layer, keras.layers.InputLayer):
            return layer
        if is_lowbit_layer(layer) or after_lowbit_layer(layer):
            return _qk.quantize_annotate_layer(
                layer, LowbitQuantizeConfig(quantize_output=output_read_as_float(layer)))
        return _qk.quantize_annotate_layer(layer)

    # As TFMOT's quantize_annotate_model: the clone holds the same layers
    # (their weights), each inside its annotation.
    annotated = keras.models.clone_model(model, clone_function=annotate)
    with quantize_scope():
        return _qk.quantize_apply(annotated)


def _range_of(layer: Any) -> tuple[float, float] | None:
    """The (min, max) of the fake-quant on the output of a TFMOT QuantizeLayer or
    QuantizeWrapper, None when it has none."""
    if isinstance(layer, _qk.QuantizeWrapper):
        variables = getattr(layer, "_output_quantizer_vars", None)
        if not variables:
            for activation in getattr(layer, "_quantize_activations", []):
                variables = getattr(activation, "_post_activation_vars", None) or variables
    else:
        variables = layer.quantizer_vars if layer.quantizer is not None else None
    if not variables:
        return None
    return float(variables["min_var"].numpy()), float(variables["max_var"].numpy())


def _rename(value: Any, names: dict[str, str]) -> Any:
    """`value` (a Keras config's inbound nodes or outputs) with each layer name
    in `names` replaced."""
    if isinstance(value, str):
        return names.get(value, value)
    if isinstance(value, list | tuple):
        return type(value)(_rename(item, names) for item in value)
    if isinstance(value, dict):
        return {key: _rename(item, names) for key, item in value.items()}
    return value


def _original_activation(config: dict) -> dict:
    """A wrapped layer's config with the activation it had before TFMOT: the
    wrapper swaps it for a QuantizeAwareActivation (serialized around the
    original) or, where TFMOT's transforms leave the activation to a following
    layer (a Conv2D before its BatchNormalization), a NoOpActivation: linear."""
    activation = config.get("activation")
    if isinstance(activation, dict) and activation.get("class_name") == "QuantizeAwareActivation":
        activation = activation["config"]["activation"]
    if isinstance(activation, dict) and activation.get("class_name") == "NoOpActivation":
        activation = "linear"
    return config if activation is None else {**config, "activation": activation}


def strip_quantization(model: Any) -> Any:
    """The TFMOT QAT `model` without TFMOT's layers: each QuantizeWrapper
    replaced by its layer (trained weights, original activation) and, where it
    fake-quantizes the output, a ``FakeQuantInt8`` after it holding that range;
    each QuantizeLayer (the input's fake-quant) a ``FakeQuantInt8`` holding its
    range. The float weights stay float: the converter's quantization-aware
    path quantizes them per channel (symmetric, max |w| / 127), as TFMOT's
    default weight fake-quant does. Sequential and functional models."""
    from lowbit_tf.layers import FakeQuantInt8

    sequential = isinstance(model, keras.Sequential)
    if not sequential and not getattr(model, "_is_graph_network", False):
        raise ValueError(f"strip_quantization: {model.name!r} is a subclassed model; only "
                         "Sequential and functional models can be rebuilt without TFMOT's layers")
    config = copy.deepcopy(model.get_config())
    by_name = {layer.name: layer for layer in model.layers}
    renames: dict[str, str] = {}
    weights: dict[str, list] = {}
    entries = []
    for entry in config["layers"]:
        name = entry["config"]["name"]
        layer = by_name.get(name)
        if not isinstance(layer, _qk.QuantizeWrapper | _QuantizeLayer):
            entries.append(entry)
            if layer is not None:
                weights[name] = layer.get_weights()
            continue
        if len(layer._inbound_nodes) > 1:
            raise ValueError(f"strip_quantization: layer {name!r} is shared (called "
                             f"{len(layer._inbound_nodes)} times), which is not supported")
        inbound = entry.get("inbound_nodes")
        produced = name
        if isinstance(layer, _qk.QuantizeWrapper):
            inner = copy.deepcopy(entry["config"]["layer"])
            inner["config"] = _original_activation(inner["config"])
            produced = inner["config"]["name"]
            if not sequential:
                inner.update(name=produced, inbound_nodes=inbound)
            entries.append(inner)
            # By name: the wrapper holds the layer's variables (a fake-quantized
            # kernel is swapped out of the layer's own list, kept in the
            # wrapper's _weight_vars) and its quantizers'. Told apart by
            # identity: a wrapper loaded from a file scopes both under its name.
            inner = {id(v) for v in layer.layer.weights}
            inner |= {id(weight) for weight, _, _ in getattr(layer, "_weight_vars", ())}
            weights[produced] = {_local_name(v): v.numpy() for v in layer.weights
                                 if id(v) in inner}
            inbound = [[[produced, 0, 0, {}]]]
        value_range = _range_of(layer)
        if value_range is None:
            renames[name] = produced
            continue
        fake = {"class_name": "FakeQuantInt8", "module": None,
                "registered_name": "lowbit_tf>FakeQuantInt8",
                "config": {"name": name, "trainable": False, "dtype": "float32",
                           "momentum": 0.99}}
        if not sequential:
            fake.update(name=name, inbound_nodes=inbound)
        entries.append(fake)
        weights[name] = [np.float32(value_range[0]), np.float32(value_range[1]), np.float32(1)]
    config["layers"] = [entry if sequential else {**entry, "inbound_nodes": _rename(
        entry.get("inbound_nodes", []), renames)} for entry in entries]
    if not sequential:
        config["output_layers"] = _rename(config["output_layers"], renames)
    with keras.utils.custom_object_scope({"FakeQuantInt8": FakeQuantInt8}):
        stripped = (keras.Sequential if sequential else keras.Model).from_config(config)
    for layer in stripped.layers:
        values = weights.get(layer.name)
        if isinstance(values, dict):
            values = [values[_local_name(variable)] for variable in layer.weights]
        if values is not None:
            layer.set_weights(values)
    return stripped


def _local_name(variable: Any) -> str:
    """A variable's name without its layer's: "conv2d/kernel:0" -> "kernel:0"."""
    return variable.name.split("/", 1)[-1]


def strip(model: Any) -> Any:
    """`model` without TFMOT's pruning and quantization wrappers (what the
    converter lowers)."""
    if any(isinstance(layer, _PruneLowMagnitude) for layer in model.layers):
        model = _tfmot.sparsity.keras.strip_pruning(model)
    if any(isinstance(layer, _qk.QuantizeWrapper | _QuantizeLayer) for layer in model.layers):
        model = strip_quantization(model)
    return model


def prune_low_magnitude(model: Any, **params: Any) -> Any:
    """TFMOT's ``prune_low_magnitude`` (``params``: its pruning schedule and
    options) on every layer of `model` it can prune, except the lowbit layers:
    a binary kernel's weights are -1 or +1 and cannot be zero, so pruning them
    means nothing (TFMOT itself refuses layers it does not know). TFMOT
    wraps the layers without prunable weights too (pooling,
    BatchNormalization): it prunes nothing there."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"prune_low_magnitude expects a tf-keras Model, got {type(model).__name__}")
    from tensorflow_model_optimization.python.core.sparsity.keras.prune_registry import (
        PruneRegistry,
    )

    sparsity = _tfmot.sparsity.keras

    def wrap(layer: Any) -> Any:
        if is_lowbit_layer(layer) or isinstance(layer, keras.layers.InputLayer):
            return layer
        if isinstance(layer, sparsity.PrunableLayer) or PruneRegistry.supports(layer):
            return sparsity.prune_low_magnitude(layer, **params)
        return layer

    return keras.models.clone_model(model, clone_function=wrap)
