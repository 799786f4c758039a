"""int8 of a binary CNN's float parts (post-training and quantization-aware), on
the demo's digits protocol.

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
                binary convs reading and writing int8 (PTQ).

and the PTQ model with its stem conv kept float32 (``int8_float_layers=["stem_conv"]``:
the first layer is the one int8 hurts most here), and, quantization-aware
(QAT), the same network with a
``lowbit_tf.layers.FakeQuantInt8`` after the input and after each float part
(stem, each binary block's BatchNorm, the logits), started from the trained
network's weights and fine-tuned for --qat-epochs (default 5) at a tenth of
the learning rate (the usual QAT recipe: fake quantization from the start
makes the short training unstable), then converted with ``int8=True`` and no
data (the fake-quant ranges).

The target (issue 18): int8+binary within 0.5 points of float+binary, PTQ and
QAT, read as "loses at most 0.5 points" (mean over seeds): QAT's fine-tuning
trains 5 epochs more than the float network, which can gain accuracy too.
With 450 test images one image is 0.22 points, and one seed's int8 model can
land a point above or below its float one (a binary network reads signs:
rounding a value near zero flips bits downstream, docs/int8.md), hence ten
seeds by default (a standard error of about 0.15 points); the notes also give the
standard error of the mean difference over seeds and how often each int8
model picks the same class as float+binary over all 1,797 digits (its
fidelity, which does not depend on which images are the test ones).
Prints the table; writes ``int8_digits.png``.

    python experiments/int8_digits.py [--quick] [--seeds N] [--model demo|quicknet]
        [--output-dir DIR]

``--model quicknet``: a small QuickNet (``lowbit_models.quicknet``, sections
of 32 and 64 filters with 2 binary blocks each) on the digits upscaled 4x to
32x32 (each pixel a 4x4 block), its QAT twin cloned with a FakeQuantInt8
after each layer whose output is int8 in the converted model; writes
``int8_digits_quicknet.txt`` / ``.png``.
"""

from __future__ import annotations

import argparse
import re

import common
import numpy as np

TARGET_POINTS = 0.5
CALIBRATION_IMAGES = 256


# What each network's QAT twin fake-quantizes: the outputs of these layers
# (after the model input, which always is), wherever the converted model has
# an int8 tensor (not a binary block's output inside a section: those stay
# float between our ops, docs/int8.md).
QUICKNET_INT8_OUTPUTS = re.compile(
    r"stem_relu|stem_dw_bn|stem_pw_bn|transition\d+_(relu|dw_bn|pw_bn)|head_relu|head_pool|logits")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=("demo", "quicknet"), default="demo",
                        help="demo: the demo's network on the 8x8 digits (default); quicknet: "
                             "a small QuickNet (2 sections of 2 binary blocks, 32 and 64 "
                             "filters) on the digits upscaled 4x to 32x32")
    parser.add_argument("--qat-epochs", type=int, default=5,
                        help="quantization-aware fine-tuning epochs (default 5; 1 with --quick)")
    parser.add_argument("--seeds", type=int, default=10,
                        help="trained networks (seeds 0..N-1 after --seed; default 10, "
                             "1 with --quick)")


def fake_quant_digits_cnn():
    """``binary_digits_cnn`` with a FakeQuantInt8 wherever a float tensor is
    int8 in the converted model (not on a binary conv's input: it reads
    signs, and the conv's fused BatchNorm output is what gets the range)."""
    from lowbit_models.digits import binary_digits_cnn
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    plain = binary_digits_cnn()
    model = keras.Sequential([keras.Input(plain.input_shape[1:]),
                              layers.FakeQuantInt8(name="image_fq")], name="qat_digits_cnn")
    for layer in plain.layers:
        model.add(layer.__class__.from_config(layer.get_config()))
        if isinstance(layer, keras.layers.BatchNormalization) or layer.name == "logits":
            model.add(layers.FakeQuantInt8(name=f"{layer.name}_fq"))
    return model


def small_quicknet():
    from lowbit_models.quicknet import quicknet

    return quicknet(section_filters=(32, 64), section_blocks=(2, 2), input_shape=(32, 32, 1),
                    num_classes=10)


def fake_quant_quicknet(plain):
    """``plain`` (a functional QuickNet) cloned with a FakeQuantInt8 after its
    input and after the layers of QUICKNET_INT8_OUTPUTS (Keras's clone_model
    call_function inserts them)."""
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    image = keras.Input(plain.input_shape[1:], name="image")
    image_fq = layers.FakeQuantInt8(name="image_fq")(image)

    def call(layer, *args, **kwargs):
        args = tuple(image_fq if a is image else a for a in args)
        out = layer(*args, **kwargs)
        if QUICKNET_INT8_OUTPUTS.fullmatch(layer.name):
            out = layers.FakeQuantInt8(name=f"{layer.name}_fq")(out)
        return out

    return keras.models.clone_model(plain, input_tensors=image, call_function=call)


