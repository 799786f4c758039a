r"""Quantizers: the low-bit forward map and the pseudo-gradient used to train it.

A quantizer maps a full-precision tensor to a low-precision one on the forward
pass and defines the gradient used on the backward pass, usually a
straight-through estimator (STE): the non-differentiable step is treated as the
identity, optionally clipped. Layers take quantizers through their
``input_quantizer`` and ``kernel_quantizer`` arguments, and the following are
equivalent::

    QuantConv2D(64, 3, kernel_quantizer="ste_sign")
    QuantConv2D(64, 3, kernel_quantizer=lowbit_tf.quantizers.SteSign(clip_value=1.0))

Identifiers are resolved by :func:`get`:

- ``None`` -> ``None`` (no quantization; the layer equals its Keras twin),
- a registered short name (``"ste_sign"``) or class name (``"SteSign"``) -> a new
  instance with default arguments,
- a dict produced by :func:`serialize` -> the instance it describes,
- a :class:`Quantizer` subclass -> a new instance with default arguments,
- any other callable (a quantizer instance, :func:`ste_sign`, a user function)
  -> itself.

Bit convention (shared with the fast ops and the converter): sign binarisation
maps ``x >= 0`` (``-0.0`` included) to ``+1`` and ``x < 0`` to ``-1``; NaN stays NaN.

Adding a quantizer takes a few lines::

    @register_quantizer("my_sign")
    class MySign(Quantizer):
        precision = 1

        def __init__(self, clip_value=1.0):
            self.clip_value = clip_value

        def call(self, inputs):
            return ste_sign(inputs, clip_value=self.clip_value)

        def get_config(self):
            return {"clip_value": self.clip_value}
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, TypeVar

import tensorflow as tf

from lowbit_tf._keras import keras

__all__ = [
    "Identity",
    "Quantizer",
    "QuantizerLike",
    "SteSign",
    "deserialize",
    "get",
    "register_quantizer",
    "serialize",
    "ste_sign",
]

#: Anything :func:`get` accepts.
QuantizerLike = None | str | dict | Callable[[Any], Any]

_PACKAGE = "lowbit_tf"

# Short name -> quantizer class. Filled by `register_quantizer`.
_REGISTRY: dict[str, type[Quantizer]] = {}

_Q = TypeVar("_Q", bound="type[Quantizer]")


def _as_float_tensor(x: Any) -> tf.Tensor:
    """Converts ``x`` to a tensor; integer and boolean inputs become ``floatx``."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, keras.config.floatx())
    return x


def _check_clip_value(clip_value: Any) -> float | None:
    """Returns ``clip_value`` as a float, or None; raises ValueError if it is not > 0."""
    if clip_value is None:
        return None
    if (
        isinstance(clip_value, bool)
        or not isinstance(clip_value, numbers.Real)
        or not clip_value > 0  # also rejects NaN
    ):
        raise ValueError(
            f"`clip_value` must be a positive number or None, received clip_value={clip_value!r}."
        )
    return float(clip_value)


def _sign(x: tf.Tensor) -> tf.Tensor:
    """Sign with ``sign(0) = sign(-0.0) = +1``: ``sign(sign(x) + 0.1)`` (as Larq)."""
    return tf.sign(tf.sign(x) + tf.constant(0.1, dtype=x.dtype))


def _clipped_gradient(x: tf.Tensor, dy: tf.Tensor, clip_value: float | None) -> tf.Tensor:
    """``dy`` where ``|x| <= clip_value`` (inclusive) and 0 elsewhere; ``dy`` if None."""
    if clip_value is None:
        return dy
    return tf.where(tf.abs(x) <= clip_value, dy, tf.zeros_like(dy))


@keras.saving.register_keras_serializable(package=_PACKAGE)
def ste_sign(x: Any, clip_value: float | None = 1.0) -> tf.Tensor:
    r"""Sign binarisation with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            1 & |x| \le \text{clip\_value} \\ 0 & |x| > \text{clip\_value}
        \end{cases}

    ``-0.0`` maps to ``+1``. The gradient bound is inclusive: at
    ``|x| == clip_value`` the gradient is still passed through.

    Arguments:
        x: Input tensor (or anything convertible to one).
        clip_value: Threshold for clipping gradients; ``None`` passes the
            gradient through unchanged everywhere. Must be positive.

    Returns:
        A tensor of the same shape and (floating) dtype as ``x`` with values in
        ``{-1, +1}``.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.

    References:
        Courbariaux et al., "Binarized Neural Networks: Training Deep Neural
        Networks with Weights and Activations Constrained to +1 or -1", 2016.
    """
    clip_value = _check_clip_value(clip_value)
    x = _as_float_tensor(x)

    @tf.custom_gradient
    def _ste_sign(x):
        def grad(dy):
            return _clipped_gradient(x, dy, clip_value)

        return _sign(x), grad

    return _ste_sign(x)


