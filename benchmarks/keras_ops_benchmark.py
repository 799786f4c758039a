"""The Keras layers on the lowbit TF ops, against float TensorFlow, in one run.

    python benchmarks/keras_ops_benchmark.py [--threads 1,2] [--rounds 5] [--quick]

Everything here is plain Keras: the same `lowbit_tf.layers` models, built with
`use_ops=True` (the custom TF ops, the default) or `use_ops=False` (the float
emulation), and their float twins (keras.layers.Conv2D / Dense in place of the
quantized layers, oneDNN). For each thread count (one subprocess each:
TensorFlow's thread pools are fixed at start-up) it times, interleaved round
by round (bench_common.interleaved_samples):

    QuickNet 224      model.predict_on_batch, batch 1 and 8: ops vs float twin
    XNOR AlexNet 227  model.predict_on_batch, batch 1: ops vs float AlexNet
    QuickNet 224      one train_on_batch step at batch 32: ops vs emulation
                      (the best of a few interleaved steps: a step takes seconds)
    per-op overhead   a graph of 200 relu / LowbitBconv2d / tf.nn.conv2d ops in
                      a row on a 1x1x32 input: microseconds per op
    Larq's layers     QuantConv1D, QuantConv3D, QuantSeparableConv2D (one
                      binary layer each, the shapes of larq_layers_benchmark.py)
                      model.predict_on_batch, batch 1: ops vs emulation

`predict_on_batch` runs Keras's compiled predict function on one batch,
without `model.predict`'s per-call data-adapter set-up, which is the same for
both sides and would only blur the ratio. Weights are random (speed does not
depend on them). The "target" lines check issue 16's figures: >= 5x for
QuickNet batch 1 on 1 thread, >= 3x for AlexNet batch 1 on 1 thread, and
(an aim, reported) >= 1.3x for the training step.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

from bench_common import (
    add_quiet_argument,
    cpu_model,
    interleaved_samples,
    parse_threads,
    progress,
    run_marked_json,
    set_quiet,
    worker_progress,
)

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

MARKER = "@@KERAS_OPS_BENCH@@"
QUICKNET_TARGET, ALEXNET_TARGET, TRAIN_AIM = 5.0, 3.0, 1.3


def _float_twin(model, keras):
    """The same architecture and weights with float Conv2D / Dense in place of
    every QuantConv2D / QuantDense (their quantizers dropped)."""
    from lowbit_tf import layers as lb_layers

    def clone(layer):
        if isinstance(layer, lb_layers.QuantConv2D):
            return keras.layers.Conv2D(
                layer.filters, layer.kernel_size, strides=layer.strides,
                padding=layer.padding, dilation_rate=layer.dilation_rate, groups=layer.groups,
                activation=layer.activation, use_bias=layer.use_bias, name=layer.name,
            )  # fmt: skip
        if isinstance(layer, lb_layers.QuantDense):
            return keras.layers.Dense(layer.units, activation=layer.activation,
                                      use_bias=layer.use_bias, name=layer.name)
        return layer.__class__.from_config(layer.get_config())

    twin = keras.models.clone_model(model, clone_function=clone)
    twin.set_weights(model.get_weights())
    return twin


def _runner(fn):
    """A bench_common runner: `run(n)` calls fn n times, returns seconds."""

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            fn()
        return time.perf_counter() - start

    return run


CHAIN = 200


def op_overheads(rounds: int) -> dict[str, float]:
    """Microseconds per op in a graph of CHAIN ops in a row on a 1x1x32 input,
    for a trivial TF op (relu), LowbitBconv2d (packed 1x1 filter) and
    tf.nn.conv2d: what one op costs beyond its arithmetic (the executor's node
    bookkeeping, output allocation, the op's own checks). The best of `rounds`."""
    import numpy as np
    import tensorflow as tf

    from lowbit_tf import ops

    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(size=(1, 1, 1, 32)).astype(np.float32))
    kernel = tf.constant(rng.normal(size=(1, 1, 32, 32)).astype(np.float32))
    packed, ones, zeros = ops.pack_filter(kernel), tf.ones([32]), tf.zeros([32])
    steps = {
        "relu": tf.nn.relu,
        "LowbitBconv2d": lambda v: ops.bconv2d(v, packed, ones, zeros, kernel_size=1,
                                               channels_in=32),
        "tf.nn.conv2d": lambda v: tf.nn.conv2d(v, kernel, 1, "VALID"),
    }
    result = {}
    for name, step in steps.items():

        @tf.function
        def chain(v, step=step):
            for _ in range(CHAIN):
                v = step(v)
            return v

        chain(x)
        calls = 100
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            for _ in range(calls):
                chain(x)
            best = min(best, (time.perf_counter() - start) / calls / CHAIN)
        result[name] = 1e6 * best
    return result


