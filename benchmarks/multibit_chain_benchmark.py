#!/usr/bin/env python3
"""A multi-bit conv inside a chain of binary convs: packed chain vs float path.

The chain (issue 19, "packed chains everywhere"): binary 3x3 conv -> BN ->
multi-bit 3x3 conv (sign activations, 2-bit DoReFa weights: two weight planes)
-> BN -> binary 3x3 conv -> BN, all C -> C channels, SAME, batch 1. Converted
twice with `lowbit_tf.convert`:

  packed   packed_chains=True: the first binary conv writes bit-packed words,
           the multi-bit conv reads them as its one activation plane and writes
           the signs of its output packed, the last binary conv reads those;
  float    packed_chains=False: every op writes float32 and the next one
           binarises it again.

Both run in `lowbit_tf.lite.Interpreter` (lowbit delegate) with 1 thread
(`--threads`), timed in interleaved rounds (bench_common.interleaved_samples);
their outputs are checked equal bit for bit first (a packed output is the sign
of the float one). The table gives the median and best ms per inference and
float median / packed median (>1: the packed chain is faster).

Usage:
  python benchmarks/multibit_chain_benchmark.py             # 56x56x64, 28x28x128, 14x14x256
  python benchmarks/multibit_chain_benchmark.py --quick     # 28x28x128
  python benchmarks/multibit_chain_benchmark.py --shapes 14x14x256 --rounds 11
"""

from __future__ import annotations

import argparse
import os
import statistics

from bench_common import (
    active_kernel,
    cpu_model,
    interleaved_samples,
    parse_ints,
    time_interpreter,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULT_SHAPES = "56x56x64,28x28x128,14x14x256"
QUICK_SHAPES = "28x28x128"


def chain_model(h: int, w: int, c: int, seed: int = 0):
    """The binary -> multi-bit -> binary chain of the module docstring, with
    random BatchNorm statistics (every sign matters)."""
    import numpy as np

    from lowbit_tf import layers, quantizers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_constraint="weight_clip")
    body = []
    for i, kernel_quantizer in enumerate(["ste_sign", quantizers.DoReFa(2, "weights"),
                                          "ste_sign"]):
        body += [layers.QuantConv2D(c, 3, padding="same", pad_values=1.0, name=f"conv{i}",
                                    kernel_quantizer=kernel_quantizer, **binary),
                 keras.layers.BatchNormalization(name=f"bn{i}")]
    model = keras.Sequential([keras.Input((h, w, c)), *body])
    rng = np.random.default_rng(seed)
    for i in range(3):
        bn = model.get_layer(f"bn{i}")
        bn.moving_mean.assign(rng.normal(0, 3, c))
        bn.moving_variance.assign(rng.uniform(1, 10, c))
    return model


def parse_shape(text: str) -> tuple[int, int, int]:
    values = parse_ints(text.replace("x", ","), "shape")
    if len(values) != 3 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"a shape is HxWxC, got {text!r}")
    return values[0], values[1], values[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", default=None,
                        help=f"HxWxC,... (default {DEFAULT_SHAPES}; --quick {QUICK_SHAPES})")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--sample-ms", type=float, default=150.0)
    args = parser.parse_args()
    shapes = [parse_shape(s) for s in
              (args.shapes or (QUICK_SHAPES if args.quick else DEFAULT_SHAPES)).split(",")]

    import numpy as np

    import lowbit_tf
    from lowbit_tf.lite import Interpreter

    print(f"CPU: {cpu_model()}; kernel: {active_kernel()}; threads: {args.threads}; "
          f"batch 1; {args.rounds} interleaved rounds")
    print("binary conv -> multi-bit conv (sign activations, 2-bit weights) -> binary conv, "
          "3x3 SAME, C -> C")
    print(f"{'shape':<12}{'packed ms':>10}{'best':>8}{'float ms':>10}{'best':>8}"
          f"{'float/packed':>14}")
    for h, w, c in shapes:
        model = chain_model(h, w, c)
        x = np.random.default_rng(1).standard_normal((1, h, w, c)).astype(np.float32)
        runners, outputs = {}, {}
        for name, packed in (("packed", True), ("float", False)):
            interpreter = Interpreter(model_content=lowbit_tf.convert(model, packed_chains=packed),
                                      num_threads=args.threads)
            interpreter.allocate_tensors()
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
            outputs[name] = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
            runners[name] = time_interpreter(interpreter)
        if not np.array_equal(outputs["packed"], outputs["float"]):
            raise SystemExit(f"{h}x{w}x{c}: the packed chain's output differs from the float "
                             "path's")
        _, samples = interleaved_samples(runners, args.rounds, args.sample_ms / 1e3)
        median = {k: statistics.median(v) for k, v in samples.items()}
        best = {k: min(v) for k, v in samples.items()}
        print(f"{f'{h}x{w}x{c}':<12}{median['packed']:>10.3f}{best['packed']:>8.3f}"
              f"{median['float']:>10.3f}{best['float']:>8.3f}"
              f"{median['float'] / median['packed']:>13.2f}x")
    print("float/packed: float-path median / packed-chain median (>1: packed faster); "
          "outputs equal bit for bit")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
