"""Chains of binary layers that never unpack (issue 4), as TF ops: LowbitBconv2d
with output_type="bitpacked" and LowbitBMaxPool2d on packed data.

NumPy reference (tests/helpers/reference.py) = TF op, bit for bit, over random
shapes with channel tails; per-channel multipliers and biases chosen to sit on
and around the flip points of the float output transform, so that the integer
thresholds are checked against the float decision exactly. The TFLite kernels:
tests/tflite/test_packed_chain.py; the converter: tests/converter/test_packed_chain.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import (
    bconv2d_bitpacked_np,
    bitpack_np,
    bmaxpool2d_np,
)

tf = pytest.importorskip("tensorflow")

from packed_chain_cases import case_data, random_case, reference, run_tf  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


@pytest.mark.parametrize("seed", range(30))
def test_bitpacked_output_matches_reference_and_float_path(seed):
    rng = np.random.default_rng(1000 + seed)
    case = random_case(rng)
    x, kernel, m, b = case_data(case, seed)
    got = run_tf(case, x, kernel, m, b, "bitpacked")
    expected = reference(case, x, kernel, m, b)
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # ... and the packing of the op's own float output.
    np.testing.assert_array_equal(got, bitpack_np(run_tf(case, x, kernel, m, b, "float")))


def test_thresholds_at_every_flip_point():
    """One channel per integer D of a small K, with b = -m * D and its float
    neighbours: every possible flip point of the float expression is hit."""
    rng = np.random.default_rng(5)
    cin, kh, kw = 3, 1, 1  # K = 3: D in {-3, -1, 1, 3}; pad 0 SAME adds 0 and +-1 +-2
    ms, bs = [], []
    for d in range(-4, 5):
        for scale in (0.3, -0.3, 7.0, -7.0, 1e-30, -1e-30):
            base = np.float32(-np.float32(scale) * np.float32(d))
            for nudge in (-1, 0, 1):
                bb = base
                for _ in range(abs(nudge)):
                    bb = np.nextafter(bb, np.float32(np.inf * nudge))
                ms.append(scale)
                bs.append(bb)
    m, b = np.array(ms, np.float32), np.array(bs, np.float32)
    x = rng.standard_normal((2, 5, 5, cin)).astype(np.float32)
    kernel = rng.standard_normal((kh, kw, cin, len(m))).astype(np.float32)
    for padding in ("SAME", "VALID"):
        got = ops.bconv2d(x, ops.pack_filter(kernel), m, b, kernel_size=1, padding=padding,
                          output_type="bitpacked").numpy()
        np.testing.assert_array_equal(
            got, bconv2d_bitpacked_np(x, kernel, m, b, padding=padding))


def test_relu_gives_all_plus_one():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 4, 40)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 40, 35)).astype(np.float32)
    m = rng.uniform(-2, 2, 35).astype(np.float32)
    b = rng.uniform(-50, 50, 35).astype(np.float32)
    got = ops.bconv2d(x, ops.pack_filter(kernel), m, b, kernel_size=3, activation="relu",
                      output_type="bitpacked").numpy()
    assert got.shape == (1, 2, 2, 2)
    assert not got.any()


# --------------------------------------------------------------------------
# LowbitBMaxPool2d
# --------------------------------------------------------------------------


def random_pool_case(rng):
    while True:
        case = dict(
            n=int(rng.integers(1, 3)), h=int(rng.integers(1, 9)), w=int(rng.integers(1, 9)),
            channels=int(rng.choice([1, 5, 31, 32, 33, 64, 70, 100])),
            pool=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
            strides=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
            padding=str(rng.choice(["SAME", "VALID"])),
        )
        fits = case["h"] >= case["pool"][0] and case["w"] >= case["pool"][1]
        if case["padding"] == "SAME" or fits:
            return case


@pytest.mark.parametrize("seed", range(30))
def test_bmaxpool_matches_reference_and_float_maxpool(seed):
    rng = np.random.default_rng(2000 + seed)
    case = random_pool_case(rng)
    # Mostly negative values, so that all--1 windows are common.
    x = (rng.standard_normal((case["n"], case["h"], case["w"], case["channels"])) - 0.8)
    x = x.astype(np.float32)
    packed = bitpack_np(x)
    if seed % 3 == 0:  # garbage in the padding bits is ignored
        tail = case["channels"] % 32
        if tail:
            packed = packed.copy()
            packed[..., -1] |= np.int32(np.uint32(~((1 << tail) - 1) & 0xFFFFFFFF).view(np.int32))
    got = ops.bmaxpool2d(packed, case["pool"], channels=case["channels"],
                         strides=case["strides"], padding=case["padding"]).numpy()
    expected = bmaxpool2d_np(packed, case["channels"], case["pool"], case["strides"],
                             case["padding"])
    np.testing.assert_array_equal(got, expected)
    pooled = tf.nn.max_pool2d(x, case["pool"], case["strides"], case["padding"]).numpy()
    np.testing.assert_array_equal(got, bitpack_np(pooled))


def test_tf_ops_bad_input_raises():
    x = np.zeros((1, 5, 5, 33), np.float32)
    kernel = np.ones((3, 3, 33, 4), np.float32)
    packed = ops.pack_filter(kernel)
    with pytest.raises(ValueError, match="output_type"):
        ops.bconv2d(x, packed, kernel_size=3, output_type="packed")
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        ops.bconv2d(x, packed, [1.0, np.nan, 1, 1], [0.0] * 4, kernel_size=3,
                    output_type="bitpacked")
    from lowbit_tf._native import load_tf_ops

    with pytest.raises(tf.errors.InvalidArgumentError, match="Tout"):
        load_tf_ops().lowbit_bconv2d(x, packed, [1.0] * 4, [0.0] * 4, [], channels_in=33,
                                     kernel_h=3, kernel_w=3, output_type="bitpacked")
    words = ops.bitpack(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="packed words"):
        ops.bmaxpool2d(words, 2, channels=65)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not fit"):
        ops.bmaxpool2d(words, 6, channels=33)
    with pytest.raises(TypeError):
        ops.bmaxpool2d(x, 2, channels=33)
    with pytest.raises(ValueError, match="padding"):
        ops.bmaxpool2d(words, 2, channels=33, padding="FULL")

