"""Random cases of LowbitBconv2d's fused epilogue (affine, add, affine_add), their
data, the NumPy reference and the TF op, shared by
tests/{tf_ops,tflite,core}/test_epilogue.py (and imported by the
every-kernel-path subprocess of tests/core/test_epilogue.py).
"""

from __future__ import annotations

import numpy as np
from reference import bconv2d_np, epilogue_np

from lowbit_tf import ops

KINDS = ("affine", "add", "affine_add")


def random_case(rng: np.random.Generator, kind: str) -> dict:
    while True:
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        case = dict(
            kind=kind,
            lead=tuple(int(d) for d in rng.integers(1, 3, size=int(rng.integers(1, 3)))),
            h=int(rng.integers(1, 9)),
            w=int(rng.integers(1, 11)),
            cin=int(rng.choice([1, 5, 32, 33, 64, 70])),
            cout=int(rng.choice([1, 7, 16, 31, 33, 40, 64, 65])),
            kernel=(kh, kw),
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=str(rng.choice(["SAME", "VALID"])),
            pad_value=int(rng.integers(0, 2)),
            activation=[None, "relu"][int(rng.integers(0, 2))],
            packed_input=bool(rng.random() < 0.3),
        )
        if case["padding"] == "VALID" and (
            case["h"] < (kh - 1) * case["dilations"][0] + 1
            or case["w"] < (kw - 1) * case["dilations"][1] + 1
        ):
            continue
        return case


def case_data(case: dict, seed: int) -> dict:
    """x, kernel, m, b and the epilogue inputs (residual shaped like the output)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*case["lead"], case["h"], case["w"], case["cin"]))
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["cout"]))
    data = dict(
        x=x.astype(np.float32),
        kernel=kernel.astype(np.float32),
        m=rng.uniform(-2, 2, case["cout"]).astype(np.float32),
        b=rng.uniform(-3, 3, case["cout"]).astype(np.float32),
    )
    out_shape = reference(case, data, epilogue=False).shape
    if case["kind"] in ("affine", "affine_add"):
        data["post_multiplier"] = rng.uniform(-1.7, 1.7, case["cout"]).astype(np.float32)
        data["post_bias"] = rng.uniform(-5, 5, case["cout"]).astype(np.float32)
    if case["kind"] in ("add", "affine_add"):
        data["residual"] = (rng.standard_normal(out_shape) * 7).astype(np.float32)
    return data


def epilogue_args(data: dict) -> dict:
    return {k: data[k] for k in ("post_multiplier", "post_bias", "residual") if k in data}


def reference(case: dict, data: dict, epilogue: bool = True) -> np.ndarray:
    lead = case["lead"]
    x = data["x"].reshape(-1, *data["x"].shape[len(lead):])
    y = bconv2d_np(x, data["kernel"], data["m"], data["b"], case["strides"], case["dilations"],
                   case["padding"], case["pad_value"], case["activation"])
    y = y.reshape(*lead, *y.shape[1:])
    return epilogue_np(y, **epilogue_args(data)) if epilogue else y


def conv_kwargs(case: dict) -> dict:
    return dict(kernel_size=case["kernel"], channels_in=case["cin"], strides=case["strides"],
                dilations=case["dilations"], padding=case["padding"],
                pad_value=case["pad_value"], activation=case["activation"])


def run_tf(case: dict, data: dict) -> np.ndarray:
    x = ops.bitpack(data["x"]) if case["packed_input"] else data["x"]
    return ops.bconv2d(x, ops.pack_filter(data["kernel"]), data["m"], data["b"],
                       **conv_kwargs(case), **epilogue_args(data)).numpy()


BAD = dict(kind="affine_add", lead=(1,), h=5, w=6, cin=33, cout=40, kernel=(3, 3),
           strides=(1, 1), dilations=(1, 1), padding="SAME", pad_value=1, activation="relu",
           packed_input=False)

