"""Scopes that change how the quantized layers behave (Larq's ``larq.context``).

- :func:`quantized_scope`: inside ``quantized_scope(True)``, reading a quantized
  layer's latent kernel as NumPy (``layer.get_weights()``, ``model.get_weights()``,
  ``model.save(...)``, ``model.save_weights(...)``, ``variable.numpy()``) gives
  the quantized values, ``kernel_quantizer(kernel)``, as in Larq::

      with lowbit_tf.context.quantized_scope(True):
          model.save("binary_model.keras")        # binarised weights
          weights = model.get_weights()           # binarised weights

  The layers' own computation is the same inside and outside the scope (they
  quantize the latent kernel themselves; TensorFlow reads variables without
  NumPy).
- :func:`metrics_scope` / :func:`get_training_metrics`: the training metrics
  (``"flip_ratio"``) that layers built inside the scope add, as
  :func:`lowbit_tf.metrics.scope` (the same function under Larq's name).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from lowbit_tf.metrics import get_training_metrics
from lowbit_tf.metrics import scope as metrics_scope

__all__ = [
    "get_training_metrics",
    "mark_quantized_reads",
    "metrics_scope",
    "quantized_scope",
    "should_quantize",
]

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

        def numpy(self: Any) -> np.ndarray:
            return self._lowbit_quantized_read(cls.numpy(self))

        def __array__(self: Any, dtype: Any = None, copy: Any = None) -> np.ndarray:
            return np.asarray(self._lowbit_quantized_read(cls.__array__(self)), dtype=dtype)

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
