"""Run `.tflite` models with lowbit custom ops, with or without TensorFlow.

`Interpreter` is a thin wrapper around a stock TFLite Python interpreter that
attaches the lowbit external delegate (`liblowbit_tflite.so`). The delegate
executes the lowbit custom ops (`LowbitBconv2d`, ...) with the same C++ kernels
as the TensorFlow ops; every other op stays with the runtime (and its default
XNNPACK delegate).

This module never imports TensorFlow unless it is the only runtime available:
on a device (Raspberry Pi, ...) `numpy` plus `ai-edge-litert` or
`tflite-runtime` is enough. Runtimes are tried in this order:
`ai_edge_litert.interpreter`, `tflite_runtime.interpreter`, `tensorflow.lite`.

Example::

    from lowbit_tf.lite import Interpreter

    interpreter = Interpreter(model_path="model.tflite", num_threads=4)
    probabilities = interpreter.predict(images)   # numpy in, numpy out
    interpreter.kernel_path                       # "neon", "avx2", ...: what runs

`kernel_path()` names the kernel path (instruction set) the lowbit ops run on
this CPU, `kernel_paths()` lists the library's paths; both work without a
model and honour `$LOWBIT_KERNEL`. `describe_model(path)` reads what a .tflite
file says about itself (the lowbit converter's note on what runs it: a plain
TFLite interpreter only reports "Encountered unresolved custom op").
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from lowbit_tf._native import KernelPath

__all__ = [
    "Interpreter",
    "KernelPath",
    "METADATA_NAME",
    "ModelError",
    "RUNTIMES",
    "check_model_bytes",
    "delegate_library_path",
    "describe_model",
    "kernel_path",
    "kernel_paths",
    "load_delegate",
]

#: Importable TFLite runtimes, in order of preference.
RUNTIMES: tuple[str, ...] = ("ai_edge_litert", "tflite_runtime", "tensorflow")

#: Environment variable that overrides the path of the delegate library
#: (useful for cross-compiled or development builds).
LIBRARY_ENV = "LOWBIT_TFLITE_LIBRARY"

#: Environment variable forcing a kernel path (custom_ops/core/kernel_table.h).
KERNEL_ENV = "LOWBIT_KERNEL"

_TFLITE_IDENTIFIER = b"TFL3"

# The runtimes decode their error text as UTF-8; a corrupt model can put other
# bytes into it (e.g. a garbled op name).
_UNDECODABLE = "cannot {what}: the runtime failed with an undecodable message (corrupt model?)"

# Where the runtime's error reporter glues two messages together.
_RUNTIME_GLUE = re.compile(r"(\S)(Node number \d+ \()")


def _unglue(text: str) -> str:
    return _RUNTIME_GLUE.sub(lambda m: m[1] + (" " if m[1] in ".;:" else "; ") + m[2], text)


def _format_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


class ModelError(ValueError):
    """A model could not be loaded or prepared (corrupt file, bad op options...)."""


def _import_runtime(name: str) -> ModuleType:
    """Returns the module holding `Interpreter` and `load_delegate` for a runtime."""
    if name == "ai_edge_litert":
        return importlib.import_module("ai_edge_litert.interpreter")
    if name == "tflite_runtime":
        return importlib.import_module("tflite_runtime.interpreter")
    if name == "tensorflow":
        tf = importlib.import_module("tensorflow")
        module = ModuleType("tensorflow.lite (lowbit view)")
        module.Interpreter = tf.lite.Interpreter  # type: ignore[attr-defined]
        module.load_delegate = tf.lite.experimental.load_delegate  # type: ignore[attr-defined]
        return module
    raise ValueError(f"unknown TFLite runtime {name!r}; expected one of {RUNTIMES}")


# What to pip install for each runtime.
_RUNTIME_PACKAGES = {
    "ai_edge_litert": "ai-edge-litert", "tflite_runtime": "tflite-runtime",
    "tensorflow": "tensorflow",
}


def _find_runtime(runtime: str | None) -> tuple[str, ModuleType]:
    if runtime is not None:
        try:
            return runtime, _import_runtime(runtime)
        except ModuleNotFoundError as e:
            raise ImportError(
                f"runtime={runtime!r} is not installed ({e}): pip install "
                f"{_RUNTIME_PACKAGES[runtime]}, or leave runtime=None to use the first "
                f"installed of {RUNTIMES}"
            ) from e
    errors = []
    for name in RUNTIMES:
        try:
            return name, _import_runtime(name)
        except ImportError as e:
            errors.append(f"{name}: {e}")
    raise ImportError(
        "No TFLite runtime found. Install one of: ai-edge-litert (recommended), "
        "tflite-runtime, tensorflow. (" + "; ".join(errors) + ")"
    )


def delegate_library_path() -> Path:
    """Path of `liblowbit_tflite.so`: `$LOWBIT_TFLITE_LIBRARY` if set, else the
    library installed with the package (`lowbit_tf/_native`)."""
    from lowbit_tf._native import TFLITE_LIBRARY, library_path

    return library_path(LIBRARY_ENV, TFLITE_LIBRARY)


def load_delegate(
    num_threads: int | None = None,
    runtime: str | None = None,
    library: str | Path | None = None,
    *,
    check_nan: bool = False,
    int8_builtin_convs: bool = True,
) -> Any:
    """Loads the lowbit external delegate for a runtime.

    Args:
      num_threads: threads for the lowbit kernels; None follows the interpreter's
        thread count.
      runtime: one of `RUNTIMES`; None picks the first importable one. The
        delegate must be loaded through the runtime that will use it.
      library: path of the delegate library; default `delegate_library_path()`.
      check_nan: debug mode: a lowbit op whose float input holds a NaN fails
        (naming the op and the element) instead of binarising it as +1.
      int8_builtin_convs: the delegate also runs the int8 CONV_2D builtins
        over at most 8 input channels (a stem conv) with its own kernel, on x86
        CPUs with AVX-512 VNNI and Arm CPUs with NEON, where XNNPACK's int8
        conv is slower for them (docs/int8.md); False
        leaves every builtin op to the runtime.

    Returns:
      The runtime's delegate object, for `experimental_delegates=[...]`.
    """
    _, module = _find_runtime(runtime)
    options: dict[str, str] = {}
    if num_threads is not None:
        options["num_threads"] = str(_check_threads(num_threads))
    if check_nan:
        options["check_nan"] = "1"
    if not int8_builtin_convs:
        options["int8_builtin_convs"] = "0"
    path = Path(library) if library is not None else delegate_library_path()
    warn_unknown_kernel(path)
    return module.load_delegate(str(path), options)


def warn_unknown_kernel(library: str | Path) -> None:
    """Warns (once per value) when $LOWBIT_KERNEL names no path of the kernel
    table of `library` (a lowbit TFLite library): the native code then
    silently runs the best path for the CPU."""
    forced = os.environ.get(KERNEL_ENV)
    if forced:
        _warn_unknown_kernel(forced, str(library))


@functools.cache
def _warn_unknown_kernel(forced: str, library: str) -> None:
    import ctypes

    try:
        table = ctypes.CDLL(library).lowbit_kernel_table
    except (OSError, AttributeError):  # no table to ask: the delegate's loader says why
        return
    table.restype = ctypes.c_char_p
    names = [line.split()[0] for line in table().decode().splitlines() if line.strip()]
    if forced not in names:
        warnings.warn(
            f"{KERNEL_ENV}={forced!r} names no kernel path (known: {', '.join(names)}); "
            "the best path for this CPU is used", RuntimeWarning, stacklevel=3)


def kernel_paths(library: str | Path | None = None) -> tuple[KernelPath, ...]:
    """The kernel paths of the delegate library, best first: one `KernelPath`
    per row of its kernel table (custom_ops/core/kernel_table.h), with `name`
    (the `$LOWBIT_KERNEL` value), `features` (the CPU features it needs),
    `built` (compiled into this library: the paths of its architecture) and
    `runnable` (built, and this CPU has the features).

    Args:
      library: path of the delegate library; default `delegate_library_path()`.
    """
    from lowbit_tf._native import kernel_paths as read_table

    return read_table(Path(library) if library is not None else delegate_library_path())


def kernel_path(library: str | Path | None = None) -> str:
    """Name of the kernel path the lowbit ops of an interpreter made now run
    on, as the native code chooses it: the first runnable row of
    `kernel_paths()` ("neon" on a Pi 2 or later, "avx2", "avx512", ... on
    x86), or the row `$LOWBIT_KERNEL` names, where a forced path this build or
    CPU lacks falls back to the next runnable row down the table. An unknown
    `$LOWBIT_KERNEL` value gives a RuntimeWarning and the automatic choice.

    Args:
      library: path of the delegate library; default `delegate_library_path()`.
    """
    import ctypes

    path = Path(library) if library is not None else delegate_library_path()
    warn_unknown_kernel(path)
    name = ctypes.CDLL(str(path)).lowbit_bconv2d_kernel_name
    name.restype = ctypes.c_char_p
    return name().decode()


def _check_threads(num_threads: int) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, (int, np.integer)):
        raise TypeError(f"num_threads must be an int, got {type(num_threads).__name__}")
    if num_threads < 1:
        raise ValueError(f"num_threads must be >= 1, got {num_threads}")
    return int(num_threads)


def check_model_bytes(content: bytes, source: str = "model") -> None:
    """Cheap sanity checks of a .tflite flatbuffer before the runtime sees it.

    The runtimes verify the flatbuffer themselves; this gives a clearer message
    for the common cases (empty, truncated or non-TFLite file).

    Raises:
      ModelError: naming the problem.
    """
    size = len(content)
    if size < 8:
        raise ModelError(f"{source} is not a TFLite model: only {size} bytes")
    if bytes(content[4:8]) != _TFLITE_IDENTIFIER:
        raise ModelError(
            f"{source} is not a TFLite model: file identifier is {bytes(content[4:8])!r}, "
            f"expected {_TFLITE_IDENTIFIER!r}"
        )
    root = int.from_bytes(bytes(content[0:4]), "little")
    if root + 4 > size:
        raise ModelError(f"{source} is truncated or corrupt: root table at {root}, size {size}")


class _Flatbuffer:
    """Just enough of a bounds-checked flatbuffer reader for `describe_model`."""

    def __init__(self, content: bytes, source: str) -> None:
        self.content, self.source = content, source

    def int_at(self, pos: int, size: int, signed: bool = False) -> int:
        if pos < 0 or pos + size > len(self.content):
            raise ModelError(f"{self.source} is truncated or corrupt: offset {pos} out of range")
        return int.from_bytes(self.content[pos:pos + size], "little", signed=signed)

    def root(self) -> int:
        return self.int_at(0, 4)

    def field(self, table: int, index: int) -> int | None:
        """Position of field `index` of the table at `table`, None if absent."""
        vtable = table - self.int_at(table, 4, signed=True)
        entry = 4 + 2 * index
        if entry >= self.int_at(vtable, 2):
            return None
        offset = self.int_at(vtable + entry, 2)
        return table + offset if offset else None

    def follow(self, pos: int) -> int:
        return pos + self.int_at(pos, 4)

    def vector(self, pos: int | None) -> range:
        """Positions of the elements of a vector field of tables or strings."""
        if pos is None:
            return range(0)
        start = self.follow(pos)
        count = self.int_at(start, 4)
        if start + 4 + 4 * count > len(self.content):
            raise ModelError(f"{self.source} is truncated or corrupt: vector at {start}")
        return range(start + 4, start + 4 + 4 * count, 4)

    def bytes(self, pos: int | None) -> bytes:
        if pos is None:
            return b""
        start = self.follow(pos)
        count = self.int_at(start, 4)
        if start + 4 + count > len(self.content):
            raise ModelError(f"{self.source} is truncated or corrupt: string at {start}")
        return bytes(self.content[start + 4:start + 4 + count])


# Fields of the TFLite schema's tables (tensorflow/compiler/mlir/lite/schema/schema.fbs).
_MODEL_OPERATOR_CODES, _MODEL_DESCRIPTION, _MODEL_BUFFERS, _MODEL_METADATA = 1, 3, 4, 6
_OPERATOR_CODE_CUSTOM_CODE = 1
_METADATA_NAME, _METADATA_BUFFER = 0, 1
_BUFFER_DATA = 0

#: Name of the metadata entry the lowbit converter writes into each model with
#: lowbit custom ops (its text is also the model's description).
METADATA_NAME = "lowbit_tf"


def describe_model(model: str | os.PathLike[str] | bytes) -> str:
    """What a .tflite file says about itself, without a runtime: the lowbit
    converter's note (its metadata entry "lowbit_tf", e.g. "lowbit-tf 0.1.0
    model with custom ops LowbitBconv2d: run it with lowbit_tf.lite.Interpreter
    (pip install lowbit-tf-runtime, or lowbit-tf)"), else the model's
    description (TensorFlow's converter writes "MLIR Converted."), followed by
    the custom ops it uses when the text does not name them all.

    For a model that a plain TFLite interpreter refuses with "Encountered
    unresolved custom op": it says what runs it.

    Args:
      model: path of a .tflite file, or its bytes.

    Raises:
      ModelError: the file cannot be read or is not a TFLite model.
    """
    if isinstance(model, bytes | bytearray | memoryview):
        content, source = bytes(model), "model_content"
    else:
        source = os.fspath(model)
        try:
            content = Path(source).read_bytes()
        except OSError as e:
            raise ModelError(f"cannot read model file {source}: {e}") from e
    check_model_bytes(content, source)
    buffer = _Flatbuffer(content, source)
    root = buffer.root()
    text = buffer.bytes(buffer.field(root, _MODEL_DESCRIPTION))
    buffers = buffer.vector(buffer.field(root, _MODEL_BUFFERS))
    for entry in buffer.vector(buffer.field(root, _MODEL_METADATA)):
        table = buffer.follow(entry)
        if buffer.bytes(buffer.field(table, _METADATA_NAME)) != METADATA_NAME.encode():
            continue
        index_pos = buffer.field(table, _METADATA_BUFFER)
        index = 0 if index_pos is None else buffer.int_at(index_pos, 4)
        if index < len(buffers):
            text = buffer.bytes(buffer.field(buffer.follow(buffers[index]), _BUFFER_DATA))
        break
    description = text.decode("utf-8", "replace").strip()
    custom_ops = []
    for entry in buffer.vector(buffer.field(root, _MODEL_OPERATOR_CODES)):
        code = buffer.bytes(buffer.field(buffer.follow(entry), _OPERATOR_CODE_CUSTOM_CODE))
        name = code.decode("utf-8", "replace")
        if name and name not in custom_ops:
            custom_ops.append(name)
    missing = [name for name in custom_ops if name not in description]
    if missing:
        ops = f"custom ops: {', '.join(missing)}"
        description = f"{description} ({ops})" if description else ops
    return description


def _input_label(position: int, detail: dict[str, Any]) -> str:
    return f"input {position} ({detail['name']!r})"


def _input_array(position: int, detail: dict[str, Any], value: Any) -> np.ndarray:
    """`value` as the array an input takes, or a ValueError saying what the
    model expects (shape signature, dtype) and what was given."""
    array = np.asarray(value)
    dtype = np.dtype(detail["dtype"])
    label = _input_label(position, detail)
    signature = tuple(int(d) for d in detail.get("shape_signature", detail["shape"]))
    given = tuple(array.shape)
    free = {i for i, want in enumerate(signature) if want == -1}
    if len(signature) >= 2:
        free.add(0)  # the batch
    if len(given) != len(signature) or any(
            want != got for i, (want, got) in enumerate(zip(signature, given, strict=True))
            if i not in free):
        hint = ""
        if len(given) == 4 and len(signature) == 4 and all(
                want in (-1, got) for want, got in
                zip(signature[1:], (given[2], given[3], given[1]), strict=True)):
            hint = ("; it looks channels-first (NCHW): the model takes channels-last (NHWC), "
                    "np.transpose(x, (0, 2, 3, 1))")
        notes = ["-1: any size"] if -1 in signature else []
        if len(signature) >= 2 and signature[0] != -1:
            notes.append("the batch may change")
        notes_text = f" ({'; '.join(notes)})" if notes else ""
        raise ValueError(
            f"{label} takes shape {list(signature)}{notes_text} of {dtype.name}, got shape "
            f"{given} of {array.dtype.name}{hint}")
    if array.dtype != dtype and (np.issubdtype(dtype, np.number) or dtype == np.bool_):
        if not np.can_cast(array.dtype, dtype, "same_kind"):
            raise ValueError(
                f"{label} takes {dtype.name}, got {array.dtype.name}: a cast would change the "
                f"values; convert it as the model needs, then pass {dtype.name}")
        if (np.issubdtype(array.dtype, np.integer) and np.issubdtype(dtype, np.integer)
                and array.size):
            info = np.iinfo(dtype)
            low, high = array.min(), array.max()
            if low < info.min or high > info.max:
                raise ValueError(
                    f"{label} takes {dtype.name} ([{info.min}, {info.max}]), got "
                    f"{array.dtype.name} values in [{low}, {high}]")
    # order="C", not ascontiguousarray, which makes a scalar 1-D.
    return np.asarray(array, dtype=dtype, order="C")


class Interpreter:
    """A TFLite interpreter with the lowbit kernels attached.

    Args:
      model_path: path of a .tflite file, or the model's bytes (as Larq
        Compute Engine's interpreter takes them: `Interpreter(tflite_bytes)`).
      model_content: the bytes of a .tflite model (instead of model_path).
      num_threads: threads for the interpreter and for the lowbit kernels.
        None keeps the runtime's default.
      runtime: force a runtime (`"ai_edge_litert"`, `"tflite_runtime"`,
        `"tensorflow"`); None picks the first importable in that order.
      experimental_delegates: more delegates to apply before the lowbit one.
      use_lowbit_delegate: False runs the stock interpreter (models with lowbit
        ops then fail to prepare); for debugging and comparisons.
      check_nan: debug mode. The lowbit ops binarise NaN as +1 (bit 0), while
        the Keras layers propagate NaN (as Larq does), so a NaN reaching a
        binary layer gives a finite output that differs from Keras's, with
        nothing to show for it. With check_nan=True, invoke() fails instead,
        naming the op and the element (one pass over each lowbit op's input).
      int8_builtin_convs: see `load_delegate`; False leaves the int8 CONV_2D
        builtins to the runtime (XNNPACK), for comparisons.
      **kwargs: passed on to the runtime's `Interpreter`.

    Raises:
      ModelError: the model is missing, truncated or corrupt, or the runtime
        rejects it.
      ImportError: no TFLite runtime is installed.

    Attributes:
      runtime_name: the runtime in use (one of `RUNTIMES`).
      kernel_path: the kernel path its lowbit ops run (see `kernel_path()`),
        chosen when the interpreter is made; None with use_lowbit_delegate=False.

    `predict(x)` checks inputs against the model's shape signature and dtype
    before it resizes anything (see there). After a failed `allocate_tensors`
    the runtime's interpreter is made anew from the model, the inputs keeping
    their shapes (some runtimes cannot allocate again after such a failure);
    signature runners taken before then belong to the old one.

    All methods of the runtime's interpreter (`allocate_tensors`,
    `get_input_details`, `set_tensor`, `invoke`, `get_tensor`,
    `get_output_details`, `resize_tensor_input`, `get_signature_runner`, ...)
    are available on this object.
    """

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        model_content: bytes | None = None,
        num_threads: int | None = None,
        *,
        runtime: str | None = None,
        experimental_delegates: Sequence[Any] | None = None,
        use_lowbit_delegate: bool = True,
        check_nan: bool = False,
        int8_builtin_convs: bool = True,
        **kwargs: Any,
    ) -> None:
        if isinstance(model_path, bytes | bytearray | memoryview) and model_content is None:
            model_path, model_content = None, model_path  # Interpreter(tflite_bytes)
        if (model_path is None) == (model_content is None):
            raise ValueError("pass exactly one of model_path and model_content")
        if num_threads is not None:
            num_threads = _check_threads(num_threads)
        if model_path is not None:
            source = os.fspath(model_path)
            try:
                content = Path(source).read_bytes()
            except OSError as e:
                raise ModelError(f"cannot read model file {source}: {e}") from e
        else:
            source = "model_content"
            if not isinstance(model_content, (bytes, bytearray, memoryview)):
                raise TypeError(f"model_content must be bytes, got {type(model_content).__name__}")
            content = bytes(model_content)
        check_model_bytes(content, source)

        self.runtime_name, self._module = _find_runtime(runtime)
        self._source = source
        self._model_content = content  # the runtime may keep pointers into it
        # What a fresh runtime interpreter of the same model needs (see _reopen).
        self._options = dict(
            num_threads=num_threads, delegates=list(experimental_delegates or []),
            use_lowbit_delegate=use_lowbit_delegate, check_nan=check_nan,
            int8_builtin_convs=int8_builtin_convs, kwargs=kwargs,
        )
        self._interpreter = self._open()
        # The delegate's ops chose their kernel path just now, as this does.
        self._kernel_path = kernel_path() if use_lowbit_delegate else None
        self._allocated = False
        # The runtimes' error reporter keeps every message it was ever given
        # and each later error carries them all; this is what was already shown.
        self._reported = ""

    def _open(self) -> Any:
        """A runtime interpreter of the model with the delegates attached (the
        lowbit one loaded anew)."""
        options = self._options
        delegates = list(options["delegates"])
        if options["use_lowbit_delegate"]:
            delegates.append(load_delegate(options["num_threads"], self.runtime_name,
                                           check_nan=options["check_nan"],
                                           int8_builtin_convs=options["int8_builtin_convs"]))
        try:
            return self._module.Interpreter(
                model_content=self._model_content,
                num_threads=options["num_threads"],
                experimental_delegates=delegates or None,
                **options["kwargs"],
            )
        except UnicodeDecodeError as e:
            raise ModelError(_UNDECODABLE.format(what=f"load TFLite model {self._source}")) from e
        except (ValueError, RuntimeError) as e:
            raise ModelError(
                f"cannot load TFLite model {self._source}: {e}{self._unresolved_hint(str(e))}"
            ) from e

    def _reopen(self) -> None:
        """After a failed allocation: replaces the runtime interpreter by a
        fresh one of the same model whose inputs have the shapes the failed
        one had. A runtime may not come back from a failed allocation: when
        the default XNNPACK delegate met impossible shapes at the first
        allocation ("failed to delegate CONV_2D node #0", "XNNPack delegate
        failed to reshape runtime"), every later allocation fails, whatever
        the shapes. Kept as it is if the model cannot be loaded anew."""
        try:
            shapes = [(d["index"], list(d["shape"])) for d in self._interpreter.get_input_details()]
            fresh = self._open()
            for index, shape in shapes:
                fresh.resize_tensor_input(index, shape)
        except (ModelError, RuntimeError, ValueError, UnicodeDecodeError):
            return
        self._interpreter = fresh
        self._allocated = False
        self._reported = ""

    def _fresh_message(self, error: BaseException) -> str:
        """The part of a runtime error's text that is new since the last error
        (the runtimes prepend every earlier message to each new one)."""
        text = str(error)
        # The reporter's text only grows; a text that does not extend it came
        # from elsewhere (a Python-level check) and leaves it as it was.
        if text.startswith(self._reported):
            text, self._reported = text[len(self._reported):], text
        # The runtime glues its messages together: "... node #0Node number 5 ...".
        return _unglue(text).strip()

    def _allocation_hint(self) -> str:
        """For a failure without a message (the runtime's arena allocation) or
        out of memory: the tensor sizes the current input shapes imply."""
        try:
            details = self._interpreter.get_tensor_details()
        except (RuntimeError, ValueError):
            return "the tensor sizes are unknown"
        sizes = [
            (int(np.prod(d["shape"], dtype=np.float64)) * np.dtype(d["dtype"]).itemsize,
             d["name"], tuple(int(v) for v in d["shape"]))
            for d in details
        ]
        if not sizes:
            return "the model has no tensors"
        total = sum(size for size, _, _ in sizes)
        largest, name, shape = max(sizes)
        return (
            f"the tensors need {_format_bytes(total)} in all, the "
            f"largest, {name!r} of shape {shape}, {_format_bytes(largest)} (is an input shape, "
            f"e.g. the batch, too large?)"
        )

    @property
    def kernel_path(self) -> str | None:
        """The kernel path ("neon", "avx2", ...) of this interpreter's lowbit
        ops; None without the lowbit delegate."""
        return self._kernel_path

    # --- the usual interpreter API, by delegation -------------------------

    def allocate_tensors(self) -> None:
        """Plans memory and prepares every op; raises ModelError on bad ops or
        shapes. After a failure the runtime interpreter is made anew (some
        cannot allocate again), its inputs keeping the shapes they had:
        resize them and allocate again."""
        try:
            self._interpreter.allocate_tensors()
        except UnicodeDecodeError as e:
            raise ModelError(_UNDECODABLE.format(what="prepare the model")) from e
        except RuntimeError as e:
            reason = self._fresh_message(e)
            if not reason:
                reason = f"the runtime gave no reason; {self._allocation_hint()}"
            elif "out of memory" in reason:
                reason = f"{reason}; {self._allocation_hint()}"
            reason += self._unresolved_hint(reason)
            self._reopen()
            raise ModelError(f"cannot prepare the model: {reason}") from e
        self._allocated = True

    def _unresolved_hint(self, reason: str) -> str:
        """For "Encountered unresolved custom op": how to run the model."""
        if "unresolved custom op" not in reason:
            return ""
        try:
            note = describe_model(self._model_content)
        except ModelError:
            note = ""
        says = f"; the model says: {note}" if note else ""
        if not self._options["use_lowbit_delegate"]:
            return (f" [this Interpreter has use_lowbit_delegate=False: no lowbit kernels are "
                    f"attached{says}]")
        op = re.search(r"unresolved custom op: (\w+)", reason)
        if op and not op[1].startswith("Lowbit"):
            return f" [{op[1]} is not a lowbit op: the lowbit delegate cannot run it{says}]"
        return (f" [the lowbit delegate ({delegate_library_path().name}) runs only the lowbit "
                f"ops it knows (is it older than the model?){says}]")

    def get_input_details(self) -> list[dict[str, Any]]:
        """Details (name, index, shape, dtype, ...) of the model's inputs."""
        try:
            return self._interpreter.get_input_details()
        except UnicodeDecodeError as e:  # a tensor name that is not UTF-8
            raise ModelError(_UNDECODABLE.format(what="read the input details")) from e

    def get_output_details(self) -> list[dict[str, Any]]:
        """Details (name, index, shape, dtype, ...) of the model's outputs."""
        try:
            return self._interpreter.get_output_details()
        except UnicodeDecodeError as e:  # a tensor name that is not UTF-8
            raise ModelError(_UNDECODABLE.format(what="read the output details")) from e

    def set_tensor(self, tensor_index: int, value: np.ndarray) -> None:
        """Copies `value` into an input tensor."""
        self._interpreter.set_tensor(tensor_index, value)

    def get_tensor(self, tensor_index: int) -> np.ndarray:
        """Returns a copy of a tensor's current value."""
        return self._interpreter.get_tensor(tensor_index)

    def resize_tensor_input(
        self, input_index: int, tensor_size: Sequence[int], strict: bool = False
    ) -> None:
        """Changes an input's shape; call allocate_tensors() afterwards."""
        try:
            self._interpreter.resize_tensor_input(input_index, list(tensor_size), strict=strict)
        except (RuntimeError, ValueError) as e:
            raise type(e)(self._fresh_message(e)) from e
        self._allocated = False

    def invoke(self) -> None:
        """Runs the model on the inputs set with set_tensor()."""
        try:
            self._interpreter.invoke()
        except UnicodeDecodeError as e:
            raise RuntimeError(_UNDECODABLE.format(what="run the model")) from e
        except RuntimeError as e:
            raise RuntimeError(self._fresh_message(e) or "the runtime failed to run the model "
                               "and gave no reason") from e

    def __getattr__(self, name: str) -> Any:
        # Everything else (get_signature_runner, tensor, ...) comes from the runtime.
        if name == "_interpreter":
            raise AttributeError(name)
        return getattr(self._interpreter, name)

    # --- convenience -------------------------------------------------------

    def predict(self, *inputs: Any) -> np.ndarray | list[np.ndarray]:
        """Runs one batch: numpy inputs in model input order, outputs back.

        Each input is checked against the model's before anything changes: its
        rank, and each dimension the input's shape signature fixes (-1 there:
        any size; the first, batch dimension of a rank >= 2 input may always
        change). An input of another shape than the interpreter's resizes it.
        Inputs are cast to the model's input dtypes where numpy's "same_kind"
        rule allows it (float64 to float32, int or bool to float, int64 to
        int32 when the values fit), as TFLite users expect.

        Returns:
          The single output array, or a list of arrays for several outputs.

        Raises:
          ValueError: an input's count, shape or dtype does not fit the model
            (the message names the input, what the model takes and what was given).
          ModelError: the runtime cannot prepare the model for these shapes.
        """
        details = self.get_input_details()
        if len(inputs) != len(details):
            raise ValueError(f"the model has {len(details)} inputs, got {len(inputs)}")
        arrays = [_input_array(position, detail, value)
                  for position, (detail, value) in enumerate(zip(details, inputs, strict=True))]
        for detail, array in zip(details, arrays, strict=True):
            if tuple(array.shape) != tuple(int(d) for d in detail["shape"]):
                self.resize_tensor_input(detail["index"], array.shape)
        if not self._allocated:
            try:
                self.allocate_tensors()
            except ModelError as e:
                given = ", ".join(f"{_input_label(position, detail)} of shape {array.shape}"
                                  for position, (detail, array)
                                  in enumerate(zip(details, arrays, strict=True)))
                message = str(e).replace("cannot prepare the model:",
                                         f"cannot prepare the model for {given}:", 1)
                raise ModelError(message) from e
        for detail, array in zip(details, arrays, strict=True):
            self.set_tensor(detail["index"], array)
        self.invoke()
        outputs = [self.get_tensor(d["index"]) for d in self.get_output_details()]
        return outputs[0] if len(outputs) == 1 else outputs

    __call__ = predict

    def __repr__(self) -> str:
        return f"<lowbit_tf.lite.Interpreter runtime={self.runtime_name}>"