def fine_tune_aware(trained, data: common.Data, config: common.Config, epochs: int):
    """The QAT twin of ``trained`` with its weights, fine-tuned."""
    from lowbit_models.digits import training_batches
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(config.seed)
    model = (fake_quant_digits_cnn() if trained.name == "binary_digits_cnn"
             else fake_quant_quicknet(trained))
    for layer in trained.layers:
        model.get_layer(layer.name).set_weights(layer.get_weights())
    model.compile(optimizer=keras.optimizers.Adam(config.learning_rate / 10),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    batches = training_batches(data.x_train, data.y_train, config.batch_size, config.seed + 1)
    model.fit(batches, epochs=epochs, shuffle=False, verbose=0)
    print(f"  {f'seed {config.seed}, QAT fine-tuned':<34} test accuracy "
          f"{common.accuracy(model, data):.4f}", flush=True)
    return model


def tflite_predictions(tflite: bytes, data: common.Data) -> np.ndarray:
    """The model's classes for every digit, the training images then the test
    images (the accuracy is the test part's; the agreement between two
    models, the fidelity of int8, is over all of them: 4x the images)."""
    from lowbit_tf.lite import Interpreter

    logits = Interpreter(model_content=tflite, num_threads=1).predict(
        np.concatenate([data.x_train, data.x_test]))
    return np.argmax(logits, axis=-1)


def test_accuracy(predictions: np.ndarray, data: common.Data) -> float:
    return float(np.mean(predictions[-len(data.y_test):] == data.y_test))


def tflite_accuracy(tflite: bytes, data: common.Data) -> float:
    return test_accuracy(tflite_predictions(tflite, data), data)


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args(
        "int8_digits", "PTQ int8 of the float parts of the demo's binary CNN on digits.",
        argv, epochs=20, quick_epochs=2, add_arguments=add_arguments)
    seeds = 1 if config.quick and config.extra.seeds == 10 else config.extra.seeds
    qat_epochs = 1 if config.quick and config.extra.qat_epochs == 5 else config.extra.qat_epochs
    common.header(config, f"float+binary vs int8+binary .tflite, {seeds} seed(s)")

    import lowbit_tf
    from lowbit_models.digits import binary_digits_cnn

    data = common.load_data(config.seed)
    build = binary_digits_cnn
    if config.extra.model == "quicknet":
        build = small_quicknet
        config.name = "int8_digits_quicknet"  # its own .txt and .png
        data = common.upscaled(data)
    rng = np.random.default_rng(config.seed)
    calibration = data.x_train[rng.permutation(len(data.x_train))[:CALIBRATION_IMAGES]]
    rows, results, agreements = [], [], []
    for offset in range(seeds):
        seed_config = common.Config(**{**vars(config), "seed": config.seed + offset})
        result = common.train(f"seed {seed_config.seed}", build, data, seed_config)
        float_tflite = lowbit_tf.convert(result.model)
        int8_tflite = lowbit_tf.convert(
            result.model, int8=True,
            representative_dataset=lambda: ([x[None]] for x in calibration))
        stem_tflite = lowbit_tf.convert(
            result.model, int8=True, int8_float_layers=["stem_conv"],
            representative_dataset=lambda: ([x[None]] for x in calibration))
        aware = fine_tune_aware(result.model, data, seed_config, qat_epochs)
        qat_tflite = lowbit_tf.convert(aware, int8=True)
        predictions = [tflite_predictions(t, data)
                       for t in (float_tflite, int8_tflite, qat_tflite, stem_tflite)]
        float_acc, int8_acc, qat_acc, stem_acc = (test_accuracy(p, data) for p in predictions)
        results.append((result, float_acc, int8_acc, qat_acc, stem_acc))
        agreements.append([float(np.mean(p == predictions[0])) for p in predictions[1:]])
        rows.append([seed_config.seed, result.final, float_acc, int8_acc,
                     f"{100 * (int8_acc - float_acc):+.2f}", qat_acc,
                     f"{100 * (qat_acc - float_acc):+.2f}", len(float_tflite), len(int8_tflite),
                     stem_acc, f"{100 * (stem_acc - float_acc):+.2f}"])
    table = common.format_table(
        ["seed", "Keras", "float+binary", "int8+binary PTQ", "PTQ - float (points)",
         "int8+binary QAT", "QAT - float (points)", "float+binary B", "int8+binary B",
         "PTQ, f32 stem", "f32 stem - float (points)"], rows)
    mean_float = float(np.mean([r[1] for r in results]))
    notes = []
    for label, column in (("PTQ", 2), ("QAT", 3), ("PTQ with the stem conv f32", 4)):
        mean = float(np.mean([r[column] for r in results]))
        worst = min(100 * (r[column] - r[1]) for r in results)
        passed = 100 * (mean - mean_float) >= -TARGET_POINTS
        differences = [100 * (r[column] - r[1]) for r in results]
        spread = (f"{np.std(differences, ddof=1) / np.sqrt(len(differences)):.2f} points"
                  if len(differences) > 1 else "n/a (one seed)")
        agreement = float(np.mean([a[column - 2] for a in agreements]))
        notes += [
            f"{label}: mean over seeds float+binary {mean_float:.4f}, int8+binary {mean:.4f} "
            f"({100 * (mean - mean_float):+.2f} points; worst seed {worst:+.2f} points); "
            f"target within {TARGET_POINTS} points (loses at most): "
            f"{'PASS' if passed else 'FAIL'}",
            f"    standard error of that mean difference over seeds: {spread}; the same "
            f"class as float+binary on {100 * agreement:.2f}% of all "
            f"{len(data.x_train) + len(data.x_test)} digits (mean over seeds)",
        ]
    network = ("small QuickNet, digits upscaled to 32x32" if config.extra.model == "quicknet"
               else "demo network")
    common.report(config, f"int8 of the float parts (digits, {network})", table, notes)

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(results))
    ax.bar(x - 0.27, [r[1] for r in results], 0.27, label="float+binary")
    ax.bar(x, [r[2] for r in results], 0.27, label="int8+binary PTQ")
    ax.bar(x + 0.27, [r[3] for r in results], 0.27, label="int8+binary QAT")
    ax.set_xticks(x, [r[0].label for r in results])
    ax.set_ylim(min(0.8, min(min(r[1:]) for r in results) - 0.02), 1.0)
    ax.set_ylabel("test accuracy (.tflite)")
    ax.set_title("int8 of the float parts")
    ax.legend(fontsize="small")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
