"""Who feeds whom in a Keras model, read from its public config.

Keras 3 exposes a functional model's wiring in `get_config()`: every layer
entry lists its inbound nodes, whose arguments carry `keras_history`
[layer_name, node_index, tensor_index]; tf-keras (Keras 2) lists the same
triples (plus call kwargs) directly. A Sequential model is a chain.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from lowbit_tf._keras import keras


@dataclass
class ModelGraph:
    """Producers and consumers of every layer, by layer name."""

    inputs_of: dict[str, list[str]] = field(default_factory=dict)
    consumers_of: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    output_layers: set[str] = field(default_factory=set)

    def sole_consumer(self, name: str) -> str | None:
        """The single layer consuming `name`'s output, if exactly one does and
        that output is not also a model output (the consumer may read other
        layers too)."""
        consumers = self.consumers_of.get(name, [])
        if len(consumers) != 1 or name in self.output_layers:
            return None
        return consumers[0]

    def only_consumer(self, name: str) -> str | None:
        """The sole consumer of `name`, if it reads only this layer (a single
        inbound tensor)."""
        consumer = self.sole_consumer(name)
        return consumer if consumer is not None and self.inputs_of.get(consumer) == [name] else None


def _histories(value: Any) -> Iterator[str]:
    """Layer names referenced anywhere in `value`: Keras 3's keras_history entries,
    or tf-keras's node entries ``[layer_name, node_index, tensor_index, kwargs]``."""
    if isinstance(value, dict):
        if "keras_history" in value:
            yield value["keras_history"][0]
            return
        for item in value.values():
            yield from _histories(item)
    elif isinstance(value, list | tuple):
        if (len(value) in (3, 4) and isinstance(value[0], str)
                and all(isinstance(v, int) for v in value[1:3])):
            yield value[0]
            return
        for item in value:
            yield from _histories(item)


def model_graph(model: keras.Model) -> ModelGraph:
    """Builds the producer/consumer map of a Sequential or functional model."""
    graph = ModelGraph()
    if isinstance(model, keras.Sequential):
        names = [layer.name for layer in model.layers]
        for previous, current in zip(names, names[1:], strict=False):
            graph.inputs_of[current] = [previous]
            graph.consumers_of[previous].append(current)
        if names:
            graph.inputs_of[names[0]] = []
            graph.output_layers.add(names[-1])
        return graph
    config = model.get_config()
    if "layers" not in config:
        raise ValueError(
            f"model {model.name!r} ({type(model).__name__}) is neither Sequential nor "
            "functional; the converter needs a Sequential or functional Keras model"
        )
    for entry in config["layers"]:
        name = entry.get("name", entry.get("config", {}).get("name"))
        producers = list(_histories(entry.get("inbound_nodes", [])))
        graph.inputs_of[name] = producers
        for producer in producers:
            graph.consumers_of[producer].append(name)
    outputs = config.get("output_layers", [])
    if outputs and isinstance(outputs[0], str):  # a single output: [name, node, index]
        outputs = [outputs]
    for output in outputs:
        graph.output_layers.add(output[0])
    return graph
