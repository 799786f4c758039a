"""16-bit fixed-point training (Gupta et al. 2015) on digits: stochastic vs nearest rounding.

An MLP 64 -> 256 -> 256 -> 10 (ReLU, no batch norm) trained with plain SGD,
everything the paper puts in fixed point in fixed point: every ``QuantDense``
layer rounds its inputs (the activations) and its kernel with
``FixedPoint(word_bits=16, fraction_bits=F, rounding=...)``, rounds the
gradient flowing back into it (``gradient_quantizer``), and keeps its weights
and biases *stored* in fixed point (a constraint rounds them after every
update, so an update smaller than the resolution :math:`2^{-F}` is lost to
round-to-nearest but survives stochastic rounding in expectation). Variants:
float32, and for every ``F`` nearest and stochastic rounding.

Prints the test accuracy table; writes ``fixed_point.png``.

    python experiments/fixed_point.py [--quick] [--fraction-bits F ...] [--output-dir DIR]
"""

from __future__ import annotations

import argparse
from typing import Any

import common

WORD_BITS = 16
FRACTION_BITS = (8, 10, 12, 14)


def fixed_point_tools():
    """The gradient quantizer and the storage constraint (built on ``FixedPoint``)."""
    from lowbit_tf import quantizers as lb_quantizers
    from lowbit_tf._keras import keras

    class FixedPointGradient(lb_quantizers.GradientQuantizer):
        """Identity forward; the backward gradient rounded by ``fixed_point`` (training mode)."""

        def __init__(self, fixed_point: lb_quantizers.FixedPoint):
            self.fixed_point = fixed_point
            self.gradient_precision = fixed_point.word_bits

        def quantize_gradient(self, dy: Any) -> Any:
            return self.fixed_point(dy, training=True)

    class FixedPointStorage(keras.constraints.Constraint):
        """Keeps a variable on the fixed-point grid: rounds it after every optimizer update."""

        def __init__(self, fixed_point: lb_quantizers.FixedPoint):
            self.fixed_point = fixed_point

        def __call__(self, w: Any) -> Any:
            return self.fixed_point(w, training=True)

    return FixedPointGradient, FixedPointStorage


def build(fraction_bits: int | None, rounding: str, seed: int):
    """The MLP in ``<16, fraction_bits>`` fixed point with ``rounding``, or float (None)."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf import quantizers as lb_quantizers
    from lowbit_tf._keras import keras

    FixedPointGradient, FixedPointStorage = fixed_point_tools()
    seeds = iter(range(seed * 1000, seed * 1000 + 1000))

    def fixed_point():
        return lb_quantizers.FixedPoint(WORD_BITS, fraction_bits, rounding=rounding,
                                        seed=next(seeds))

    def dense(units: int, activation: str | None):
        if fraction_bits is None:
            return keras.layers.Dense(units, activation=activation)
        return lb_layers.QuantDense(
            units, activation=activation,
            input_quantizer=fixed_point(), kernel_quantizer=fixed_point(),
            gradient_quantizer=FixedPointGradient(fixed_point()),
            kernel_constraint=FixedPointStorage(fixed_point()),
            bias_constraint=FixedPointStorage(fixed_point()),
        )

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    x = dense(256, "relu")(x)
    x = dense(256, "relu")(x)
    outputs = dense(10, None)(x)
    name = "float" if fraction_bits is None else f"fixed_{WORD_BITS}_{fraction_bits}_{rounding}"
    return keras.Model(inputs, outputs, name=name)


def _arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fraction-bits", type=int, nargs="+", default=None,
                        help="fraction bits F of the 16-bit words (default "
                             f"{' '.join(map(str, FRACTION_BITS))}; 8 14 with --quick)")


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args("fixed_point", __doc__.splitlines()[0], argv, epochs=30,
                               learning_rate=0.1, add_arguments=_arguments)
    fraction_bits = config.extra.fraction_bits or ((8, 14) if config.quick else FRACTION_BITS)
    common.header(config, f"{WORD_BITS}-bit fixed point, nearest vs stochastic rounding "
                          f"(F = {', '.join(map(str, fraction_bits))}), SGD")
    from lowbit_tf._keras import keras

    data = common.load_data(config.seed)

    def run(label: str, bits: int | None, rounding: str = "nearest") -> common.Result:
        return common.train(label, lambda: build(bits, rounding, config.seed), data, config,
                            optimizer=lambda: keras.optimizers.SGD(config.learning_rate))

    reference = run("float32", None)
    results = {(bits, rounding): run(f"<{WORD_BITS - bits},{bits}> {rounding}", bits, rounding)
               for bits in fraction_bits for rounding in ("nearest", "stochastic")}

    table = common.format_table(
        ["format <IL,FL>", "resolution", "range", "nearest", "stochastic"],
        [[f"<{WORD_BITS - bits},{bits}>", f"2^-{bits}",
          f"[-{2 ** (WORD_BITS - bits - 1):g}, {2 ** (WORD_BITS - bits - 1):g})",
          results[bits, "nearest"].final, results[bits, "stochastic"].final]
         for bits in fraction_bits],
    )
    common.report(
        config, f"{WORD_BITS}-bit fixed-point training on digits: final test accuracy",
        f"{table}\n\nfloat32: {reference.final:.4f}",
        ["Weights, biases, layer inputs and back-propagated gradients in 16-bit fixed point "
         f"(IL integer bits incl. sign, FL fraction bits); plain SGD, learning rate "
         f"{config.learning_rate:g}.",
         "Best over epochs: float32 " + f"{reference.best:.4f}; " + ", ".join(
             f"<{WORD_BITS - b},{b}> {r} {results[b, r].best:.4f}"
             for b in fraction_bits for r in ("nearest", "stochastic")) + "."],
    )

    plt = common.pyplot()
    fig, axes = plt.subplots(1, len(fraction_bits), figsize=(4 * len(fraction_bits), 4),
                             sharey=True, squeeze=False)
    for ax, bits in zip(axes[0], fraction_bits, strict=True):
        common.plot_curves(ax, [reference, results[bits, "nearest"],
                                results[bits, "stochastic"]], f"<{WORD_BITS - bits},{bits}>")
    fig.suptitle(f"{WORD_BITS}-bit fixed-point training on scikit-learn digits")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
