#!/usr/bin/env python3
"""QuickNet 224x224x3, batch 1, our runtime: int8 + binary against today's
float + binary and against XNNPACK full int8 of the float twin.

    python benchmarks/int8_benchmark.py [--threads 1] [--rounds 15] [--sample-s 0.3]

Models (random weights, BatchNorm statistics randomised: speed does not
depend on them):

  float+binary   `lowbit_models.quicknet()` converted by `lowbit_converter.convert`
                 (binary convs as LowbitBconv2d, float parts on XNNPACK f32);
  int8+binary    the same model with `int8=True` (docs/int8.md): the float parts
                 as int8 builtins with per-channel weights, calibrated on 8
                 random images run through our runtime; the binary convs read
                 and write the int8 tensors at each section's ends; on x86 with
                 AVX-512 VNNI (and Arm with NEON) the lowbit delegate runs
                 the int8 stem conv (3 input channels) with its own kernel
                 (docs/int8.md);
  int8, XNN stem the same int8+binary model and runtime with that claim
                 turned off (`Interpreter(..., int8_builtin_convs=False)`):
                 XNNPACK's int8 stem conv, what int8+binary was before;
  int8, f32 stem int8+binary with the stem conv kept float32
                 (`int8_float_layers=["stem_conv"]`): XNNPACK's int8 conv on
                 3 input channels is slower than its f32 one on CPUs where it
                 picks its AMX kernels (docs/int8.md);
  XNNPACK int8   the float twin (a float Conv2D in place of every QuantConv2D),
                 full-integer post-training quantised by TFLiteConverter, every
                 op on XNNPACK (`int8_builtin_convs=False`).

All run in `lowbit_tf.lite.Interpreter` with the same thread count, timed in
interleaved rounds (the order rotating every round, so that a slow spell of a
shared machine hits all alike); the table gives the median and best round
(ms per inference) and the time ratios of those medians, side by side. Also
the file sizes, and how far the int8 + binary model's logits are from the
float + binary model's (relative to their range: random weights make this a
sanity check, not an accuracy; experiments/int8_digits.py measures accuracy).

Breakdown (default on; --no-breakdown: off): the float parts alone (QuickNet
with no binary blocks: stem, transitions, head) as float (XNNPACK f32) and as
int8 (int8=True), timed in the same rounds: what int8 can save at most.

The target lines (issue 18, x86): int8 + binary at least 1.15x faster than
float + binary, with a smaller file; the same for the f32-stem variant.
"""

from __future__ import annotations

import argparse
import statistics
import sys

from bench_common import (
    QUICKNET_INPUT_SHAPE,
    active_kernel,
    add_quiet_argument,
    cpu_model,
    int8_tflite,
    interleaved_samples,
    progress,
    random_images,
    randomise_batchnorm,
    set_quiet,
    time_interpreter,
)
from quicknet_benchmark import float_twin

FLOAT_BINARY = "float+binary"
INT8_BINARY = "int8+binary"
INT8_FLOAT_STEM = "int8, f32 stem"
INT8_XNNPACK_STEM = "int8, XNN stem"
XNNPACK_INT8 = "XNNPACK int8"
FLOAT_PARTS = "float parts f32"
FLOAT_PARTS_INT8 = "float parts int8"
TARGET_SPEEDUP = 1.15


def build_models(calibration_images: int, breakdown: bool) -> dict[str, bytes]:
    import numpy as np

    import lowbit_converter
    from lowbit_models import quicknet

    rng = np.random.default_rng(0)
    model = quicknet(input_shape=QUICKNET_INPUT_SHAPE)
    randomise_batchnorm(model, rng)
    images = random_images(rng, calibration_images, QUICKNET_INPUT_SHAPE)
    progress("converting float+binary")
    models = {FLOAT_BINARY: lowbit_converter.convert(model)}
    progress(f"converting int8+binary (calibration on {calibration_images} images)")
    models[INT8_BINARY] = lowbit_converter.convert(
        model, int8=True, representative_dataset=lambda: ([x[None]] for x in images))
    models[INT8_XNNPACK_STEM] = models[INT8_BINARY]  # run with int8_builtin_convs=False
    models[INT8_FLOAT_STEM] = lowbit_converter.convert(
        model, int8=True, int8_float_layers=["stem_conv"],
        representative_dataset=lambda: ([x[None]] for x in images))
    progress("converting the float twin to XNNPACK full int8")
    models[XNNPACK_INT8] = int8_tflite(float_twin(model), lambda: (x[None] for x in images))
    if breakdown:
        progress("converting the float parts (no binary blocks), float and int8")
        floats = quicknet(input_shape=QUICKNET_INPUT_SHAPE, section_blocks=(0, 0, 0, 0))
        randomise_batchnorm(floats, rng)
        models[FLOAT_PARTS] = lowbit_converter.convert(floats)
        models[FLOAT_PARTS_INT8] = lowbit_converter.convert(
            floats, int8=True, representative_dataset=lambda: ([x[None]] for x in images))
    return models


