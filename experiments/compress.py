"""Constraint-driven compression (lowbit_tf.compress) on digits: three constraints on two models.

Two float networks are trained on scikit-learn's digits, then compressed by
`lowbit_tf.compress` under three constraints each, for a Raspberry Pi 4
(``target="aarch64"``: latencies are estimates from our instruction counts):

- ``digits_cnn`` (8x8 input): a 16-filter stem, two 64-filter 3x3 convs (each
  conv -> ReLU -> BatchNorm, so the next conv reads signed values), pooling, a
  dense classifier;
- ``quicknet_style`` (the digits upscaled 4x to 32x32): a strided stem, two
  stages of two residual 3x3 blocks (x + BN(ReLU(conv(x)))) with a 1x1
  transition, global pooling, a dense classifier, the shape of QuickNet.

Constraints: at most 1 point of accuracy lost; the .tflite at most a quarter of
the float one's size; the estimated Pi 4 latency at most half the float one's.
Precisions: ABC 2x2 or binary per layer, and int8 for the float parts.
For each run: whether it was met, the converted model's accuracy (our runtime,
the test images), its size, its latency estimate and the precisions chosen per
layer. Writes ``compress.txt`` (the table and every search report) and
``compress.png`` (accuracy against size of every candidate, per model).

    python experiments/compress.py [--quick] [--epochs N] [--output-dir DIR]
"""

from __future__ import annotations

import common


def digits_cnn():
    from lowbit_tf._keras import keras

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    x = common.batch_norm()(keras.layers.ReLU()(x))
    for index in (1, 2):
        x = keras.layers.Conv2D(64, 3, padding="same", name=f"conv{index}")(x)
        x = common.batch_norm()(keras.layers.ReLU()(x))
        x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="classifier")(x), name="digits_cnn")


def quicknet_style():
    from lowbit_tf._keras import keras

    inputs = keras.Input((32, 32, 1))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", name="stem")(inputs)
    x = common.batch_norm()(keras.layers.ReLU()(x))
    for stage, filters in enumerate((32, 64)):
        if stage:
            x = keras.layers.MaxPooling2D(2)(x)
            x = keras.layers.Conv2D(filters, 1, name=f"transition{stage}")(x)
            x = common.batch_norm()(x)
        for block in range(2):
            y = keras.layers.Conv2D(filters, 3, padding="same", name=f"s{stage}b{block}")(x)
            y = common.batch_norm()(keras.layers.ReLU()(y))
            x = keras.layers.Add()([x, y])
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="classifier")(x),
                       name="quicknet_style")


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args("compress", __doc__.splitlines()[0], argv, epochs=20,
                               quick_epochs=3, learning_rate=1e-3)
    common.require_matplotlib("compress")
    common.header(config, "lowbit_tf.compress under three constraints, two models")
    import lowbit_tf
    from lowbit_tf import cost_model

    digits = common.load_data(config.seed)
    models = [("digits_cnn", digits_cnn, digits), ("quicknet_style", quicknet_style,
                                                   common.upscaled(digits))]
    budget, finetune_epochs = (1, 1) if config.quick else (8, 4)
    rows, reports, runs = [], [], {}
    rates = cost_model.rates_for("aarch64")
    for name, build, data in models:
        result = common.train(f"float {name}", build, data, config)
        float_model = result.model
        float_bytes = len(lowbit_tf.convert(float_model))
        float_ms = cost_model.estimate_latency_ms(
            lowbit_tf.summary(float_model, print_fn=None), rates)
        constraints = [("accuracy drop <= 0.01", dict(max_accuracy_drop=0.01)),
                       ("size <= 1/4 float", dict(target_size_bytes=float_bytes // 4)),
                       ("Pi 4 latency <= 1/2 float", dict(target_latency_ms=float_ms / 2))]
        if config.quick:
            constraints = constraints[1:2] if name == "quicknet_style" else constraints[:2]
        for label, constraint in constraints:
            print(f"  {name}: {label}", flush=True)
            outcome = lowbit_tf.compress(
                float_model, (data.x_train, data.y_train), (data.x_test, data.y_test),
                target="aarch64", rates=rates, budget=budget, finetune_epochs=finetune_epochs,
                learning_rate=1e-3, seed=config.seed, int8=True, progress=False, **constraint)
            report = outcome.report
            runs.setdefault(name, []).append((label, report))
            reports.append(f"### {name}, {label}\n\n{report}\n")
            chosen = report.chosen
            rows.append([
                name, label, "yes" if report.met else "no", report.baseline_accuracy,
                chosen.accuracy if chosen else "-",
                f"{report.baseline_accuracy - chosen.accuracy:+.4f}" if chosen else "-",
                f"{chosen.tflite_bytes / 1024:.1f}" if chosen else "-",
                f"{float_bytes / 1024:.1f}",
                f"{chosen.latency_ms:.3f}" if chosen else "-", f"{float_ms:.3f}",
                report.finetunes, chosen.describe() if chosen else report.message[:60],
            ])

    table = common.format_table(
        ["model", "constraint", "met", "float acc", "accuracy", "drop", ".tflite KB",
         "float KB", "Pi 4 ms (est.)", "float ms (est.)", "fine-tunes", "precisions"], rows)
    common.report(
        config, "Constraint-driven compression on digits", table,
        ["accuracy: the converted model's (lowbit_tf.convert, our TFLite runtime) on the "
         "450 test images; drop against the converted float model.",
         f"Pi 4 ms: {rates.source}.",
         f"Search budget: {budget} fine-tunes of {finetune_epochs} epochs each, knowledge "
         "distillation from the float model.", "", *reports])

    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
    for ax, (name, model_runs) in zip(axes[0], runs.items(), strict=True):
        for label, report in model_runs:
            done = [c for c in report.candidates if c.accuracy is not None]
            ax.scatter([c.predicted_bytes / 1024 for c in done], [c.accuracy for c in done],
                       label=label, alpha=0.7)
            if report.chosen is not None:
                ax.scatter([report.chosen.predicted_bytes / 1024], [report.chosen.accuracy],
                           s=160, facecolors="none", edgecolors="r")
        ax.set_xscale("log")
        ax.set_xlabel(".tflite size (KB, predicted, log)")
        ax.set_ylabel("accuracy (converted model)")
        ax.set_title(f"{name}: candidates (chosen circled)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
    fig.suptitle("lowbit_tf.compress on scikit-learn digits")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
