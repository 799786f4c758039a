#!/usr/bin/env python3
"""Binary convolution speed: lowbit TFLite kernels vs Larq Compute Engine 0.16.

Runs the same binary convolutions (the harness's shapes and weights: SAME zero
padding, stride 1, a float input binarised inside the model, float output with
bias) through

  LCE     a model converted by LCE's own converter (`convert_saved_model`) from a
          TensorFlow graph written in the pattern LCE recognises as a binary
          convolution (larq's sign, `sign(sign(x) + 0.1)`, in front of a conv2d
          with +-1 weights), run by LCE's interpreter in both of its x86 kernel
          configurations: the default (im2col + BGEMM) and the indirect BGEMM
          kernel (`use_indirect_bgemm=True`); the faster is "LCE best";
  lowbit  the binary `QuantConv2D` converted with `lowbit_tf.convert(lowbit=True)`
          and run by `lowbit_tf.lite.Interpreter`,

in one process, in interleaved rounds (bench_common.interleaved_samples), on
the same input. LCE's Python interpreter offers only `predict`, which copies the
input in and the output out on every call, so lowbit is timed the same way
(`set_tensor` + `invoke` + `get_tensor`, column "same I/O"); the invoke-only time
(as in bconv2d_benchmark.py) is printed beside it. Before timing, the outputs
of LCE and lowbit are compared: both compute the same integer dot products and
add the same bias, but LCE's output transform rounds differently (a few ulp),
so the check is relative, |LCE - lowbit| <= 1e-6 * max |lowbit| (column
"agree"); a wrong sign convention, padding or weight layout differs by whole
units.

With --quicknet it does the same for the whole QuickNet (224x224x3, batch 1,
random weights, as quicknet_benchmark.py builds it): the lowbit model from
`lowbit_converter.convert`, and for LCE the same Keras model with every
QuantConv2D replaced by larq's formulation of it (sign(sign(x) + 0.1), padding
with +1, VALID conv2d of sign(kernel)), frozen into constants and converted by
LCE's converter; LCE runs with and without its XNNPACK delegate for the float
parts. Each model's logits are compared with those of the Keras model.

LCE is not a dependency of lowbit-tf and is not installed by it. Its 0.16 wheel
needs a NumPy 1 runtime (its interpreter reads arrays through the NumPy 1 ABI:
under NumPy 2 it sees 0-byte inputs), so give it its own environment that sees
this machine's TensorFlow and lowbit-tf:

  python -m venv --system-site-packages .lce-venv
  .lce-venv/bin/pip install --no-deps larq-compute-engine==0.16.0 "numpy<2"
  .lce-venv/bin/python benchmarks/lce_compare.py
  .lce-venv/bin/python benchmarks/lce_compare.py --quicknet
  python benchmarks/bconv2d_benchmark.py --lce-python .lce-venv/bin/python   # or
  LOWBIT_LCE_PYTHON=.lce-venv/bin/python python benchmarks/bconv2d_benchmark.py
  python benchmarks/quicknet_benchmark.py --lce-python .lce-venv/bin/python

(`--no-deps`: the wheel's only hard dependencies are flatbuffers and tqdm, and
the converter imports TensorFlow, which the environment already sees.)
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import statistics
import sys
import tempfile
import time
import zlib

from bench_common import (
    QUICKNET_INPUT_SHAPE,
    Layer,
    clone_replacing_quant_convs,
    interleaved_samples,
    layer_models,
    layer_weights,
    parse_ints,
    parse_shapes,
    parse_threads,
    random_images,
    randomise_batchnorm,
    run_marked_json,
    time_interpreter,
)

RESULT_MARKER = "@@LCE_COMPARE_RESULT@@"
DEFAULT_SHAPES = "56x56x64-64,28x28x128-128,14x14x256-256,7x7x512-512"
TARGET_LAYER = "conv3_14x14x256-256"
AGREE_RELATIVE = 1e-6

LCE_DEFAULT = "lce_default"
LCE_INDIRECT = "lce_indirect_bgemm"
LCE_INDIRECT_XNNPACK = "lce_indirect_bgemm_xnnpack"
LOWBIT_IO = "lowbit_same_io"
LOWBIT_INVOKE = "lowbit_invoke"
VARIANTS = (LCE_DEFAULT, LCE_INDIRECT, LOWBIT_IO, LOWBIT_INVOKE)


def _lce_interpreter_class():
    """LCE's LiteInterpreter (its pybind11 module): loaded from its file, so that
    the package's __init__ (which imports the converter) does not have to run."""
    import importlib.util

    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(
            "larq_compute_engine is not importable by this Python; see the setup in "
            "benchmarks/lce_compare.py"
        )
    folder = os.path.join(spec.submodule_search_locations[0], "tflite", "python")
    names = [n for n in os.listdir(folder) if n.startswith("interpreter_wrapper_lite")]
    if not names:
        raise SystemExit(f"no interpreter_wrapper_lite module in {folder}")
    module_spec = importlib.util.spec_from_file_location(
        "interpreter_wrapper_lite", os.path.join(folder, names[0])
    )
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.LiteInterpreter


