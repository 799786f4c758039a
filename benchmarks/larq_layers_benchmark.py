#!/usr/bin/env python3
"""The other Larq layers on our TFLite kernels against the same layers as float TFLite.

    python benchmarks/larq_layers_benchmark.py [--rounds 7] [--threads 1] [--quiet]

Each row is one binary layer (sign inputs, sign kernel, 'same' padding with
pad_values=1) in a one-layer Keras model, converted twice by `lowbit_tf.convert`:
`lowbit=True` (our ops: QuantConv1D and QuantConv3D on LowbitBconv2d, the 3-D
conv as one op per depth tap; the separable conv's depthwise half on
LowbitBDepthwiseConv2d, its pointwise half a float CONV_2D; the transposed conv
as one LowbitBconv2d per stride phase, interleaved by DEPTH_TO_SPACE; transposed
convs have no pad_values, they pad with zeros) and `lowbit=False` (the float
twin: TFLite's CONV_2D / CONV_3D / DEPTHWISE_CONV_2D / TRANSPOSE_CONV builtins
on the same +-1 values, XNNPACK where it applies). Both run in `lowbit_tf.lite` with the
same thread count, timed in interleaved rounds (bench_common.interleaved_samples);
medians of invoke() only. The outputs of the two are compared first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections.abc import Callable

import numpy as np
from bench_common import (
    add_quiet_argument,
    cpu_model,
    interleaved_samples,
    progress,
    set_quiet,
    time_interpreter,
)

SIGN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip")


def cases(layers) -> list[tuple[str, tuple[int, ...], Callable[[], object]]]:
    return [
        ("QuantConv1D 1024x256 k3", (1024, 256),
         lambda: layers.QuantConv1D(256, 3, padding="same", pad_values=1.0, **SIGN)),
        ("QuantConv3D 8x28x28x128 k3", (8, 28, 28, 128),
         lambda: layers.QuantConv3D(128, 3, padding="same", pad_values=1.0, **SIGN)),
        ("QuantConv3D 16x14x14x256 k3", (16, 14, 14, 256),
         lambda: layers.QuantConv3D(256, 3, padding="same", pad_values=1.0, **SIGN)),
        ("QuantSeparableConv2D 28x28x128 k3", (28, 28, 128),
         lambda: layers.QuantSeparableConv2D(
             128, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
             depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip")),
        ("QuantConv2DTranspose 28x28x128 k3 s2", (28, 28, 128),
         lambda: layers.QuantConv2DTranspose(128, 3, strides=2, padding="same", **SIGN)),
        ("QuantConv2DTranspose 14x14x256 k4 s2", (14, 14, 256),
         lambda: layers.QuantConv2DTranspose(128, 4, strides=2, padding="same", **SIGN)),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--sample-seconds", type=float, default=0.2)
    add_quiet_argument(parser)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)

    import tensorflow as tf

    import lowbit_tf
    from lowbit_tf import layers, lite

    print(f"CPU: {cpu_model()}; {args.threads} thread(s); median ms per invoke, "
          f"{args.rounds} interleaved rounds")
    print(f"{'layer':<36} {'float TFLite':>13} {'lowbit':>9} {'speed-up':>9}  agree")
    for name, shape, make in cases(layers):
        progress(f"{name}: converting")
        inputs = tf.keras.Input(shape)
        model = tf.keras.Model(inputs, make()(inputs))
        x = np.random.default_rng(0).normal(size=(1, *shape)).astype("float32")
        interpreters = {}
        for kind in ("float", "lowbit"):
            interpreter = lite.Interpreter(
                model_content=lowbit_tf.convert(model, lowbit=kind == "lowbit"),
                num_threads=args.threads)
            interpreter.allocate_tensors()
            interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
            interpreter.invoke()
            interpreters[kind] = interpreter
        outputs = [i.get_tensor(i.get_output_details()[0]["index"])
                   for i in interpreters.values()]
        agree = bool(np.allclose(outputs[0], outputs[1], rtol=1e-5,
                                 atol=1e-5 * float(np.max(np.abs(outputs[0])))))
        progress(f"{name}: timing")
        _, samples = interleaved_samples(
            {k: time_interpreter(i) for k, i in interpreters.items()}, args.rounds,
            args.sample_seconds)
        ms = {k: statistics.median(v) for k, v in samples.items()}
        print(f"{name:<36} {ms['float']:13.3f} {ms['lowbit']:9.3f} "
              f"{ms['float'] / ms['lowbit']:8.1f}x  {'yes' if agree else 'NO'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
