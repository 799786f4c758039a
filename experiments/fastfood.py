"""Deep Fried Convnets (Yang et al. 2015) on scikit-learn digits: Fastfood fully connected layers.

A small convnet (two 3x3 convolutions with batch norm, 2x2 max pooling, 512
features) followed by two fully connected hidden layers of width 512 and a
dense softmax classifier. Variants, same seed and batches:

- Dense FC: the hidden layers are ``keras.layers.Dense(512)``
  (512 * 512 + 512 parameters each);
- Fastfood FC: they are ``FastfoodDense(512)``, the Adaptive Fastfood
  transform :math:`V = S H G \\Pi H B` with learned diagonals S, G, B
  (3 * 512 + 512 parameters each, O(n log n) time);
- no FC: the classifier directly on the 512 convolutional features (what the
  hidden layers add at all on this small problem).

Prints the parameter counts, the reduction against Dense and the test
accuracy; writes ``fastfood.png``.

    python experiments/fastfood.py [--quick] [--epochs N] [--output-dir DIR]
"""

from __future__ import annotations

import common

WIDTH = 512  # the convolutional features (4 * 4 * 32) and the hidden FC width


def build(kind: str, seed: int):
    """The convnet with ``"dense"``, ``"fastfood"`` or ``"none"`` hidden FC layers."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    inputs = keras.Input((8, 8, 1))
    x = inputs
    for filters in (16, 32):
        x = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = common.batch_norm()(x)
        x = keras.layers.Activation("relu")(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.Flatten()(x)
    for index in range(2 if kind != "none" else 0):
        name = f"fc{index + 1}"
        if kind == "fastfood":
            x = lb_layers.FastfoodDense(WIDTH, activation="relu", seed=seed + index, name=name)(x)
        else:
            x = keras.layers.Dense(WIDTH, activation="relu", name=name)(x)
    outputs = keras.layers.Dense(10, name="classifier")(x)
    return keras.Model(inputs, outputs, name=f"convnet_{kind}")


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args("fastfood", __doc__.splitlines()[0], argv, epochs=30)
    common.header(config, "Fastfood (Adaptive Fastfood transform) vs dense fully connected layers")
    data = common.load_data(config.seed)
    variants = [("dense", f"Dense FC ({WIDTH}-{WIDTH})"),
                ("fastfood", f"Fastfood FC ({WIDTH}-{WIDTH})"),
                ("none", "no FC (classifier only)")]
    if config.quick:
        variants = variants[:2]
    results, fc = [], {}
    for kind, label in variants:
        models = []

        def make(kind: str = kind, models: list = models):
            models.append(build(kind, config.seed))
            return models[-1]

        results.append(common.train(label, make, data, config))
        model = models[-1]
        fc[label] = sum(model.get_layer(f"fc{i}").count_params()
                        for i in (1, 2) if kind != "none")

    dense_fc = fc[results[0].label]
    table = common.format_table(
        ["variant", "FC params", "FC reduction", "total params", "final test acc",
         "best test acc", "train s"],
        [[r.label, f"{fc[r.label]:,}",
          f"{dense_fc / fc[r.label]:.0f}x" if fc[r.label] else "-",
          f"{r.params:,}", r.final, r.best, f"{r.train_seconds:.1f}"] for r in results],
    )
    common.report(
        config, "Fastfood fully connected layers on digits", table,
        ["FC params: the two hidden fully connected layers (weights and biases); the "
         "convolutions and the dense classifier are the same in every variant."],
    )

    plt = common.pyplot()
    fig, (ax_acc, ax_params) = plt.subplots(1, 2, figsize=(11, 4.5),
                                            gridspec_kw={"width_ratios": [3, 2]})
    common.plot_curves(ax_acc, results, "Test accuracy")
    with_fc = [r for r in results if fc[r.label]]
    bars = ax_params.bar(range(len(with_fc)), [fc[r.label] for r in with_fc], color="C1")
    ax_params.bar_label(bars, labels=[f"{fc[r.label]:,}" for r in with_fc], fontsize="small")
    ax_params.set_xticks(range(len(with_fc)), [r.label.split(" (")[0] for r in with_fc])
    ax_params.set_yscale("log")
    ax_params.set_ylabel("hidden FC parameters (log)")
    ax_params.set_title("Fully connected layer parameters")
    fig.suptitle("Deep Fried Convnets on scikit-learn digits")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
