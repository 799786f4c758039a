"""BinaryConnect (Courbariaux et al. 2015) on scikit-learn digits: binary weights vs float.

The network is the paper's MLP, scaled to 8x8 inputs: 64 -> 256 -> 256 -> 10,
batch normalisation after every layer, ReLU (activations stay real-valued:
BinaryConnect binarises weights only). Three variants, same seed, same batches:

- float: ``keras.layers.Dense``;
- deterministic BinaryConnect: ``QuantDense(kernel_quantizer="ste_sign",
  kernel_constraint="weight_clip")``, :math:`w_b = \\operatorname{sign}(w)`;
- stochastic BinaryConnect: ``kernel_quantizer=StochasticSign(seed)``,
  :math:`w_b = +1` with probability :math:`\\operatorname{clip}((w + 1)/2, 0, 1)`
  in training, deterministic sign at test time.

Binary variants are tested with their binary weights (the deployed network;
the stochastic variant with the deterministic sign of its latent weights) and,
at the end, with their real-valued latent weights, the test-time method the
paper uses for stochastic BinaryConnect (batch norm statistics re-estimated
for those weights). Prints test accuracy per epoch and a summary; writes
``binaryconnect.png``.

    python experiments/binaryconnect.py [--quick] [--epochs N] [--output-dir DIR]
"""

from __future__ import annotations

import common


def build(kind: str, seed: int):
    """The MLP with float, ``"deterministic"`` or ``"stochastic"`` binary weights."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf import quantizers as lb_quantizers
    from lowbit_tf._keras import keras

    def dense(units: int, index: int):
        if kind == "float":
            return keras.layers.Dense(units)
        quantizer = ("ste_sign" if kind == "deterministic"
                     else lb_quantizers.StochasticSign(seed=seed + index))
        return lb_layers.QuantDense(units, kernel_quantizer=quantizer,
                                    kernel_constraint="weight_clip")

    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Flatten()(inputs)
    for index, units in enumerate((256, 256)):
        x = dense(units, index)(x)
        x = common.batch_norm()(x)
        x = keras.layers.Activation("relu")(x)
    x = dense(10, 2)(x)
    outputs = common.batch_norm()(x)
    return keras.Model(inputs, outputs, name=f"bc_{kind}")


def latent_accuracy(result: common.Result, data: common.Data, config: common.Config) -> float:
    """Test accuracy of the float network carrying ``result``'s real-valued latent weights."""
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(config.seed)
    twin = build("float", config.seed)
    twin.set_weights(result.model.get_weights())
    common.recalibrate_batch_norm(twin, data)
    return common.accuracy(twin, data)


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args("binaryconnect", __doc__.splitlines()[0], argv, epochs=40)
    common.header(config, "BinaryConnect deterministic and stochastic vs float (MLP 256-256)")
    data = common.load_data(config.seed)
    results = [
        common.train(label, lambda kind=kind: build(kind, config.seed), data, config)
        for kind, label in (("float", "float (32-bit weights)"),
                            ("deterministic", "BinaryConnect deterministic"),
                            ("stochastic", "BinaryConnect stochastic"))
    ]

    latent = {r.label: latent_accuracy(r, data, config) for r in results[1:]}
    epochs = sorted({1, 2, 5, *range(10, config.epochs + 1, 10), config.epochs})
    per_epoch = common.format_table(
        ["epoch", *(r.label for r in results)],
        [[e, *(r.test_accuracy[e - 1] for r in results)] for e in epochs if e <= config.epochs],
    )
    summary = common.format_table(
        ["variant", "weights", "final test acc", "best test acc", "latent-weight test acc",
         "train s"],
        [[r.label, "32-bit" if i == 0 else "1-bit", r.final, r.best, latent.get(r.label, "-"),
          f"{r.train_seconds:.1f}"] for i, r in enumerate(results)],
    )
    common.report(
        config, "BinaryConnect on digits: test accuracy",
        f"{summary}\n\nTest accuracy per epoch (binary variants tested with binary weights):\n\n"
        f"{per_epoch}",
        ["final/best test acc: binary weights (sign of the latent weights), as deployed.",
         "latent-weight test acc: the real-valued latent weights in the float network, batch "
         "norm statistics re-estimated (the paper's test-time method for stochastic BC).",
         f"{results[0].params:,} parameters (incl. batch norm); binary weights take 1 bit "
         "instead of 32."],
    )

    plt = common.pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    common.plot_curves(ax, results, "BinaryConnect on scikit-learn digits (MLP 256-256)")
    common.save_figure(fig, config)
    return 0


if __name__ == "__main__":
    common.run_main(main)
