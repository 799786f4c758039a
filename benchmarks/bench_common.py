"""Helpers shared by the benchmark scripts (imported as a sibling module: the
scripts run as `python benchmarks/<name>.py`, which puts this folder first on
sys.path)."""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import os
import re
import resource
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from lowbit_tf.cost_model import cpu_model  # noqa: F401 - the benchmarks' CPU line


def active_kernel() -> str:
    """The kernel path the lowbit ops run in this process
    (lowbit_tf.lite.kernel_path(): the library's own choice for this CPU and
    LOWBIT_KERNEL)."""
    try:
        from lowbit_tf.lite import kernel_path

        return kernel_path()
    except (OSError, AttributeError, ImportError):
        return "unknown"


BENCH_LIBRARY_ENV = "LOWBIT_BENCH_LIBRARY"


def bench_library_path() -> str:
    """Path of liblowbit_bench.so, the kernel timing library (CMake target
    `lowbit_bench`, custom_ops/bench/kernel_bench.cc; benchmark-only, so not in
    the shipped libraries). $LOWBIT_BENCH_LIBRARY when set; else built on first
    use from this source tree into build/bench/ (cmake with
    -DLOWBIT_BUILD_BENCH=ON; later calls rebuild only what changed) and put in
    $LOWBIT_BENCH_LIBRARY for the worker subprocesses. Raises OSError when
    it cannot be built."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if os.environ.get(BENCH_LIBRARY_ENV):
        return os.environ[BENCH_LIBRARY_ENV]
    repo = Path(__file__).resolve().parents[1]
    build = repo / "build" / "bench"
    if shutil.which("cmake") is None:
        raise OSError("cmake is needed to build liblowbit_bench (custom_ops/bench)")
    print(f"  (building liblowbit_bench in {build} if needed)", file=sys.stderr, flush=True)
    for command in (
        ["cmake", "-S", str(repo / "custom_ops"), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
         "-DLOWBIT_BUILD_BENCH=ON", "-DLOWBIT_BUILD_TFLITE=OFF", f"-DLOWBIT_OUTPUT_DIR={build}"],
        ["cmake", "--build", str(build), "--target", "lowbit_bench",
         f"-j{os.cpu_count() or 1}"],
    ):
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise OSError(f"building liblowbit_bench failed ({' '.join(command[:2])}): "
                          + (proc.stdout + proc.stderr)[-2000:])
    os.environ[BENCH_LIBRARY_ENV] = str(build / "liblowbit_bench.so")
    return os.environ[BENCH_LIBRARY_ENV]


class CoreKernels:
    """Kernel-level timing in C++ (custom_ops/bench/kernel_bench.cc, in
    liblowbit_bench: see bench_library_path): the core's BGemm / BConv2D in a
    loop on random packed data with the core's thread pool, and the read
    bandwidth of a buffer, without any framework overhead. Each method returns
    `samples` timings in ms per call; the kernel path follows LOWBIT_KERNEL
    like the ops. Raises OSError / AttributeError when the library cannot be
    built, loaded or serve them."""

    def __init__(self) -> None:
        import ctypes

        self._ctypes = ctypes
        lib = ctypes.CDLL(bench_library_path())
        i64, c_int, c_double = ctypes.c_int64, ctypes.c_int, ctypes.c_double
        tail = [c_int, c_double, c_int, ctypes.POINTER(c_double), ctypes.c_char_p, c_int]
        self._bgemm = lib.lowbit_kernel_bench_bgemm
        self._bgemm.argtypes = [i64, i64, i64, *tail]
        self._bconv2d = lib.lowbit_kernel_bench_bconv2d
        self._bconv2d.argtypes = [i64] * 6 + [c_int, c_int, c_int, *tail]
        self._read = lib.lowbit_kernel_bench_read
        self._read.argtypes = [i64, *tail]
        self._write = lib.lowbit_kernel_bench_write
        self._write.argtypes = [i64, *tail]
        self._bdepthwise = lib.lowbit_kernel_bench_bdepthwise
        self._bdepthwise.argtypes = [i64] * 6 + [c_int, c_int, c_int, c_int, *tail]
        for fn in (self._bgemm, self._bconv2d, self._read, self._write, self._bdepthwise):
            fn.restype = c_int

    def _run(self, fn: Callable[..., int], args: list, threads: int, sample_s: float,
             samples: int) -> list[float]:
        ctypes = self._ctypes
        out = (ctypes.c_double * samples)()
        error = ctypes.create_string_buffer(512)
        if fn(*args, threads, sample_s, samples, out, error, len(error)) != 0:
            raise ValueError(f"{fn.__name__}: {error.value.decode(errors='replace')}")
        return [1e3 * v for v in out]

    def bgemm(self, rows: int, channels_in: int, out_channels: int, threads: int,
              sample_s: float, samples: int) -> list[float]:
        """ms per BGemm call (float output)."""
        return self._run(self._bgemm, [rows, channels_in, out_channels], threads, sample_s,
                         samples)

    def bconv2d(self, batch: int, height: int, width: int, channels_in: int, out_channels: int,
                kernel_size: int, threads: int, sample_s: float, samples: int, *,
                same_padding: bool = True, pad_value: int = 0,
                bitpacked: bool = False) -> list[float]:
        """ms per BConv2D call (stride 1, float output, or bit-packed with
        `bitpacked`)."""
        args = [batch, height, width, channels_in, out_channels, kernel_size,
                int(same_padding), pad_value, int(bitpacked)]
        return self._run(self._bconv2d, args, threads, sample_s, samples)

    def bdepthwise(self, batch: int, height: int, width: int, channels: int, kernel_size: int,
                   stride: int, threads: int, sample_s: float, samples: int, *,
                   bitpacked: bool = False, same_padding: bool = True,
                   pad_value: int = 0, float_input: bool = False) -> list[float]:
        """ms per binary depthwise call on a packed input, or a float one with
        `float_input` (depth multiplier 1; float output, or bit-packed with
        `bitpacked`)."""
        args = [batch, height, width, channels, kernel_size, stride, int(same_padding),
                pad_value, int(bitpacked), int(float_input)]
        return self._run(self._bdepthwise, args, threads, sample_s, samples)

    def read(self, size_bytes: int, threads: int, sample_s: float, samples: int) -> list[float]:
        """ms per read of every byte of a cache-hot buffer of `size_bytes`."""
        return self._run(self._read, [size_bytes], threads, sample_s, samples)

    def write(self, size_bytes: int, threads: int, sample_s: float, samples: int) -> list[float]:
        """ms per write of every byte of a cache-hot buffer of `size_bytes`."""
        return self._run(self._write, [size_bytes], threads, sample_s, samples)


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine so far (from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Progress: one line per measured row on stderr, so that stdout (the tables
# people read and tests parse) stays as it was. Workers (subprocesses of a
# script) print their progress on stdout behind PROGRESS_MARKER; the parent
# forwards those lines to its stderr as they come (run_worker_output).
# --------------------------------------------------------------------------

PROGRESS_MARKER = "@@LOWBIT_BENCH_PROGRESS@@"
_progress = {"quiet": False, "start": time.perf_counter()}


def add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    """The scripts' --quiet option (no progress lines on stderr)."""
    parser.add_argument(
        "--quiet", action="store_true",
        help="no progress lines on stderr (stdout, the tables, is the same either way)",
    )


