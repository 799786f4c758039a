"""Loading a larq-zoo ``.h5`` weights file (Keras 2's HDF5 layout) into one of
our zoo models.

Keras 2 writes, at the file's root (or under ``model_weights`` for a whole
saved model), the attribute ``layer_names`` and one group per layer whose
attribute ``weight_names`` lists its weights (``<layer>/<weight>:0``) in the
layer's weight order, which our layers share. Weights are matched by layer name
(larq-zoo's names, which our models reproduce). A file whose names differ
(saved in a session that had built other layers first, so the counters ran on)
is matched the way larq-zoo's own ``model.load_weights`` reads it: the layers
with weights, in order. Either way every shape is checked before anything is
assigned.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from lowbit_tf._keras import keras


def _text(value: bytes | str) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


def read_larq_zoo_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """{layer name: its weights}, in the file's layer order, layers without
    weights left out."""
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not an HDF5 weights file ({error})") from error
    with file:
        root = file["model_weights"] if "model_weights" in file else file
        if "layer_names" not in root.attrs:
            raise ValueError(
                f"{path}: no 'layer_names' attribute, so not a Keras 2 .h5 weights file "
                "as larq-zoo's (a Keras 3 .weights.h5 loads with model.load_weights)")
        weights = {}
        for layer in map(_text, root.attrs["layer_names"]):
            group = root[layer]
            values = [np.asarray(group[_text(w)]) for w in group.attrs.get("weight_names", [])]
            if values:
                weights[layer] = values
    return weights


def _weighted_layers(model: keras.Model) -> list[keras.layers.Layer]:
    return [layer for layer in model.layers if layer.weights]


def load_larq_zoo_weights(model: keras.Model, path: str | Path) -> None:
    """Sets `model`'s weights from the larq-zoo .h5 file at `path`.

    Raises:
      ValueError: naming the layer that is missing from the file or whose
        weights differ in number or shape.
    """
    stored = read_larq_zoo_weights(path)
    layers = _weighted_layers(model)
    if all(layer.name in stored for layer in layers):
        pairs = [(layer, layer.name) for layer in layers]
    elif len(stored) == len(layers):
        pairs = list(zip(layers, stored, strict=True))
    else:
        missing = next(layer.name for layer in layers if layer.name not in stored)
        raise ValueError(
            f"{path}: no weights for layer {missing!r} of {model.name!r}, and the file's "
            f"{len(stored)} layers with weights cannot be matched in order to the model's "
            f"{len(layers)}")
    for layer, key in pairs:
        values = stored[key]
        expected = [tuple(w.shape) for w in layer.weights]
        if [v.shape for v in values] != expected:
            raise ValueError(
                f"{path}: layer {key!r} holds weights of shapes {[v.shape for v in values]}, "
                f"but layer {layer.name!r} of {model.name!r} has {expected}")
    for layer, key in pairs:
        layer.set_weights(stored[key])
