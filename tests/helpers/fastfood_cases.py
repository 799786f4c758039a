"""LowbitFastfood weights and layer variants shared by
tests/{tf_ops,tflite}/test_fastfood.py: general float weights (so that any
change in the order of operations shows) and the Keras-layer cases.
"""

from __future__ import annotations

import numpy as np

F32 = np.float32


def random_weights(rng: np.random.Generator, k: int, n: int, units: int, bias: bool = True):
    """b, g, s, permutation, bias with general float values (not just the
    layer's +-1 b), so that any change in the order of operations would show."""
    b = (rng.choice([-1.0, 1.0], (k, n)) * rng.uniform(0.5, 1.5, (k, n))).astype(F32)
    g = rng.standard_normal((k, n)).astype(F32)
    s = rng.uniform(0.1, 2.0, (k, n)).astype(F32)
    permutation = np.stack([rng.permutation(n) for _ in range(k)]).astype(np.int32)
    return b, g, s, permutation, (rng.standard_normal(units).astype(F32) if bias else None)


def next_pow2(d: int) -> int:
    return 1 << max(d - 1, 0).bit_length()


# (lead shape, units as a function of n, block_size factor, activation, use_bias)
VARIANTS = [
    ((5,), lambda n: max(n // 2, 1), 1, None, True),  # units < n: part of one block
    ((1,), lambda n: 3 * n - 1, 1, "relu", True),  # several blocks, the last one partial
    ((2, 3), lambda n: 2 * n, 2, None, False),  # rank 3, a larger block, whole blocks
    ((0,), lambda n: n + 1, 1, "relu", False),  # no rows
    ((4, 1, 2), lambda n: n, 1, "tanh", True),  # rank 4, a trailing float activation
]


# --------------------------------------------------------------------------
# Bad inputs: clear errors from the wrapper and from the kernel itself
# --------------------------------------------------------------------------

GOOD = random_weights(np.random.default_rng(5), 2, 8, 12)

