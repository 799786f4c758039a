"""Maths shared by the quantizers, layers and metrics (Larq's `larq.math`).

`sign` is the project's one binarisation in TensorFlow: +1 for x >= 0 (-0.0
included), -1 for x < 0, NaN stays NaN (as Larq; the custom ops binarise NaN
as +1, see docs/custom_ops.md). `heaviside` is Larq's step function, 1 for
x > 0 and 0 otherwise.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["heaviside", "sign"]


def sign(x: tf.Tensor) -> tf.Tensor:
    """Sign with ``sign(0) = sign(-0.0) = +1``: ``sign(sign(x) + 0.1)`` (as Larq)."""
    x = tf.convert_to_tensor(x)
    return tf.sign(tf.sign(x) + tf.constant(0.1, dtype=x.dtype))


def heaviside(x: tf.Tensor) -> tf.Tensor:
    """Step function: 1 for ``x > 0``, 0 for ``x <= 0`` (-0.0 included), NaN stays
    NaN: ``sign(relu(x))`` (as Larq)."""
    return tf.sign(tf.nn.relu(tf.convert_to_tensor(x)))
