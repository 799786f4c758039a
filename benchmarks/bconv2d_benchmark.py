#!/usr/bin/env python3
"""Binary convolution and binary dense speed: lowbit kernels vs float32 and int8.

Measures, side by side in one run, for every thread count (default 1 and 2),
batch size (default 1 and 8) and

  convolutions  the 3x3 shapes 56x56x64->64, 28x28x128->128, 14x14x256->256,
                7x7x512->512 and their 1x1 twins (SAME padding, stride 1);
  binary dense  1024->1024 and 4096->4096 (LowbitBgemm, which the converter
                lowers QuantDense to);

these variants:

  TensorFlow  `lowbit_tf.ops.bconv2d` (dense: `bgemm`) with a pre-packed int32
              input and with a float32 input (binarised and packed inside the op),
              against
              `tf.nn.conv2d` (convolutions) or `tf.linalg.matmul` (dense) in
              float32 (oneDNN) on the same shape;
  TFLite      a one-layer binary `QuantConv2D` (dense: `QuantDense`) model converted with
              `lowbit=True` and run by `lowbit_tf.lite.Interpreter` (lowbit
              delegate), against the same layer as a float `Conv2D` / `Dense`
              run on XNNPACK in float32 (`convert(lowbit=False)`) and in full
              int8 (post-training quantised with a representative data set,
              int8 input and output, TFLITE_BUILTINS_INT8).

It also measures the peak binary MAC rate of this CPU with a micro-benchmark of
the XOR + popcount + add loop in registers (benchmarks/peak_popcount.cc,
compiled with g++ -O2 -march=native on first use into a temporary folder; the
best of AVX-512 VPOPCNTDQ, AVX2 and scalar popcnt), once per thread count, at
the start and at the end of the run (the higher is kept), and reports every
lowbit row as a percentage of it.

Each thread count runs in a fresh subprocess of this script (TensorFlow's
intra-op thread count can only be set before it runs anything); the parent
collects the results and prints the tables. The models are converted once, by
the first worker, into a temporary folder that the later workers reuse. Within
a subprocess all variants of a row are timed in interleaved rounds (A, B, C,
..., A, B, C, ...; the order rotates from round to round) so that machine noise
hits every variant alike. Each timing sample runs many iterations: the TF ops
run inside one `tf.function` holding a sequential `tf.while_loop` (no per-op
Python overhead), the TFLite models by calling `invoke()` in a loop.

Next to those framework rows it prints a "core kernels" table: the same dense
and convolution rows timed at kernel level, the core's BGemm / BConv2D called
in a C++ loop on random packed data with the library's thread pool
(custom_ops/bench/kernel_bench.cc, in liblowbit_bench: a benchmark-only library
that bench_common.bench_library_path builds on first use into build/bench/, or
$LOWBIT_BENCH_LIBRARY), so excluding every framework cost (TF op
dispatch, a Python invoke(), bit-packing a float input), as ms, Gbop/s and %
of the peak. For the dense rows it also gives the memory-bound floor: the
packed weights are read once per call, so a call takes at least weight bytes
/ the read bandwidth of a cache-hot buffer of that size (measured by the same
C++ code); a 4096x4096 layer (2 MiB of weights) is bounded by that rather
than by the popcount peak at batch 1.

The shell lines under the targets compare the framework rows with the core
kernel: the TF op on the packed input, with and without the harness's
tf.while_loop cost per iteration (an identity body, timed with the variants),
and the TFLite kernel: as converted (float input, binarised in the op), and
on the bit-packed input (the same model with its input tensor made the packed
int32 one the op also reads: the core kernel's work), with and without one
invoke() of a one-op model (one float plus one), the interpreter's own cost
per call, also timed with the variants. Those lines take the core kernel's
time from the same interleaved rounds (the core table's call, one sample
per round beside the shells'): the table itself is timed after the
framework rows, minutes apart, and against it these ratios moved by tens of
percent between runs on a busy machine.

With --lce-python PYTHON (or LOWBIT_LCE_PYTHON), a Python that has Larq
Compute Engine 0.16 installed runs benchmarks/lce_compare.py on the
convolution rows: LCE's converter and interpreter (default and indirect-BGEMM
kernels) against the lowbit TFLite model in one process, interleaved, and its
table and the LCE target line are printed with the rest (setup of that Python:
benchmarks/lce_compare.py).

Usage:
  python benchmarks/bconv2d_benchmark.py            # everything above (~4 min)
  python benchmarks/bconv2d_benchmark.py --quick    # 14x14x256->256 3x3 + 1x1, dense 1024 (~30 s)
  python benchmarks/bconv2d_benchmark.py --shapes 28x28x128-128 --kernel-sizes 3 --batches 1,8
  python benchmarks/bconv2d_benchmark.py --dense 4096 --shapes none --threads 1
  python benchmarks/bconv2d_benchmark.py --quick --kernel avx2
  python benchmarks/bconv2d_benchmark.py --lce-python .lce-venv/bin/python

--kernel NAME (or LOWBIT_KERNEL in the environment) forces a kernel path in
the worker subprocesses: a name of the kernel table (custom_ops/core/kernel_table.h;
`python -c "from lowbit_tf._native import kernel_path_names as k; print(k())"`
lists those built here). A path the CPU lacks falls back to a lesser one; each
worker asks the library which path it really runs and the header prints it.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Callable

import lce_compare
from bench_common import (
    CoreKernels,
    Layer,
    active_kernel,
    add_quiet_argument,
    bench_library_path,
    busy_cpu_seconds,
    children_cpu_seconds,
    cpu_model,
    int8_tflite,
    interleaved_samples,
    layer_models,
    layer_weights,
    packed_input_twin,
    parse_dense,
    parse_ints,
    parse_shapes,
    parse_threads,
    progress,
    run_marked_json,
    set_quiet,
    tf_loop,
    time_core,
    time_interpreter,
    time_tf_loop,
    worker_progress,
)

DEFAULT_SHAPES = "56x56x64-64,28x28x128-128,14x14x256-256,7x7x512-512"
QUICK_SHAPES = "14x14x256-256"
DEFAULT_KERNEL_SIZES = "3,1"
DEFAULT_BATCHES = "1,8"
QUICK_BATCHES = "1"
DEFAULT_DENSE = "1024,4096"
QUICK_DENSE = "1024"
DEPTHWISE_SHAPES = "56x56x64,28x28x128,14x14x256"
QUICK_DEPTHWISE_SHAPES = "56x56x64"
DEPTHWISE_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "bdepthwise_benchmark.py")
RESULT_MARKER = "@@BCONV2D_BENCHMARK_RESULT@@"
PEAK_SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "peak_popcount.cc")

# Variant keys, in the order they are listed in the tables.
TF_PACKED = "tf_bconv2d_packed"
TF_FLOAT_IN = "tf_bconv2d_float_in"
TF_FLOAT = "tf_float32"  # tf.nn.conv2d or tf.linalg.matmul
LITE_LOWBIT = "tflite_lowbit"
LITE_FLOAT = "tflite_xnnpack_float32"
LITE_INT8 = "tflite_xnnpack_int8"
VARIANTS = (TF_PACKED, TF_FLOAT_IN, TF_FLOAT, LITE_LOWBIT, LITE_FLOAT, LITE_INT8)
# tf_loop with an identity body on the packed input: the harness's own
# tf.while_loop cost per iteration, which every TF time includes (timed with
# the variants; the shell line takes it off the TF op's time).
TF_LOOP_FLOOR = "tf_loop_identity"
# An invoke from Python of a one-op model (one float plus one) through the
# lowbit interpreter: what every TFLite time includes besides its ops (the
# harness's loop, the interpreter wrapper, the runtime's per-invoke work),
# XNNPACK's as much as ours (the shell lines take it off the TFLite kernel's).
LITE_INVOKE_FLOOR = "tflite_invoke_one_op"
# The lowbit model on the bit-packed input (the core kernel's input: no
# binarisation of a float input in the op), timed with the variants too.
LITE_PACKED_IN = "tflite_lowbit_packed_in"
SHELL_FLOORS = (TF_LOOP_FLOOR, LITE_INVOKE_FLOOR, LITE_PACKED_IN)
# The core kernel of the row (CoreKernels: the core table's call) timed in the
# same interleaved rounds as the shells, which the shell lines compare with:
# a ratio of times taken side by side, not minutes apart.
CORE_IN_ROUNDS = "core_kernel"
LITE_MODELS = (LITE_LOWBIT, LITE_FLOAT, LITE_INT8)

# The target shapes.
TARGET_SHAPE = "conv3_14x14x256-256"
SCALING_SHAPE = "conv3_56x56x64-64"


def layers_of(args: argparse.Namespace) -> list[Layer]:
    result = [Layer("conv", k, s) for k in args.kernel_sizes for s in args.shapes]
    result += [Layer("dense", 1, s) for s in args.dense]
    return result


def row_name(layer: Layer, batch: int) -> str:
    """A row as the progress lines name it, e.g. "3x3 14x14x256->256 N=1", "fc 1024->1024 N=8"."""
    k = f"{layer.kernel_size}x{layer.kernel_size}" if layer.kind == "conv" else "fc"
    return f"{k} {layer.label()} N={batch}"


# --------------------------------------------------------------------------
# Worker: one thread count, all layers and batches, in its own process.
# --------------------------------------------------------------------------


def _int8_model(float_model, input_shape: tuple[int, ...], seed: int) -> bytes:
    """Full-integer post-training quantisation (int8 in and out)."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    return int8_tflite(float_model, lambda: (
        rng.standard_normal((1, *input_shape), dtype=np.float32) for _ in range(8)))


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _tflite_models(layer: Layer, model_dir: str, seed: int, kernel, bias) -> dict[str, bytes]:
    """The three .tflite models of a layer: converted once, then read from model_dir."""
    paths = {v: os.path.join(model_dir, f"{layer.key}.{v}.tflite") for v in LITE_MODELS}
    if all(os.path.exists(p) for p in paths.values()):
        return {v: _read(p) for v, p in paths.items()}
    import lowbit_tf

    binary, float_model = layer_models(layer, kernel, bias)
    s = layer.shape
    float_input = (s.channels_in,) if layer.kind == "dense" else (s.height, s.width, s.channels_in)
    models = {
        LITE_LOWBIT: lowbit_tf.convert(binary, lowbit=True),
        LITE_FLOAT: lowbit_tf.convert(float_model, lowbit=False),
        LITE_INT8: _int8_model(float_model, float_input, seed),
    }
    for v, content in models.items():
        tmp = paths[v] + f".{os.getpid()}.tmp"
        with open(tmp, "wb") as f:
            f.write(content)
        os.replace(tmp, paths[v])
    return models


