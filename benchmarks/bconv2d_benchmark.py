#!/usr/bin/env python3
"""Binary 3x3 convolution speed: lowbit kernels vs float32 convolution.

Measures, side by side in one run, for 3x3 convolutions (SAME padding,
stride 1, batch 1):

  TensorFlow  `lowbit_tf.ops.bconv2d` with a pre-packed int32 input and with a
              float32 input (binarised and packed inside the op), against
              `tf.nn.conv2d` in float32 on the same shape;
  TFLite      a one-layer binary `QuantConv2D` model converted with
              `lowbit=True` and run by `lowbit_tf.lite.Interpreter` (lowbit
              delegate), against the same model with a float `Conv2D`
              converted plainly and run on XNNPACK in float32.

Each thread count runs in a fresh subprocess of this script (TensorFlow's
intra-op thread count can only be set before it runs anything); the parent
collects the results and prints the tables. Within a subprocess all variants
of a shape are timed in interleaved rounds (A, B, C, ..., A, B, C, ...; the
order rotates from round to round) so that machine noise hits every variant
alike. Each timing sample runs many iterations: the TF ops run inside one
`tf.function` holding a sequential `tf.while_loop` (no per-op Python
overhead), the TFLite models by calling `invoke()` in a loop.

Usage:
  python benchmarks/bconv2d_benchmark.py            # default shapes, 1 and 2 threads
  python benchmarks/bconv2d_benchmark.py --quick    # only 14x14x256->256
  python benchmarks/bconv2d_benchmark.py --shapes 28x28x128-128,7x7x512-512
  python benchmarks/bconv2d_benchmark.py --quick --kernel avx2

--kernel NAME (or LOWBIT_KERNEL in the environment) forces a kernel path in
the worker subprocesses: reference | portable | x86_popcnt | avx2 | avx512bw |
avx512. A path the CPU lacks falls back to a lesser one; each worker asks the
library which path it really runs and the header prints it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_SHAPES = "56x56x64-64,28x28x128-128,14x14x256-256,7x7x512-512"
QUICK_SHAPES = "14x14x256-256"
KERNEL_SIZE = 3
RESULT_MARKER = "@@BCONV2D_BENCHMARK_RESULT@@"

# Variant keys, in the order they are listed in the tables.
TF_PACKED = "tf_bconv2d_packed"
TF_FLOAT_IN = "tf_bconv2d_float_in"
TF_FLOAT = "tf_conv2d_float32"
LITE_LOWBIT = "tflite_lowbit"
LITE_FLOAT = "tflite_xnnpack_float32"
VARIANTS = (TF_PACKED, TF_FLOAT_IN, TF_FLOAT, LITE_LOWBIT, LITE_FLOAT)


@dataclass(frozen=True)
class Shape:
    height: int
    width: int
    channels_in: int
    channels_out: int

    @property
    def macs(self) -> int:
        # SAME padding, stride 1: the output has the input's spatial size.
        return self.height * self.width * self.channels_out * KERNEL_SIZE**2 * self.channels_in

    def __str__(self) -> str:
        return f"{self.height}x{self.width}x{self.channels_in}->{self.channels_out}"

    def spec(self) -> str:
        return f"{self.height}x{self.width}x{self.channels_in}-{self.channels_out}"


_SHAPE_RE = re.compile(r"^(\d+)x(\d+)x(\d+)(?:->|-|:|x)(\d+)$")


def parse_shapes(text: str) -> list[Shape]:
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


def parse_threads(text: str) -> list[int]:
    try:
        threads = [int(v) for v in text.split(",") if v.strip()]
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"bad thread list {text!r}") from e
    if not threads or min(threads) < 1:
        raise argparse.ArgumentTypeError(f"bad thread list {text!r}")
    return threads


# --------------------------------------------------------------------------
# Worker: one thread count, all shapes, in its own process.
# --------------------------------------------------------------------------


def _time_tf_loop(loop: Callable, args: tuple) -> Callable[[int], float]:
    import tensorflow as tf

    def run(iterations: int) -> float:
        n = tf.constant(iterations, tf.int32)
        start = time.perf_counter()
        loop(n, *args).numpy()
        return time.perf_counter() - start

    return run


def _time_interpreter(interpreter) -> Callable[[int], float]:
    invoke = interpreter.invoke

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            invoke()
        return time.perf_counter() - start

    return run


def _calibrate(run: Callable[[int], float], sample_s: float) -> int:
    """Iterations per sample so that one sample lasts about `sample_s`."""
    run(1)  # warm-up: first call traces / allocates
    run(1)
    per_iter = run(1)
    probe = max(1, min(1000, int(0.2 * sample_s / max(per_iter, 1e-6))))
    per_iter = run(probe) / probe
    return max(1, min(100_000, round(sample_s / max(per_iter, 1e-7))))


def _benchmark_shape(shape: Shape, threads: int, rounds: int, sample_s: float) -> dict:
    import numpy as np
    import tensorflow as tf

    import lowbit_tf
    from lowbit_tf import constraints, layers, lite, ops
    from lowbit_tf._keras import keras

    rng = np.random.default_rng(20240601)
    h, w, cin, cout = shape.height, shape.width, shape.channels_in, shape.channels_out
    x_np = rng.standard_normal((1, h, w, cin), dtype=np.float32)
    kernel_np = rng.standard_normal((KERNEL_SIZE, KERNEL_SIZE, cin, cout), dtype=np.float32)
    bias_np = rng.standard_normal((cout,), dtype=np.float32)

    # ---- TensorFlow ops -------------------------------------------------
    x = tf.constant(x_np)
    x_packed = ops.bitpack(x)
    kernel = tf.constant(kernel_np)
    packed_filter = ops.pack_filter(kernel)
    multiplier = tf.ones([cout], tf.float32)
    bias = tf.constant(bias_np)

    def make_loop(body_op: Callable[..., tf.Tensor]) -> Callable:
        @tf.function
        def loop(n, *args):
            def body(i, acc):
                y = body_op(*args)
                return i + 1, acc + y[0, 0, 0, 0]

            _, acc = tf.while_loop(
                lambda i, acc: i < n,
                body,
                (tf.constant(0), tf.constant(0.0)),
                parallel_iterations=1,
            )
            return acc

        return loop

    def bconv_packed(inp, filt, mult, b):
        return ops.bconv2d(inp, filt, mult, b, kernel_size=3, channels_in=cin, padding="SAME")

    def bconv_float_in(inp, filt, mult, b):
        return ops.bconv2d(inp, filt, mult, b, kernel_size=3, padding="SAME")

    def conv_float(inp, k):
        return tf.nn.conv2d(inp, k, strides=1, padding="SAME")

    runners: dict[str, Callable[[int], float]] = {
        TF_PACKED: _time_tf_loop(
            make_loop(bconv_packed), (x_packed, packed_filter, multiplier, bias)
        ),
        TF_FLOAT_IN: _time_tf_loop(make_loop(bconv_float_in), (x, packed_filter, multiplier, bias)),
        TF_FLOAT: _time_tf_loop(make_loop(conv_float), (x, kernel)),
    }

    # Sanity: both input forms give the same result.
    y_packed = bconv_packed(x_packed, packed_filter, multiplier, bias).numpy()
    y_float_in = bconv_float_in(x, packed_filter, multiplier, bias).numpy()
    checks = {"tf_packed_vs_float_in": float(np.max(np.abs(y_packed - y_float_in)))}

    # ---- TFLite -----------------------------------------------------------
    binary_model = keras.Sequential(
        [
            keras.Input((h, w, cin), batch_size=1),
            layers.QuantConv2D(
                cout,
                KERNEL_SIZE,
                padding="same",
                input_quantizer="ste_sign",
                kernel_quantizer="ste_sign",
                kernel_constraint=constraints.WeightClip(1.0),
            ),
        ]
    )
    float_model = keras.Sequential(
        [
            keras.Input((h, w, cin), batch_size=1),
            keras.layers.Conv2D(cout, KERNEL_SIZE, padding="same"),
        ]
    )
    # Latent weights inside the clip range, so that the constraint is a no-op.
    clipped_kernel = np.clip(kernel_np, -1.0, 1.0)
    binary_model.layers[-1].set_weights([clipped_kernel, bias_np])
    float_model.layers[-1].set_weights([kernel_np, bias_np])
    lowbit_bytes = lowbit_tf.convert(binary_model, lowbit=True)
    float_bytes = lowbit_tf.convert(float_model, lowbit=False)

    interpreters = {
        LITE_LOWBIT: lite.Interpreter(
            model_content=lowbit_bytes, num_threads=threads, use_lowbit_delegate=True
        ),
        LITE_FLOAT: lite.Interpreter(
            model_content=float_bytes, num_threads=threads, use_lowbit_delegate=False
        ),
    }
    lite_outputs = {}
    for key, interpreter in interpreters.items():
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        interpreter.set_tensor(detail["index"], x_np)
        interpreter.invoke()
        lite_outputs[key] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        runners[key] = _time_interpreter(interpreter)
    # Sanity: the TFLite binary model computes what the TF op computes (same
    # signs of the weights; the op's output is an integer dot product + bias).
    checks["tflite_lowbit_vs_tf_op"] = float(np.max(np.abs(lite_outputs[LITE_LOWBIT] - y_float_in)))

    # ---- interleaved timing ------------------------------------------------
    iterations = {key: _calibrate(runners[key], sample_s) for key in VARIANTS}
    samples: dict[str, list[float]] = {key: [] for key in VARIANTS}
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for r in range(rounds):
            order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
            for key in order:
                elapsed = runners[key](iterations[key])
                samples[key].append(1e3 * elapsed / iterations[key])
    finally:
        if gc_was_enabled:
            gc.enable()

    return {
        "shape": shape.spec(),
        "threads": threads,
        "iterations": iterations,
        "samples_ms": samples,
        "checks": checks,
    }


def active_kernel() -> str:
    """The bconv2d kernel path the native library picks in this process."""
    import ctypes

    from lowbit_tf._native import tflite_library_path

    try:
        lib = ctypes.CDLL(str(tflite_library_path()))
        fn = lib.lowbit_bconv2d_kernel_name
    except (OSError, AttributeError, ImportError):
        return "unknown"
    fn.restype = ctypes.c_char_p
    return fn().decode()


def worker(shapes: list[Shape], threads: int, rounds: int, sample_s: float) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    # Must happen before TensorFlow executes anything.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    # Each timing sample is a sequential chain of ops: no inter-op overlap.
    tf.config.threading.set_inter_op_parallelism_threads(1)
    # Keep grappler from touching the timing loop (e.g. hoisting the
    # loop-invariant convolution out of it).
    tf.config.optimizer.set_experimental_options({"loop_optimization": False})

    results = [_benchmark_shape(shape, threads, rounds, sample_s) for shape in shapes]
    print(RESULT_MARKER + json.dumps(
        {"tf_version": tf.__version__, "kernel": active_kernel(), "results": results}))


# --------------------------------------------------------------------------
# Parent: run the workers, print the tables.
# --------------------------------------------------------------------------


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def kernel_description() -> str:
    forced = os.environ.get("LOWBIT_KERNEL", "")
    if forced:
        return f"{forced} (forced by LOWBIT_KERNEL)"
    return "auto (LOWBIT_KERNEL unset)"


def _busy_cpu_seconds() -> float | None:
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
    busy = sum(ticks) - ticks[3] - ticks[4]
    return busy / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(args: argparse.Namespace, shapes: list[Shape], threads: int) -> dict:
    command = [
        sys.executable,
        os.path.abspath(__file__),
        "--worker-threads",
        str(threads),
        "--shapes",
        ",".join(s.spec() for s in shapes),
        "--rounds",
        str(args.rounds),
        "--sample-ms",
        str(args.sample_ms),
    ]
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    proc = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_MARKER):
            return json.loads(line[len(RESULT_MARKER) :])
    sys.stderr.write(proc.stdout[-4000:])
    sys.stderr.write(proc.stderr[-4000:])
    raise SystemExit(f"worker for {threads} thread(s) failed with exit status {proc.returncode}")


def _stats(samples: list[float]) -> tuple[float, float]:
    return statistics.median(samples), min(samples)


def _ms(samples: list[float]) -> str:
    median, best = _stats(samples)
    return f"{median:8.3f} ({best:7.3f})"


def _ratio(baseline: list[float], ours: list[float]) -> str:
    return f"{statistics.median(baseline) / statistics.median(ours):6.2f}x"


def _gops(shape: Shape, samples: list[float]) -> str:
    median, _ = _stats(samples)
    return f"{2 * shape.macs / (median * 1e-3) / 1e9:7.1f}"


def print_tables(results: list[dict]) -> None:
    ms_head = "median (best)"
    w = len(_ms([1.0]))

    print()
    print("TensorFlow ops (ms per run: median of rounds, best round in parentheses)")
    header = (
        f"{'thr':>3}  {'shape':<16} {'MMACs':>7}  "
        f"{'bconv2d packed':>{w}}  {'bconv2d float-in':>{w}}  {'tf.nn.conv2d f32':>{w}}  "
        f"{'speed-up':>8} {'speed-up':>8}  {'Gbop/s':>7} {'Gbop/s':>7}"
    )
    sub = (
        f"{'':>3}  {'':<16} {'':>7}  "
        f"{ms_head:>{w}}  {ms_head:>{w}}  {ms_head:>{w}}  "
        f"{'packed':>8} {'float-in':>8}  {'packed':>7} {'flt-in':>7}"
    )
    print(header)
    print(sub)
    print("-" * len(header))
    for res in results:
        shape = parse_shapes(res["shape"])[0]
        s = res["samples_ms"]
        print(
            f"{res['threads']:>3}  {str(shape):<16} {shape.macs / 1e6:7.1f}  "
            f"{_ms(s[TF_PACKED])}  {_ms(s[TF_FLOAT_IN])}  {_ms(s[TF_FLOAT])}  "
            f"{_ratio(s[TF_FLOAT], s[TF_PACKED]):>8} {_ratio(s[TF_FLOAT], s[TF_FLOAT_IN]):>8}  "
            f"{_gops(shape, s[TF_PACKED])} {_gops(shape, s[TF_FLOAT_IN])}"
        )

    print()
    print("TFLite (ms per invoke: median of rounds, best round in parentheses)")
    header = (
        f"{'thr':>3}  {'shape':<16} {'MMACs':>7}  "
        f"{'lowbit delegate':>{w}}  {'XNNPACK f32':>{w}}  {'speed-up':>8}  {'Gbop/s':>7}"
    )
    sub = f"{'':>3}  {'':<16} {'':>7}  {ms_head:>{w}}  {ms_head:>{w}}  {'':>8}  {'':>7}"
    print(header)
    print(sub)
    print("-" * len(header))
    for res in results:
        shape = parse_shapes(res["shape"])[0]
        s = res["samples_ms"]
        print(
            f"{res['threads']:>3}  {str(shape):<16} {shape.macs / 1e6:7.1f}  "
            f"{_ms(s[LITE_LOWBIT])}  {_ms(s[LITE_FLOAT])}  "
            f"{_ratio(s[LITE_FLOAT], s[LITE_LOWBIT]):>8}  {_gops(shape, s[LITE_LOWBIT])}"
        )

    print()
    print("speed-up = float32 median / lowbit median (>1: lowbit faster).")
    print("Gbop/s   = 2 * MACs / lowbit median time / 1e9 (2 binary ops per MAC:")
    print("           XOR + popcount-accumulate).")
    print("bconv2d packed: int32 input pre-packed with lowbit_tf.ops.bitpack; float-in: float32")
    print("input binarised and packed inside the op. All convs: 3x3, SAME, stride 1, batch 1.")

    bad = [
        f"{r['shape']} @ {r['threads']} thr: {name} max |diff| = {value:g}"
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
        print("Output checks (bconv2d packed == float-in, TFLite lowbit == TF op): ok.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--shapes",
        type=parse_shapes,
        default=None,
        help=f"comma-separated HxWxCIN-COUT list (default {DEFAULT_SHAPES})",
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"only {QUICK_SHAPES}, fewer and shorter rounds"
    )
    parser.add_argument(
        "--threads",
        type=parse_threads,
        default=[1, 2],
        help="comma-separated thread counts, one subprocess each (default 1,2)",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 11, quick 7)"
    )
    parser.add_argument(
        "--sample-ms",
        type=float,
        default=None,
        help="target duration of one timing sample in ms (default 120, quick 80)",
    )
    parser.add_argument(
        "--kernel",
        default=None,
        help="force a kernel path in the workers (sets LOWBIT_KERNEL), e.g. avx2",
    )
    parser.add_argument("--worker-threads", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.shapes is None:
        args.shapes = parse_shapes(QUICK_SHAPES if args.quick else DEFAULT_SHAPES)
    if args.rounds is None:
        args.rounds = 7 if args.quick else 11
    if args.sample_ms is None:
        args.sample_ms = 80.0 if args.quick else 120.0
    if args.rounds < 1 or args.sample_ms <= 0:
        parser.error("--rounds must be >= 1 and --sample-ms > 0")

    if args.kernel is not None:
        os.environ["LOWBIT_KERNEL"] = args.kernel  # inherited by the workers
    if args.worker_threads is not None:
        worker(args.shapes, args.worker_threads, args.rounds, args.sample_ms / 1e3)
        return 0

    print("lowbit bconv2d benchmark")
    print(f"  kernel path : {kernel_description()}")
    print(f"  CPU         : {cpu_model()} ({os.cpu_count()} logical cores)")
    print(f"  Python      : {platform.python_version()}")
    print(
        f"  method      : {args.rounds} interleaved rounds per shape, "
        f"~{args.sample_ms:g} ms per sample, one subprocess per thread count"
    )
    sys.stdout.flush()

    start = time.perf_counter()
    results = []
    tf_version = "?"
    background = []
    active = {}
    for threads in args.threads:
        t0, busy0, ours0 = time.perf_counter(), _busy_cpu_seconds(), _children_cpu_seconds()
        out = run_worker(args, args.shapes, threads)
        elapsed = time.perf_counter() - t0
        busy1, ours1 = _busy_cpu_seconds(), _children_cpu_seconds()
        if busy0 is not None and busy1 is not None:
            others = max(0.0, (busy1 - busy0) - (ours1 - ours0)) / elapsed
            background.append(f"{others:.2f} cores during the {threads}-thread run")
        tf_version = out["tf_version"]
        active[threads] = out.get("kernel", "unknown")
        results.extend(out["results"])
    print(f"  TensorFlow  : {tf_version}")
    paths = sorted(set(active.values()))
    if len(paths) == 1:
        print(f"  active path : {paths[0]} (as reported by the library in every worker)")
    else:
        print("  active path : " + ", ".join(f"{k} thr: {v}" for k, v in active.items()))
    if background:
        # CPU time used by other processes while the workers ran: on a shared
        # machine this explains thread counts that do not scale.
        print(f"  other load  : {'; '.join(background)} (busy CPU not ours)")
    print_tables(results)
    print(f"\nTotal wall time: {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
