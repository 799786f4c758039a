"""ABC-Net (Lin, Zhao and Pan 2017) on scikit-learn digits: M weight x N activation bases.

A small convnet whose inner layers are ABC-Net layers: a float 3x3
convolution (32 filters), batch norm and 2x2 max pooling, then
``ABCConv2D(64, 3)``, batch norm, ``ABCDense(128)``, batch norm and a float
dense classifier (first and last layers in full precision, as in the paper).
Each ABC layer approximates its weights by M binary bases,
:math:`W \\approx \\sum_i \\alpha_i B_i` (least-squares alphas), and its inputs by
N binary bases with trainable shifts and betas, so it computes M * N binary
convolutions (matrix products). The grid is (M, N) in {1, 2, 3, 5} x {1, 2, 3},
against the same network with float convolutions and dense layers (ReLU).

Prints the accuracy grid; writes ``abc_net.png`` (a heat map and curves).

    python experiments/abc_net.py [--quick] [--epochs N] [--output-dir DIR]
"""

from __future__ import annotations

import argparse

import common
import numpy as np

WEIGHT_BASES = (1, 2, 3, 5)
ACTIVATION_BASES = (1, 2, 3)


def build(m: int | None, n: int | None):
    """The convnet with ABC layers of M weight and N activation bases (None: float)."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    def inner(layer: str, units: int):
        if m is None:
            if layer == "conv":
                return keras.layers.Conv2D(units, 3, padding="same", use_bias=False,
                                           activation="relu")
            return keras.layers.Dense(units, use_bias=False, activation="relu")
        abc = dict(num_weight_bases=m, num_activation_bases=n, use_bias=False)
        if layer == "conv":
            return lb_layers.ABCConv2D(units, 3, padding="same", **abc)
        return lb_layers.ABCDense(units, **abc)

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(32, 3, padding="same", use_bias=False)(inputs)
    x = common.batch_norm()(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = inner("conv", 64)(x)
    x = common.batch_norm()(x)
    x = keras.layers.Flatten()(x)
    x = inner("dense", 128)(x)
    x = common.batch_norm()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs, name="abc_float" if m is None else f"abc_m{m}_n{n}")


def _grid_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weight-bases", type=int, nargs="+", default=None,
                        help=f"values of M (default {' '.join(map(str, WEIGHT_BASES))}; "
                             "1 3 with --quick)")
    parser.add_argument("--activation-bases", type=int, nargs="+", default=None,
                        help=f"values of N (default {' '.join(map(str, ACTIVATION_BASES))}; "
                             "1 2 with --quick)")


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args("abc_net", __doc__.splitlines()[0], argv, epochs=10,
                               quick_epochs=1, batch_size=128, learning_rate=5e-3,
                               add_arguments=_grid_arguments)
    ms = config.extra.weight_bases or ((1, 3) if config.quick else WEIGHT_BASES)
    ns = config.extra.activation_bases or ((1, 2) if config.quick else ACTIVATION_BASES)
    common.header(config, f"ABC-Net accuracy for M in {list(ms)} x N in {list(ns)}")
    data = common.load_data(config.seed)
    reference = common.train("float (32-bit)", lambda: build(None, None), data, config)
    grid = {(m, n): common.train(f"ABC-Net M={m} N={n}", lambda m=m, n=n: build(m, n),
                                 data, config)
            for m in ms for n in ns}

    table = common.format_table(
        ["M \\ N", *(f"N={n}" for n in ns)],
        [[f"M={m}", *(grid[m, n].final for n in ns)] for m in ms],
    )
    cost = common.format_table(
        ["M \\ N", *(f"N={n}" for n in ns)],
        [[f"M={m}", *(f"{grid[m, n].train_seconds:.1f}" for n in ns)] for m in ms],
    )
    common.report(
        config, "ABC-Net on digits: final test accuracy (M weight bases x N activation bases)",
        f"{table}\n\nfloat network: {reference.final:.4f}\n\n"
        f"Training seconds ({config.epochs} epochs; an ABC layer computes M * N binary "
        f"convolutions):\n\n{cost}",
        [f"Best over epochs, float: {reference.best:.4f}; ABC: "
         + ", ".join(f"M={m} N={n} {grid[m, n].best:.4f}" for m in ms for n in ns) + "."],
    )

    plt = common.pyplot()
    fig, (ax_grid, ax_curves) = plt.subplots(1, 2, figsize=(12, 4.8))
    values = np.array([[grid[m, n].final for n in ns] for m in ms])
    image = ax_grid.imshow(values, cmap="viridis", vmin=min(values.min(), reference.final),
                           vmax=max(values.max(), reference.final), origin="lower")
    for i, m in enumerate(ms):
        for j, n in enumerate(ns):
            ax_grid.text(j, i, f"{grid[m, n].final:.3f}", ha="center", va="center",
                         color="white" if values[i, j] < values.mean() else "black")
    ax_grid.set_xticks(range(len(ns)), [f"N={n}" for n in ns])
    ax_grid.set_yticks(range(len(ms)), [f"M={m}" for m in ms])
    ax_grid.set_title(f"Final test accuracy (float: {reference.final:.3f})")
    fig.colorbar(image, ax=ax_grid)
    corners = [reference, *(grid[m, n] for m, n in
                            dict.fromkeys([(ms[0], ns[0]), (ms[-1], ns[0]),
                                           (ms[0], ns[-1]), (ms[-1], ns[-1])]))]
    common.plot_curves(ax_curves, corners, "Test accuracy per epoch")
    fig.suptitle("ABC-Net on scikit-learn digits")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
