#!/usr/bin/env python3
"""Binary depthwise convolution speed: lowbit kernels vs float32 depthwise convs.

Measures, side by side in one process (1 thread, batch 1 by default), for the
3x3 depthwise shapes 56x56x64, 28x28x128 and 14x14x256 (SAME padding, stride 1
and 2):

  TensorFlow  `lowbit_tf.ops.bdepthwise_conv2d` with a float32 input and float
              output ("float in/out": the input binarised and packed inside the
              op) and with a packed int32 input and bit-packed output ("packed
              in/out", as between two binary layers), against
              `tf.nn.depthwise_conv2d` in float32;
  TFLite      the same two as one-op models run by `lowbit_tf.lite.Interpreter`
              (lowbit delegate), against a Keras `DepthwiseConv2D` converted
              to TFLite and run on XNNPACK in float32;
  core        the core kernel alone on a packed input, float and packed
              output, and on the float input (binarised inside the kernel),
              on the layer's BDepthwisePlan built once as the ops keep it
              (custom_ops/bench/kernel_bench.cc through
              bench_common.CoreKernels), when liblowbit_bench builds.

All variants of a row, the core kernel's four among them, are timed in
interleaved rounds (bench_common), so that
machine noise hits every variant alike; the table gives medians in
microseconds and each lowbit variant's speed-up over the float twin of its
shell. A line per target closes the output (issue 19: binary depthwise at
least 2x faster than both float depthwise convs, in both shells).

Usage:
  python benchmarks/bdepthwise_benchmark.py            # 3 shapes x 2 strides
  python benchmarks/bdepthwise_benchmark.py --quick    # 56x56x64, stride 1 and 2
  python benchmarks/bdepthwise_benchmark.py --shapes 28x28x128 --strides 2
  LOWBIT_KERNEL=avx2 python benchmarks/bdepthwise_benchmark.py --quick
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import os
import statistics
import sys

from bench_common import (
    CoreKernels,
    active_kernel,
    cpu_model,
    interleaved_samples,
    tf_loop,
    time_core,
    time_tf_loop,
)

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                "helpers"))

DEFAULT_SHAPES = "56x56x64,28x28x128,14x14x256"
QUICK_SHAPES = "56x56x64"

TF_FLOAT = "tf_float32"
TF_OURS_FLOAT = "tf_lowbit_float_io"
TF_OURS_PACKED = "tf_lowbit_packed_io"
LITE_FLOAT = "tflite_xnnpack_float32"
LITE_OURS_FLOAT = "tflite_lowbit_float_io"
LITE_OURS_PACKED = "tflite_lowbit_packed_io"
VARIANTS = (TF_OURS_FLOAT, TF_OURS_PACKED, TF_FLOAT, LITE_OURS_FLOAT, LITE_OURS_PACKED,
            LITE_FLOAT)
# The MobileNet-style block without its packed chain (packed_chains=False),
# and the lowered block on the TF ops with and without it.
LITE_BLOCK_UNCHAINED = "tflite_lowbit_unchained"
TF_BLOCK_CHAINED = "tf_lowbit_chained"
TF_BLOCK_UNCHAINED = "tf_lowbit_unchained"
CORE_FLOAT = "core_float_out"
CORE_PACKED = "core_packed_out"
# The same two on the float input (binarised inside the kernel where it can).
CORE_FLOAT_IN_FLOAT = "core_float_in_float_out"
CORE_FLOAT_IN_PACKED = "core_float_in_packed_out"
CORE_KERNELS = (CORE_FLOAT, CORE_PACKED, CORE_FLOAT_IN_FLOAT, CORE_FLOAT_IN_PACKED)
# The tf.while_loop of tf_loop with an identity body: the harness's own cost
# per iteration, in every TF time above (the TF rows' floor).
TF_LOOP_FLOOR = "tf_loop_identity"
# Reading the float input once at the read bandwidth of a cache-hot buffer of
# its size (kernel_bench.cc): a floor of every float-input variant.
CORE_READ_INPUT = "core_read_float_input"
# Writing the float output once the same way (kernel_bench.cc): a floor of
# every float-output variant.
CORE_WRITE_OUTPUT = "core_write_float_output"
TARGET = 2.0


def _parse_shapes(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(v) for v in s.split("x")) for s in text.split(",") if s]


def _lite_model(x, filt, m, b, options: dict, out_dtype) -> bytes:
    """input -> LowbitBDepthwiseConv2d -> output, built directly (the
    converter's float-in/float-out model plus the packed twin it cannot make)."""
    import numpy as np
    from flatbuffers import flexbuffers
    from tflite_models import ModelBuilder

    mb = ModelBuilder()
    xi = mb.tensor(x.shape, x.dtype, name="x")
    tensors = [xi, mb.tensor(filt.shape, filt.dtype, filt, name="filter"),
               mb.tensor(m.shape, np.float32, m, name="multiplier"),
               mb.tensor(b.shape, np.float32, b, name="bias")]
    y = mb.tensor((1,), out_dtype, name="y")
    mb.custom_op("LowbitBDepthwiseConv2d", tensors, [y], bytes(flexbuffers.Dumps(options)))
    return mb.finish([xi], [y])


def benchmark_row(h: int, w: int, c: int, stride: int, rounds: int, sample_s: float) -> dict:
    import numpy as np
    import tensorflow as tf

    from lowbit_tf import lite, ops
    from lowbit_tf._keras import keras
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(h * 1000 + c + stride)
    x = rng.standard_normal((1, h, w, c)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, c, 1)).astype(np.float32)
    m = rng.uniform(0.5, 1.5, c).astype(np.float32)
    b = rng.standard_normal(c).astype(np.float32)
    packed_filter = ops.pack_depthwise_filter(kernel)
    packed_x = ops.bitpack(x)
    attrs = dict(kernel_size=3, channels_in=c, strides=stride, padding="SAME")

    runners = {
        TF_OURS_FLOAT: time_tf_loop(
            tf_loop(lambda xx: ops.bdepthwise_conv2d(xx, packed_filter, m, b, **attrs)),
            (tf.constant(x),)),
        TF_OURS_PACKED: time_tf_loop(
            tf_loop(lambda xx: ops.bdepthwise_conv2d(xx, packed_filter, m, b,
                                                     output_type="bitpacked", **attrs)),
            (packed_x,)),
        TF_FLOAT: time_tf_loop(
            tf_loop(lambda xx, k: tf.nn.depthwise_conv2d(xx, k, [1, stride, stride, 1], "SAME")
                    + b),
            (tf.constant(x), tf.constant(kernel))),
        TF_LOOP_FLOOR: time_tf_loop(tf_loop(lambda xx: xx), (packed_x,)),
    }
    options = dict(channels_in=c, depth_multiplier=1, kernel_h=3, kernel_w=3, stride_h=stride,
                   stride_w=stride, dilation_h=1, dilation_w=1, padding="SAME", pad_value=0,
                   activation="NONE")
    filt_np = packed_filter.numpy()
    interpreters = {
        LITE_OURS_FLOAT: (_lite_model(x, filt_np, m, b, dict(options, output_type="float"),
                                      np.float32), x),
        LITE_OURS_PACKED: (_lite_model(packed_x.numpy(), filt_np, m, b,
                                       dict(options, output_type="bitpacked"), np.int32),
                           packed_x.numpy()),
    }
    float_model = keras.Sequential([keras.Input((h, w, c)),
                                    keras.layers.DepthwiseConv2D(3, stride, padding="same")])
    float_model.layers[-1].set_weights([kernel, b])
    converter = tf.lite.TFLiteConverter.from_keras_model(float_model)
    with contextlib.redirect_stdout(io.StringIO()):  # Keras prints the SavedModel's signature
        interpreters[LITE_FLOAT] = (converter.convert(), x)
    for key, (content, value) in interpreters.items():
        if key == LITE_FLOAT:
            interp = tf.lite.Interpreter(model_content=content, num_threads=1)
        else:
            interp = Interpreter(model_content=content, num_threads=1)
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], value)
        runners[key] = lite_runner(interp)
    del lite
    try:  # the core kernel alone (kernel_bench.cc), if it builds
        core = CoreKernels()
    except (OSError, AttributeError):
        core = None
    if core is not None:
        # Timed in the same interleaved rounds as the shells that the
        # "multiple of the core's time" columns compare with it.
        for key, bits, floats in ((CORE_FLOAT, False, False), (CORE_PACKED, True, False),
                                  (CORE_FLOAT_IN_FLOAT, False, True),
                                  (CORE_FLOAT_IN_PACKED, True, True)):
            runners[key] = time_core(functools.partial(
                core.bdepthwise, bitpacked=bits, float_input=floats),
                1, h, w, c, 3, stride, 1, sample_s, 1)
    _, samples = interleaved_samples(
        {k: runners[k] for k in (*VARIANTS, TF_LOOP_FLOOR, *CORE_KERNELS) if k in runners},
        rounds, sample_s)
    us = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    if core is not None:  # the floors, after the rounds
        us[CORE_READ_INPUT] = 1e3 * statistics.median(core.read(x.nbytes, 1, sample_s, rounds))
        out_bytes = -(-h // stride) * -(-w // stride) * c * 4  # SAME: ceil(size / stride)
        us[CORE_WRITE_OUTPUT] = 1e3 * statistics.median(
            core.write(out_bytes, 1, sample_s, rounds))
    return dict(shape=f"{h}x{w}x{c}", stride=stride, us=us)


def block_models(h: int, w: int, c: int, seed: int):
    """A MobileNet-style block, depthwise 3x3 (SAME) then 1x1 conv C -> C, as a
    binary Keras model (QuantDepthwiseConv2D + QuantConv2D, ste_sign inputs and
    kernels) and its float twin with the same weights."""
    import numpy as np

    from lowbit_tf import constraints, layers
    from lowbit_tf._keras import keras

    rng = np.random.default_rng(seed)
    dw = rng.uniform(-1, 1, (3, 3, c, 1)).astype(np.float32)
    dw_bias = rng.standard_normal(c).astype(np.float32)
    pw = rng.uniform(-1, 1, (1, 1, c, c)).astype(np.float32)
    pw_bias = rng.standard_normal(c).astype(np.float32)
    clip = constraints.WeightClip(1.0)
    binary = keras.Sequential([
        keras.Input((h, w, c)),
        layers.QuantDepthwiseConv2D(3, padding="same", input_quantizer="ste_sign",
                                    depthwise_quantizer="ste_sign", depthwise_constraint=clip),
        layers.QuantConv2D(c, 1, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           kernel_constraint=clip),
    ])
    float_model = keras.Sequential([
        keras.Input((h, w, c)),
        keras.layers.DepthwiseConv2D(3, padding="same"),
        keras.layers.Conv2D(c, 1),
    ])
    for model in (binary, float_model):
        model.layers[0].set_weights([dw, dw_bias])
        model.layers[1].set_weights([pw, pw_bias])
    return binary, float_model


def benchmark_block(h: int, w: int, c: int, rounds: int, sample_s: float) -> dict:
    """The block converted with lowbit=True (lowbit delegate) against the float
    block on XNNPACK f32, both TFLite, 1 thread, float input and output. Also
    the binary block without its packed chain (packed_chains=False: the
    depthwise output goes back to float and the 1x1 conv re-packs it, as
    before issue 19), in TFLite and as the converter's lowered Keras model on
    the TF ops (with and without the chain, in a tf.while_loop), side by side."""
    import numpy as np
    import tensorflow as tf

    import lowbit_tf
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    binary, float_model = block_models(h, w, c, h * 7 + c)
    x = np.random.default_rng(3).standard_normal((1, h, w, c)).astype(np.float32)
    runners = {}
    for key, model, options in ((LITE_OURS_FLOAT, binary, dict(lowbit=True)),
                                (LITE_BLOCK_UNCHAINED, binary,
                                 dict(lowbit=True, packed_chains=False)),
                                (LITE_FLOAT, float_model, dict(lowbit=False))):
        with contextlib.redirect_stdout(io.StringIO()):
            content = lowbit_tf.convert(model, **options)
        interp = (Interpreter(model_content=content, num_threads=1) if options["lowbit"]
                  else _float_interpreter(content))
        interp.allocate_tensors()
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        runners[key] = lite_runner(interp)
    for key, chained in ((TF_BLOCK_CHAINED, True), (TF_BLOCK_UNCHAINED, False)):
        lowered, _ = lower_model(binary, packed_chains=chained)
        runners[key] = time_tf_loop(tf_loop(lambda xx, m=lowered: m(xx)), (tf.constant(x),))
    _, samples = interleaved_samples(runners, rounds, sample_s)
    us = {k: statistics.median(v) * 1e3 for k, v in samples.items()}
    return dict(shape=f"{h}x{w}x{c}", us=us)


def _float_interpreter(content: bytes):
    import tensorflow as tf

    return tf.lite.Interpreter(model_content=content, num_threads=1)


def lite_runner(interp):
    import time

    invoke = interp.invoke

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            invoke()
        return time.perf_counter() - start

    return run


def print_blocks(blocks: list[dict]) -> None:
    if not blocks:
        return
    print("\nMobileNet-style block (depthwise 3x3 + 1x1 C->C, SAME, float in/out), TFLite, 1 "
          "thread: median us")
    for r in blocks:
        u = r["us"]
        print(f"{r['shape']:>10} | XNNPACK f32 {u[LITE_FLOAT]:8.1f} | lowbit "
              f"{u[LITE_OURS_FLOAT]:8.1f} | x {u[LITE_FLOAT] / u[LITE_OURS_FLOAT]:5.2f}")
    worst = min(blocks, key=lambda r: r["us"][LITE_FLOAT] / r["us"][LITE_OURS_FLOAT])
    print(f"  block: binary (lowbit=True) vs float on XNNPACK f32: worst "
          f"{worst['us'][LITE_FLOAT] / worst['us'][LITE_OURS_FLOAT]:.2f}x ({worst['shape']})")
    print("Packed chain in the block (the depthwise output stays bit-packed into the 1x1 "
          "conv) vs without it (packed_chains=False: float between, re-packed): median us")
    for r in blocks:
        u = r["us"]
        lite, tf_ops = (u[LITE_BLOCK_UNCHAINED], u[LITE_OURS_FLOAT]), (u[TF_BLOCK_UNCHAINED],
                                                                       u[TF_BLOCK_CHAINED])
        print(f"{r['shape']:>10} | TFLite chained {lite[1]:8.1f} unchained {lite[0]:8.1f} "
              f"x {lite[0] / lite[1]:5.2f} | TF ops chained {tf_ops[1]:8.1f} unchained "
              f"{tf_ops[0]:8.1f} x {tf_ops[0] / tf_ops[1]:5.2f}")


def print_results(rows: list[dict]) -> None:
    print(f"\n== binary depthwise 3x3 SAME, batch 1, 1 thread: median us; x = float / lowbit "
          f"(CPU {cpu_model()}, kernel {active_kernel()})")
    head = (f"{'shape':>10} {'s':>1} | {'TF f32':>8} {'float io':>8} {'x':>5} {'packed':>8} "
            f"{'x':>5} | {'XNN f32':>8} {'float io':>8} {'x':>5} {'packed':>8} {'x':>5}")
    print(head)
    print("-" * len(head))
    for r in rows:
        u = r["us"]
        print(f"{r['shape']:>10} {r['stride']:>1} | {u[TF_FLOAT]:8.1f} {u[TF_OURS_FLOAT]:8.1f} "
              f"{u[TF_FLOAT] / u[TF_OURS_FLOAT]:5.2f} {u[TF_OURS_PACKED]:8.1f} "
              f"{u[TF_FLOAT] / u[TF_OURS_PACKED]:5.2f} | {u[LITE_FLOAT]:8.1f} "
              f"{u[LITE_OURS_FLOAT]:8.1f} {u[LITE_FLOAT] / u[LITE_OURS_FLOAT]:5.2f} "
              f"{u[LITE_OURS_PACKED]:8.1f} {u[LITE_FLOAT] / u[LITE_OURS_PACKED]:5.2f}")
    if all(CORE_FLOAT in r["us"] for r in rows):
        print("core kernel (packed input, C++ loop, no framework): float out / packed out us; "
              "TF and TFLite packed in/out as a multiple of the core's time")
        for r in rows:
            u = r["us"]
            print(f"{r['shape']:>10} {r['stride']:>1} | core {u[CORE_FLOAT]:7.1f} "
                  f"{u[CORE_PACKED]:7.1f} | TF {u[TF_OURS_PACKED] / u[CORE_PACKED]:5.2f}x  "
                  f"TFLite {u[LITE_OURS_PACKED] / u[CORE_PACKED]:5.2f}x")
        print("core kernel, float input (binarised in the kernel): float out / packed out us; "
              "TF and TFLite float in/out as a multiple of the core's float in/out")
        for r in rows:
            u = r["us"]
            print(f"{r['shape']:>10} {r['stride']:>1} | core {u[CORE_FLOAT_IN_FLOAT]:7.1f} "
                  f"{u[CORE_FLOAT_IN_PACKED]:7.1f} | TF "
                  f"{u[TF_OURS_FLOAT] / u[CORE_FLOAT_IN_FLOAT]:5.2f}x  TFLite "
                  f"{u[LITE_OURS_FLOAT] / u[CORE_FLOAT_IN_FLOAT]:5.2f}x")
    print()
    print("Targets (binary depthwise; medians):")
    for label, ours, base in (
        ("TF op, float in/out, vs tf.nn.depthwise_conv2d", TF_OURS_FLOAT, TF_FLOAT),
        ("TF op, packed in/out, vs tf.nn.depthwise_conv2d", TF_OURS_PACKED, TF_FLOAT),
        ("TFLite, float in/out, vs XNNPACK f32", LITE_OURS_FLOAT, LITE_FLOAT),
        ("TFLite, packed in/out, vs XNNPACK f32", LITE_OURS_PACKED, LITE_FLOAT),
    ):
        ratios = [r["us"][base] / r["us"][ours] for r in rows]
        worst = min(range(len(rows)), key=lambda i: ratios[i])
        print(f"  binary depthwise {label}: worst {ratios[worst]:.2f}x "
              f"({rows[worst]['shape']} s{rows[worst]['stride']}), best {max(ratios):.2f}x  "
              f"[target >= {TARGET:g}x]")
    print_floors(rows)


def _own_ratio(float_us: float, ours_us: float) -> str:
    """`float_us / ours_us` as ' 1.23x', or '   n/a' where the loop's median
    came out at or above either time (a slow spell of the machine during the
    identity loop's samples): a difference that is not positive says nothing."""
    if float_us <= 0 or ours_us <= 0:
        return "   n/a"
    return f"{float_us / ours_us:5.2f}x"


def print_floors(rows: list[dict]) -> None:
    """What no binary kernel can go below, measured in the same run: reading
    the float input once (float in/out variants; at the read bandwidth of a
    cache-hot buffer of its size), and the TF harness's own tf.while_loop cost
    per iteration (an identity body), which every TF time above includes; with
    it taken off both sides, the TF ratios are the ops' own."""
    if not rows or not all(CORE_READ_INPUT in r["us"] for r in rows):
        return
    print("Floors (same run): float input read once at this CPU's cache read bandwidth, vs "
          "the time the 2x target allows; TF ratios with the tf.while_loop's own cost per "
          "iteration (identity body) taken off both sides")
    for r in rows:
        u = r["us"]
        loop = u[TF_LOOP_FLOOR]
        own = [_own_ratio(u[TF_FLOAT] - loop, u[key] - loop)
               for key in (TF_OURS_FLOAT, TF_OURS_PACKED)]
        print(f"{r['shape']:>10} {r['stride']:>1} | input read >= {u[CORE_READ_INPUT]:6.1f} us, "
              f"2x XNNPACK f32 allows {u[LITE_FLOAT] / TARGET:6.1f} us | TF loop "
              f"{loop:5.1f} us/iter; TF ops' own: float io {own[0]} packed {own[1]}")
    if not all(CORE_WRITE_OUTPUT in r["us"] for r in rows):
        return
    print("Float output floor (same run): the float output written once at this CPU's cache "
          "write bandwidth (every line read for ownership, then written back), and with the "
          "input read: the least a float in/out call moves, vs the time the 2x target allows")
    for r in rows:
        u = r["us"]
        write = u[CORE_WRITE_OUTPUT]
        print(f"{r['shape']:>10} {r['stride']:>1} | output write >= {write:6.1f} us, with the "
              f"input read {write + u[CORE_READ_INPUT]:6.1f} us, 2x XNNPACK f32 allows "
              f"{u[LITE_FLOAT] / TARGET:6.1f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=None, help=f"HxWxC list (default {DEFAULT_SHAPES})")
    parser.add_argument("--strides", default="1,2")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-block", action="store_true",
                        help="skip the MobileNet-style block rows")
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    shapes = _parse_shapes(args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES))
    strides = [int(s) for s in args.strides.split(",")]
    rounds = args.rounds or (5 if args.quick else 7)
    rows = [benchmark_row(h, w, c, s, rounds, 0.03) for (h, w, c) in shapes for s in strides]
    blocks = [] if args.no_block else [benchmark_block(h, w, c, rounds, 0.03)
                                       for (h, w, c) in shapes]
    print_results(rows)
    print_blocks(blocks)
    return 0


if __name__ == "__main__":
    sys.exit(main())