# Larq's other conv layers: (key, label, input shape, layer factory).
LARQ_LAYERS = (
    ("conv1d", "QuantConv1D 1024x256 k3, batch 1", (1024, 256),
     lambda layers, binary: layers.QuantConv1D(256, 3, padding="same", pad_values=1.0,
                                               kernel_quantizer="ste_sign", **binary)),
    ("conv3d", "QuantConv3D 8x28x28x128 k3, b1", (8, 28, 28, 128),
     lambda layers, binary: layers.QuantConv3D(128, 3, padding="same", pad_values=1.0,
                                               kernel_quantizer="ste_sign", **binary)),
    ("separable", "QuantSeparableConv2D 28x28x128, b1", (28, 28, 128),
     lambda layers, binary: layers.QuantSeparableConv2D(
         128, 3, padding="same", pad_values=1.0, depthwise_quantizer="ste_sign", **binary)),
)  # fmt: skip


def _larq_layer_runners(rng, keras) -> dict:
    """predict_on_batch runners of one-layer models of LARQ_LAYERS, on the ops
    and on the emulation with the same weights."""
    from lowbit_tf import layers

    runners = {}
    for key, _, shape, make in LARQ_LAYERS:
        models = []
        for use_ops in (True, False):
            inputs = keras.Input(shape)
            layer = make(layers, dict(input_quantizer="ste_sign", use_ops=use_ops))
            models.append(keras.Model(inputs, layer(inputs)))
        models[1].set_weights(models[0].get_weights())
        x = rng.uniform(-1, 1, (1, *shape)).astype("float32")
        for model, side in zip(models, ("ops", "emulated"), strict=True):
            runners[f"{key}_{side}"] = _runner(lambda m=model, x=x: m.predict_on_batch(x))
    return runners