def set_quiet(quiet: bool) -> None:
    """Turns the progress lines of this process off (``--quiet``) or on."""
    _progress["quiet"] = bool(quiet)


def progress(message: str) -> None:
    """One progress line on stderr, with the seconds since the script started
    (nothing with ``--quiet``)."""
    import sys

    if _progress["quiet"]:
        return
    elapsed = time.perf_counter() - _progress["start"]
    sys.stderr.write(f"[{elapsed:6.1f} s] {message}\n")
    sys.stderr.flush()


def worker_progress(message: str) -> None:
    """A worker subprocess's progress line (stdout, behind PROGRESS_MARKER); its
    parent shows it through :func:`progress`."""
    print(PROGRESS_MARKER + message, flush=True)


def run_worker_output(command: list[str], env: dict[str, str] | None = None
                      ) -> tuple[int, str, str]:
    """Runs a worker subprocess: (exit status, stdout without its progress lines,
    stderr). Progress lines are shown (:func:`progress`) as the worker prints them."""
    import subprocess
    import tempfile

    lines = []
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as err:
        with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=err, text=True,
                              errors="replace", env=env) as proc:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith(PROGRESS_MARKER):
                    progress(line[len(PROGRESS_MARKER):].rstrip("\n"))
                else:
                    lines.append(line)
        err.seek(0)
        return proc.returncode, "".join(lines), err.read()