def _invoke_floor_model(model_dir: str) -> bytes:
    """The one-op model of LITE_INVOKE_FLOOR: converted once, then read from model_dir."""
    path = os.path.join(model_dir, "invoke_floor.tflite")
    if os.path.exists(path):
        return _read(path)
    import tensorflow as tf

    plus_one = tf.function(lambda x: x + 1.0).get_concrete_function(
        tf.TensorSpec([1], tf.float32))
    content = tf.lite.TFLiteConverter.from_concrete_functions([plus_one], plus_one).convert()
    tmp = path + f".{os.getpid()}.tmp"
    with open(tmp, "wb") as f:
        f.write(content)
    os.replace(tmp, path)
    return content


@functools.cache
def _core_kernels() -> CoreKernels | None:
    """The worker's CoreKernels (made once), None when the timing library
    cannot be built or loaded (the core table then says why)."""
    try:
        return CoreKernels()
    except (OSError, AttributeError):
        return None


def _benchmark_layer(
    layer: Layer, batches: list[int], threads: int, rounds: int, sample_s: float, model_dir: str,
    done: Callable[[str], None] = lambda name: None, with_core: bool = True,
) -> list[dict]:
    import numpy as np
    import tensorflow as tf

    from lowbit_tf import lite, ops

    seed = zlib.crc32(layer.key.encode())
    kernel_np, bias_np = layer_weights(layer, seed)
    models = _tflite_models(layer, model_dir, seed, kernel_np, bias_np)
    packed_in_model = packed_input_twin(models[LITE_LOWBIT])
    floor_model = _invoke_floor_model(model_dir)
    s, k = layer.shape, layer.kernel_size
    dense = layer.kind == "dense"

    kernel = tf.constant(kernel_np)
    # The dense layer's float weights as a matrix (a 1x1 kernel reshaped).
    matrix = tf.reshape(kernel, [-1, s.channels_out])
    packed_filter = ops.pack_dense_kernel(matrix) if dense else ops.pack_filter(kernel)
    multiplier = tf.ones([s.channels_out], tf.float32)
    bias = tf.constant(bias_np)

    def bconv_packed(inp, filt, mult, b):
        if dense:
            return ops.bgemm(inp, filt, mult, b, channels_in=s.channels_in)
        return ops.bconv2d(
            inp, filt, mult, b, kernel_size=k, channels_in=s.channels_in, padding="SAME"
        )

    def bconv_float_in(inp, filt, mult, b):
        if dense:
            return ops.bgemm(inp, filt, mult, b)
        return ops.bconv2d(inp, filt, mult, b, kernel_size=k, padding="SAME")

    def conv_float(inp, kern):
        return tf.nn.conv2d(inp, kern, strides=1, padding="SAME")

    def matmul_float(inp, mat):
        return tf.linalg.matmul(inp, mat)

    loops = {
        TF_PACKED: tf_loop(bconv_packed),
        TF_FLOAT_IN: tf_loop(bconv_float_in),
        TF_FLOAT: tf_loop(matmul_float if dense else conv_float),
        TF_LOOP_FLOOR: tf_loop(lambda inp: inp),
    }

    results = []
    for batch in batches:
        rng = np.random.default_rng(seed + batch)
        x_np = rng.standard_normal((batch, s.height, s.width, s.channels_in), dtype=np.float32)
        x = tf.constant(x_np)
        x_float = tf.reshape(x, [batch, s.channels_in]) if dense else x
        x_packed = ops.bitpack(x_float)
        runners: dict[str, Callable[[int], float]] = {
            TF_PACKED: time_tf_loop(loops[TF_PACKED], (x_packed, packed_filter, multiplier, bias)),
            TF_FLOAT_IN: time_tf_loop(loops[TF_FLOAT_IN],
                                      (x_float, packed_filter, multiplier, bias)),
            TF_FLOAT: time_tf_loop(loops[TF_FLOAT], (x_float, matrix if dense else kernel)),
            TF_LOOP_FLOOR: time_tf_loop(loops[TF_LOOP_FLOOR], (x_packed,)),
        }
        # Sanity: both input forms give the same result.
        y_packed = bconv_packed(x_packed, packed_filter, multiplier, bias).numpy()
        y_float_in = bconv_float_in(x_float, packed_filter, multiplier, bias).numpy()
        checks = {"tf_packed_vs_float_in": float(np.max(np.abs(y_packed - y_float_in)))}
        y_ref = (matmul_float(x_float, matrix) if dense else conv_float(x, kernel)).numpy()
        y_ref = y_ref.reshape(y_packed.shape) + bias_np

        interpreters = {
            variant: lite.Interpreter(
                model_content=models[variant],
                num_threads=threads,
                use_lowbit_delegate=variant == LITE_LOWBIT,
            )
            for variant in LITE_MODELS
        }
        outputs = {}
        for variant, interpreter in interpreters.items():
            detail = interpreter.get_input_details()[0]
            shape = [batch, *detail["shape"][1:]]
            interpreter.resize_tensor_input(detail["index"], shape)
            interpreter.allocate_tensors()
            if variant == LITE_INT8:
                value = rng.integers(-128, 128, size=shape, dtype=np.int8)
            else:
                value = x_np.reshape(shape)
            interpreter.set_tensor(detail["index"], value)
            interpreter.invoke()
            outputs[variant] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            runners[variant] = time_interpreter(interpreter)
        packed_in = lite.Interpreter(model_content=packed_in_model, num_threads=threads)
        detail = packed_in.get_input_details()[0]
        packed_in.resize_tensor_input(detail["index"], list(x_packed.shape))
        packed_in.allocate_tensors()
        packed_in.set_tensor(detail["index"], x_packed.numpy())
        packed_in.invoke()
        runners[LITE_PACKED_IN] = time_interpreter(packed_in)
        floor = lite.Interpreter(model_content=floor_model, num_threads=threads,
                                 use_lowbit_delegate=True)
        floor.allocate_tensors()
        floor.set_tensor(floor.get_input_details()[0]["index"], np.zeros([1], np.float32))
        floor.invoke()
        runners[LITE_INVOKE_FLOOR] = time_interpreter(floor)
        core = _core_kernels() if with_core else None
        if core is not None:
            runners[CORE_IN_ROUNDS] = (
                time_core(core.bgemm, batch, s.channels_in, s.channels_out, threads, sample_s, 1)
                if dense else
                time_core(core.bconv2d, batch, s.height, s.width, s.channels_in, s.channels_out,
                          k, threads, sample_s, 1))
        # Sanity: the TFLite binary model computes what the TF op computes
        # (same signs of the weights; integer dot product + bias), the float
        # model what TensorFlow computes (relative to the output's scale).
        checks["tflite_lowbit_vs_tf_op"] = float(
            np.max(np.abs(outputs[LITE_LOWBIT].reshape(y_float_in.shape) - y_float_in))
        )
        checks["tflite_packed_in_vs_float_in"] = float(np.max(np.abs(
            packed_in.get_tensor(packed_in.get_output_details()[0]["index"])
            - outputs[LITE_LOWBIT])))
        checks["tflite_f32_vs_tf_relative"] = float(
            np.max(np.abs(outputs[LITE_FLOAT].reshape(y_ref.shape) - y_ref))
            / max(1e-6, float(np.max(np.abs(y_ref))))
        )

        # ---- interleaved timing --------------------------------------------
        iterations, samples = interleaved_samples(
            {key: runners[key] for key in (*VARIANTS, *SHELL_FLOORS, CORE_IN_ROUNDS)
             if key in runners}, rounds, sample_s
        )
        del interpreters, runners, packed_in, floor
        results.append(
            {
                "layer": layer.key,
                "batch": batch,
                "threads": threads,
                "iterations": iterations,
                "samples_ms": samples,
                "checks": checks,
            }
        )
        done(row_name(layer, batch))
    return results