def worker(threads: int, rounds: int, sample_s: float, train_steps: int) -> dict:
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    import lowbit_tf
    from lowbit_models.alexnet import alexnet
    from lowbit_models.quicknet import quicknet
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    worker_progress(f"{threads} thread(s): building QuickNet and AlexNet")
    quick = quicknet()
    quick_twin = _float_twin(quick, keras)
    xnor = alexnet("xnor")
    float_alexnet = alexnet("float")
    float_alexnet.set_weights(xnor.get_weights())  # same layout: the float twin

    runners = {}
    for batch in (1, 8):
        x = rng.uniform(-1, 1, (batch, 224, 224, 3)).astype(np.float32)
        runners[f"quicknet_ops_b{batch}"] = _runner(lambda x=x: quick.predict_on_batch(x))
        runners[f"quicknet_float_b{batch}"] = _runner(lambda x=x: quick_twin.predict_on_batch(x))
    xa = rng.uniform(-1, 1, (1, 227, 227, 3)).astype(np.float32)
    runners["alexnet_ops_b1"] = _runner(lambda: xnor.predict_on_batch(xa))
    runners["alexnet_float_b1"] = _runner(lambda: float_alexnet.predict_on_batch(xa))
    runners.update(_larq_layer_runners(rng, keras))
    worker_progress(f"{threads} thread(s): timing inference, {rounds} rounds")
    _, samples = interleaved_samples(
        runners, rounds, sample_s,
        on_round=lambda r: worker_progress(f"{threads} thread(s): round {r}/{rounds}"),
    )  # fmt: skip
    medians = {key: statistics.median(values) for key, values in samples.items()}

    # Training: QuickNet with the ops and with the emulation, same weights.
    worker_progress(f"{threads} thread(s): timing {train_steps} training steps per path")
    with lowbit_tf.ops_scope(False):
        quick_emulated = quicknet()
    quick_emulated.set_weights(quick.get_weights())
    xt = rng.uniform(-1, 1, (32, 224, 224, 3)).astype(np.float32)
    yt = rng.integers(0, 1000, 32)
    for model in (quick, quick_emulated):
        model.compile(optimizer=keras.optimizers.Adam(1e-4),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.train_on_batch(xt, yt)  # traces
    steps = {"train_ops": [], "train_emulated": []}
    for _ in range(train_steps):  # interleaved
        for key, model in (("train_ops", quick), ("train_emulated", quick_emulated)):
            start = time.perf_counter()
            model.train_on_batch(xt, yt)
            steps[key].append(1e3 * (time.perf_counter() - start))
    # The best step: a step takes seconds, and on a shared machine other work
    # only ever adds to it (three samples give no useful median).
    medians.update({key: min(values) for key, values in steps.items()})
    worker_progress(f"{threads} thread(s): per-op overhead")
    return {"threads": threads, "ms": medians, "op_us": op_overheads(rounds)}


def report(results: list[dict]) -> list[str]:
    rows = (
        ("QuickNet 224 predict, batch 1", "quicknet_float_b1", "quicknet_ops_b1", "float twin"),
        ("QuickNet 224 predict, batch 8", "quicknet_float_b8", "quicknet_ops_b8", "float twin"),
        ("XNOR AlexNet predict, batch 1", "alexnet_float_b1", "alexnet_ops_b1", "float AlexNet"),
        ("QuickNet train step, batch 32", "train_emulated", "train_ops", "emulation"),
        *((label, f"{key}_emulated", f"{key}_ops", "emulation")
          for key, label, _, _ in LARQ_LAYERS),
    )  # fmt: skip
    lines = [f"{'':34s} {'thr':>3s} {'ops ms':>9s} {'other ms':>9s}  ratio  (other)"]
    ratio = {}
    for result in results:
        ms, t = result["ms"], result["threads"]
        for label, other, ours, name in rows:
            ratio[(other, t)] = ms[other] / ms[ours]
            lines.append(f"{label:34s} {t:3d} {ms[ours]:9.2f} {ms[other]:9.2f} "
                         f"{ratio[(other, t)]:5.2f}x ({name})")
    for result in results:
        us = result["op_us"]
        lines.append(f"per op in a graph, {result['threads']} thread(s), 1x1x32 input: "
                     + ", ".join(f"{name} {value:.2f} us" for name, value in us.items()))
    for key, target, what in (
        ("quicknet_float_b1", QUICKNET_TARGET, "QuickNet predict batch 1, 1 thread, vs float twin"),
        ("alexnet_float_b1", ALEXNET_TARGET, "XNOR AlexNet predict batch 1, 1 thread, vs float"),
        ("train_emulated", TRAIN_AIM, "QuickNet train step batch 32, 1 thread, vs emulation"),
    ):
        if (key, 1) in ratio:
            got = ratio[(key, 1)]
            verdict = "PASS" if got >= target else "FAIL"
            lines.append(f"target: {what}: {got:.2f}x  [target >= {target}x] {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", default="1,2", help="thread counts (default 1,2)")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds (default 5)")
    parser.add_argument("--sample-ms", type=float, default=300.0,
                        help="ms per timing sample (default 300)")
    parser.add_argument("--train-steps", type=int, default=3,
                        help="timed training steps per path (default 3)")
    parser.add_argument("--quick", action="store_true",
                        help="1 thread, 3 rounds, 150 ms samples, 2 training steps")
    parser.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    add_quiet_argument(parser)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    if args.quick:
        args.threads, args.rounds, args.sample_ms, args.train_steps = "1", 3, 150.0, 2
    if args.worker is not None:
        result = worker(args.worker, args.rounds, args.sample_ms / 1e3, args.train_steps)
        print(MARKER + json.dumps(result), flush=True)
        return 0
    results = []
    for threads in parse_threads(args.threads):
        progress(f"worker: {threads} thread(s)")
        command = [sys.executable, __file__, "--worker", str(threads), "--rounds",
                   str(args.rounds), "--sample-ms", str(args.sample_ms), "--train-steps",
                   str(args.train_steps)]
        results.append(run_marked_json(command, MARKER, f"the {threads}-thread worker"))
    print(f"CPU: {cpu_model()}")
    print("\n".join(report(results)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
