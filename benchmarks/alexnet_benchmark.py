"""Float AlexNet vs binary (XNOR-Net) AlexNet, batch 1, measured in one run.

    python benchmarks/alexnet_benchmark.py [--threads 1,2] [--rounds 7] [--variant xnor]

For each thread count (one subprocess each, since TensorFlow's thread pools are
fixed at start-up) it times, interleaved round by round:

    float AlexNet   TF (Keras model in a tf.function), TFLite XNNPACK float32,
                    TFLite XNNPACK full int8 (post-training quantised)
    binary AlexNet  TF with the lowbit ops (the lowered model), TFLite with the
                    lowbit kernels

and prints median ms (best round), file sizes and ratios against the float
model. Weights are random: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bench_common import (
    active_kernel,
    add_quiet_argument,
    int8_tflite,
    progress,
    run_worker_output,
    set_quiet,
    worker_progress,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _timer(fn, min_seconds: float = 0.3):
    """Returns a sampler: each call runs `fn` enough times for ~min_seconds, ms/run."""
    fn()
    start, runs = time.perf_counter(), 0
    while time.perf_counter() - start < min_seconds / 3:
        fn()
        runs += 1
    per_sample = max(1, int(runs * 3))

    def sample() -> float:
        t = time.perf_counter()
        for _ in range(per_sample):
            fn()
        return 1e3 * (time.perf_counter() - t) / per_sample

    return sample


def worker(threads: int, rounds: int, variant: str) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_models import alexnet
    from lowbit_tf.lite import Interpreter

    x = np.random.default_rng(0).standard_normal((1, 227, 227, 3)).astype(np.float32)
    float_model = alexnet("float")
    binary_model = alexnet(variant)
    lowered, plans = lower_model(binary_model)

    def representative():
        rng = np.random.default_rng(1)
        return (rng.standard_normal((1, 227, 227, 3)).astype(np.float32) for _ in range(8))

    int8_model = int8_tflite(float_model, representative)
    models = {
        "float32": lowbit_converter.convert(float_model, lowbit=False),
        "int8": int8_model,
        "lowbit": lowbit_converter.convert(binary_model),
    }

    def tflite_runner(name: str):
        interpreter = Interpreter(
            model_content=models[name], num_threads=threads, use_lowbit_delegate=name == "lowbit"
        )
        interpreter.allocate_tensors()
        detail = interpreter.get_input_details()[0]
        data = x
        if detail["dtype"] == np.int8:
            scale, zero = detail["quantization"]
            data = np.clip(np.round(x / scale + zero), -128, 127).astype(np.int8)
        interpreter.set_tensor(detail["index"], data)
        return interpreter.invoke

    tf_float = tf.function(lambda t: float_model(t, training=False))
    tf_lowbit = tf.function(lambda t: lowered(t, training=False))
    samplers = {
        "tf float32": _timer(lambda: tf_float(x).numpy()),
        "tf lowbit ops": _timer(lambda: tf_lowbit(x).numpy()),
        "tflite xnnpack f32": _timer(tflite_runner("float32")),
        "tflite xnnpack int8": _timer(tflite_runner("int8")),
        "tflite lowbit": _timer(tflite_runner("lowbit")),
    }
    times = {name: [] for name in samplers}
    order = list(samplers)
    worker_progress(f"{threads} thr: models converted, timing {rounds} rounds")
    for r in range(rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            times[name].append(samplers[name]())
        worker_progress(f"{threads} thr: round {r + 1}/{rounds} timed")
    return {
        "threads": threads,
        "lowered": sorted(plans),
        "sizes": {name: len(blob) for name, blob in models.items()},
        "median": {k: statistics.median(v) for k, v in times.items()},
        "best": {k: min(v) for k, v in times.items()},
        "kernel": active_kernel(),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2",
                        help="comma-separated thread counts, one subprocess each (default 1,2)")
    parser.add_argument("--rounds", type=int, default=7,
                        help="interleaved timing rounds (default 7)")
    parser.add_argument("--variant", default="xnor", help="the binary AlexNet variant")
    add_quiet_argument(parser)
    parser.add_argument("--worker-threads", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_quiet(args.quiet)
    if args.worker_threads:
        print(json.dumps(worker(args.worker_threads, args.rounds, args.variant)))
        return 0
    results = []
    for threads in (int(t) for t in args.threads.split(",")):
        progress(f"{threads} thr: worker started (converting AlexNet float32, int8, lowbit)")
        returncode, stdout, stderr = run_worker_output(
            [
                sys.executable,
                __file__,
                "--worker-threads",
                str(threads),
                "--rounds",
                str(args.rounds),
                "--variant",
                args.variant,
            ]
        )
        if returncode != 0:
            print(stderr[-3000:], file=sys.stderr)
            return returncode
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    first = results[0]
    print(
        f"AlexNet 227x227x3, batch 1, binary variant {args.variant!r} "
        f"(lowered: {', '.join(first['lowered']) or 'none'})"
    )
    forced = os.environ.get("LOWBIT_KERNEL")
    print(
        f"kernel path: {', '.join(sorted({r['kernel'] for r in results}))} (lowbit kernels, "
        + (f"LOWBIT_KERNEL={forced})" if forced else "best for this CPU)")
    )
    print(
        "sizes: "
        + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in first["sizes"].items())
        + f"  (float32 / lowbit = {first['sizes']['float32'] / first['sizes']['lowbit']:.1f}x)"
    )
    print(
        f"{'threads':>7}  {'runtime':<22}{'median ms':>10}{'best ms':>9}"
        f"{'vs tf f32':>10}{'vs xnn f32':>11}{'vs xnn int8':>12}"
    )
    for result in results:
        median, best = result["median"], result["best"]
        for name in median:
            print(
                f"{result['threads']:>7}  {name:<22}{median[name]:>10.2f}{best[name]:>9.2f}"
                f"{median['tf float32'] / median[name]:>9.2f}x"
                f"{median['tflite xnnpack f32'] / median[name]:>10.2f}x"
                f"{median['tflite xnnpack int8'] / median[name]:>11.2f}x"
            )
    print("ratios: float median / this median (>1: faster than that float runtime)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