def interpreters(models: dict[str, bytes], threads: int) -> dict:
    """One interpreter per model, its inputs set to a random image (int8
    inputs: random codes)."""
    import numpy as np

    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(1)
    image = random_images(rng, 1, QUICKNET_INPUT_SHAPE)
    result = {}
    for key, content in models.items():
        # The XNNPACK lines run every builtin op on XNNPACK: without this the
        # lowbit delegate would claim the float twin's int8 stem conv too.
        interpreter = Interpreter(model_content=content, num_threads=threads,
                                  int8_builtin_convs=key not in (INT8_XNNPACK_STEM, XNNPACK_INT8))
        detail = interpreter.get_input_details()[0]
        value = image
        if detail["dtype"] == np.int8:
            scale, zero_point = detail["quantization"]
            value = np.clip(np.round(image / scale) + zero_point, -128, 127).astype(np.int8)
        interpreter.predict(value)
        result[key] = interpreter
    return result


def logit_difference(interpreters: dict) -> float:
    """max |int8+binary - float+binary| over the logits' range, same image."""
    import numpy as np

    a = interpreters[FLOAT_BINARY].get_tensor(
        interpreters[FLOAT_BINARY].get_output_details()[0]["index"])
    b = interpreters[INT8_BINARY].get_tensor(
        interpreters[INT8_BINARY].get_output_details()[0]["index"])
    return float(np.abs(a - b).max() / max(float(np.ptp(a)), 1e-12))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="interpreter threads (default 1)")
    parser.add_argument("--rounds", type=int, default=15, help="interleaved rounds (default 15)")
    parser.add_argument("--sample-s", type=float, default=0.3,
                        help="seconds per timed sample (default 0.3)")
    parser.add_argument("--calibration-images", type=int, default=8,
                        help="representative images for int8=True (default 8)")
    parser.add_argument("--no-breakdown", action="store_true",
                        help="do not time the float parts alone")
    add_quiet_argument(parser)
    args = parser.parse_args(argv)
    set_quiet(args.quiet)
    if args.threads < 1 or args.rounds < 1 or args.sample_s <= 0 or args.calibration_images < 1:
        parser.error("--threads, --rounds, --calibration-images must be >= 1, --sample-s > 0")

    models = build_models(args.calibration_images, not args.no_breakdown)
    runners = interpreters(models, args.threads)
    progress(f"timing {len(models)} models, {args.rounds} interleaved rounds")
    _, samples = interleaved_samples(
        {key: time_interpreter(it) for key, it in runners.items()}, args.rounds, args.sample_s,
        on_round=lambda r: progress(f"round {r}/{args.rounds}"))

    print(f"QuickNet 224x224x3, batch 1, {args.threads} thread(s), our runtime "
          f"(lowbit_tf.lite.Interpreter); CPU: {cpu_model()}; lowbit kernel: {active_kernel()}")
    print(f"{'model':<16} {'median ms':>10} {'best ms':>9} {'file bytes':>12}")
    medians = {}
    for key in models:
        medians[key] = statistics.median(samples[key])
        print(f"{key:<16} {medians[key]:>10.2f} {min(samples[key]):>9.2f} "
              f"{len(models[key]):>12,}")
    speedup = medians[FLOAT_BINARY] / medians[INT8_BINARY]
    print(f"int8+binary vs float+binary: {speedup:.2f}x time, "
          f"{len(models[FLOAT_BINARY]) / len(models[INT8_BINARY]):.2f}x smaller file")
    print(f"int8+binary vs XNNPACK int8: "
          f"{medians[XNNPACK_INT8] / medians[INT8_BINARY]:.2f}x time, "
          f"{len(models[XNNPACK_INT8]) / len(models[INT8_BINARY]):.2f}x smaller file")
    if FLOAT_PARTS in models:
        parts, parts_int8, whole = (medians[FLOAT_PARTS], medians[FLOAT_PARTS_INT8],
                                    medians[FLOAT_BINARY])
        print(f"float parts: {parts:.2f} ms f32, {parts_int8:.2f} ms int8 "
              f"({parts / parts_int8:.2f}x), {100 * parts / whole:.0f}% of float+binary; "
              f"if int8 took none of their time: {whole / (whole - parts):.2f}x, "
              f"saving what it saves here: {whole / (whole - parts + parts_int8):.2f}x")
    print(f"int8+binary logits vs float+binary (random weights, one image): max difference "
          f"{logit_difference(runners):.3f} of their range")
    print(f"int8+binary, stem conv by the lowbit delegate vs by XNNPACK: "
          f"{medians[INT8_XNNPACK_STEM] / medians[INT8_BINARY]:.2f}x time")
    # The same two target lines for each int8 variant.
    for key, label in ((INT8_BINARY, "int8+binary"),
                       (INT8_FLOAT_STEM, "int8+binary with the stem conv f32"),
                       (INT8_XNNPACK_STEM, "int8+binary with XNNPACK's int8 stem conv")):
        ratio = medians[FLOAT_BINARY] / medians[key]
        small = len(models[key]) < len(models[FLOAT_BINARY])
        print(f"target (x86): {label} >= {TARGET_SPEEDUP}x faster than float+binary: "
              f"{ratio:.2f}x  {'PASS' if ratio >= TARGET_SPEEDUP else 'FAIL'}")
        print(f"target: {label} file smaller than float+binary: {len(models[key]):,} vs "
              f"{len(models[FLOAT_BINARY]):,} bytes  {'PASS' if small else 'FAIL'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