def _lce_convert_frozen(fn, input_shape: tuple[int, ...], work_dir: str) -> bytes:
    """LCE's converter on `fn` (a function of one float input) with every variable
    frozen into a constant: LCE 0.16's converter cannot read the variables of a
    SavedModel written by newer TensorFlow."""
    import shutil

    import tensorflow as tf
    from larq_compute_engine import convert_saved_model
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    concrete = tf.function(fn).get_concrete_function(tf.TensorSpec(input_shape, tf.float32))
    path = os.path.join(work_dir, "lce_saved_model")
    shutil.rmtree(path, ignore_errors=True)
    tf.saved_model.save(tf.Module(), path, signatures=convert_variables_to_constants_v2(concrete))
    with contextlib.redirect_stdout(io.StringIO()):
        return convert_saved_model(path)


def _larq_sign(x):
    """larq's sign (0 -> +1), which LCE's converter turns into LceQuantize."""
    import tensorflow as tf

    return tf.sign(tf.sign(x) + 0.1)


def lce_quicknet_twin(model):
    """The Keras QuickNet with every QuantConv2D (3x3, SAME, pad_values 1, stride 1)
    written as larq writes it, which LCE's converter lowers to LceBconv2d."""
    import tensorflow as tf

    from lowbit_tf._keras import keras

    class LarqBinaryConv2D(keras.layers.Layer):
        def __init__(self, filters, kernel_size, **kwargs):
            super().__init__(**kwargs)
            self.filters, self.kernel_size = filters, tuple(kernel_size)

        def build(self, input_shape):
            self.kernel = self.add_weight(
                shape=(*self.kernel_size, input_shape[-1], self.filters), name="kernel"
            )

        def call(self, x):
            ph, pw = (self.kernel_size[0] - 1) // 2, (self.kernel_size[1] - 1) // 2
            x = tf.pad(_larq_sign(x), [[0, 0], [ph, ph], [pw, pw], [0, 0]], constant_values=1.0)
            return tf.nn.conv2d(x, _larq_sign(self.kernel), 1, "VALID")

    def larq_conv(layer):
        c = layer.get_config()
        if (c["strides"] != (1, 1) or c["padding"] != "same" or c["pad_values"] != 1.0
                or c["use_bias"] or c["dilation_rate"] != (1, 1)):
            raise ValueError(f"{layer.name}: not a QuickNet binary conv: {c}")
        return LarqBinaryConv2D(layer.filters, layer.kernel_size, name=layer.name)

    return clone_replacing_quant_convs(model, larq_conv)


