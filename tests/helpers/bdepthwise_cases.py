"""Random LowbitBDepthwiseConv2d cases, their data and the NumPy reference / TF
op results, shared by tests/{tf_ops,tflite,core,converter}/test_bdepthwise.py
(and imported by the every-kernel-path subprocess of tests/core/test_bdepthwise.py).
"""

from __future__ import annotations

import numpy as np
from packed_chain_cases import tricky_transform
from reference import bdepthwise_conv2d_np


def random_case(rng: np.random.Generator) -> dict:
    while True:
        kernel = [(1, 1), (1, 2), (3, 3), (3, 3), (2, 3), (5, 5), (7, 7), (9, 9)][
            int(rng.integers(0, 8))
        ]
        case = dict(
            n=int(rng.integers(1, 3)),
            h=int(rng.integers(1, 10)),
            w=int(rng.integers(1, 12)),
            cin=int(rng.choice([1, 5, 31, 32, 33, 64, 70])),
            dm=int(rng.integers(1, 4)),
            kernel=kernel,
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=str(rng.choice(["SAME", "VALID"])),
            pad_value=int(rng.integers(0, 2)),
            activation=[None, "relu"][int(rng.random() < 0.3)],
            packed_input=bool(rng.random() < 0.5),
        )
        eff = [(k - 1) * d + 1 for k, d in zip(kernel, case["dilations"], strict=True)]
        if case["padding"] == "VALID" and (case["h"] < eff[0] or case["w"] < eff[1]):
            continue
        return case


def case_data(case: dict, seed: int, tricky: bool = False):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["cin"])).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["dm"])).astype(np.float32)
    cout = case["cin"] * case["dm"]
    if tricky:
        m, b = tricky_transform(rng, cout, case["kernel"][0] * case["kernel"][1])
    else:
        m = rng.uniform(-2, 2, cout).astype(np.float32)
        b = rng.uniform(-3, 3, cout).astype(np.float32)
    return x, kernel, m, b


def weight_sequence(case: dict, seeds: tuple[int, int] = (5, 11)):
    """(x, [(kernel, multiplier, bias), ...]) for the kept-plan tests of both
    shells: the same weights twice, one filter tap changed, then the bias
    only, then all new weights, then the first ones again."""
    x, kernel, m, b = case_data(case, seeds[0], tricky=True)
    kernel2 = kernel.copy()
    kernel2[-1, 0] = -kernel2[-1, 0]
    b2 = b.copy()
    b2[len(b2) // 4] = -b2[len(b2) // 4] + 1.0
    _, kernel3, m3, b3 = case_data(case, seeds[1], tricky=True)
    return x, [(kernel, m, b), (kernel, m, b), (kernel2, m, b), (kernel2, m, b2),
               (kernel3, m3, b3), (kernel, m, b)]


def reference(case: dict, x, kernel, m, b) -> np.ndarray:
    return bdepthwise_conv2d_np(x, kernel, m, b, case["strides"], case["dilations"],
                                case["padding"], case["pad_value"], case["activation"])


def run_tf(case: dict, x, kernel, m, b, output_type: str = "float") -> np.ndarray:
    from lowbit_tf import ops

    return ops.bdepthwise_conv2d(
        ops.bitpack(x) if case["packed_input"] else x, ops.pack_depthwise_filter(kernel), m, b,
        channels_in=case["cin"], depth_multiplier=case["dm"], strides=case["strides"],
        dilations=case["dilations"], padding=case["padding"], pad_value=case["pad_value"],
        activation=case["activation"], output_type=output_type,
    ).numpy()

