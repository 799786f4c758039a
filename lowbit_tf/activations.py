"""Activations of binary networks (Larq's ``larq.activations``).

The quantized layers take them by name (``activation="hard_tanh"``); Keras 3's
own layers take the function (``activation=lowbit_tf.activations.hard_tanh``:
Keras 3 resolves only its built-in names). Both save and load by name."""

from __future__ import annotations

import tensorflow as tf

from lowbit_tf._keras import keras

__all__ = ["hard_tanh", "leaky_tanh"]


@keras.saving.register_keras_serializable(package="lowbit_tf", name="hard_tanh")
def hard_tanh(x: tf.Tensor) -> tf.Tensor:
    """``clip(x, -1, 1)``."""
    return tf.clip_by_value(x, -1.0, 1.0)


@keras.saving.register_keras_serializable(package="lowbit_tf", name="leaky_tanh")
def leaky_tanh(x: tf.Tensor, alpha: float = 0.2) -> tf.Tensor:
    r"""Hard tanh with slope ``alpha`` outside ``[-1, 1]``, as leaky ReLU:

    .. math::  \text{clip}(x, -1, 1) + \alpha (\max(x, 1) - 1) + \alpha (\min(x, -1) + 1)
    """
    return (tf.clip_by_value(x, -1.0, 1.0) + (tf.maximum(x, 1.0) - 1.0) * alpha
            + (tf.minimum(x, -1.0) + 1.0) * alpha)