def measure_quicknet(threads: int, rounds: int, sample_s: float) -> dict:
    import numpy as np

    from lowbit_converter import convert
    from lowbit_models import quicknet
    from lowbit_tf import lite

    model = quicknet(input_shape=QUICKNET_INPUT_SHAPE)
    randomise_batchnorm(model, np.random.default_rng(0))
    ours = lite.Interpreter(model_content=convert(model), num_threads=threads)
    ours.allocate_tensors()
    x = random_images(np.random.default_rng(7), 1, QUICKNET_INPUT_SHAPE)
    ours.set_tensor(ours.get_input_details()[0]["index"], x)
    ours.invoke()
    logits = ours.get_tensor(ours.get_output_details()[0]["index"])

    twin = lce_quicknet_twin(model)
    with tempfile.TemporaryDirectory(prefix="lowbit-lce-") as work_dir:
        flatbuffer = _lce_convert_frozen(lambda t: twin(t, training=False),
                                         (1, *QUICKNET_INPUT_SHAPE), work_dir)
    LiteInterpreter = _lce_interpreter_class()
    lce = {
        LCE_DEFAULT: LiteInterpreter(flatbuffer, threads, False, False, False),
        LCE_INDIRECT: LiteInterpreter(flatbuffer, threads, False, True, False),
        LCE_INDIRECT_XNNPACK: LiteInterpreter(flatbuffer, threads, False, True, True),
    }
    # Each model against the Keras model both were converted from.
    want = np.asarray(model(x, training=False)).reshape(logits.shape)
    scale = float(np.max(np.abs(want)))
    outputs = {LOWBIT_IO: logits}
    outputs.update({key: interpreter.predict([x])[0] for key, interpreter in lce.items()})
    checks = {}
    for key, y in outputs.items():
        y = y.reshape(want.shape)
        checks[f"{key}_vs_keras_relative"] = float(np.max(np.abs(y - want))) / scale
        checks[f"{key}_same_top1"] = bool(np.argmax(y) == np.argmax(want))
    runners = {key: _lce_runner(interpreter, x) for key, interpreter in lce.items()}
    runners[LOWBIT_IO] = _same_io_runner(ours, x)
    runners[LOWBIT_INVOKE] = time_interpreter(ours)
    iterations, samples = interleaved_samples(runners, rounds, sample_s)
    return {"threads": threads, "iterations": iterations, "samples_ms": samples,
            "checks": checks, "lce_bytes": len(flatbuffer)}


def print_quicknet(rows: list[dict], version: str) -> None:
    print()
    print(f"QuickNet 224x224x3, batch 1: Larq Compute Engine {version} vs lowbit TFLite, same")
    print("process, interleaved rounds (ms per call: median of rounds, best round; LCE and")
    print("'same I/O' include copying the input in and the logits out)")
    names = {LCE_DEFAULT: "LCE default", LCE_INDIRECT: "LCE indirect bgemm",
             LCE_INDIRECT_XNNPACK: "LCE indirect bgemm + XNNPACK",
             LOWBIT_IO: "lowbit, same I/O", LOWBIT_INVOKE: "lowbit, invoke only"}
    for r in rows:
        s = r["samples_ms"]
        print(f"  {r['threads']} thread(s):")
        for key, name in names.items():
            if key in s:
                print(f"    {name:<30} {_ms(s[key])}")
        best = min((k for k in s if k.startswith("lce")), key=lambda k: statistics.median(s[k]))
        print(f"    lowbit vs LCE best ({names[best]}): "
              f"{statistics.median(s[best]) / statistics.median(s[LOWBIT_IO]):.2f}x")
        c = r["checks"]
        print("    logits vs the Keras model both were converted from, max |diff| / max |logit|")
        print("    (same top-1):")
        for key in (LOWBIT_IO, *(k for k in names if k.startswith("lce"))):
            print(f"      {names[key].split(',')[0]:<30} {c[f'{key}_vs_keras_relative']:.2e} "
                  f"({'yes' if c[f'{key}_same_top1'] else 'no'})")
    print("LCE's converter rewrites the float ops around its kernels (and LCE rounds its output")
    print("transform differently), and binary layers amplify such differences through the sign")
    print("of the next layer's input; lowbit keeps Keras's arithmetic.")


def quicknet_target_line(rows: list[dict]) -> str | None:
    for r in rows:
        if r["threads"] == 1:
            s = r["samples_ms"]
            best = min((k for k in s if k.startswith("lce")), key=lambda k: statistics.median(s[k]))
            med = statistics.median(s[best]) / statistics.median(s[LOWBIT_IO])
            return (f"vs LCE 0.16 best (measured here, same process): {med:.2f}x "
                    f"(LCE {statistics.median(s[best]):.2f} ms, lowbit "
                    f"{statistics.median(s[LOWBIT_IO]):.2f} ms with the same I/O)  [target >= 5x]")
    return None


def lce_model(kernel, bias, input_shape: tuple[int, ...], work_dir: str) -> bytes:
    """An LCE flatbuffer of sign(x) (*) sign(kernel) + bias, SAME zero padding."""
    import numpy as np
    import tensorflow as tf

    signs = tf.constant(np.where(kernel >= 0, 1.0, -1.0).astype(np.float32))
    bias_t = tf.constant(bias)

    def binary_conv(x):
        return tf.nn.conv2d(_larq_sign(x), signs, strides=1, padding="SAME") + bias_t

    return _lce_convert_frozen(binary_conv, input_shape, work_dir)


