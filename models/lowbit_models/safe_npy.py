"""Reading `.npy` files that hold pickled Python objects, without running code.

`np.save` of a dict (the `bvlc_alexnet.npy` convention) writes a 0-d object
array whose payload is a pickle, and `np.load(..., allow_pickle=True)` hands
that pickle to `pickle.load`, which calls whatever callables the file names:
a crafted file runs arbitrary code before any of our checks. Here the pickle is
read by an unpickler whose `find_class` resolves only the few globals that
numpy arrays are rebuilt from; dicts, lists, tuples, strings and numbers need
no globals at all. Everything else (os.system, builtins.eval, any class) is
refused with `UnsafeFileError` naming it, before it is called.

Why the allowed globals are harmless: `_reconstruct(ndarray, shape, dtype)`
makes an empty array, `ndarray.__setstate__` (pickle's BUILD) fills it from
bytes, `_frombuffer(bytes, dtype, shape, order)` (protocol 5) makes an array
of a bytes buffer, `dtype(...)` makes a dtype, `scalar(dtype, bytes)` a numpy scalar and
`_codecs.encode(str, "latin1")` is how protocol 2 spells a bytes object. None
of them imports, opens, executes or reaches an attribute by name.
"""

from __future__ import annotations

import codecs
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafeFileError(pickle.UnpicklingError):
    """The pickle names a global that is not on the allow-list."""


def _allowed_globals() -> dict[tuple[str, str], Any]:
    # The functions numpy's own pickles name, taken from numpy itself so that
    # files written by numpy 1 (`numpy.core...`) and numpy 2 (`numpy._core...`)
    # both resolve to this numpy's implementation.
    reconstruct = np.ndarray.__reduce__(np.zeros(1))[0]
    scalar = np.float32(0).__reduce__()[0]
    from_buffer = np.zeros(1).__reduce_ex__(5)[0]  # protocol 5: array from a bytes buffer
    table: dict[tuple[str, str], Any] = {("_codecs", "encode"): codecs.encode}
    for module in ("numpy.core.numeric", "numpy._core.numeric"):
        table[(module, "_frombuffer")] = from_buffer
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "_reconstruct")] = reconstruct
        table[(module, "scalar")] = scalar
    for module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray"):
        table[(module, "ndarray")] = np.ndarray
        table[(module, "dtype")] = np.dtype
    return table


_ALLOWED = _allowed_globals()


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise UnsafeFileError(
                f"refusing to load {module}.{name}: the file may only hold dicts, lists, "
                "strings, numbers and numpy arrays"
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafeFileError(f"refusing persistent id {pid!r}")


def safe_unpickle(data: bytes | io.BufferedIOBase, *, encoding: str = "latin1") -> Any:
    """Unpickles `data` (bytes or a binary file) allowing only plain containers,
    strings, numbers and numeric numpy arrays. `encoding` reads Python 2
    strings (latin1 keeps numpy's raw array bytes intact)."""
    stream = io.BytesIO(data) if isinstance(data, bytes | bytearray) else data
    value = _RestrictedUnpickler(stream, encoding=encoding).load()
    _check_arrays(value)
    return value


def _check_arrays(value: Any) -> None:
    """Refuses structured dtypes with object fields anywhere in `value`: the
    callers read plain object arrays (a dict in a 0-d array) and numeric ones."""
    if isinstance(value, dict):
        for item in value.values():
            _check_arrays(item)
    elif isinstance(value, list | tuple):
        for item in value:
            _check_arrays(item)
    elif isinstance(value, np.ndarray) and value.dtype.hasobject:
        if value.dtype != object:
            raise UnsafeFileError(f"refusing a structured array with objects ({value.dtype})")
        for item in value.flat:
            _check_arrays(item)


def load_npy(path: str | Path) -> np.ndarray:
    """Reads a `.npy` file like `np.load(path, allow_pickle=True,
    encoding="latin1")`, but an object array's pickle goes through
    `safe_unpickle`.

    Raises:
      UnsafeFileError: the pickle names anything but numpy's array builders.
      ValueError: not a .npy file, or a malformed header or pickle.
    """
    with open(path, "rb") as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:  # 3.0 (utf-8 field names) is read by numpy without pickles
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
        # (Fortran order is ignored: an object array's pickle carries its own layout.)
        if not dtype.hasobject:
            stream.seek(0)
            return np.load(stream, allow_pickle=False)
        try:
            array = safe_unpickle(stream)
        except UnsafeFileError:
            raise
        except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, IndexError,
                KeyError, MemoryError, OverflowError, RecursionError) as error:
            raise ValueError(f"corrupt pickle in {path}: {error}") from error
    if not isinstance(array, np.ndarray) or array.shape != shape:
        raise ValueError(f"{path}: the pickle does not hold the {shape} array the header declares")
    return array