def worker(args: argparse.Namespace) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    threads = args.worker_threads
    # Must happen before TensorFlow executes anything.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    # Each timing sample is a sequential chain of ops: no inter-op overlap.
    tf.config.threading.set_inter_op_parallelism_threads(1)
    # Keep grappler from touching the timing loop (e.g. hoisting the
    # loop-invariant convolution out of it).
    tf.config.optimizer.set_experimental_options({"loop_optimization": False})

    layers = layers_of(args)
    total = len(layers) * len(args.batches)
    counter = {"rows": 0}

    def done(name: str) -> None:
        counter["rows"] += 1
        worker_progress(f"{threads} thr: row {counter['rows']}/{total} measured ({name})")

    results = []
    for layer in layers:
        results.extend(
            _benchmark_layer(
                layer, args.batches, threads, args.rounds, args.sample_ms / 1e3, args.model_dir,
                done, with_core=not args.no_core,
            )
        )
    core_rows, core_note = [], "skipped (--no-core)"
    if not args.no_core:
        worker_progress(f"{threads} thr: core-kernel table, {total} rows")
        try:
            core_rows = measure_core(CoreKernels(), args, threads)
        except (OSError, AttributeError) as e:
            core_note = f"no kernel timing library (liblowbit_bench): {e}"
    print(
        RESULT_MARKER
        + json.dumps({"tf_version": tf.__version__, "kernel": active_kernel(), "results": results,
                      "core": core_rows, "core_note": core_note})
    )


# --------------------------------------------------------------------------
# Peak: the XOR + popcount + add micro-benchmark.
# --------------------------------------------------------------------------