def _lce_runner(interpreter, x):
    predict = interpreter.predict

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            predict([x])
        return time.perf_counter() - start

    return run


def _same_io_runner(interpreter, x):
    """set_tensor + invoke + get_tensor: what LCE's predict does per call."""
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]
    set_tensor, get_tensor = interpreter.set_tensor, interpreter.get_tensor
    invoke = interpreter.invoke

    def run(iterations: int) -> float:
        start = time.perf_counter()
        for _ in range(iterations):
            set_tensor(inp, x)
            invoke()
            get_tensor(out)
        return time.perf_counter() - start

    return run


def measure(layer, batch: int, threads: int, rounds: int, sample_s: float) -> dict:
    import numpy as np

    import lowbit_tf
    from lowbit_tf import lite

    seed = zlib.crc32(layer.key.encode())
    kernel, bias = layer_weights(layer, seed)
    s = layer.shape
    input_shape = (batch, s.height, s.width, s.channels_in)
    x = np.random.default_rng(seed + batch).standard_normal(input_shape, dtype=np.float32)

    binary, _ = layer_models(layer, kernel, bias)
    ours = lite.Interpreter(model_content=lowbit_tf.convert(binary, lowbit=True),
                            num_threads=threads)
    detail = ours.get_input_details()[0]
    ours.resize_tensor_input(detail["index"], list(input_shape))
    ours.allocate_tensors()
    ours.set_tensor(detail["index"], x)
    ours.invoke()
    y_ours = ours.get_tensor(ours.get_output_details()[0]["index"])

    LiteInterpreter = _lce_interpreter_class()
    with tempfile.TemporaryDirectory(prefix="lowbit-lce-") as work_dir:
        flatbuffer = lce_model(kernel, bias, input_shape, work_dir)
    lce = {
        # (flatbuffer, threads, use_reference_bconv, use_indirect_bgemm, use_xnnpack)
        LCE_DEFAULT: LiteInterpreter(flatbuffer, threads, False, False, False),
        LCE_INDIRECT: LiteInterpreter(flatbuffer, threads, False, True, False),
    }
    checks = {}
    scale = float(np.max(np.abs(y_ours)))
    for key, interpreter in lce.items():
        y = interpreter.predict([x])[0]
        diff = float(np.max(np.abs(y.reshape(y_ours.shape) - y_ours)))
        checks[f"{key}_vs_lowbit_relative"] = diff / max(scale, 1e-30)

    runners = {
        LCE_DEFAULT: _lce_runner(lce[LCE_DEFAULT], x),
        LCE_INDIRECT: _lce_runner(lce[LCE_INDIRECT], x),
        LOWBIT_IO: _same_io_runner(ours, x),
        LOWBIT_INVOKE: time_interpreter(ours),
    }
    iterations, samples = interleaved_samples(runners, rounds, sample_s)
    return {
        "layer": layer.key,
        "batch": batch,
        "threads": threads,
        "iterations": iterations,
        "samples_ms": samples,
        "checks": checks,
    }


def run_under(python: str, arguments: list[str]) -> dict:
    """This script with --json under another Python (the one with LCE): its result."""
    command = [python, os.path.abspath(__file__), "--json", *arguments]
    return run_marked_json(command, RESULT_MARKER, f"lce_compare.py under {python}")


def lce_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("larq-compute-engine")
    except PackageNotFoundError:
        return "?"


def best_lce(samples: dict[str, list[float]]) -> str:
    """The LCE configuration with the lower median."""
    return min((LCE_DEFAULT, LCE_INDIRECT), key=lambda k: statistics.median(samples[k]))


def _ms(samples: list[float]) -> str:
    return f"{statistics.median(samples):8.3f} ({min(samples):7.3f})"


