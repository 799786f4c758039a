"""Loading pretrained float AlexNet weights into any AlexNet variant.

Every format is first read into one canonical form, {layer name: (kernel,
bias)} with Keras layouts (conv kernels HWIO, grouped ones [KH, KW, C/2, C_out];
dense kernels [in, out]), then assigned by layer name, checking every shape.
Supported sources:

- `bvlc_alexnet.npy`-style dicts, `{layer: [weights, biases]}` (np.save of a
  dict, i.e. a pickle; read by `safe_npy.load_npy`, which builds nothing but
  dicts, lists, tuples, strings, numbers and numeric numpy arrays, so a
  crafted file cannot run code);
- TF1 name-based checkpoints with variables `conv1/weights`, `conv1/biases`,
  ..., `fc8/biases` (read with `tf.train.load_checkpoint`);
- a TF2 object checkpoint (`tf.train.Checkpoint(model=float_alexnet)`) or a
  Keras `.weights.h5` of the float AlexNet (restored into a float twin, whose
  weights are then copied over).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from lowbit_models.alexnet import WEIGHT_LAYERS, alexnet
from lowbit_models.safe_npy import UnsafeFileError, load_npy
from lowbit_tf._keras import keras

Weights = dict[str, tuple[np.ndarray, np.ndarray]]


class WeightLoadError(ValueError):
    """A variable is missing from the source or has the wrong shape."""


def _from_npy(path: Path) -> Weights:
    try:
        data = load_npy(path)
    except (UnsafeFileError, ValueError, OSError, EOFError) as error:
        raise WeightLoadError(f"{path}: not a readable weights .npy file: {error}") from error
    table = data.item() if data.dtype == object and data.shape == () else None
    if not isinstance(table, dict):
        raise WeightLoadError(f"{path}: expected a pickled dict {{layer: [weights, biases]}}")
    weights = {}
    for name in WEIGHT_LAYERS:
        if name not in table:
            raise WeightLoadError(f"{path}: missing variable {name!r}")
        entry = table[name]
        if isinstance(entry, dict):  # {"weights": ..., "biases": ...} flavour
            entry = [entry.get("weights"), entry.get("biases")]
        if (not isinstance(entry, list | tuple) or len(entry) != 2
                or any(v is None for v in entry)):
            raise WeightLoadError(
                f"{path}: {name!r} must hold [weights, biases], got {type(entry).__name__}"
            )
        weights[name] = tuple(
            _real_array(value, f"{path}: '{name}/{label}'")
            for value, label in zip(entry, ("weights", "biases"), strict=True)
        )
    return weights


def _real_array(value: Any, what: str) -> np.ndarray:
    """`value` as a real (integer or floating) array; complex, boolean, string
    or object values are refused rather than silently converted."""
    try:
        array = np.asarray(value) if isinstance(value, np.ndarray | list | tuple) else None
    except ValueError as error:  # a ragged nested list
        raise WeightLoadError(f"{what} is not an array: {error}") from error
    if array is None or array.dtype.kind not in "fiu":
        kind = type(value).__name__ if array is None else f"dtype {array.dtype}"
        raise WeightLoadError(f"{what} must be a real-valued array, got {kind}")
    return array


def _from_tf1_checkpoint(path: str) -> Weights:
    import tensorflow as tf

    reader = tf.train.load_checkpoint(path)
    available = reader.get_variable_to_shape_map()
    weights = {}
    for name in WEIGHT_LAYERS:
        pair = []
        for suffix in ("weights", "biases"):
            key = f"{name}/{suffix}"
            if key not in available:
                raise WeightLoadError(f"{path}: missing variable {key!r}")
            pair.append(reader.get_tensor(key))
        weights[name] = (pair[0], pair[1])
    return weights


def _float_twin(model: keras.Model) -> keras.Model:
    return alexnet("float", num_classes=model.get_layer("fc8").units,
                   input_shape=tuple(model.input_shape[1:]))


def _from_float_model(twin: keras.Model) -> Weights:
    return {name: tuple(np.asarray(v) for v in twin.get_layer(name).get_weights())
            for name in WEIGHT_LAYERS}


def _is_tf1_checkpoint(path: str) -> bool:
    import tensorflow as tf

    try:
        names = tf.train.load_checkpoint(path).get_variable_to_shape_map()
    except (ValueError, tf.errors.OpError) as error:
        raise WeightLoadError(f"{path}: not a readable TF checkpoint ({error})") from error
    return "conv1/weights" in names


def read_weights(source: str | Path, model: keras.Model) -> Weights:
    """Reads `source` (format from its name/content) into the canonical form."""
    import tensorflow as tf

    path = Path(source)
    if path.suffix == ".npy":
        return _from_npy(path)
    if path.name.endswith(".weights.h5"):
        twin = _float_twin(model)
        twin.load_weights(path)
        return _from_float_model(twin)
    prefix = str(source)
    if _is_tf1_checkpoint(prefix):
        return _from_tf1_checkpoint(prefix)
    twin = _float_twin(model)
    status = tf.train.Checkpoint(model=twin).read(prefix)
    try:
        status.assert_existing_objects_matched()
    except AssertionError as error:
        raise WeightLoadError(
            f"{prefix}: not a checkpoint of the float AlexNet: {error}"
        ) from error
    return _from_float_model(twin)


def assign_weights(model: keras.Model, weights: Weights, source: Any = "weights") -> None:
    """Sets each weighted layer's kernel and bias, checking names and shapes."""
    for name in WEIGHT_LAYERS:
        try:
            layer = model.get_layer(name)
        except ValueError as error:
            raise WeightLoadError(f"model {model.name!r} has no layer {name!r}") from error
        if name not in weights:
            raise WeightLoadError(f"{source}: missing variable {name!r}")
        for variable, value, label in zip((layer.kernel, layer.bias), weights[name],
                                          ("weights", "biases"), strict=True):
            if tuple(variable.shape) != tuple(value.shape):
                raise WeightLoadError(
                    f"{source}: variable '{name}/{label}' has shape {tuple(value.shape)}, "
                    f"but layer {name!r} of {model.name!r} expects {tuple(variable.shape)}"
                )
            variable.assign(value.astype(np.float32))


def load_alexnet_weights(model: keras.Model, source: str | Path) -> None:
    """Loads pretrained float AlexNet weights from `source` into `model`.

    `model` is any `lowbit_models.alexnet(...)` variant (built). Its quantizers
    act on the loaded latent weights as in training.

    Raises:
      WeightLoadError: naming the missing variable or the mismatched shape.
    """
    assign_weights(model, read_weights(source, model), source)
