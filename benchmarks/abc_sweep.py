"""ABC-Net's speed question: up to which M * N is a multi-bit convolution faster
than float?

An ABC-Net layer with M weight bases and N activation bases costs M * N binary
convolutions (LowbitMultibitConv2d, see core/multibit_conv2d.h). This script
times it for every (M, N) in 1..5 x 1..5 on one layer (default 3x3
14x14x256->256, SAME, batch 1) against the same layer in float, all in
interleaved rounds in one process:

  TensorFlow   lowbit_tf.ops.multibit_conv2d    vs  tf.nn.conv2d float32 and float16
  TFLite       the op in a .tflite, lowbit       vs  the float Conv2D in XNNPACK float32,
               delegate                              and its float16-weight conversion

On x86 the float16 TFLite model is what TFLite offers as "fp16": weights stored
as float16 and dequantized; XNNPACK computes in float32 unless a build forces
fp16 inference (not exposed in the Python runtimes), so that column measures
the fp16 model as users can run it here. tf.nn.conv2d float16 on CPU is Eigen's
half-precision path.

It prints a table (median ms over rounds, speed-up = float median / ABC median)
and the answer -- the largest M * N up to which every configuration is faster
than each baseline -- and writes `abc_sweep.md` and `abc_sweep.png` to
--output-dir.

    python benchmarks/abc_sweep.py                    # 1..5 x 1..5 (~1-2 min)
    python benchmarks/abc_sweep.py --quick            # 1..2 x 1..2
    python benchmarks/abc_sweep.py --threads 2 --shape 28x28x128-128
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from bench_common import (  # noqa: E402
    active_kernel,
    add_quiet_argument,
    cpu_model,
    interleaved_samples,
    progress,
    set_quiet,
    tf_loop,
    time_interpreter,
    time_tf_loop,
)

BASELINES = {
    "tf_f32": "tf.nn.conv2d float32",
    "tf_f16": "tf.nn.conv2d float16",
    "lite_f32": "XNNPACK float32",
    "lite_f16": "TFLite fp16 weights",
}
# Which baselines each side of the comparison is measured against.
TF_BASELINES = ("tf_f32", "tf_f16")
LITE_BASELINES = ("lite_f32", "lite_f16")


def parse_shape(text: str) -> tuple[int, int, int, int]:
    """'HxWxC-F' -> (H, W, C, F)."""
    try:
        spatial, filters = text.split("-")
        h, w, c = (int(v) for v in spatial.split("x"))
        return h, w, c, int(filters)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must look like 14x14x256-256, got {text!r}"
        ) from None


def abc_model(h: int, w: int, c: int, f: int, m: int, n: int, seed: int):
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((h, w, c)),
        layers.ABCConv2D(f, 3, padding="same", num_weight_bases=m, num_activation_bases=n),
    ])


def float_tflite(model, fp16: bool) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if fp16:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    with contextlib.redirect_stdout(io.StringIO()):  # Keras's export chatter
        return converter.convert()


def interpreter_for(content: bytes, threads: int, x, lowbit: bool):
    from lowbit_tf.lite import Interpreter

    interpreter = Interpreter(model_content=content, num_threads=threads,
                              use_lowbit_delegate=lowbit)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    return interpreter


def measure(args: argparse.Namespace) -> tuple[dict, dict[str, list[float]]]:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf._keras import keras

    h, w, c, f = args.shape
    x = np.random.default_rng(0).uniform(-1, 2, (1, h, w, c)).astype(np.float32)
    kernel = tf.random.stateless_normal((3, 3, c, f), seed=(1, 2))
    runners = {}
    conv = tf_loop(lambda inp, k: tf.nn.conv2d(inp, k, 1, "SAME"))
    runners["tf_f32"] = time_tf_loop(conv, (tf.constant(x), kernel))
    conv16 = tf_loop(lambda inp, k: tf.nn.conv2d(inp, k, 1, "SAME"))
    half = (tf.constant(x, tf.float16), tf.cast(kernel, tf.float16))
    runners["tf_f16"] = time_tf_loop(conv16, half)
    float_model = keras.Sequential([keras.Input((h, w, c)),
                                     keras.layers.Conv2D(f, 3, padding="same")])
    interpreters = [
        interpreter_for(float_tflite(float_model, fp16), args.threads, x, lowbit=False)
        for fp16 in (False, True)
    ]
    runners["lite_f32"], runners["lite_f16"] = (time_interpreter(i) for i in interpreters)

    info = {}
    for m in args.sizes:
        for n in args.sizes:
            model = abc_model(h, w, c, f, m, n, seed=10 * m + n)
            lowered, _ = lower_model(model)
            layer = lowered.layers[-1]
            run_op = tf_loop(lambda inp, layer=layer: layer(inp))
            runners[f"tf_{m}x{n}"] = time_tf_loop(run_op, (tf.constant(x),))
            progress(f"M={m} N={n}: converting")
            tflite = lowbit_converter.convert(model)
            interpreter = interpreter_for(tflite, args.threads, x, lowbit=True)
            interpreters.append(interpreter)
            runners[f"lite_{m}x{n}"] = time_interpreter(interpreter)
            # Sanity: the op computes the layer (float tolerance).
            want = model(x).numpy()
            got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            info[f"{m}x{n}"] = float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6))
    progress(f"timing {len(runners)} variants in {args.rounds} interleaved rounds")
    _, samples = interleaved_samples(
        runners, args.rounds, args.sample_ms / 1e3,
        on_round=lambda r: progress(f"round {r}/{args.rounds} timed"),
    )
    return info, samples


def answer(speedups: dict[tuple[int, int], float]) -> int:
    """The largest product M * N such that every measured (M, N) with a product
    up to it is faster (speed-up > 1); 0 if even M * N = 1 is not."""
    best = 0
    for product in sorted({m * n for m, n in speedups}):
        if all(s > 1.0 for (m, n), s in speedups.items() if m * n <= product):
            best = product
        else:
            break
    return best


def report(args: argparse.Namespace, info: dict, samples: dict[str, list[float]]) -> str:
    median = {key: statistics.median(values) for key, values in samples.items()}
    h, w, c, f = args.shape
    lines = [
        f"# ABC-Net (M, N) sweep: 3x3 {h}x{w}x{c}->{f}, SAME, batch 1, {args.threads} thread(s)",
        "",
        f"CPU: {cpu_model()}; binary kernel path: {active_kernel()}; "
        f"{args.rounds} interleaved rounds, median ms.",
        "",
        "Baselines: " + ", ".join(f"{BASELINES[k]} {median[k]:.3f} ms" for k in BASELINES) + ".",
        "",
        "| M | N | M*N | TF op ms | vs tf f32 | vs tf f16 | TFLite op ms | vs XNNPACK f32 "
        "| vs TFLite fp16 | max rel. err vs Keras |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    speedups: dict[str, dict[tuple[int, int], float]] = {k: {} for k in BASELINES}
    for m in args.sizes:
        for n in args.sizes:
            tf_ms, lite_ms = median[f"tf_{m}x{n}"], median[f"lite_{m}x{n}"]
            for k in TF_BASELINES:
                speedups[k][(m, n)] = median[k] / tf_ms
            for k in LITE_BASELINES:
                speedups[k][(m, n)] = median[k] / lite_ms
            lines.append(
                f"| {m} | {n} | {m * n} | {tf_ms:.3f} | {speedups['tf_f32'][(m, n)]:.2f}x "
                f"| {speedups['tf_f16'][(m, n)]:.2f}x | {lite_ms:.3f} "
                f"| {speedups['lite_f32'][(m, n)]:.2f}x | {speedups['lite_f16'][(m, n)]:.2f}x "
                f"| {info[f'{m}x{n}']:.1e} |"
            )
    lines += ["", "Answer (largest M*N up to which every measured (M, N) is faster):"]
    for k in BASELINES:
        side = "TF op" if k in TF_BASELINES else "TFLite op"
        lines.append(f"- {side} vs {BASELINES[k]}: faster up to M*N = {answer(speedups[k])}")
    return "\n".join(lines) + "\n"


def plot(args: argparse.Namespace, samples: dict[str, list[float]], path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    median = {key: statistics.median(values) for key, values in samples.items()}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    pairs = [(m, n) for m in args.sizes for n in args.sizes]
    for prefix, marker, label in (("tf", "o", "ABC TF op"), ("lite", "s", "ABC TFLite op")):
        ax.scatter([m * n for m, n in pairs], [median[f"{prefix}_{m}x{n}"] for m, n in pairs],
                   marker=marker, label=label)
    for (key, label), style in zip(BASELINES.items(), ("-", "--", "-.", ":"), strict=True):
        ax.axhline(median[key], linestyle=style, color="gray", label=label)
    ax.set_xlabel("M * N (binary convolutions)")
    ax.set_ylabel("ms (median)")
    h, w, c, f = args.shape
    ax.set_title(f"ABC conv 3x3 {h}x{w}x{c}->{f}, {args.threads} thread(s)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shape", type=parse_shape, default=parse_shape("14x14x256-256"),
                        help="the 3x3 convolution, HxWxCIN-COUT (default 14x14x256-256)")
    parser.add_argument("--max-bases", type=int, default=5,
                        help="M and N run 1..this (default 5)")
    parser.add_argument("--threads", type=int, default=1,
                        help="threads of TensorFlow and the TFLite interpreters (default 1)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="interleaved timing rounds (default 5, quick 3)")
    parser.add_argument("--sample-ms", type=float, default=60.0,
                        help="target duration of one timing sample in ms (default 60, quick 30)")
    parser.add_argument("--quick", action="store_true", help="M, N in 1..2, 3 rounds")
    parser.add_argument("--output-dir", type=Path, default=Path(tempfile.gettempdir()),
                        help="where abc_sweep.md and abc_sweep.png go (default: the temp "
                             "folder)")
    add_quiet_argument(parser)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    if args.quick:
        args.max_bases, args.rounds, args.sample_ms = 2, 3, 30.0
    if args.max_bases < 1:
        parser.error(f"--max-bases must be >= 1, got {args.max_bases}")
    args.sizes = list(range(1, args.max_bases + 1))
    info, samples = measure(args)
    text = report(args, info, samples)
    print(text, end="")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "abc_sweep.md").write_text(text)
    png = args.output_dir / "abc_sweep.png"
    if plot(args, samples, png):
        print(f"wrote {args.output_dir / 'abc_sweep.md'} and {png}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
