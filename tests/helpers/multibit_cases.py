"""Random LowbitMultibitConv2d cases (sign, ABC-Net, DoReFa planes), their data,
the NumPy reference and the TF op, shared by
tests/{tf_ops,tflite}/test_multibit.py.
"""

from __future__ import annotations

import numpy as np
from reference import dequantize_int8_np, int8_signs_np, multibit_conv2d_np

from lowbit_tf import ops


def random_case(rng: np.random.Generator) -> dict:
    mode = str(rng.choice(["sign", "abc", "dorefa"]))
    kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    case = dict(
        mode=mode,
        lead=(int(rng.integers(1, 3)),) + ((2,) if rng.random() < 0.25 else ()),
        h=int(rng.integers(kernel[0] + 2, 9)),
        w=int(rng.integers(kernel[1] + 2, 9)),
        cin=int(rng.choice([1, 5, 31, 32, 33, 70])),
        cout=int(rng.integers(1, 20)),
        m=int(rng.integers(1, 5)),
        kernel=kernel,
        strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        dilations=(int(rng.integers(1, 3)), 1),
        padding=str(rng.choice(["SAME", "VALID"])),
        pad_value=int(rng.integers(0, 2)),
        activation="relu" if rng.random() < 0.3 else None,
        shifts=None,
        bits=0,
    )
    if mode == "abc":
        case["shifts"] = rng.uniform(-0.5, 1.5, int(rng.integers(1, 5))).astype(np.float32)
    if mode == "dorefa":
        case["bits"] = int(rng.integers(1, 5))
    return case


def case_data(case: dict, rng: np.random.Generator):
    """Input (with exact plane thresholds and ties included), +-1 weight planes
    and float scales."""
    shape = case["lead"] + (case["h"], case["w"], case["cin"])
    x = rng.uniform(-1.5, 1.5, shape).astype(np.float32)
    if case["mode"] == "dorefa":  # values on rounding ties and on the grid
        n = 2 ** case["bits"] - 1
        ties = (rng.integers(0, 2 * n + 1, shape) / (2 * n)).astype(np.float32)
        x = np.where(rng.random(shape) < 0.3, ties, x)
    if case["mode"] == "abc":  # values exactly on a threshold 0.5 - v
        on = (np.float32(0.5) - case["shifts"][0]).astype(np.float32)
        x = np.where(rng.random(shape) < 0.2, on, x)
    kh, kw = case["kernel"]
    planes = rng.choice([-1.0, 1.0], (case["m"], kh, kw, case["cin"], case["cout"]))
    planes = planes.astype(np.float32)
    alphas = rng.uniform(0.1, 2.0, (case["m"], case["cout"])).astype(np.float32)
    count = {"sign": 1, "abc": len(case["shifts"]) if case["shifts"] is not None else 0,
             "dorefa": case["bits"] + 1}[case["mode"]]
    betas = rng.uniform(0.1, 1.0, count).astype(np.float32)
    bias = rng.standard_normal(case["cout"]).astype(np.float32)
    return x, planes, alphas, betas, bias


def run_tf(case, x, planes, alphas, betas, bias, **kwargs):
    """The TF op; kwargs: its int8 / packed options (output_type, input_scale, ...)."""
    return ops.multibit_conv2d(
        x, ops.pack_filter_planes(planes), alphas, betas, bias,
        activation_mode=case["mode"], shifts=case["shifts"], activation_bits=case["bits"],
        kernel_size=case["kernel"], strides=case["strides"], dilations=case["dilations"],
        padding=case["padding"], pad_value=case["pad_value"], activation=case["activation"],
        **kwargs,
    ).numpy()


def run_reference(case, x, planes, alphas, betas, bias):
    """multibit_conv2d_np of a float input with leading dimensions."""
    lead = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:])
    y = multibit_conv2d_np(
        flat, planes, alphas, betas, bias, case["mode"], case["shifts"], case["bits"],
        case["strides"], case["dilations"], case["padding"], case["pad_value"],
        case["activation"],
    )
    return y.reshape(lead + y.shape[1:])


def int8_input(case: dict, rng: np.random.Generator) -> tuple[np.ndarray, float, int]:
    """int8 codes of the case's input shape with (scale, zero point) whose real
    values cross the planes' thresholds exactly: for "dorefa" a scale of
    1 / (2n) half the time (odd codes past the zero point are rounding ties),
    for "abc" the first shift moved so that one code's real value x has
    fl(x + v) on 0.5 or next to it. Changes case["shifts"] for "abc"."""
    shape = case["lead"] + (case["h"], case["w"], case["cin"])
    q = rng.integers(-128, 128, shape).astype(np.int8)
    zero_point = int(rng.integers(-40, 41))
    scale = float(np.float32(rng.uniform(0.004, 0.02)))
    if case["mode"] == "dorefa" and rng.random() < 0.5:
        scale = float(np.float32(1.0 / (2 * (2 ** case["bits"] - 1))))
    if case["mode"] == "abc":
        code = int(rng.choice(q.reshape(-1)))
        x = dequantize_int8_np(np.array([code]), scale, zero_point)[0]
        case["shifts"] = case["shifts"].copy()
        case["shifts"][0] = np.float32(0.5) - x
    return q, scale, zero_point


def int8_reference_input(case: dict, q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """The float input whose planes an int8 input has: its dequantized values
    (for "sign" its signs by the codes, q < zero_point: the same as the
    dequantized values' but for subnormal products)."""
    if case["mode"] == "sign":
        return int8_signs_np(q, zero_point)
    return dequantize_int8_np(q, scale, zero_point)


BAD_CASE = dict(mode="abc", lead=(1,), h=5, w=5, cin=33, cout=4, m=2, kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), padding="VALID", pad_value=0,
                activation=None, shifts=np.array([0.2, 0.5], np.float32), bits=0)

