"""LowbitFastfood weights and layer variants shared by
tests/{tf_ops,tflite}/test_fastfood.py: general float weights (so that any
change in the order of operations shows) and the Keras-layer cases.
"""

from __future__ import annotations

import numpy as np
from reference import dequantize_int8_np, fastfood_np

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


def int8_case(d: int, variant: int, seed: int):
    """An int8 case of VARIANTS[variant] (a fused ReLU or none) with input width d:
    (q, (x scale, x zero point), weights, units, activation, y, (y scale, y zero
    point)): random int8 codes, the float32 reference y of their real values
    float(q - zp) * scale, and an output scale under which the largest |y| is
    110 steps (with the zero point, some codes saturate)."""
    rng = np.random.default_rng(900 + 10 * d + variant + seed)
    lead, units_of, factor, activation, use_bias = VARIANTS[variant]
    activation = activation if activation == "relu" else None
    n = next_pow2(d) * factor
    units = units_of(n)
    weights = random_weights(rng, -(-units // n) + seed % 2, n, units, bias=use_bias)
    q = rng.integers(-128, 128, (*lead, d)).astype(np.int8)
    x_scale, x_zero_point = float(np.float32(rng.uniform(0.005, 0.1))), int(rng.integers(-20, 21))
    y = fastfood_np(dequantize_int8_np(q, x_scale, x_zero_point), *weights, units=units,
                    activation=activation)  # fmt: skip
    top = float(np.abs(y).max()) if y.size else 1.0
    y_scale = float(np.float32(top / 110 if top > 0 else 1.0))
    y_zero_point = int(rng.integers(-30, 31))
    return q, (x_scale, x_zero_point), weights, units, activation, y, (y_scale, y_zero_point)


# --------------------------------------------------------------------------
# Bad inputs: clear errors from the wrapper and from the kernel itself
# --------------------------------------------------------------------------

GOOD = random_weights(np.random.default_rng(5), 2, 8, 12)

