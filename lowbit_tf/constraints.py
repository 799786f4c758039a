r"""Weight constraints for binarised layers.

A binary layer trains latent float weights ``w`` and uses ``sign(w)`` on the
forward pass. The straight-through gradient of ``ste_sign`` is zero for
``|w| > clip_value``, so a latent weight that drifts past the clip value stops
learning ("starved weight"). :class:`WeightClip` keeps latent weights in
``[-clip_value, clip_value]`` after every optimizer step (BinaryConnect,
Courbariaux et al. 2015).

Constraints are resolved by :func:`get`: ``None`` -> ``None``;
``"weight_clip"`` or ``"WeightClip"`` -> ``WeightClip()``; any other string or a
dict -> Keras's own resolution (``"non_neg"``, serialized configs); a callable ->
itself.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any

import tensorflow as tf

from lowbit_tf._keras import keras

__all__ = ["WeightClip", "deserialize", "get", "serialize", "weight_clip"]


@keras.saving.register_keras_serializable(package="lowbit_tf")
class WeightClip(keras.constraints.Constraint):
    r"""Clips weights to :math:`[-\text{clip\_value}, \text{clip\_value}]`.

    .. math::  w \leftarrow \min(\max(w, -c), c)

    Arguments:
        clip_value: The bound :math:`c`; must be positive.

    Raises:
        ValueError: if ``clip_value`` is not a positive number.
    """

    def __init__(self, clip_value: float = 1.0):
        if (
            isinstance(clip_value, bool)
            or not isinstance(clip_value, numbers.Real)
            or not clip_value > 0
        ):
            raise ValueError(
                f"`clip_value` must be a positive number, received clip_value={clip_value!r}."
            )
        self.clip_value = float(clip_value)

    def __call__(self, w: Any) -> tf.Tensor:
        w = tf.convert_to_tensor(w)
        return tf.clip_by_value(w, -self.clip_value, self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}

    def __repr__(self) -> str:
        return f"WeightClip(clip_value={self.clip_value!r})"


# Short name -> constraint class, for names Keras itself does not know.
_REGISTRY: dict[str, type] = {"weight_clip": WeightClip, "WeightClip": WeightClip}


weight_clip = WeightClip  # Larq's lower-case name (lq.constraints.weight_clip)


def serialize(constraint: Callable[[Any], Any] | None) -> dict[str, Any] | None:
    """Returns a JSON-compatible config for ``constraint`` (None for None)."""
    return keras.constraints.serialize(constraint)


def deserialize(config: str | dict[str, Any] | None) -> Callable[[Any], Any] | None:
    """Inverse of :func:`serialize`; also accepts a short or class name."""
    return get(config)


def get(identifier: Any) -> Callable[[Any], Any] | None:
    """Resolves a constraint identifier (see the module docstring).

    Raises:
        ValueError: for a name neither lowbit_tf nor Keras knows (the message
            names it and lists the lowbit_tf names) or an uninterpretable value.
    """
    if identifier is None:
        return None
    if isinstance(identifier, str) and identifier in _REGISTRY:
        return _REGISTRY[identifier]()
    try:
        return keras.constraints.get(identifier)
    except ValueError as e:
        raise ValueError(
            f"Unknown constraint {identifier!r}. lowbit_tf names: "
            f"{', '.join(sorted(_REGISTRY))}; Keras names such as 'non_neg', "
            f"'max_norm', 'unit_norm' are accepted too. ({e})"
        ) from e
