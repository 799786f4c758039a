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

The headline "test acc" is the number the paper reports for each variant:
deterministic BinaryConnect tested with its binary weights (the deployed
network), stochastic BinaryConnect with its real-valued latent weights (the
paper's test-time method for the stochastic form, section 2.6; batch norm
statistics re-estimated for those weights). Next to it, every binary variant is
also tested

- with its binary weights as trained (the deterministic sign of the latent
  weights; for the stochastic variant with the batch norm statistics gathered
  while the weights were sampled, which do not fit the deterministic sign:
  the per-epoch curve);
- with its binary weights and batch norm statistics re-estimated for them
  (what deploying the stochastic variant with binary weights takes);
- with its latent weights.

Prints test accuracy per epoch and a summary; writes ``binaryconnect.png``.

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


def latent_accuracy(result: common.Result, data: common.Data, config: common.Config,
                    binary: bool = False) -> float:
    """Test accuracy of the float network carrying ``result``'s real-valued latent
    weights (``binary``: their deterministic sign, the binary weights), batch norm
    statistics re-estimated for them."""
    import numpy as np

    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(config.seed)
    twin = build("float", config.seed)
    weights = result.model.get_weights()
    if binary:  # the kernels (the only 2-D weights): sign, +1 for w >= 0 as ste_sign
        weights = [np.where(w >= 0, 1.0, -1.0).astype(w.dtype) if w.ndim == 2 else w
                   for w in weights]
    twin.set_weights(weights)
    common.recalibrate_batch_norm(twin, data)
    return common.accuracy(twin, data)


# The test-time weights of the headline "test acc" per variant (the paper's choice).
TESTED_WITH = {"float": "float weights", "deterministic": "binary weights",
               "stochastic": "latent weights (paper)"}


def main(argv: list[str] | None = None) -> int:
    config = common.parse_args("binaryconnect", __doc__.splitlines()[0], argv, epochs=40)
    common.header(config, "BinaryConnect deterministic and stochastic vs float (MLP 256-256)")
    data = common.load_data(config.seed)
    kinds = ("float", "deterministic", "stochastic")
    results = [
        common.train(label, lambda kind=kind: build(kind, config.seed), data, config)
        for kind, label in zip(kinds, ("float (32-bit weights)", "BinaryConnect deterministic",
                                       "BinaryConnect stochastic"), strict=True)
    ]

    latent = {r.label: latent_accuracy(r, data, config) for r in results[1:]}
    recalibrated = {r.label: latent_accuracy(r, data, config, binary=True) for r in results[1:]}
    headline = {"float": results[0].final, "deterministic": results[1].final,
                "stochastic": latent[results[2].label]}
    epochs = sorted({1, 2, 5, *range(10, config.epochs + 1, 10), config.epochs})
    per_epoch = common.format_table(
        ["epoch", *(r.label for r in results)],
        [[e, *(r.test_accuracy[e - 1] for r in results)] for e in epochs if e <= config.epochs],
    )
    summary = common.format_table(
        ["variant", "weights", "test acc", "tested with", "binary wts, final",
         "binary wts, BN re-est.", "latent wts", "best over epochs", "train s"],
        [[r.label, "32-bit" if kind == "float" else "1-bit", headline[kind], TESTED_WITH[kind],
          "-" if kind == "float" else r.final, recalibrated.get(r.label, "-"),
          latent.get(r.label, "-"), r.best, f"{r.train_seconds:.1f}"]
         for kind, r in zip(kinds, results, strict=True)],
    )
    common.report(
        config, "BinaryConnect on digits: test accuracy",
        f"{summary}\n\nTest accuracy per epoch (binary variants tested with binary weights):\n\n"
        f"{per_epoch}",
        ["test acc: as the paper tests each variant: float and deterministic BC after the last "
         "epoch as trained; stochastic BC with its latent weights (the paper's test-time method "
         "for stochastic BC).",
         "binary wts, final: binary weights (sign of the latent weights) after the last epoch, "
         "batch norm as trained; for stochastic BC those statistics were gathered with sampled "
         "weights and do not fit the sign.",
         "binary wts, BN re-est.: the same binary weights, batch norm statistics re-estimated "
         "for them on the training set.",
         "latent wts: the real-valued latent weights in the float network, batch norm "
         "statistics re-estimated.",
         "best over epochs: the highest per-epoch test accuracy (binary weights as trained; "
         "chosen on the test set, so optimistic).",
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
