"""Post-training int8 of a binary CNN's float parts, on the demo's digits protocol.

The demo's network (``lowbit_models.binary_digits_cnn``: float stem conv,
two binary 3x3 conv blocks, float classifier) trained as ``python -m
lowbit_tf.demo`` trains it (Adam 1e-2, batch 64, the demo's split), for
several seeds. Each trained model is converted twice and both files run in
``lowbit_tf.lite.Interpreter`` on the 450 test images:

  float+binary  ``lowbit_tf.convert(model)``: the binary convs as LowbitBconv2d,
                the float layers in float32;
  int8+binary   ``lowbit_tf.convert(model, int8=True, representative_dataset=...)``
                (docs/int8.md), calibrated on 256 training images: the float
                layers as TFLite int8 builtins (per-channel weights), the
                binary convs reading and writing int8.

The target (issue 18): int8+binary within 0.5 points of float+binary (PTQ).
Prints the table; writes ``int8_digits.png``.

    python experiments/int8_digits.py [--quick] [--seeds N] [--output-dir DIR]
"""

from __future__ import annotations

import argparse

import common
import numpy as np

TARGET_POINTS = 0.5
CALIBRATION_IMAGES = 256


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=int, default=5,
                        help="trained networks (seeds 0..N-1 after --seed; default 5, "
                             "1 with --quick)")


def tflite_accuracy(tflite: bytes, data: common.Data) -> float:
    from lowbit_tf.lite import Interpreter

    logits = Interpreter(model_content=tflite, num_threads=1).predict(data.x_test)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y_test))


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args(
        "int8_digits", "PTQ int8 of the float parts of the demo's binary CNN on digits.",
        argv, epochs=20, quick_epochs=2, add_arguments=add_arguments)
    seeds = 1 if config.quick and config.extra.seeds == 5 else config.extra.seeds
    common.header(config, f"float+binary vs int8+binary .tflite, {seeds} seed(s)")

    import lowbit_tf
    from lowbit_models.digits import binary_digits_cnn

    data = common.load_data(config.seed)
    rng = np.random.default_rng(config.seed)
    calibration = data.x_train[rng.permutation(len(data.x_train))[:CALIBRATION_IMAGES]]
    rows, results = [], []
    for offset in range(seeds):
        seed_config = common.Config(**{**vars(config), "seed": config.seed + offset})
        result = common.train(f"seed {seed_config.seed}", binary_digits_cnn, data, seed_config)
        float_tflite = lowbit_tf.convert(result.model)
        int8_tflite = lowbit_tf.convert(
            result.model, int8=True,
            representative_dataset=lambda: ([x[None]] for x in calibration))
        float_acc = tflite_accuracy(float_tflite, data)
        int8_acc = tflite_accuracy(int8_tflite, data)
        results.append((result, float_acc, int8_acc))
        rows.append([seed_config.seed, result.final, float_acc, int8_acc,
                     f"{100 * (int8_acc - float_acc):+.2f}", len(float_tflite), len(int8_tflite)])
    table = common.format_table(
        ["seed", "Keras", "float+binary", "int8+binary", "int8 - float (points)",
         "float+binary B", "int8+binary B"], rows)
    mean_float = float(np.mean([r[1] for r in results]))
    mean_int8 = float(np.mean([r[2] for r in results]))
    worst = max(100 * abs(r[2] - r[1]) for r in results)
    passed = 100 * abs(mean_int8 - mean_float) <= TARGET_POINTS
    common.report(config, "Post-training int8 of the float parts (digits, demo network)", table, [
        f"mean over seeds: float+binary {mean_float:.4f}, int8+binary {mean_int8:.4f} "
        f"({100 * (mean_int8 - mean_float):+.2f} points; worst seed {worst:.2f} points)",
        f"target: int8+binary within {TARGET_POINTS} points of float+binary (mean): "
        f"{'PASS' if passed else 'FAIL'}",
    ])

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r[1] for r in results], 0.4, label="float+binary")
    ax.bar(x + 0.2, [r[2] for r in results], 0.4, label="int8+binary")
    ax.set_xticks(x, [r[0].label for r in results])
    ax.set_ylim(min(0.8, min(min(r[1], r[2]) for r in results) - 0.02), 1.0)
    ax.set_ylabel("test accuracy (.tflite)")
    ax.set_title("PTQ int8 of the float parts")
    ax.legend(fontsize="small")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
