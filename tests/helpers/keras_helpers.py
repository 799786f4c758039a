"""Small Keras helpers shared by the tests (and tests/arm/make_models.py)."""

from __future__ import annotations

import numpy as np

from lowbit_tf._keras import keras


def randomize_batch_norms(
    model: keras.Model, seed: int | np.random.Generator = 0, signed_gamma: bool = False
) -> None:
    """Gives every BatchNormalization non-trivial statistics (fresh ones are the
    identity, which would hide a wrong fold). `signed_gamma`: gammas of both
    signs (a bit-packed output's flip path). `seed` may be a Generator shared
    across models."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            gamma = rng.uniform(0.5, 2, n)
            if signed_gamma:
                gamma = gamma * rng.choice([-1, 1], n)
            layer.set_weights([gamma, rng.uniform(-1, 1, n), rng.uniform(-5, 5, n),
                               rng.uniform(0.5, 20, n)])
