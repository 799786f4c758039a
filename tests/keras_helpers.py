"""Small Keras helpers shared by the tests (and tests/arm/make_models.py)."""

from __future__ import annotations

import numpy as np

from lowbit_tf._keras import keras


def randomize_batch_norms(model: keras.Model, seed: int = 0) -> None:
    """Gives every BatchNormalization non-trivial statistics (fresh ones are the
    identity, which would hide a wrong fold)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n),
                               rng.uniform(-5, 5, n), rng.uniform(0.5, 20, n)])