def run_marked_json(command: list[str], marker: str, what: str) -> dict:
    """Runs `command` (a benchmark subprocess) and returns the JSON on its last
    stdout line that starts with `marker`; without one, echoes the tail of its
    output and exits naming `what` and the exit status. The worker's progress
    lines (:func:`worker_progress`) go to stderr as they come."""
    import json
    import sys

    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    returncode, stdout, stderr = run_worker_output(command, env)
    for line in reversed(stdout.splitlines()):
        if line.startswith(marker):
            return json.loads(line[len(marker) :])
    sys.stderr.write(stdout[-4000:])
    sys.stderr.write(stderr[-4000:])
    raise SystemExit(f"{what} failed with exit status {returncode}")


def children_cpu_seconds() -> float:
    """CPU seconds used by this process's finished children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def int8_tflite(model: Any, representative: Callable[[], Iterable[Any]]) -> bytes:
    """Full-integer post-training quantisation of a Keras model (int8 input and
    output); `representative` yields calibration input batches."""
    import tensorflow as tf

    def dataset():
        for batch in representative():
            yield [batch]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return converter.convert()


# --------------------------------------------------------------------------
# Timing: a runner times `iterations` back-to-back calls and returns seconds.
# --------------------------------------------------------------------------


def packed_input_twin(tflite_model: bytes) -> bytes:
    """The model with its float input [..., C] replaced by the bit-packed int32
    input [..., ceil(C / 32)] that a Lowbit op reading it also accepts (the
    next binary layer's input in a packed chain): the same op, minus the
    binarisation of the float input, i.e. the work of the core kernel
    (CoreKernels) in the TFLite shell. Raises ValueError unless every reader of
    the input is a Lowbit custom op."""
    from lowbit_converter.tflite_schema import schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    subgraph = model.subgraphs[0]
    index = int(subgraph.inputs[0])
    for op in subgraph.operators:
        code = model.operatorCodes[op.opcodeIndex]
        custom = (code.customCode or b"").decode()
        if index in [int(i) for i in op.inputs] and not custom.startswith("Lowbit"):
            raise ValueError(f"the model input is also read by a {custom or 'builtin'} op")
    tensor = subgraph.tensors[index]
    if tensor.type != schema.TensorType.FLOAT32:
        raise ValueError("the model input is not float32")
    tensor.type = schema.TensorType.INT32
    for dims in (tensor.shape, tensor.shapeSignature):
        if dims is not None and len(dims):
            dims[-1] = (int(dims[-1]) + 31) // 32
    import flatbuffers

    builder = flatbuffers.Builder(len(tflite_model) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def tf_loop(body_op: Callable[..., Any]) -> Callable[..., Any]:
    """A tf.function running `body_op(*args)` n times in a tf.while_loop (one
    Python call per sample, so Python overhead does not count)."""
    import tensorflow as tf

    @tf.function
    def loop(n, *args):
        def body(i, acc):
            y = body_op(*args)
            return i + 1, acc + tf.cast(tf.reshape(y, [-1])[0], tf.float32)

        _, acc = tf.while_loop(
            lambda i, acc: i < n, body, (tf.constant(0), tf.constant(0.0)),
            parallel_iterations=1,
        )
        return acc

    return loop


def time_tf_loop(loop: Callable[..., Any], args: tuple) -> Callable[[int], float]:
    """A runner for a `tf_loop` on fixed arguments."""
    import tensorflow as tf

    def run(iterations: int) -> float:
        n = tf.constant(iterations, tf.int32)
        start = time.perf_counter()
        loop(n, *args).numpy()
        return time.perf_counter() - start

    return run


def time_core(timing: Callable[..., list[float]], *args: Any) -> Callable[[int], float]:
    """A runner for a core kernel timed in C++, so that it can be timed in the
    same interleaved rounds as the framework runners: `timing(*args)` is a
    CoreKernels method whose args ask for one sample (samples = 1; it lasts
    the sample_s among them) and returns [ms per call]; the runner reports
    `iterations` calls at that rate (the C++ loop calibrates its own count:
    `iterations` only scales)."""

    def run(iterations: int) -> float:
        return timing(*args)[0] / 1e3 * iterations

    return run


def time_interpreter(interpreter: Any) -> Callable[[int], float]:
    """A runner invoking a TFLite interpreter whose inputs are set."""
    invoke = interpreter.invoke

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            invoke()
        return time.perf_counter() - start

    return run


def calibrate(run: Callable[[int], float], sample_s: float) -> int:
    """Iterations per sample so that one sample lasts about `sample_s`."""
    run(1)  # warm-up: first call traces / allocates
    per_iter = run(1)
    probe = max(1, min(1000, int(0.2 * sample_s / max(per_iter, 1e-6))))
    per_iter = run(probe) / probe
    return max(1, min(100_000, round(sample_s / max(per_iter, 1e-7))))


def interleaved_samples(
    runners: dict[str, Callable[[int], float]], rounds: int, sample_s: float,
    on_round: Callable[[int], None] | None = None,
) -> tuple[dict[str, int], dict[str, list[float]]]:
    """(iterations per sample, ms per iteration of each sample) per runner,
    timed in interleaved rounds (A, B, C, then B, C, A, ...) so that a slow
    spell of a shared machine hits every variant alike. GC is off meanwhile.
    ``on_round(r)`` is called after round r (1-based), e.g. for progress."""
    keys = list(runners)
    iterations = {key: calibrate(runners[key], sample_s) for key in keys}
    samples: dict[str, list[float]] = {key: [] for key in keys}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            for key in keys[r % len(keys):] + keys[: r % len(keys)]:
                samples[key].append(1e3 * runners[key](iterations[key]) / iterations[key])
            if on_round is not None:
                on_round(r + 1)
    finally:
        if gc_was_enabled:
            gc.enable()
    return iterations, samples


# --------------------------------------------------------------------------
# Layers and models the scripts share (bconv2d_benchmark, quicknet_benchmark,
# lce_compare): shapes and their parsing, weights, Keras twins.
# --------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    height: int
    width: int
    channels_in: int
    channels_out: int

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.channels_in}->{self.channels_out}"

    def spec(self) -> str:
        return f"{self.height}x{self.width}x{self.channels_in}-{self.channels_out}"


@dataclass(frozen=True)
class Layer:
    """One benchmarked layer, independent of the batch size.

    kind "conv": a k x k convolution, SAME padding, stride 1, on an H x W x C_in
    input. kind "dense": C_in -> C_out (LowbitBgemm on [N, C_in]).
    """

    kind: str
    kernel_size: int
    shape: Shape

    @property
    def key(self) -> str:
        if self.kind == "dense":
            return f"dense_{self.shape.channels_in}-{self.shape.channels_out}"
        return f"conv{self.kernel_size}_{self.shape.spec()}"

    def macs(self, batch: int) -> int:
        s = self.shape
        return batch * s.height * s.width * s.channels_out * self.kernel_size**2 * s.channels_in

    def label(self) -> str:
        if self.kind == "dense":
            return f"{self.shape.channels_in}->{self.shape.channels_out}"
        return str(self.shape)

    @staticmethod
    def from_key(key: str) -> Layer:
        kind_k, spec = key.split("_", 1)
        if kind_k == "dense":
            cin, cout = (int(v) for v in spec.split("-"))
            return Layer("dense", 1, Shape(1, 1, cin, cout))
        return Layer("conv", int(kind_k[4:]), parse_shapes(spec)[0])


_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)(?:->|-|:|x)(\d+)$")


def parse_shapes(text: str) -> list[Shape]:
    if text.strip().lower() == "none":
        return []
    shapes = []
    for item in text.split(","):
        item = item.strip().replace(" ", "")
        if not item:
            continue
        match = _SHAPE_RE.match(item)
        if match is None:
            raise argparse.ArgumentTypeError(
                f"bad shape {item!r}: expected HxWxCIN-COUT, e.g. 14x14x256-256"
            )
        dims = [int(v) for v in match.groups()]
        if min(dims) < 1:
            raise argparse.ArgumentTypeError(f"bad shape {item!r}: sizes must be >= 1")
        shapes.append(Shape(*dims))
    if not shapes:
        raise argparse.ArgumentTypeError("no shapes given")
    return shapes


def parse_ints(text: str, what: str = "list", allow_empty: bool = False) -> list[int]:
    if allow_empty and text.strip().lower() == "none":
        return []
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad {what} {text!r}") from e
    if (not values and not allow_empty) or (values and min(values) < 1):
        raise argparse.ArgumentTypeError(f"bad {what} {text!r}")
    return values


def parse_threads(text: str) -> list[int]:
    return parse_ints(text, "thread list")


def parse_dense(text: str) -> list[Shape]:
    """'1024,4096' (square) or '1024-4096' (C_in-C_out) items, or 'none'."""
    if text.strip().lower() == "none":
        return []
    shapes = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        parts = re.split(r"->|-|x", item)
        try:
            dims = [int(v) for v in parts]
        except ValueError as e:
            raise argparse.ArgumentTypeError(f"bad dense size {item!r}") from e
        if len(dims) == 1:
            dims = dims * 2
        if len(dims) != 2 or min(dims) < 1:
            raise argparse.ArgumentTypeError(f"bad dense size {item!r}: expected C or CIN-COUT")
        shapes.append(Shape(1, 1, dims[0], dims[1]))
    return shapes


def layer_weights(layer: Layer, seed: int):
    """Float kernel [k, k, C_in, C_out] and bias of a layer (deterministic)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    s, k = layer.shape, layer.kernel_size
    kernel = rng.standard_normal((k, k, s.channels_in, s.channels_out), dtype=np.float32)
    bias = rng.standard_normal((s.channels_out,), dtype=np.float32)
    return kernel, bias


def layer_models(layer: Layer, kernel, bias):
    """(binary QuantConv2D model, float Conv2D/Dense model) with these weights."""
    import numpy as np

    from lowbit_tf import constraints, layers
    from lowbit_tf._keras import keras

    s, k = layer.shape, layer.kernel_size
    quantized = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                     kernel_constraint=constraints.WeightClip(1.0))
    if layer.kind == "dense":
        binary = keras.Sequential(
            [keras.Input((s.channels_in,)), layers.QuantDense(s.channels_out, **quantized)]
        )
        kernel = kernel.reshape(s.channels_in, s.channels_out)
    else:
        binary = keras.Sequential([
            keras.Input((s.height, s.width, s.channels_in)),
            layers.QuantConv2D(s.channels_out, k, padding="same", **quantized),
        ])
    # Latent weights inside the clip range, so that the constraint is a no-op.
    binary.layers[-1].set_weights([np.clip(kernel, -1.0, 1.0), bias])
    if layer.kind == "dense":
        float_model = keras.Sequential(
            [keras.Input((s.channels_in,)), keras.layers.Dense(s.channels_out)]
        )
        float_model.layers[-1].set_weights([kernel, bias])
    else:
        float_model = keras.Sequential(
            [
                keras.Input((s.height, s.width, s.channels_in)),
                keras.layers.Conv2D(s.channels_out, k, padding="same"),
            ]
        )
        float_model.layers[-1].set_weights([kernel, bias])
    return binary, float_model


