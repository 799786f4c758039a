"""Locating and loading the native libraries built from custom_ops/.

This module must not import TensorFlow at import time: the TFLite runtime
(`lowbit_tf.lite`) uses `tflite_library_path` on devices without TensorFlow.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
TF_OPS_LIBRARY = _HERE / "liblowbit_tf_ops.so"
TFLITE_LIBRARY = _HERE / "liblowbit_tflite.so"
#: Environment variable naming another TF op library to load (a sanitizer or
#: development build; the TFLite delegate's is lowbit_tf.lite.LIBRARY_ENV).
TF_OPS_LIBRARY_ENV = "LOWBIT_TF_OPS_LIBRARY"

_BUILD_INFO = re.compile(rb"lowbit-build-info:tensorflow=([0-9A-Za-z.\-+]*);")


class NativeLibraryError(ImportError):
    """A native library is missing or does not fit the installed TensorFlow."""


def _missing(path: Path) -> NativeLibraryError:
    return NativeLibraryError(
        f"lowbit-tf native library {path.name} was not found in {path.parent}. "
        "It is built when the package is installed: run `pip install -e .` "
        "(or `pip install .`) from the lowbit-tf source tree."
    )


def tflite_library_path() -> Path:
    """Path of the TFLite delegate library (liblowbit_tflite.so)."""
    if not TFLITE_LIBRARY.is_file():
        raise _missing(TFLITE_LIBRARY)
    return TFLITE_LIBRARY


def built_tensorflow_version(path: Path = TF_OPS_LIBRARY) -> str:
    """The TensorFlow version the TF op library was compiled against.

    Read from a marker string in the binary, without loading it.
    """
    match = _BUILD_INFO.search(path.read_bytes())
    if match is None:
        raise NativeLibraryError(f"{path} carries no lowbit build information; rebuild lowbit-tf")
    return match.group(1).decode()


def check_tensorflow_version(built: str, installed: str) -> None:
    """Raises NativeLibraryError unless both versions share major.minor."""
    if built.split(".")[:2] != installed.split(".")[:2]:
        raise NativeLibraryError(
            f"lowbit-tf's TF op library was built against TensorFlow {built}, but TensorFlow "
            f"{installed} is installed. Custom ops only load into the TensorFlow minor version "
            "they were compiled with: reinstall lowbit-tf (`pip install -e .`) in this "
            f"environment, or install TensorFlow {'.'.join(built.split('.')[:2])}."
        )


def library_path(env: str, installed: Path) -> Path:
    """`$env` if set (another build of a library: cross, sanitizer, development),
    else the library installed with the package.

    Raises:
      FileNotFoundError: `$env` names no file.
      NativeLibraryError: the installed library is missing.
    """
    override = os.environ.get(env)
    if override:
        path = Path(override)
        if not path.is_file():
            raise FileNotFoundError(f"{env}={override} does not name a file")
        return path
    if not installed.is_file():
        raise _missing(installed)
    return installed


def tf_ops_library_path() -> Path:
    """Path of the TF op library: `$LOWBIT_TF_OPS_LIBRARY` if set, else the one
    installed with the package."""
    return library_path(TF_OPS_LIBRARY_ENV, TF_OPS_LIBRARY)


@cache
def load_tf_ops() -> ModuleType:
    """Loads the TF op library once (tf.load_op_library) and returns its op module."""
    import tensorflow as tf

    path = tf_ops_library_path()
    check_tensorflow_version(built_tensorflow_version(path), tf.__version__)
    if TFLITE_LIBRARY.is_file():  # the same core, and the library with the kernel table
        from lowbit_tf.lite import warn_unknown_kernel

        warn_unknown_kernel(TFLITE_LIBRARY)
    return tf.load_op_library(str(path))


@cache
def tf_ops_problem() -> str | None:
    """None when the TF op library loads (it is then loaded), else why not, in
    words. For code that can do without the ops (the Keras layers fall back to
    the float emulation); the ops themselves raise load_tf_ops's error."""
    try:
        load_tf_ops()
    except (NativeLibraryError, FileNotFoundError) as error:
        return str(error)
    except Exception as error:  # noqa: BLE001 - tf.errors.NotFoundError: unloadable binary
        return f"{type(error).__name__}: {error}"
    return None


@dataclass(frozen=True)
class KernelPath:
    """One row of the native kernel table (custom_ops/core/kernel_table.h).

    `name` is the LOWBIT_KERNEL value; `built`: compiled into this library;
    `runnable`: built and this CPU has every feature in `features`. The op
    columns (`bgemv`, `bitpack`, `bdepthwise`) name the least demanding row
    that shares this row's code for that op, "-" where the row has none of its
    own (the op's portable code).
    """

    name: str
    features: tuple[str, ...]
    built: bool
    runnable: bool
    block_width: int
    tile_pixels: int
    bgemv: str
    bitpack: str
    bdepthwise: str


def kernel_paths(library: str | os.PathLike[str] | None = None) -> tuple[KernelPath, ...]:
    """The kernel table of the TFLite library (`library`, default the one
    installed with the package), best path first (the order of the fallback
    from a forced LOWBIT_KERNEL path the CPU lacks)."""
    return _kernel_table(os.fspath(library) if library is not None else str(tflite_library_path()))


@cache
def _kernel_table(library: str) -> tuple[KernelPath, ...]:
    import ctypes

    fn = ctypes.CDLL(library).lowbit_kernel_table
    fn.restype = ctypes.c_char_p
    rows = []
    for line in fn().decode().splitlines():
        name, *fields = line.split()
        f = dict(field.split("=", 1) for field in fields)
        rows.append(
            KernelPath(
                name=name,
                features=() if f["features"] == "-" else tuple(f["features"].split(",")),
                built=f["built"] == "1",
                runnable=f["runnable"] == "1",
                block_width=int(f["block_width"]),
                tile_pixels=int(f["tile_pixels"]),
                bgemv=f["bgemv"],
                bitpack=f["bitpack"],
                bdepthwise=f["bdepthwise"],
            )
        )
    return tuple(rows)


def kernel_path_names(op: str | None = None) -> list[str]:
    """Names of the paths built into this library, the reference aside (it is
    the ground truth they are compared with), best first: every one, or with
    `op` ("bgemv", "bitpack", "bdepthwise") one per distinct code of that op
    (the least demanding row that runs it), for tests that force each path
    with LOWBIT_KERNEL."""
    rows = [p for p in kernel_paths() if p.built and p.name != "reference"]
    if op is None:
        return [p.name for p in rows]
    last: dict[str, str] = {}
    for p in rows:
        last[getattr(p, op)] = p.name
    return [p.name for p in rows if p.name in last.values()]