def build_peak_benchmark() -> tuple[str | None, str]:
    """Compiles peak_popcount.cc once per source and compiler; (path, note)."""
    compiler = os.environ.get("CXX") or shutil.which("g++")
    if compiler is None:
        return None, "no g++ found"
    try:
        with open(PEAK_SOURCE, "rb") as f:
            source = f.read()
    except OSError as e:
        return None, f"cannot read {PEAK_SOURCE}: {e}"
    flags = ["-O2", "-march=native", "-pthread"]
    digest = hashlib.sha256(source + " ".join([compiler, *flags]).encode()).hexdigest()[:16]
    folder = os.path.join(tempfile.gettempdir(), f"lowbit-peak-popcount-{digest}")
    binary = os.path.join(folder, "peak_popcount")
    if os.path.exists(binary):
        return binary, "cached"
    os.makedirs(folder, exist_ok=True)
    tmp = f"{binary}.{os.getpid()}.tmp"
    proc = subprocess.run(
        [compiler, *flags, PEAK_SOURCE, "-o", tmp], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return None, "compilation failed: " + proc.stderr.strip().splitlines()[-1:][0]
    os.replace(tmp, binary)
    return binary, "compiled"


_PEAK_LINE = re.compile(r"^path=(\S+) threads=(\d+) bits=\d+ binary_macs_per_s=(\S+)$")


def measure_peak(binary: str, threads: int) -> dict[str, float]:
    """Binary MAC/s per path for `threads` threads (best of short repetitions)."""
    proc = subprocess.run(
        [binary, str(threads), "0.02", "10"], capture_output=True, text=True, check=False
    )
    rates = {}
    for line in proc.stdout.splitlines():
        match = _PEAK_LINE.match(line.strip())
        if match:
            rates[match.group(1)] = float(match.group(3))
    return rates


# --------------------------------------------------------------------------
# Core kernels: the C++ timing loop of the TFLite library, in the worker after
# the framework rows.
# --------------------------------------------------------------------------


def dense_weight_bytes(layer: Layer) -> int:
    """Bytes of the packed weights one dense call reads (32 channels per int32)."""
    s = layer.shape
    return s.channels_out * 4 * ((s.channels_in + 31) // 32)


def measure_core(core: CoreKernels, args: argparse.Namespace, threads: int) -> list[dict]:
    """Core-kernel rows for every layer and batch at `threads` threads: ms per
    call samples, and for dense layers the ms per read of their weight bytes."""
    sample_s = args.sample_ms / 1e3
    rows = []
    for layer in layers_of(args):
        s = layer.shape
        read_ms = None
        if layer.kind == "dense":
            read_ms = core.read(dense_weight_bytes(layer), threads, sample_s, args.rounds)
        for batch in args.batches:
            packed = None
            if layer.kind == "dense":
                samples = core.bgemm(batch, s.channels_in, s.channels_out, threads, sample_s,
                                     args.rounds)
            else:  # as the TF rows: SAME, stride 1, pad_value 0
                conv = (batch, s.height, s.width, s.channels_in, s.channels_out,
                        layer.kernel_size, threads, sample_s, args.rounds)
                samples = core.bconv2d(*conv)
                packed = core.bconv2d(*conv, bitpacked=True)
            rows.append({"layer": layer.key, "batch": batch, "threads": threads,
                         "samples_ms": samples, "read_ms": read_ms, "packed_ms": packed})
    return rows


# --------------------------------------------------------------------------
# Parent: run the workers, print the tables.
# --------------------------------------------------------------------------


def kernel_description() -> str:
    forced = os.environ.get("LOWBIT_KERNEL", "")
    if forced:
        return f"{forced} (forced by LOWBIT_KERNEL)"
    return "auto (LOWBIT_KERNEL unset)"


def _join(values: list) -> str:
    return ",".join(str(v) for v in values) or "none"


def run_worker(args: argparse.Namespace, threads: int) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker-threads",
        str(threads),
        "--model-dir",
        args.model_dir,
        "--shapes",
        _join([s.spec() for s in args.shapes]),
        "--kernel-sizes",
        _join(args.kernel_sizes),
        "--dense",
        _join([f"{s.channels_in}-{s.channels_out}" for s in args.dense]),
        "--batches",
        _join(args.batches),
        "--rounds",
        str(args.rounds),
        "--sample-ms",
        str(args.sample_ms),
        *(["--no-core"] if args.no_core else []),
    ]
    return run_marked_json(command, RESULT_MARKER, f"worker for {threads} thread(s)")


def run_lce_compare(args: argparse.Namespace) -> dict:
    """benchmarks/lce_compare.py under the LCE Python, on the convolution rows."""
    return lce_compare.run_under(args.lce_python, [
        "--shapes", _join([s.spec() for s in args.shapes]),
        "--kernel-sizes", _join(args.kernel_sizes),
        "--batches", _join(args.batches),
        "--threads", _join(args.threads),
        "--rounds", str(args.rounds),
        "--sample-ms", str(args.sample_ms),
    ])


def _stats(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), min(samples)


def _ms(samples: list[float]) -> str:
    median, best = _stats(samples)
    return f"{median:8.3f} ({best:7.3f})"


def _ratio(baseline: list[float], ours: list[float]) -> str:
    return f"{statistics.median(baseline) / statistics.median(ours):6.2f}x"


def _gops(macs: int, samples: list[float]) -> str:
    median, _ = _stats(samples)
    return f"{2 * macs / (median * 1e-3) / 1e9:7.1f}"


def _percent_of_peak(macs: int, samples: list[float], peak: float | None) -> float | None:
    if not peak:
        return None
    return 100.0 * macs / (statistics.median(samples) * 1e-3) / peak


def _pct(value: float | None) -> str:
    return f"{value:6.1f}" if value is not None else f"{'-':>6}"


def _sort_key(res: dict) -> tuple:
    layer = Layer.from_key(res["layer"])
    return (res["threads"], -layer.kernel_size, -layer.shape.height, res["batch"])


def print_tables(results: list[dict], peaks: dict[int, float]) -> None:
    ms_head = "median (best)"
    w = len(_ms([1.0]))
    conv = sorted((r for r in results if r["layer"].startswith("conv")), key=_sort_key)
    dense = sorted((r for r in results if r["layer"].startswith("dense")), key=_sort_key)

    def tf_table(rows: list[dict], title: str, ours: str, base: str, shape_w: int) -> None:
        if not rows:
            return
        print()
        print(title)
        header = (
            f"{'thr':>3} {'k':>3} {'N':>2}  {'shape':<{shape_w}} {'MMACs':>7}  "
            f"{ours + ' packed':>{w}}  {ours + ' float-in':>{w}}  {base:>{w}}  "
            f"{'speed-up':>8} {'speed-up':>8}  {'Gbop/s':>7} {'Gbop/s':>7} {'%peak':>6}"
        )
        sub = (
            f"{'':>3} {'':>3} {'':>2}  {'':<{shape_w}} {'':>7}  "
            f"{ms_head:>{w}}  {ms_head:>{w}}  {ms_head:>{w}}  "
            f"{'packed':>8} {'float-in':>8}  {'packed':>7} {'flt-in':>7} {'packed':>6}"
        )
        print(header)
        print(sub)
        print("-" * len(header))
        for res in rows:
            layer = Layer.from_key(res["layer"])
            macs = layer.macs(res["batch"])
            s = res["samples_ms"]
            k = f"{layer.kernel_size}x{layer.kernel_size}" if layer.kind == "conv" else "fc"
            pct = _percent_of_peak(macs, s[TF_PACKED], peaks.get(res["threads"]))
            print(
                f"{res['threads']:>3} {k:>3} {res['batch']:>2}  {layer.label():<{shape_w}} "
                f"{macs / 1e6:7.1f}  "
                f"{_ms(s[TF_PACKED])}  {_ms(s[TF_FLOAT_IN])}  {_ms(s[TF_FLOAT])}  "
                f"{_ratio(s[TF_FLOAT], s[TF_PACKED]):>8} {_ratio(s[TF_FLOAT], s[TF_FLOAT_IN]):>8}  "
                f"{_gops(macs, s[TF_PACKED])} {_gops(macs, s[TF_FLOAT_IN])} {_pct(pct)}"
            )

    def lite_table(rows: list[dict], title: str, ours: str, base: str, shape_w: int) -> None:
        if not rows:
            return
        print()
        print(title)
        header = (
            f"{'thr':>3} {'k':>3} {'N':>2}  {'shape':<{shape_w}} {'MMACs':>7}  "
            f"{ours:>{w}}  {base + ' f32':>{w}}  {base + ' int8':>{w}}  "
            f"{'speed-up':>8} {'speed-up':>8}  {'Gbop/s':>7} {'%peak':>6}"
        )
        sub = (
            f"{'':>3} {'':>3} {'':>2}  {'':<{shape_w}} {'':>7}  "
            f"{ms_head:>{w}}  {ms_head:>{w}}  {ms_head:>{w}}  "
            f"{'vs f32':>8} {'vs int8':>8}  {'':>7} {'':>6}"
        )
        print(header)
        print(sub)
        print("-" * len(header))
        for res in rows:
            layer = Layer.from_key(res["layer"])
            macs = layer.macs(res["batch"])
            s = res["samples_ms"]
            k = f"{layer.kernel_size}x{layer.kernel_size}" if layer.kind == "conv" else "fc"
            pct = _percent_of_peak(macs, s[LITE_LOWBIT], peaks.get(res["threads"]))
            print(
                f"{res['threads']:>3} {k:>3} {res['batch']:>2}  {layer.label():<{shape_w}} "
                f"{macs / 1e6:7.1f}  "
                f"{_ms(s[LITE_LOWBIT])}  {_ms(s[LITE_FLOAT])}  {_ms(s[LITE_INT8])}  "
                f"{_ratio(s[LITE_FLOAT], s[LITE_LOWBIT]):>8} "
                f"{_ratio(s[LITE_INT8], s[LITE_LOWBIT]):>8}  "
                f"{_gops(macs, s[LITE_LOWBIT])} {_pct(pct)}"
            )

    tf_table(
        conv,
        "TensorFlow ops, convolutions (ms per run: median of rounds, best round in parentheses)",
        "bconv2d",
        "tf.nn.conv2d f32",
        16,
    )
    lite_table(
        conv,
        "TFLite, convolutions (ms per invoke: median of rounds, best round in parentheses)",
        "lowbit delegate",
        "XNNPACK",
        16,
    )
    tf_table(
        dense,
        "TensorFlow ops, binary dense: bgemm vs matmul (ms per run)",
        "bgemm",
        "tf.linalg.matmul f32",
        11,
    )
    lite_table(
        dense,
        "TFLite, binary dense: LowbitBgemm vs FULLY_CONNECTED (ms per invoke)",
        "lowbit delegate",
        "FC XNNPACK",
        11,
    )
    print_scaling(results)

    print()
    print("speed-up = float median / lowbit median (>1: lowbit faster).")
    print("Gbop/s   = 2 * MACs / lowbit median time / 1e9 (2 binary ops per MAC:")
    print("           XOR + popcount-accumulate).")
    print("%peak    = lowbit MACs/s (median) / measured peak binary MAC/s at that thread count.")
    print("bconv2d/bgemm packed: int32 input pre-packed with lowbit_tf.ops.bitpack; "
          "float-in: float32")
    print("input binarised and packed inside the op (the TFLite lowbit model takes float input")
    print("too). Convolutions: SAME, stride 1; N = batch. int8 = full-integer post-training")
    print("quantised model (int8 input and output).")

    bad = [
        f"{r['layer']} N={r['batch']} @ {r['threads']} thr: {name} max |diff| = {value:g}"
        for r in results
        for name, value in r["checks"].items()
        if not value <= 1e-3
    ]
    if bad:
        print()
        print("WARNING: output checks failed:")
        for line in bad:
            print("  " + line)
    else:
        print("Output checks (bconv2d packed == float-in, TFLite lowbit == TF op, TFLite f32 ~ TF")
        print("f32): ok.")


def _find(results: list[dict], layer: str, batch: int, threads: int) -> dict | None:
    for r in results:
        if r["layer"] == layer and r["batch"] == batch and r["threads"] == threads:
            return r
    return None


def _speedup(slow: list[float], fast: list[float]) -> tuple[float, float]:
    """(ratio of medians, ratio of best rounds)."""
    return statistics.median(slow) / statistics.median(fast), min(slow) / min(fast)


def print_scaling(results: list[dict]) -> None:
    threads = sorted({r["threads"] for r in results})
    if len(threads) < 2 or threads[0] != 1:
        return
    print()
    print("Thread scaling of the lowbit kernels: time at 1 thread / time at N threads, median")
    print("(best round / best round)")
    header = f"{'thr':>3} {'k':>3} {'N':>2}  {'layer':<16}  {'TF bconv2d packed':>17}  " + (
        f"{'TFLite lowbit':>17}"
    )
    print(header)
    print("-" * len(header))
    for t in threads[1:]:
        rows = sorted((r for r in results if r["threads"] == t), key=_sort_key)
        for res in rows:
            base = _find(results, res["layer"], res["batch"], 1)
            if base is None:
                continue
            layer = Layer.from_key(res["layer"])
            k = f"{layer.kernel_size}x{layer.kernel_size}" if layer.kind == "conv" else "fc"
            cells = []
            for key in (TF_PACKED, LITE_LOWBIT):
                med, best = _speedup(base["samples_ms"][key], res["samples_ms"][key])
                cells.append(f"{med:6.2f}x ({best:5.2f}x)")
            print(
                f"{t:>3} {k:>3} {res['batch']:>2}  {layer.label():<16}  "
                f"{cells[0]:>17}  {cells[1]:>17}"
            )


def _ms4(samples: list[float]) -> str:
    median, best = _stats(samples)
    return f"{median:8.4f} ({best:7.4f})"


def print_core_table(core_rows: list[dict], peaks: dict[int, float], note: str) -> None:
    """The core-kernel table: kernel throughput without framework overhead, and
    the memory-bound floor of the dense rows."""
    print()
    print("Core kernels: the core's BConv2D / BGemm in a C++ loop on packed data, library thread")
    print("pool; EXCLUDES all framework overhead (no TF op dispatch, no TFLite invoke, no")
    print("bit-packing of a float input) (ms per call: median of rounds, best round)")
    if not core_rows:
        print(f"  not measured ({note})")
        return
    w = len(_ms4([1.0]))
    header = (
        f"{'thr':>3} {'k':>3} {'N':>2}  {'shape':<16} {'MMACs':>7}  {'core kernel':>{w}}  "
        f"{'Gbop/s':>7} {'%peak':>6}  {'weights':>8} {'read':>6} {'floor':>8} {'ceiling':>7} "
        f"{'at':>6}"
    )
    sub = (
        f"{'':>3} {'':>3} {'':>2}  {'':<16} {'':>7}  {'median (best)':>{w}}  "
        f"{'':>7} {'':>6}  {'KiB':>8} {'GB/s':>6} {'ms':>8} {'%peak':>7} {'floor':>6}"
    )
    print(header)
    print(sub)
    print("-" * len(header))
    for res in sorted(core_rows, key=_sort_key):
        layer = Layer.from_key(res["layer"])
        macs = layer.macs(res["batch"])
        samples = res["samples_ms"]
        peak = peaks.get(res["threads"])
        k = f"{layer.kernel_size}x{layer.kernel_size}" if layer.kind == "conv" else "fc"
        line = (
            f"{res['threads']:>3} {k:>3} {res['batch']:>2}  {layer.label():<16} "
            f"{macs / 1e6:7.1f}  {_ms4(samples)}  {_gops(macs, samples)} "
            f"{_pct(_percent_of_peak(macs, samples, peak))}"
        )
        if res["read_ms"]:
            size = dense_weight_bytes(layer)
            floor_ms = statistics.median(res["read_ms"])
            ceiling = _percent_of_peak(macs, [floor_ms], peak)
            at_floor = 100.0 * floor_ms / statistics.median(samples)
            line += (
                f"  {size / 1024:8.0f} {size / (floor_ms * 1e-3) / 1e9:6.1f} {floor_ms:8.4f} "
                f"{_pct(ceiling):>7} {at_floor:6.1f}"
            )
        print(line)
    packed_rows = [r for r in sorted(core_rows, key=_sort_key) if r.get("packed_ms")]
    if packed_rows:
        print("Bit-packed output (output_type \"bitpacked\", the next binary layer's input) of the")
        print("conv rows: core kernel ms median (best), and packed / float median (<1: faster):")
        for res in packed_rows:
            layer = Layer.from_key(res["layer"])
            k = f"{layer.kernel_size}x{layer.kernel_size}"
            ratio = statistics.median(res["packed_ms"]) / statistics.median(res["samples_ms"])
            print(f"  {res['threads']:>3} {k:>3} {res['batch']:>2}  {layer.label():<16} "
                  f"packed {_ms4(res['packed_ms'])}  packed/float {ratio:5.2f}x")
    print("Dense rows, memory bound: the packed weights (KiB) are read once per call, at best at")
    print("the measured read bandwidth of a cache-hot buffer of that size (GB/s, median), so a")
    print("call takes >= floor ms; ceiling %peak = the %peak a call at the floor would reach;")
    print("at floor = floor / kernel median (100: running at the memory bound).")


def print_targets(
    results: list[dict],
    peaks: dict[int, float],
    core_rows: list[dict] | None = None,
    lce_rows: list[dict] | None = None,
) -> None:
    """The speed targets of the binary conv and dense kernels, for the rows that were
    measured."""
    lines = []
    r = _find(results, TARGET_SHAPE, 1, 1)
    if r is not None:
        s = r["samples_ms"]
        med, best = _speedup(s[TF_FLOAT], s[TF_PACKED])
        lines.append(
            f"3x3 14x14x256->256, 1 thr, N=1: TF bconv2d packed vs tf.nn.conv2d f32 "
            f"{med:.2f}x (best {best:.2f}x)  [target >= 15x]"
        )
        med, best = _speedup(s[TF_FLOAT], s[TF_FLOAT_IN])
        lines.append(f"    (bconv2d float-in vs tf.nn.conv2d f32 {med:.2f}x, best {best:.2f}x)")
        med, best = _speedup(s[LITE_INT8], s[LITE_LOWBIT])
        lines.append(
            f"3x3 14x14x256->256, 1 thr, N=1: TFLite lowbit vs XNNPACK int8 "
            f"{med:.2f}x (best {best:.2f}x)  [target >= 3x]"
        )
        lce_line = lce_compare.target_line(lce_rows or [])
        lines.append(
            lce_line
            or "3x3 14x14x256->256 vs Larq Compute Engine 0.16: not measured (pass "
            "--lce-python, see benchmarks/lce_compare.py)  [target >= 12x]"
        )
    one, two = _find(results, SCALING_SHAPE, 1, 1), _find(results, SCALING_SHAPE, 1, 2)
    if one is not None and two is not None:
        for key, name in ((LITE_LOWBIT, "TFLite lowbit"), (TF_PACKED, "TF bconv2d packed")):
            med, best = _speedup(one["samples_ms"][key], two["samples_ms"][key])
            lines.append(
                f"3x3 56x56x64->64, N=1: {name} 1 -> 2 threads {med:.2f}x (best rounds "
                f"{best:.2f}x)  [target >= 1.8x]"
            )
        if peaks.get(1) and peaks.get(2):
            lines.append(
                f"    (the peak micro-benchmark itself scales {peaks[2] / peaks[1]:.2f}x from "
                "1 to 2 threads on this machine now)"
            )
    dense_rows = [r for r in results if r["layer"].startswith("dense") and peaks.get(r["threads"])]
    if dense_rows:
        for key, name in ((TF_PACKED, "TF bgemm packed"), (LITE_LOWBIT, "TFLite lowbit")):
            best_row = max(
                dense_rows,
                key=lambda r, key=key: _percent_of_peak(
                    Layer.from_key(r["layer"]).macs(r["batch"]),
                    r["samples_ms"][key],
                    peaks[r["threads"]],
                ),
            )
            layer = Layer.from_key(best_row["layer"])
            pct = _percent_of_peak(
                layer.macs(best_row["batch"]),
                best_row["samples_ms"][key],
                peaks[best_row["threads"]],
            )
            lines.append(
                f"bgemm (binary dense) best row, {name}: {pct:.1f}% of peak "
                f"({layer.label()}, N={best_row['batch']}, {best_row['threads']} thr)  "
                "[target >= 50%]"
            )
    core_dense = [r for r in core_rows or () if r["read_ms"] and peaks.get(r["threads"])]
    if core_dense:

        def core_pct(r: dict, samples: list[float]) -> float:
            macs = Layer.from_key(r["layer"]).macs(r["batch"])
            return _percent_of_peak(macs, samples, peaks[r["threads"]])

        best_row = max(core_dense, key=lambda r: core_pct(r, r["samples_ms"]))
        layer = Layer.from_key(best_row["layer"])
        lines.append(
            f"bgemm (binary dense) best row, core kernel: "
            f"{core_pct(best_row, best_row['samples_ms']):.1f}% of peak ({layer.label()}, "
            f"N={best_row['batch']}, {best_row['threads']} thr)  [target >= 50%]"
        )
        for r in sorted(core_dense, key=_sort_key):
            if r["batch"] != 1:
                continue
            floor_ms = statistics.median(r["read_ms"])
            lines.append(
                f"    core kernel {Layer.from_key(r['layer']).label()}, N=1, {r['threads']} thr: "
                f"{core_pct(r, r['samples_ms']):.1f}% of peak; memory-bound ceiling "
                f"{core_pct(r, [floor_ms]):.1f}% of peak, reached "
                f"{100 * floor_ms / statistics.median(r['samples_ms']):.0f}% of it"
            )
    lines += kernel_share_lines(results, peaks, core_rows or [])
    if lines:
        print()
        print("Targets (binary conv and dense; medians):")
        for line in lines:
            print("  " + line)


# Issue 19's share-of-peak targets of the core kernels at batch 1: 1x1 convs
# and binary dense layers of >= 128 input channels at >= 50% of the peak, 3x3
# convs of 64 input channels at >= 75%; and the framework shells (TF op on a
# packed input, TFLite kernel) within 15% of the core kernel's time.
ONE_BY_ONE_TARGET = 50.0
THREE_BY_THREE_64_TARGET = 75.0
SHELL_OVERHEAD_TARGET = 15.0


def _variant_median(row: dict, key: str) -> float | None:
    """Median ms of a variant timed in a framework row, None if it was not."""
    samples = row["samples_ms"].get(key)
    return statistics.median(samples) if samples else None


def _excess(ms: float, core_ms: float) -> str:
    """A time as its excess over the core kernel's, e.g. "+12%"."""
    return f"{100.0 * (ms / core_ms - 1):+.0f}%"


def kernel_share_lines(results: list[dict], peaks: dict[int, float],
                       core_rows: list[dict]) -> list[str]:
    """One line per core-kernel row at batch 1 that one of those targets covers
    (% of the peak of its thread count, medians), and per such row the time the
    TF op (packed input) and the TFLite kernel add to the core kernel."""
    lines = []
    for r in sorted(core_rows, key=_sort_key):
        layer = Layer.from_key(r["layer"])
        if r["batch"] != 1 or not peaks.get(r["threads"]):
            continue
        cin = layer.shape.channels_in
        if layer.kind == "dense" or layer.kernel_size == 1:
            if cin < 128:
                continue
            target = ONE_BY_ONE_TARGET
        elif layer.kernel_size == 3 and cin == 64:
            target = THREE_BY_THREE_64_TARGET
        else:
            continue
        name = "bgemm" if layer.kind == "dense" else f"{layer.kernel_size}x{layer.kernel_size}"
        pct = _percent_of_peak(layer.macs(1), r["samples_ms"], peaks[r["threads"]])
        line = (f"core kernel {name} {layer.label()}, N=1, {r['threads']} thr: {pct:.1f}% of "
                f"peak  [target >= {target:.0f}%]")
        if r["read_ms"]:
            ceiling = _percent_of_peak(layer.macs(1), [statistics.median(r["read_ms"])],
                                       peaks[r["threads"]])
            line += f" (memory-bound ceiling {ceiling:.1f}%)"
        lines.append(line)
        shell = _find(results, r["layer"], 1, r["threads"])
        if shell is None:
            continue
        median = functools.partial(_variant_median, shell)
        # The core kernel timed in the shells' rounds where it was (side by
        # side), else the core table's.
        core_ms = median(CORE_IN_ROUNDS) or statistics.median(r["samples_ms"])
        over_core = functools.partial(_excess, core_ms=core_ms)
        overheads = ", ".join(f"{label} {over_core(median(key))}" for key, label in
                              ((TF_PACKED, "TF op packed"), (LITE_LOWBIT, "TFLite kernel")))
        lines.append(f"    shells over the core kernel: {overheads}  "
                     f"[target <= +{SHELL_OVERHEAD_TARGET:.0f}%]")
        loop_ms = median(TF_LOOP_FLOOR)
        if loop_ms is not None:
            lines.append(f"    TF op packed less the harness's tf.while_loop cost per iteration "
                         f"({1e3 * loop_ms:.1f} us, identity body): "
                         f"{over_core(median(TF_PACKED) - loop_ms)} over the core kernel")
        invoke_ms = median(LITE_INVOKE_FLOOR)
        if invoke_ms is not None:
            lines.append(f"    TFLite kernel less an invoke from Python of a one-op model "
                         f"({1e3 * invoke_ms:.2f} us, XNNPACK's times include it too): "
                         f"{over_core(median(LITE_LOWBIT) - invoke_ms)} over the core kernel")
            packed_ms = median(LITE_PACKED_IN)
            if packed_ms is not None:
                lines.append(f"    TFLite kernel on the packed input (the core kernel's input): "
                             f"{over_core(packed_ms)}; less that invoke: "
                             f"{over_core(packed_ms - invoke_ms)} over the core kernel")
    return lines


def run_depthwise(args: argparse.Namespace) -> None:
    """The binary depthwise rows and their target lines (issue 19: at least 2x
    the float depthwise convs of TF and XNNPACK), measured by
    benchmarks/bdepthwise_benchmark.py in a fresh process (1 thread) after the
    rest, its output printed as it is."""
    if args.depthwise.strip().lower() == "none":
        return
    command = [sys.executable, DEPTHWISE_SCRIPT, "--shapes", args.depthwise,
               "--rounds", str(args.rounds)]
    progress(f"binary depthwise rows ({args.depthwise}, stride 1 and 2)")
    proc = subprocess.run(command, capture_output=True, text=True, check=False)
    text = proc.stdout.strip("\n")
    if proc.returncode != 0 or not text:
        print(f"\nbinary depthwise: not measured ({(proc.stderr or '').strip()[-500:]})")
        return
    print()
    print(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=None,
        help=f"comma-separated HxWxCIN-COUT list or 'none' (default {DEFAULT_SHAPES})",
    )
    parser.add_argument(
        "--depthwise",
        default=None,
        help="binary depthwise 3x3 shapes HxWxC (stride 1 and 2, 1 thread, "
        "benchmarks/bdepthwise_benchmark.py in a subprocess) or 'none' (default "
        f"{DEPTHWISE_SHAPES}, quick {QUICK_DEPTHWISE_SHAPES})",
    )
    parser.add_argument(
        "--kernel-sizes",
        type=lambda t: parse_ints(t, "kernel size list"),
        default=None,
        help=f"square kernel sizes of the convolutions (default {DEFAULT_KERNEL_SIZES})",
    )
    parser.add_argument(
        "--batches",
        type=lambda t: parse_ints(t, "batch list"),
        default=None,
        help=f"batch sizes (default {DEFAULT_BATCHES}, quick {QUICK_BATCHES})",
    )
    parser.add_argument(
        "--dense",
        type=parse_dense,
        default=None,
        help=f"binary dense sizes C or CIN-COUT, or 'none' (default {DEFAULT_DENSE}, "
        f"quick {QUICK_DENSE})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help=f"only {QUICK_SHAPES} (3x3 and 1x1) and dense {QUICK_DENSE}, batch {QUICK_BATCHES},"
        " fewer and shorter rounds",
    )
    parser.add_argument(
        "--threads",
        type=parse_threads,
        default=[1, 2],
        help="comma-separated thread counts, one subprocess each (default 1,2)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 7, quick 5)"
    )
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=None,
        help="target duration of one timing sample in ms (default 40, quick 30)",
    )
    parser.add_argument(
        "--kernel",
        default=None,
        help="force a kernel path in the workers (sets LOWBIT_KERNEL), e.g. avx2",
    )
    parser.add_argument(
        "--no-peak", action="store_true", help="skip the peak popcount micro-benchmark"
    )
    parser.add_argument(
        "--no-core",
        action="store_true",
        help="skip the core-kernel table (C++ timing loop, no framework overhead)",
    )
    parser.add_argument(
        "--lce-python",
        default=os.environ.get("LOWBIT_LCE_PYTHON"),
        help="a Python with larq-compute-engine 0.16 (setup: benchmarks/lce_compare.py): "
        "also time the convolutions in Larq Compute Engine, side by side with lowbit "
        "(default $LOWBIT_LCE_PYTHON; unset: LCE is not measured)",
    )
    add_quiet_argument(parser)
    parser.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)

    if args.shapes is None:
        args.shapes = parse_shapes(QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    if args.kernel_sizes is None:
        args.kernel_sizes = parse_ints(DEFAULT_KERNEL_SIZES)
    if args.batches is None:
        args.batches = parse_ints(QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    if args.dense is None:
        args.dense = parse_dense(QUICK_DENSE if args.quick else DEFAULT_DENSE)
    if args.depthwise is None:
        args.depthwise = QUICK_DEPTHWISE_SHAPES if args.quick else DEPTHWISE_SHAPES
    if args.rounds is None:
        args.rounds = 5 if args.quick else 7
    if args.sample_ms is None:
        args.sample_ms = 30.0 if args.quick else 40.0
    if args.rounds < 1 or args.sample_ms <= 0:
        parser.error("--rounds must be >= 1 and --sample-ms > 0")
    if not layers_of(args):
        parser.error("nothing to measure: no convolution shapes and no dense sizes")

    if args.kernel is not None:
        os.environ["LOWBIT_KERNEL"] = args.kernel  # inherited by the workers
    if args.worker_threads is not None:
        worker(args)
        return 0

    start = time.perf_counter()
    print("lowbit bconv2d benchmark")
    print(f"  kernel path : {kernel_description()}")
    print(f"  CPU         : {cpu_model()} ({os.cpu_count()} logical cores)")
    print(f"  Python      : {platform.python_version()}")
    print(
        f"  method      : {args.rounds} interleaved rounds per row, "
        f"~{args.sample_ms:g} ms per sample, one subprocess per thread count"
    )
    print(
        f"  rows        : conv {_join([s.spec() for s in args.shapes])} x kernel "
        f"{_join(args.kernel_sizes)}; dense {_join([s.channels_in for s in args.dense])}; "
        f"batch {_join(args.batches)}; threads {_join(args.threads)}"
    )
    sys.stdout.flush()

    peak_binary, peak_note = (None, "skipped (--no-peak)")
    if not args.no_peak:
        peak_binary, peak_note = build_peak_benchmark()
    peak_rates: dict[int, dict[str, float]] = {}

    def sample_peaks() -> None:
        if peak_binary is None:
            return
        progress("peak popcount micro-benchmark")
        for threads in args.threads:
            rates = measure_peak(peak_binary, threads)
            for path, rate in rates.items():
                old = peak_rates.setdefault(threads, {})
                old[path] = max(old.get(path, 0.0), rate)

    sample_peaks()
    core_rows: list[dict] = []
    core_note = ""
    if not args.no_core:
        # Built (or found) once here; the workers inherit LOWBIT_BENCH_LIBRARY
        # (where this fails, each worker's attempt gives the core table's note).
        progress("kernel timing library (liblowbit_bench): building or found")
        with contextlib.suppress(OSError):
            bench_library_path()
    results = []
    tf_version = "?"
    background = []
    active = {}
    with tempfile.TemporaryDirectory(prefix="lowbit-bconv2d-bench-") as model_dir:
        args.model_dir = model_dir
        rows = len(layers_of(args)) * len(args.batches)
        for threads in args.threads:
            progress(f"{threads} thr: worker started, {rows} rows of 6 variants "
                     f"x {args.rounds} rounds (models converted by the first worker)")
            t0, busy0, ours0 = time.perf_counter(), busy_cpu_seconds(), children_cpu_seconds()
            out = run_worker(args, threads)
            elapsed = time.perf_counter() - t0
            busy1, ours1 = busy_cpu_seconds(), children_cpu_seconds()
            if busy0 is not None and busy1 is not None:
                others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / elapsed
                background.append(f"{others:.2f} cores during the {threads}-thread run")
            tf_version = out["tf_version"]
            active[threads] = out.get("kernel", "unknown")
            results.extend(out["results"])
            core_rows.extend(out["core"])
            core_note = out["core_note"]
            sample_peaks()

    lce = None
    if args.lce_python and args.shapes:
        progress("Larq Compute Engine comparison (benchmarks/lce_compare.py)")
        lce = run_lce_compare(args)
    progress("done; tables follow on stdout")

    print(f"  TensorFlow  : {tf_version}")
    paths = sorted(set(active.values()))
    if len(paths) == 1:
        print(f"  active path : {paths[0]} (as reported by the library in every worker)")
    else:
        print("  active path : " + ", ".join(f"{k} thr: {v}" for k, v in active.items()))
    peaks: dict[int, float] = {}
    if peak_rates:
        for threads, rates in sorted(peak_rates.items()):
            best_path = max(rates, key=rates.get)
            # More threads can always run as fewer: on a busy machine the
            # measured multi-thread peak can fall below the single-thread one.
            peaks[threads] = max([rates[best_path]] + [v for t, v in peaks.items() if t < threads])
            others = ", ".join(f"{p} {v / 1e9:.0f}" for p, v in rates.items() if p != best_path)
            floor = (
                f", used {peaks[threads] / 1e9:.1f} (fewer threads measured more)"
                if peaks[threads] > rates[best_path]
                else ""
            )
            print(
                f"  peak        : {threads} thr {rates[best_path] / 1e9:7.1f} G binary MAC/s "
                f"({best_path}; {others or 'no other path'}{floor})"
            )
        print(
            f"                (peak_popcount {peak_note}; best of short repetitions, sampled "
            "before, between and after the workers)"
        )
    else:
        print(f"  peak        : not measured ({peak_note})")
    if background:
        # CPU time used by other processes while the workers ran: on a shared
        # machine this explains thread counts that do not scale.
        print(f"  other load  : {'; '.join(background)} (busy CPU not ours)")
    print_tables(results, peaks)
    print_core_table(core_rows, peaks, core_note)
    if lce is not None:
        lce_compare.print_table(lce["rows"], lce["version"])
    print_targets(results, peaks, core_rows, lce["rows"] if lce is not None else None)
    run_depthwise(args)
    print(f"\nTotal wall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
