"""Bit-packed LowbitBconv2d cases shared by the packed-chain tests
(tests/{tf_ops,tflite,core}/test_packed_chain.py) and the other binary ops:
``tricky_transform`` puts each channel's flip point of m * D + b on or next to
an integer D (one float ulp either way), so that the integer thresholds of a
packed output are checked against the float decision exactly.
"""

from __future__ import annotations

import numpy as np
from reference import (
    bconv2d_bitpacked_np,
)

from lowbit_tf import ops


def tricky_transform(rng: np.random.Generator, cout: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (m, b) that put the flip point of m * D + b on or next to an
    integer D, one float ulp either way, plus zeros, -0.0, tiny and huge m."""
    m = np.empty(cout, np.float32)
    b = np.empty(cout, np.float32)
    for c in range(cout):
        kind = rng.integers(0, 8)
        scale = np.float32(rng.choice([1e-3, 0.1, 0.7, 3.0, 1e5]) * rng.choice([-1, 1]))
        d = np.float32(rng.integers(-k, k + 1))
        if kind == 0:
            m[c], b[c] = 0.0, rng.choice([-1.0, 0.0, -0.0, 1.0, -1e-40])
        elif kind == 1:
            m[c], b[c] = -0.0, rng.choice([-2.0, 2.0])
        elif kind == 2:
            m[c], b[c] = rng.choice([1e38, -1e38]), rng.uniform(-1e38, 1e38)  # overflow
        elif kind == 3:
            m[c], b[c] = rng.choice([1e-42, -1e-42]), 0.0  # subnormal products
        else:
            # b = -m * d, nudged by 0..2 ulps either way
            b[c] = -(scale * d)
            for _ in range(int(rng.integers(0, 3))):
                b[c] = np.nextafter(b[c], np.float32(rng.choice([-np.inf, np.inf])))
            m[c] = scale
    return m, b


def random_case(rng: np.random.Generator) -> dict:
    while True:
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        case = dict(
            n=int(rng.integers(1, 3)),
            h=int(rng.integers(1, 8)),
            w=int(rng.integers(1, 10)),
            cin=int(rng.choice([1, 5, 31, 32, 33, 64, 70])),
            cout=int(rng.choice([1, 7, 31, 32, 33, 40, 64, 65])),
            kernel=(kh, kw),
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=str(rng.choice(["SAME", "VALID"])),
            pad_value=int(rng.integers(0, 2)),
            activation=[None, "relu"][int(rng.random() < 0.2)],
            packed_input=bool(rng.random() < 0.5),
        )
        if case["padding"] == "VALID" and (
            case["h"] < (kh - 1) * case["dilations"][0] + 1
            or case["w"] < (kw - 1) * case["dilations"][1] + 1
        ):
            continue
        return case


def case_data(case: dict, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["cin"])).astype(np.float32)
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["cout"])).astype(np.float32)
    k = case["kernel"][0] * case["kernel"][1] * case["cin"]
    m, b = tricky_transform(rng, case["cout"], k)
    return x, kernel, m, b


def run_tf(case: dict, x, kernel, m, b, output_type: str) -> np.ndarray:
    inputs = ops.bitpack(x) if case["packed_input"] else x
    return ops.bconv2d(
        inputs, ops.pack_filter(kernel), m, b, kernel_size=case["kernel"],
        channels_in=case["cin"], strides=case["strides"], dilations=case["dilations"],
        padding=case["padding"], pad_value=case["pad_value"], activation=case["activation"],
        output_type=output_type,
    ).numpy()


def reference(case: dict, x, kernel, m, b) -> np.ndarray:
    return bconv2d_bitpacked_np(
        x, kernel, m, b, case["strides"], case["dilations"], case["padding"],
        case["pad_value"], case["activation"],
    )
