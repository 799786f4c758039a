"""TensorFlow Model Optimization's quantization-aware training of the demo's
binary CNN on digits, converted to int8 + binary (docs/int8.md, "TFMOT").

TFMOT 0.8 needs tf-keras: this script sets ``TF_USE_LEGACY_KERAS=1`` before
TensorFlow loads. For each seed, the demo's network
(``lowbit_models.binary_digits_cnn``) is trained as ``int8_digits.py`` trains
it, converted to float+binary (``lowbit_tf.convert(model)``), then
``lowbit_tf.tfmot.quantize_model`` (TFMOT's default 8-bit QAT on the float
layers, ``LowbitQuantizeConfig`` on the binary ones) is fine-tuned for
--qat-epochs (default 5) at a tenth of the learning rate and converted with
``lowbit_tf.convert(qat, int8=True)`` (TFMOT's ranges, no data). Both files run
in ``lowbit_tf.lite.Interpreter`` on the 450 test images.

Target (issue 18): TFMOT-QAT int8+binary within 0.5 points of float+binary
(mean over seeds; loses at most). Prints the table; writes ``tfmot_digits.png``.

    python experiments/tfmot_digits.py [--quick] [--seeds N] [--output-dir DIR]
"""

from __future__ import annotations

import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"  # before TensorFlow: TFMOT needs tf-keras

import common  # noqa: E402
import numpy as np  # noqa: E402
from int8_digits import TARGET_POINTS, add_arguments, tflite_accuracy  # noqa: E402


def fine_tune_tfmot(trained, data: common.Data, config: common.Config, epochs: int):
    """TFMOT's QAT of ``trained`` (lowbit_tf.tfmot.quantize_model), fine-tuned."""
    import lowbit_tf.tfmot
    from lowbit_models.digits import training_batches
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(config.seed)
    model = lowbit_tf.tfmot.quantize_model(trained)
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate / 10),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = training_batches(data.x_train, data.y_train, config.batch_size, config.seed + 1)
    model.fit(batches, epochs=epochs, shuffle=False, verbose=0)
    return model


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args(
        "tfmot_digits", "TFMOT QAT of the demo's binary CNN on digits, int8 + binary.",
        argv, epochs=20, quick_epochs=2, add_arguments=add_arguments)
    seeds = 1 if config.quick and config.extra.seeds == 5 else config.extra.seeds
    qat_epochs = 1 if config.quick and config.extra.qat_epochs == 5 else config.extra.qat_epochs
    common.header(config, f"float+binary vs TFMOT-QAT int8+binary .tflite, {seeds} seed(s)")

    import lowbit_tf
    from lowbit_models.digits import binary_digits_cnn

    data = common.load_data(config.seed)
    rows, results = [], []
    for offset in range(seeds):
        seed_config = common.Config(**{**vars(config), "seed": config.seed + offset})
        result = common.train(f"seed {seed_config.seed}", binary_digits_cnn, data, seed_config)
        float_tflite = lowbit_tf.convert(result.model)
        float_acc = tflite_accuracy(float_tflite, data)
        qat = fine_tune_tfmot(result.model, data, seed_config, qat_epochs)
        qat_keras = common.accuracy(qat, data)
        qat_tflite = lowbit_tf.convert(qat, int8=True)
        qat_acc = tflite_accuracy(qat_tflite, data)
        results.append((result, float_acc, qat_acc))
        rows.append([seed_config.seed, float_acc, qat_keras, qat_acc,
                     f"{100 * (qat_acc - float_acc):+.2f}", len(float_tflite), len(qat_tflite)])
    table = common.format_table(
        ["seed", "float+binary", "TFMOT QAT (Keras)", "TFMOT QAT int8+binary",
         "int8 - float (points)", "float+binary B", "int8+binary B"], rows)
    mean_float = float(np.mean([r[1] for r in results]))
    mean_qat = float(np.mean([r[2] for r in results]))
    worst = min(100 * (r[2] - r[1]) for r in results)
    passed = 100 * (mean_qat - mean_float) >= -TARGET_POINTS
    notes = [f"TFMOT QAT: mean over seeds float+binary {mean_float:.4f}, int8+binary "
             f"{mean_qat:.4f} ({100 * (mean_qat - mean_float):+.2f} points; worst seed "
             f"{worst:+.2f} points); target within {TARGET_POINTS} points (loses at most): "
             f"{'PASS' if passed else 'FAIL'}"]
    common.report(config, "TFMOT QAT of the float parts (digits, demo network)", table, notes)

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(results))
    ax.bar(x - 0.2, [r[1] for r in results], 0.4, label="float+binary")
    ax.bar(x + 0.2, [r[2] for r in results], 0.4, label="TFMOT QAT int8+binary")
    ax.set_xticks(x, [r[0].label for r in results])
    ax.set_ylim(min(0.8, min(min(r[1:]) for r in results) - 0.02), 1.0)
    ax.set_ylabel("test accuracy (.tflite)")
    ax.set_title("TFMOT QAT of the float parts")
    ax.legend(fontsize="small")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