ste_sign.precision = 1  # type: ignore[attr-defined]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Quantizer:
    """Base class of lowbit_tf quantizers.

    A quantizer is a callable ``q(x) -> tensor`` with a Keras config. Subclasses
    implement :meth:`call` and, if they take arguments, :meth:`get_config`
    (``from_config`` calls ``cls(**config)``). Register a subclass with
    :func:`register_quantizer` to make it available by short name.

    Attributes:
        precision: Bits per quantized value (1 for sign binarisation), or None
            for full precision. Used by model summaries and the converter.
    """

    precision: int | None = None

    def __call__(self, inputs: Any) -> tf.Tensor:
        return self.call(_as_float_tensor(inputs))

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Quantizes ``inputs`` (a floating-point tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `call`.")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments of this quantizer."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Quantizer:
        """Creates a quantizer from the output of :meth:`get_config`."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def register_quantizer(name: str, package: str = _PACKAGE) -> Callable[[_Q], _Q]:
    """Class decorator: makes a :class:`Quantizer` subclass available by short name.

    It also registers the class as Keras-serializable (``package>ClassName``) so
    models using it load without ``custom_objects``.

    Arguments:
        name: Short name for :func:`get`, e.g. ``"ste_sign"``.
        package: Keras serialization package of the class.
    """

    def decorator(cls: _Q) -> _Q:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(f"Only Quantizer subclasses can be registered, got {cls!r}.")
        previous = _REGISTRY.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"Quantizer name {name!r} is already registered to {previous.__qualname__}."
            )
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package=package)(cls)

    return decorator


@register_quantizer("identity")
class Identity(Quantizer):
    r"""The identity, :math:`q(x) = x`, with gradient 1: no quantization.

    ``get("identity")`` returns this; a layer with identity (or ``None``)
    quantizers computes exactly what its Keras twin computes.
    """

    precision = None

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs


@register_quantizer("ste_sign")
class SteSign(Quantizer):
    r"""Serializable sign binariser with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            1 & |x| \le \text{clip\_value} \\ 0 & |x| > \text{clip\_value}
        \end{cases}

    Same values and gradient as :func:`ste_sign`, which it calls.

    Arguments:
        clip_value: Threshold for clipping gradients; ``None`` passes the
            gradient through unchanged everywhere. Must be positive.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.

    References:
        Courbariaux et al., "Binarized Neural Networks: Training Deep Neural
        Networks with Weights and Activations Constrained to +1 or -1", 2016.
    """

    precision = 1

    def __init__(self, clip_value: float | None = 1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


def _valid_names() -> list[str]:
    return sorted(set(_REGISTRY) | {cls.__name__ for cls in _REGISTRY.values()})


def _lookup(name: str, custom_objects: dict[str, Any] | None) -> Any:
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in _REGISTRY:
        return _REGISTRY[name]
    for cls in _REGISTRY.values():
        if cls.__name__ == name:
            return cls
    raise ValueError(f"Unknown quantizer {name!r}. Valid names: {', '.join(_valid_names())}.")


def serialize(quantizer: Callable[[Any], Any] | None) -> dict[str, Any] | None:
    """Returns a JSON-compatible config for ``quantizer`` (None for None).

    Works for :class:`Quantizer` instances and for Keras-registered functions
    such as :func:`ste_sign`.
    """
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(
    config: str | dict[str, Any] | None, custom_objects: dict[str, Any] | None = None
) -> Callable[[Any], Any] | None:
    """Inverse of :func:`serialize`; also accepts a short or class name.

    Raises:
        ValueError: for an unknown name or a config that does not describe a
            callable; the message names the value and lists the valid names.
    """
    if config is None:
        return None
    if isinstance(config, str):
        obj = _lookup(config, custom_objects)
    elif isinstance(config, dict):
        objects = {cls.__name__: cls for cls in _REGISTRY.values()}
        objects.update(custom_objects or {})
        try:
            obj = keras.saving.deserialize_keras_object(config, custom_objects=objects)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"Could not deserialize quantizer config {config!r}: {e} "
                f"Valid names: {', '.join(_valid_names())}."
            ) from e
    else:
        raise ValueError(f"Could not interpret quantizer identifier: {config!r}")
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"Quantizer config {config!r} did not give a callable: {obj!r}")
    return obj


def get(identifier: QuantizerLike) -> Callable[[Any], Any] | None:
    """Resolves a quantizer identifier (see the module docstring).

    Raises:
        ValueError: for an unknown name or an identifier that is not a name,
            dict, callable or None.
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Quantizer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret quantizer identifier: {identifier!r}")
