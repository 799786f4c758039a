"""Loading what Larq saved: :func:`load_larq_model` reads a Keras 2 ``.h5`` model
made with Larq layers (its config and weights) and returns the same model built
from lowbit_tf's layers in Keras 3.

How. A Larq ``.h5`` holds the model's Keras 2 config (JSON) and its latent
weights layer by layer. The config names Larq's classes; lowbit_tf has a class
of the same name and arguments for each (layers, quantizers, constraints,
activations), so the translation is small and done on the config:

- quantizers: Larq 0.14's are Keras layers, so their configs carry ``name``,
  ``trainable``, ``dtype`` and a ``build_config``, which ours (plain objects)
  do not take: dropped, as is a ``metrics`` entry (Larq does not save its
  training metrics; ask for them again with ``lowbit_tf.context.metrics_scope``).
  ``NoOpQuantizer`` / ``DoReFaQuantizer`` become ``NoOp`` / ``DoReFa``;
- constraints: ``WeightClip`` / ``weight_clip`` become our ``WeightClip``;
- activations saved as Larq functions (``hard_tanh``, ``leaky_tanh``) become
  ours;
- the rest (Keras's own layers, the graph) Keras 3 reads from Keras 2 files
  itself.

The translated config goes into a temporary copy of the file, which
``keras.models.load_model`` then loads: Keras 3's own reader builds the model
and loads the weights (by layer, in order, as Keras 2 saved them). A class that
is neither Keras's nor one of Larq's (a user's own layer or quantizer) needs
``custom_objects``, as with Keras; the error says so and names it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["LARQ_LAYERS", "LarqFileError", "load_larq_model"]

#: Larq's layers; lowbit_tf.layers has each under the same name.
LARQ_LAYERS = (
    "QuantConv1D", "QuantConv2D", "QuantConv3D", "QuantConv2DTranspose", "QuantConv3DTranspose",
    "QuantDense", "QuantDepthwiseConv2D", "QuantSeparableConv1D", "QuantSeparableConv2D",
    "QuantLocallyConnected1D", "QuantLocallyConnected2D",
)
_QUANTIZERS = {
    "SteSign": "SteSign", "ApproxSign": "ApproxSign", "SwishSign": "SwishSign",
    "MagnitudeAwareSign": "MagnitudeAwareSign", "SteHeaviside": "SteHeaviside",
    "SteTern": "SteTern", "DoReFa": "DoReFa", "DoReFaQuantizer": "DoReFa", "NoOp": "NoOp",
    "NoOpQuantizer": "NoOp",
}  # fmt: skip
# What a Larq quantizer's config has because Larq 0.14 quantizers are Keras layers.
_LAYER_KEYS = ("name", "trainable", "dtype")
_ACTIVATIONS = ("hard_tanh", "leaky_tanh")


class LarqFileError(ValueError):
    """A Larq file that cannot be read as a lowbit_tf model (the message says why)."""


def _is_larq(obj: dict[str, Any], kind: str) -> bool:
    return str(obj.get("module", "")).startswith(f"larq.{kind}")


def _translate(obj: Any, path: str) -> Any:
    """The config ``obj`` with Larq's objects as lowbit_tf's (see the module docstring);
    ``path`` locates it, for messages."""
    if isinstance(obj, list):
        return [_translate(item, path) for item in obj]
    if not isinstance(obj, dict):
        return obj
    name = obj.get("class_name")
    if name is None or not isinstance(obj.get("config"), (dict, str)):
        return {key: _translate(value, f"{path}.{key}") for key, value in obj.items()}
    config = obj["config"]
    if _is_larq(obj, "quantizers") or (name in _QUANTIZERS and "module" not in obj):
        if name not in _QUANTIZERS:
            raise LarqFileError(
                f"{path}: Larq quantizer {name!r} has no lowbit_tf counterpart "
                f"(lowbit_tf has {', '.join(sorted(set(_QUANTIZERS.values())))}); pass your "
                "own class in custom_objects."
            )
        kept = {k: v for k, v in config.items() if k not in (*_LAYER_KEYS, "metrics")}
        return {"class_name": _QUANTIZERS[name], "config": kept}
    if _is_larq(obj, "constraints"):
        if name not in ("WeightClip", "weight_clip"):
            raise LarqFileError(f"{path}: Larq constraint {name!r} is not supported.")
        return {"class_name": "WeightClip", "config": dict(config)}
    if name == "function" and config in _ACTIVATIONS:
        return config  # our layers and Keras's (through custom_objects) take the name
    if _is_larq(obj, "layers") or name in LARQ_LAYERS:
        if name not in LARQ_LAYERS:
            raise LarqFileError(f"{path}: Larq layer {name!r} has no lowbit_tf counterpart.")
        translated = {key: _translate(value, f"{path}.{key}") for key, value in config.items()}
        if name.endswith(("Transpose", "DepthwiseConv2D")) or "Separable" in name:
            # Keras 2 writes its Conv base's arguments, which these layers never used
            # (and Keras 3's do not take): groups (always 1), kernel_* (the
            # kernels are depthwise_* / pointwise_*, or the transposed conv's own).
            if translated.pop("groups", 1) != 1:
                raise LarqFileError(f"{path}: {name} with groups != 1 is not supported.")
            if not name.endswith("Transpose"):
                for key in ("kernel_initializer", "kernel_regularizer", "kernel_constraint"):
                    translated.pop(key, None)
        out = {key: value for key, value in obj.items()
               if key not in ("module", "registered_name")}
        out["config"] = translated
        return out
    return {key: _translate(value, f"{path}.{key}") for key, value in obj.items()}


def _custom_objects(extra: dict[str, Any] | None) -> dict[str, Any]:
    from lowbit_tf import activations, constraints, layers, quantizers

    objects: dict[str, Any] = {name: getattr(layers, name) for name in LARQ_LAYERS}
    objects.update({name: getattr(quantizers, name) for name in set(_QUANTIZERS.values())})
    objects["WeightClip"] = constraints.WeightClip
    objects.update({name: getattr(activations, name) for name in _ACTIVATIONS})
    objects.update(extra or {})
    return objects


def load_larq_model(path: str | os.PathLike, custom_objects: dict[str, Any] | None = None,
                    compile: bool = False) -> Any:
    """Loads a Keras 2 ``.h5`` model saved with Larq and returns it as a Keras 3 model
    of lowbit_tf layers, with the same weights (so the same outputs).

    Arguments:
        path: The ``.h5`` file (``model.save("m.h5")`` under Larq / tf.keras 2).
        custom_objects: Classes of the file that are neither Keras's nor Larq's.
        compile: Also restore the training configuration (Keras's
            ``load_model(compile=...)``); off by default, as an optimizer saved by
            Keras 2 rarely restores in Keras 3.

    Raises:
        FileNotFoundError: no such file.
        LarqFileError (a ValueError): not a Keras ``.h5`` model file (e.g. a weights
            file, a SavedModel, a ``.keras`` archive), or a Larq class without a
            lowbit_tf counterpart; the message names the file and the class.
    """
    import h5py

    from lowbit_tf._keras import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"load_larq_model: no such file: {str(path)!r}")
    try:
        with h5py.File(path, "r") as f:
            raw = f.attrs.get("model_config")
    except OSError as e:
        raise LarqFileError(f"load_larq_model: {str(path)!r} is not an HDF5 (.h5) file: {e}. "
                            "Larq models saved with model.save('name.h5') are.") from e
    if raw is None:
        raise LarqFileError(
            f"load_larq_model: {str(path)!r} holds no model config (a weights-only file? Build "
            "the model with lowbit_tf layers and call model.load_weights on it instead)."
        )
    config = json.loads(raw.decode() if isinstance(raw, bytes) else raw)
    translated = _translate(config, "model")
    with tempfile.TemporaryDirectory(prefix="lowbit_larq_") as tmp:
        copy = Path(tmp) / path.name
        shutil.copyfile(path, copy)
        with h5py.File(copy, "r+") as f:
            f.attrs["model_config"] = json.dumps(translated)
        try:
            return keras.models.load_model(copy, custom_objects=_custom_objects(custom_objects),
                                           compile=compile)
        except (TypeError, ValueError) as e:
            raise LarqFileError(f"load_larq_model: could not build the model of "
                                f"{str(path)!r}: {e}") from e
