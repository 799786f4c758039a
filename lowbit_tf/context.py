"""Scopes that change how the quantized layers behave (Larq's ``larq.context`` is
the model for scopes of this kind).

- :func:`ops_scope`: the switch between the bitwise TF ops and the float
  emulation. A quantized layer (``lowbit_tf.layers``) computes its forward pass
  with the custom TF ops (``lowbit_tf.ops``) where an op can run its
  configuration, and with float ``conv``/``matmul`` on the quantized values
  (the emulation) otherwise. The choice is the layer's ``use_ops`` argument;
  when that is None the layer takes the value of the innermost ``ops_scope``
  around its construction (default True), so::

      with lowbit_tf.ops_scope(False):
          model = build_model()     # every layer keeps the float emulation

  The value is fixed at construction and saved in the layer's config (a
  ``.keras`` file reloads with the same choice) rather than read at call time,
  because Keras traces ``model.predict``/``model.fit`` once: a call-time scope
  would be baked into whichever trace came first.
- :func:`quantized_scope` (Larq's): inside ``quantized_scope(True)``, reading a
  quantized layer's latent kernel as NumPy (``layer.get_weights()``,
  ``model.get_weights()``, ``model.save(...)``, ``model.save_weights(...)``,
  ``variable.numpy()``) gives the quantized values, ``kernel_quantizer(kernel)``,
  as in Larq::

      with lowbit_tf.context.quantized_scope(True):
          model.save("binary_model.keras")        # binarised weights
          weights = model.get_weights()           # binarised weights

  The layers' own computation is the same inside and outside the scope (they
  quantize the latent kernel themselves; TensorFlow reads variables without
  NumPy).
- :func:`metrics_scope` / :func:`get_training_metrics` (Larq's names): the
  training metrics (``"flip_ratio"``) that layers built inside the scope add,
  i.e. :func:`lowbit_tf.metrics.scope` and :func:`lowbit_tf.metrics.get_training_metrics`.

No TensorFlow here: ``import lowbit_tf`` offers ``lowbit_tf.ops_scope`` cheaply
(the metrics functions import lowbit_tf.metrics when called).
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

__all__ = [
    "get_training_metrics",
    "mark_quantized_reads",
    "metrics_scope",
    "ops_enabled",
    "ops_scope",
    "quantized_scope",
    "resolve_use_ops",
    "should_quantize",
]

_USE_OPS: contextvars.ContextVar[bool] = contextvars.ContextVar("lowbit_tf_use_ops", default=True)


def _check_bool(owner: str, name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{owner}: `{name}` must be True or False, received {name}={value!r}.")
    return value


@contextlib.contextmanager
def ops_scope(enabled: bool = True) -> Iterator[None]:
    """Within it, quantized layers built with ``use_ops=None`` (the default)
    compute with the custom TF ops (``True``) or the float emulation (``False``).

    Raises:
        ValueError: if ``enabled`` is not a bool.
    """
    token = _USE_OPS.set(_check_bool("ops_scope", "enabled", enabled))
    try:
        yield
    finally:
        _USE_OPS.reset(token)


def ops_enabled() -> bool:
    """The value of the innermost `ops_scope` (True outside any)."""
    return _USE_OPS.get()


def resolve_use_ops(owner: str, use_ops: Any) -> bool:
    """A layer's `use_ops` argument as a bool: itself, or the scope's for None.

    Raises:
        ValueError: naming `owner` for anything but None, True or False.
    """
    return ops_enabled() if use_ops is None else _check_bool(owner, "use_ops", use_ops)


# ------------------------------------------------------------ Larq's scopes

_state = threading.local()


@contextlib.contextmanager
def quantized_scope(quantize: bool) -> Iterator[bool]:
    """Within the scope, quantized kernels read as NumPy give quantized values."""
    previous = should_quantize()
    _state.quantize = bool(quantize)
    try:
        yield _state.quantize
    finally:
        _state.quantize = previous


def should_quantize() -> bool:
    """True inside ``quantized_scope(True)`` (of this thread)."""
    return getattr(_state, "quantize", False)


_READ_CLASSES: dict[type, type] = {}


def _quantized_read_class(cls: type) -> type:
    """``cls`` with ``numpy()`` and ``__array__`` quantized inside the scope.

    Only the NumPy reads change: what get_weights and saving use. TensorFlow
    reads a variable through its value, so training and inference do not see
    it. Made once per variable class."""
    if cls not in _READ_CLASSES:

        def latent(self: Any) -> np.ndarray:
            if hasattr(cls, "numpy"):
                return cls.numpy(self)
            # tf-keras's AutoCastVariable (mixed precision) forwards numpy() to
            # the variable it wraps: read that through TensorFlow instead.
            import tensorflow as tf

            return tf.convert_to_tensor(self).numpy()

        def numpy(self: Any) -> np.ndarray:
            return self._lowbit_quantized_read(latent(self))

        def __array__(self: Any, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return np.asarray(self._lowbit_quantized_read(latent(self)), dtype=dtype)

        def _lowbit_quantized_read(self: Any, value: np.ndarray) -> np.ndarray:
            if not should_quantize():
                return value
            return np.asarray(self._lowbit_read_quantizer(value))

        _READ_CLASSES[cls] = type(f"Quantized{cls.__name__}", (cls,), {
            "numpy": numpy, "__array__": __array__,
            "_lowbit_quantized_read": _lowbit_quantized_read,
        })
    return _READ_CLASSES[cls]


def mark_quantized_reads(variable: Any, quantizer: Callable[..., Any] | None) -> None:
    """Makes ``variable`` read as ``quantizer(variable)`` inside ``quantized_scope(True)``.

    The layers call it on their latent kernels when they are built; a None
    quantizer leaves the variable as it is."""
    if quantizer is None or getattr(variable, "_lowbit_read_quantizer", None) is not None:
        return
    variable.__class__ = _quantized_read_class(type(variable))
    variable._lowbit_read_quantizer = quantizer


def metrics_scope(metrics: Iterable[str] = ()) -> Any:
    """Larq's name for :func:`lowbit_tf.metrics.scope`: layers built inside add
    these training metrics."""
    from lowbit_tf.metrics import scope

    return scope(metrics)


def get_training_metrics() -> set[str]:
    """Larq's name for :func:`lowbit_tf.metrics.get_training_metrics`."""
    from lowbit_tf.metrics import get_training_metrics as current

    return current()