def print_table(rows: list[dict], version: str) -> None:

    print()
    print(f"Larq Compute Engine {version} vs lowbit TFLite, same process, interleaved rounds")
    print("(ms per call: median of rounds, best round in parentheses; LCE and 'same I/O'")
    print("include copying the float input in and the output out, as LCE's predict does)")
    w = len(_ms([1.0]))
    head = (f"{'thr':>3} {'k':>3} {'N':>2}  {'shape':<16} {'MMACs':>7}  {'LCE default':>{w}}  "
            f"{'LCE indirect':>{w}}  {'lowbit same I/O':>{w}}  {'lowbit invoke':>{w}}  "
            f"{'vs LCE':>7} {'vs LCE':>7} {'agree':>5}")
    print(head)
    print(f"{'':>3} {'':>3} {'':>2}  {'':<16} {'':>7}  {'median (best)':>{w}}  "
          f"{'bgemm':>{w}}  {'':>{w}}  {'':>{w}}  {'best':>7} {'default':>7}")
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: (r["threads"], -Layer.from_key(r["layer"]).kernel_size,
                                         -Layer.from_key(r["layer"]).shape.height, r["batch"])):
        layer = Layer.from_key(r["layer"])
        s = r["samples_ms"]
        best = statistics.median(s[best_lce(s)])
        ours = statistics.median(s[LOWBIT_IO])
        agree = "yes" if all(v <= AGREE_RELATIVE for v in r["checks"].values()) else "NO"
        print(
            f"{r['threads']:>3} {layer.kernel_size}x{layer.kernel_size} {r['batch']:>2}  "
            f"{str(layer.shape):<16} {layer.macs(r['batch']) / 1e6:7.1f}  {_ms(s[LCE_DEFAULT])}  "
            f"{_ms(s[LCE_INDIRECT])}  {_ms(s[LOWBIT_IO])}  {_ms(s[LOWBIT_INVOKE])}  "
            f"{best / ours:6.2f}x {statistics.median(s[LCE_DEFAULT]) / ours:6.2f}x {agree:>5}"
        )
    print("vs LCE best / default = LCE median / lowbit same-I/O median; agree = both LCE")
    print(f"configurations within {AGREE_RELATIVE:g} x max |output| of lowbit's output (LCE rounds")
    print("its output transform differently: a few ulp).")


def target_line(rows: list[dict]) -> str | None:
    """The issue's LCE target on 3x3 14x14x256->256, 1 thread, N=1."""
    for r in rows:
        if r["layer"] == TARGET_LAYER and r["batch"] == 1 and r["threads"] == 1:
            s = r["samples_ms"]
            key = best_lce(s)
            med = statistics.median(s[key]) / statistics.median(s[LOWBIT_IO])
            best = min(s[key]) / min(s[LOWBIT_IO])
            name = "indirect bgemm" if key == LCE_INDIRECT else "default"
            return (f"3x3 14x14x256->256, 1 thr, N=1: TFLite lowbit vs Larq Compute Engine "
                    f"best ({name}) {med:.2f}x (best {best:.2f}x)  [target >= 12x]")
    return None


def main(argv: list[str] | None = None) -> int:

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=parse_shapes, default=parse_shapes(DEFAULT_SHAPES),
                        help=f"HxWxCIN-COUT list (default {DEFAULT_SHAPES})")
    parser.add_argument("--kernel-sizes", type=lambda t: parse_ints(t, "kernel size list"),
                        default=[3], help="square kernel sizes (default 3)")
    parser.add_argument("--batches", type=lambda t: parse_ints(t, "batch list"), default=[1],
                        help="batch sizes (default 1)")
    parser.add_argument("--threads", type=parse_threads, default=[1],
                        help="thread counts (default 1)")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds (default 7)")
    parser.add_argument("--sample-ms", type=float, default=40.0,
                        help="target duration of one timing sample in ms (default 40)")
    parser.add_argument("--quicknet", action="store_true",
                        help="the whole QuickNet instead of single convolutions")
    parser.add_argument("--json", action="store_true",
                        help="print the results as one JSON line (for bconv2d_benchmark.py)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.sample_ms <= 0:
        parser.error("--rounds must be >= 1 and --sample-ms > 0")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    version = lce_version()
    if args.quicknet:
        key, printer, target = "quicknet", print_quicknet, quicknet_target_line
        rows = [measure_quicknet(t, args.rounds, args.sample_ms / 1e3) for t in args.threads]
    else:
        key, printer, target = "rows", print_table, target_line
        rows = [
            measure(Layer("conv", k, shape), batch, threads, args.rounds, args.sample_ms / 1e3)
            for threads in args.threads
            for k in args.kernel_sizes
            for shape in args.shapes
            for batch in args.batches
        ]
    if args.json:
        print(RESULT_MARKER + json.dumps({"version": version, key: rows}))
        return 0
    printer(rows, version)
    line = target(rows)
    if line:
        print("\n  " + line)
    return 0

if __name__ == "__main__":
    sys.exit(main())
