"""The switch between the bitwise TF ops and the float emulation (Larq's
`larq.context` is the model for a scope of this kind).

A quantized layer (`lowbit_tf.layers`) computes its forward pass with the
custom TF ops (`lowbit_tf.ops`) where an op can run its configuration, and with
float `conv`/`matmul` on the quantized values (the emulation) otherwise. The
choice is the layer's `use_ops` argument; when that is None the layer takes the
value of the innermost `ops_scope` around its construction (default True), so

    with lowbit_tf.ops_scope(False):
        model = build_model()     # every layer keeps the float emulation

The value is fixed at construction and saved in the layer's config (a `.keras`
file reloads with the same choice) rather than read at call time, because
Keras traces `model.predict`/`model.fit` once: a call-time scope would be
baked into whichever trace came first.

No TensorFlow here: `import lowbit_tf` offers `lowbit_tf.ops_scope` cheaply.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

__all__ = ["ops_scope", "ops_enabled", "resolve_use_ops"]

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
