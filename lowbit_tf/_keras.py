"""The one place that decides which Keras lowbit_tf uses, and the few things
that differ between the two.

Every module of the package imports Keras as ``from lowbit_tf._keras import
keras``. That is Keras 3 (the TensorFlow backend), or, as TensorFlow itself
decides, tf-keras (Keras 2) when ``TF_USE_LEGACY_KERAS=1``: then ``tf.keras``
is tf-keras, the models users build are tf-keras models, and lowbit_tf's
layers, quantizers, constraints and metrics must be tf-keras classes (that is
what TensorFlow Model Optimization needs, for one). The layer code is the same
for both: it computes with TensorFlow ops; what the two Keras versions spell
differently lives here: ``kops`` (``keras.ops``, or the same functions in
TensorFlow ops for tf-keras, lowbit_tf/_keras2_ops.py), ``InputSpec`` and a few
accessors.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np


def legacy_keras_requested() -> bool:
    """True when TF_USE_LEGACY_KERAS asks for tf-keras, as TensorFlow reads it."""
    return os.environ.get("TF_USE_LEGACY_KERAS", "").strip().lower() in ("1", "true", "yes")


if legacy_keras_requested():
    try:
        import tf_keras as keras
    except ImportError as error:
        raise ImportError(
            "TF_USE_LEGACY_KERAS=1 asks for tf-keras (Keras 2), which is not installed: "
            "pip install tf-keras (the version of your TensorFlow), or unset "
            "TF_USE_LEGACY_KERAS to use Keras 3."
        ) from error
    from lowbit_tf import _keras2_ops as kops

    KERAS_3 = False
    InputSpec = keras.layers.InputSpec
else:
    import keras
    from keras import ops as kops

    KERAS_3 = True
    InputSpec = keras.InputSpec

__all__ = ["KERAS_3", "InputSpec", "floatx", "image_data_format", "keras", "kops",
           "legacy_keras_requested", "to_numpy", "variable_name"]


def floatx() -> str:
    """Keras's default float type."""
    return keras.config.floatx() if KERAS_3 else keras.backend.floatx()


def image_data_format() -> str:
    """Keras's default data format, ``"channels_last"`` unless configured."""
    return keras.config.image_data_format() if KERAS_3 else keras.backend.image_data_format()


def to_numpy(value: Any) -> np.ndarray:
    """A tensor, variable or number as a NumPy array."""
    if KERAS_3:
        return keras.ops.convert_to_numpy(value)
    return np.asarray(keras.backend.get_value(value))


def variable_name(variable: Any) -> str:
    """A weight's own name, ``"kernel"`` (Keras 3's ``path`` ends with it; Keras
    2's ``name`` is ``"layer/kernel:0"``)."""
    name = getattr(variable, "path", None) if KERAS_3 else variable.name
    return name.split("/")[-1].split(":")[0]