#: QuickNet's input (quicknet_benchmark, lce_compare --quicknet).
QUICKNET_INPUT_SHAPE = (224, 224, 3)


def clone_replacing_quant_convs(model, replace):
    """A copy of `model` with the same weights and `replace(layer)` (a layer of the
    same name and weights) in place of every QuantConv2D."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    def clone(layer):
        if isinstance(layer, lb_layers.QuantConv2D):
            return replace(layer)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone)
    by_name = {layer.name: layer for layer in twin.layers}
    for layer in model.layers:
        weights = layer.get_weights()
        if weights:
            by_name[layer.name].set_weights(weights)
    return twin


def randomise_batchnorm(model, rng) -> None:
    """Non-trivial BatchNorm statistics, so that the activations look trained-ish."""
    from lowbit_tf._keras import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, var = layer.get_weights()
            n = gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n).astype("float32"),
                    rng.uniform(-0.2, 0.2, n).astype("float32"),
                    rng.uniform(-0.2, 0.2, n).astype("float32"),
                    rng.uniform(0.5, 2.0, n).astype("float32"),
                ]
            )


def random_images(rng, count: int, shape: tuple[int, ...]):
    import numpy as np

    return rng.uniform(-1.0, 1.0, (count, *shape)).astype(np.float32)


# --------------------------------------------------------------------------
# llvm-mca on the NEON binary conv's compiled inner loop (arm_instruction_counts,
# arm_quicknet_counts). The loop is taken from the built object file
# (custom_ops/core/bconv2d_neon.cc.o in a CMake build folder), not retyped.
# --------------------------------------------------------------------------

#: Per Arm target: the popcount mnemonic and how many of them the NEON
#: whole-chunk loop has (aarch64: 4 pixels x 8 channels, 128 bits each;
#: armv7: 2 x 4).
INNER_LOOP_CNT = {"aarch64": ("cnt", 32), "armv7": ("vcnt.8", 8)}
#: The CPUs llvm-mca is asked about per target. LLVM 14 has no A32/T32
#: scheduling model for Cortex-A7 or A53 (llvm-mca says so; the line says it),
#: and models Cortex-A72 and A76 (and Neoverse N1) with its Cortex-A57 model:
#: the "model" field of each line names the model used.
MCA_CPUS = {"aarch64": ("cortex-a53", "cortex-a72", "cortex-a76"),
            "armv7": ("cortex-a7", "cortex-a53", "cortex-a72")}
MCA_ITERATIONS = 200
#: Binary MACs per 128-bit popcount (one XOR + popcount of 128 bit pairs).
MACS_PER_CNT = 128

_OBJDUMP_FUNC = re.compile(r"^[0-9a-f]+ <(.*)>:$")
_OBJDUMP_INSN = re.compile(r"^\s*([0-9a-f]+):\s+(\S+)(?:\s+(.*?))?\s*$")
_BRANCH_TARGET = re.compile(r"0x([0-9a-f]+)(?:\s*<.*>)?$")
_A64_BRANCH = re.compile(r"^(b|bl|br|blr|ret|cbn?z|tbn?z|b\.[a-z]{2})$")
_A64_COND_BRANCH = re.compile(r"^(cbn?z|tbn?z|b\.[a-z]{2})$")
_CONDS = "eq|ne|cs|hs|cc|lo|mi|pl|vs|vc|hi|ls|ge|lt|gt|le"
_A32_BRANCH = re.compile(rf"^(b|bl|bx|blx|cbn?z)({_CONDS}|al)?(\.w|\.n)?$")
_A32_COND_BRANCH = re.compile(rf"^(b({_CONDS})(\.w|\.n)?|cbn?z)$")
_REGISTER = re.compile(r"\b([xwvqdsbhr])(\d+)\b")


def first_tool(*names: str) -> str | None:
    """The first of names on PATH (e.g. llvm-mca, then llvm-mca-14)."""
    import shutil

    return next((path for path in map(shutil.which, names) if path), None)


def parse_objdump(text: str) -> list[tuple[str, list[tuple[int, str, str]]]]:
    """llvm-objdump -d --no-show-raw-insn text -> [(function, [(address,
    mnemonic, operands without the disassembler's comment)])]."""
    functions: list[tuple[str, list[tuple[int, str, str]]]] = []
    for raw in text.splitlines():
        match = _OBJDUMP_FUNC.match(raw)
        if match:
            functions.append((match.group(1), []))
            continue
        match = _OBJDUMP_INSN.match(raw)
        if match and functions:
            operands = re.sub(r"\s*(//|@).*$", "", match.group(3) or "")
            functions[-1][1].append((int(match.group(1), 16), match.group(2), operands.strip()))
    return functions


def short_function_name(demangled: str) -> str:
    """'void lowbit::(anonymous namespace)::RunTileBlocks<lowbit::(anonymous
    namespace)::Neon, 4>(...)' -> 'RunTileBlocks<Neon, 4>'."""
    name = re.sub(r"(\(anonymous namespace\)|[A-Za-z_]\w*)::", "", demangled)
    depth = 0
    for i, char in enumerate(name):
        depth += {"<": 1, ">": -1}.get(char, 0)
        if char == "(" and depth == 0 and i:
            name = name[:i]
            break
    return name.split(" ", 1)[1] if name.startswith("void ") else name


def _canonical(body: list[tuple[int, str, str]]) -> tuple[str, ...]:
    """The block with registers renumbered in order of first use (x/w and
    v/q/d/s/b/h share numbers), so copies that differ only in registers compare
    equal."""
    names: dict[tuple[str, str], str] = {}

    def rename(match: re.Match) -> str:
        kind = {"x": "r", "w": "r", "r": "r"}.get(match.group(1), "v")
        key = (kind, match.group(2))
        names.setdefault(key, f"{kind}#{sum(k[0] == kind for k in names)}")
        return f"{match.group(1)}{names[key]}"

    return tuple(f"{mnemonic} {_REGISTER.sub(rename, operands)}"
                 for _, mnemonic, operands in body[:-1]) + (body[-1][1],)


@dataclass(frozen=True)
class InnerLoop:
    """The NEON whole-chunk loop as found in the object file."""

    arch: str
    function: str
    start: int           # address of its first instruction (in its section)
    end: int             # address of the backward branch
    body: tuple[tuple[str, str], ...]  # (mnemonic, operands), branch target as in objdump
    cnts: int
    copies: int          # loops of this size with this many popcounts
    identical: bool      # all copies the same modulo registers
    larger: int          # other loops with this many popcounts, but more instructions

    @property
    def instructions(self) -> int:
        return len(self.body)

    @property
    def macs(self) -> int:
        return self.cnts * MACS_PER_CNT

    def assembly(self) -> str:
        """Assembler input for llvm-mca: the block, its branch aimed at a label."""
        lines = [".Lloop:"]
        for i, (mnemonic, operands) in enumerate(self.body):
            if i == len(self.body) - 1:
                operands = _BRANCH_TARGET.sub(".Lloop", operands)
            lines.append(f"\t{mnemonic}\t{operands}".rstrip())
        return "\n".join(lines) + "\n"

    def describe(self) -> str:
        return (f"{self.instructions} insns, {self.cnts} {INNER_LOOP_CNT[self.arch][0]}, "
                f"{short_function_name(self.function)} {self.start:#x}..{self.end:#x}; "
                f"{self.copies} "
                f"cop{'y' if self.copies == 1 else 'ies'}"
                + ("" if self.copies == 1 else
                   (", identical modulo registers" if self.identical else ", DIFFERENT"))
                + (f"; {self.larger} larger loop(s) with {self.cnts} popcounts skipped"
                   if self.larger else ""))


def find_inner_loop(text: str, arch: str) -> InnerLoop | None:
    """The whole-chunk loop in llvm-objdump text of bconv2d_neon.cc.o: a basic
    block ending in a backward conditional branch to its own first instruction
    (no other branch in it, no branch from elsewhere into its middle) with
    INNER_LOOP_CNT[arch] popcounts or a multiple (whole chunks unrolled).
    Several such loops: the fewest instructions per popcount wins (the
    hand-written one; compiler loops around intrinsics carry more), and its
    copies (template instances) are compared modulo registers. None when
    there is none."""
    cnt, want = INNER_LOOP_CNT[arch]
    branch, cond = ((_A64_BRANCH, _A64_COND_BRANCH) if arch == "aarch64"
                    else (_A32_BRANCH, _A32_COND_BRANCH))
    found = []
    for function, insns in parse_objdump(text):
        targets = [int(m.group(1), 16) for _, mn, ops in insns if branch.match(mn)
                   for m in [_BRANCH_TARGET.search(ops)] if m]
        for i, (address, mnemonic, operands) in enumerate(insns):
            target = _BRANCH_TARGET.search(operands) if cond.match(mnemonic) else None
            if target is None or int(target.group(1), 16) >= address:
                continue
            start = int(target.group(1), 16)
            body = [insn for insn in insns[:i + 1] if insn[0] >= start]
            count = sum(insn[1] == cnt for insn in body)
            if (not body or body[0][0] != start
                    or count == 0 or count % want != 0
                    or any(branch.match(insn[1]) for insn in body[:-1])
                    or any(start < t <= address for t in targets)):
                continue
            found.append((function, body, count))
    if not found:
        return None
    _, best, best_count = min(found, key=lambda f: (len(f[1]) / f[2], len(f[1])))
    copies = [(f, b) for f, b, c in found if len(b) == len(best) and c == best_count]
    function, body = copies[0]
    return InnerLoop(arch=arch, function=function, start=body[0][0], end=body[-1][0],
                     body=tuple((mn, ops) for _, mn, ops in body), cnts=best_count,
                     copies=len(copies),
                     identical=all(_canonical(b) == _canonical(body) for _, b in copies),
                     larger=len(found) - len(copies))


@dataclass(frozen=True)
class MCAResult:
    cpu: str
    model: str = ""              # llvm-mca's scheduling model (its resources' prefix)
    instructions: float = 0.0    # per block (iteration)
    cycles: float = 0.0          # per block: Total Cycles / iterations
    ipc: float = 0.0
    macs_per_cycle: float = 0.0
    error: str = ""              # why there is no figure

    @property
    def ok(self) -> bool:
        return not self.error


def mca_triple(arch: str, thumb: bool) -> str:
    if arch == "aarch64":
        return "aarch64"
    return "thumbv7a-linux-gnueabihf" if thumb else "armv7a-linux-gnueabihf"


def run_mca(loop: InnerLoop, cpu: str, triple: str, mca: str,
            iterations: int = MCA_ITERATIONS) -> MCAResult:
    """llvm-mca on the loop for one CPU."""
    import subprocess

    cmd = [mca, f"-mtriple={triple}", f"-mcpu={cpu}", f"-iterations={iterations}"]
    if loop.arch != "aarch64":
        cmd.append("-mattr=+neon")
    proc = subprocess.run(cmd, input=loop.assembly(), capture_output=True, text=True,
                          check=False)
    text = proc.stdout
    fields = {key: float(value) for key, value in
              re.findall(r"^(Iterations|Instructions|Total Cycles|IPC):\s+([\d.]+)", text, re.M)}
    if proc.returncode != 0 or len(fields) < 4:
        message = (proc.stderr.strip().splitlines() or ["llvm-mca failed"])[-1]
        if "scheduling information" in proc.stderr or "itineraries" in proc.stderr:
            message = "no scheduling model for this CPU in this llvm-mca"
        return MCAResult(cpu=cpu, error=message[:120])
    model = re.search(r"^\[[\d.]+\]\s+-\s+(\w+?)Unit", text, re.M)
    cycles = fields["Total Cycles"] / fields["Iterations"]
    return MCAResult(cpu=cpu, model=model.group(1) if model else "?",
                     instructions=fields["Instructions"] / fields["Iterations"],
                     cycles=cycles, ipc=fields["IPC"], macs_per_cycle=loop.macs / cycles)


@dataclass(frozen=True)
class InnerLoopReport:
    arch: str
    obj: str                        # the object file read
    loop: InnerLoop | None
    results: tuple[MCAResult, ...]
    triple: str = ""
    error: str = ""                 # why there is no loop / no llvm-mca

    def result(self, cpu: str) -> MCAResult | None:
        return next((r for r in self.results if r.cpu == cpu and r.ok), None)


def neon_conv_object(build_dir) -> str | None:
    """bconv2d_neon.cc.o in a CMake build folder (None when not built)."""
    from pathlib import Path

    found = sorted(Path(build_dir).rglob("bconv2d_neon.cc.o"))
    return str(found[0]) if found else None


def mca_inner_loop(build_dir, arch: str, cpus: tuple[str, ...] | None = None) -> InnerLoopReport:
    """Finds the NEON whole-chunk loop in build_dir's bconv2d_neon.cc.o (a
    CMake build of lowbit_core for arch: aarch64 or armv7) and runs llvm-mca
    on it for cpus (default MCA_CPUS[arch]). Never raises for a missing tool,
    object or loop: the report's error says what is missing."""
    import subprocess

    obj = neon_conv_object(build_dir)
    if obj is None:
        return InnerLoopReport(arch, "", None, (), error=f"no bconv2d_neon.cc.o under {build_dir}")
    objdump = first_tool("llvm-objdump", "llvm-objdump-14")
    mca = first_tool("llvm-mca", "llvm-mca-14")
    if objdump is None or mca is None:
        return InnerLoopReport(arch, obj, None, (), error="llvm-objdump / llvm-mca not found")
    proc = subprocess.run([objdump, "-d", "-C", "--no-show-raw-insn", obj], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        return InnerLoopReport(arch, obj, None, (),
                               error=f"llvm-objdump failed: {proc.stderr.strip()[:120]}")
    loop = find_inner_loop(proc.stdout, arch)
    if loop is None:
        cnt, want = INNER_LOOP_CNT[arch]
        return InnerLoopReport(arch, obj, None, (),
                               error=f"inner loop not found (no basic-block loop with "
                                     f"{want} {cnt} or a multiple in {obj})")
    symbols = subprocess.run([objdump, "-t", obj], capture_output=True, text=True,
                             check=False).stdout
    triple = mca_triple(arch, thumb=re.search(r"\s\$t(\.\d+)?$", symbols, re.M) is not None)
    results = tuple(run_mca(loop, cpu, triple, mca) for cpu in (cpus or MCA_CPUS[arch]))
    return InnerLoopReport(arch, obj, loop, results, triple=triple)
