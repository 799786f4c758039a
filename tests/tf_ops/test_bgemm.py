"""LowbitBgemm (binary dense / GEMM) and the N-d inputs of LowbitBconv2d and
LowbitBMaxPool2d, as TF ops.

NumPy reference (tests/helpers/reference.py) = TF op, bit for bit, on random
shapes with channel tails (K = 1, 31, 33, 100, 257; N_out 1..70), leading
dimensions, float and bit-packed outputs; small batches (rows 1..9) that cross
the SIMD kernels' GEMV path (rows below the tile: AVX2 4, AVX-512 8) into the
tiled one; shape functions with unknown dimensions; bad input raises clear
errors. The TFLite kernel: tests/tflite/test_bgemm.py; every kernel path:
tests/core/test_bgemm.py; the converter: tests/converter/test_bgemm.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import bgemm_np, bitpack_np

tf = pytest.importorskip("tensorflow")

from bgemm_cases import K_VALUES, case_data, random_case, reference, run_tf, small_batch_mismatches  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


# --------------------------------------------------------------------------
# LowbitBgemm: reference == TF op
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_tf_op_matches_reference(seed):
    case = random_case(np.random.default_rng(100 + seed))
    x, kernel, m, b = case_data(case)
    got = run_tf(case, x, kernel, m, b)
    expected = reference(case, x, kernel, m, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_small_batches_match_reference():
    assert small_batch_mismatches(run_tf) == []


def test_cases_cover_the_tails():
    cases = [random_case(np.random.default_rng(100 + seed)) for seed in range(40)]
    assert {c["k"] for c in cases} == set(K_VALUES)
    assert {len(c["leading"]) for c in cases} == {0, 1, 2}
    assert {c["output_type"] for c in cases} == {"float", "bitpacked"}
    assert min(c["cout"] for c in cases) < 10 and max(c["cout"] for c in cases) > 60


@pytest.mark.parametrize("k", K_VALUES)
def test_every_output_channel_count(k):
    """N_out = 1..70 against the reference, float output and packed."""
    rng = np.random.default_rng(k)
    x = rng.standard_normal((3, 2, k)).astype(np.float32)
    for cout in range(1, 71):
        kernel = rng.standard_normal((k, cout)).astype(np.float32)
        m = rng.uniform(-2, 2, cout).astype(np.float32)
        b = rng.uniform(-3, 3, cout).astype(np.float32)
        expected = bgemm_np(x, kernel, m, b)
        got = ops.bgemm(x, ops.pack_dense_kernel(kernel), m, b).numpy()
        np.testing.assert_array_equal(got, expected, err_msg=f"cout={cout}")
        got = ops.bgemm(x, ops.pack_dense_kernel(kernel), m, b, output_type="bitpacked")
        np.testing.assert_array_equal(got.numpy(), bitpack_np(expected), err_msg=f"cout={cout}")


def test_float_filter_equals_packed_filter_and_dense_kernel_packing():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5, 100)).astype(np.float32)
    kernel = rng.standard_normal((100, 37)).astype(np.float32)
    kernel[rng.random(kernel.shape) < 0.05] = 0.0
    packed = ops.pack_dense_kernel(kernel).numpy()
    np.testing.assert_array_equal(packed, bitpack_np(kernel.T))
    assert packed.shape == (37, 4)
    np.testing.assert_array_equal(ops.bgemm(x, kernel).numpy(), ops.bgemm(x, packed).numpy())


def test_empty_rows():
    kernel = np.ones((33, 5), np.float32)
    y = ops.bgemm(np.zeros((0, 3, 33), np.float32), ops.pack_dense_kernel(kernel))
    assert y.shape == (0, 3, 5)


def test_unknown_shapes_in_a_graph():
    kernel = np.random.default_rng(2).standard_normal((33, 9)).astype(np.float32)
    packed = ops.pack_dense_kernel(kernel)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def f(t):
        return ops.bgemm(t, packed, channels_in=33, output_type="bitpacked")

    x = np.random.default_rng(3).standard_normal((2, 3, 4, 33)).astype(np.float32)
    np.testing.assert_array_equal(f(x).numpy(), bitpack_np(bgemm_np(x, kernel)))


def test_nd_shapes_in_a_graph():
    """Shape functions: leading dimensions kept, unknown ones too."""
    kernel = np.ones((3, 3, 5, 4), np.float32)

    @tf.function(input_signature=[tf.TensorSpec([None, 2, 9, 9, 5], tf.float32)])
    def f(t):
        y = ops.bconv2d(t, ops.pack_filter(kernel), kernel_size=3, output_type="bitpacked")
        assert y.shape.as_list() == [None, 2, 7, 7, 1]
        p = ops.bmaxpool2d(y, 2, channels=4)
        assert p.shape.as_list() == [None, 2, 3, 3, 1]
        g = ops.bgemm(t, np.ones((5, 6), np.float32))
        assert g.shape.as_list() == [None, 2, 9, 9, 6]
        return p

    assert f(np.zeros((1, 2, 9, 9, 5), np.float32)).shape == (1, 2, 3, 3, 1)


# --------------------------------------------------------------------------
# Bad input: clear errors, never a crash
# --------------------------------------------------------------------------


def raw_bgemm(inputs, filt, multiplier, bias, **attrs):
    from lowbit_tf._native import load_tf_ops

    return load_tf_ops().lowbit_bgemm(inputs, filt, multiplier, bias, **attrs)


X = np.zeros((2, 3, 33), np.float32)

FILT = np.zeros((4, 2), np.int32)  # 4 output channels, ceil(33 / 32) words

ONES, ZEROS = np.ones(4, np.float32), np.zeros(4, np.float32)


@pytest.mark.parametrize("args, attrs, message", [
    ((np.float32(1), FILT, ONES, ZEROS), {"channels_in": 33}, "rank"),
    ((X, FILT, ONES, ZEROS), {"channels_in": 32}, "input depth 33"),
    ((X, FILT[:, :1], ONES, ZEROS), {"channels_in": 33}, r"filter must be \[N_out, 2\]"),
    ((X, FILT[None], ONES, ZEROS), {"channels_in": 33}, "rank 2|filter must be"),
    ((X, tf.zeros((32, 4), tf.float32), ONES, ZEROS), {"channels_in": 33},
     r"float filter must be the Keras kernel \[33, N_out\]"),
    ((X, FILT, ONES[:3], ZEROS), {"channels_in": 33}, r"multiplier must have shape \[4\]"),
    ((X, FILT, ONES, ZEROS[:2]), {"channels_in": 33}, r"bias must have shape \[4\]"),
    ((X, FILT, ONES, ZEROS), {"channels_in": 2**25}, "channels_in must be in"),
    ((X, FILT, ONES, ZEROS), {"channels_in": 33, "output_type": "bitpacked"}, "Tout"),
    ((X, FILT, [1.0, np.inf, 1, 1], ZEROS),
     {"channels_in": 33, "output_type": "bitpacked", "Tout": tf.int32}, "finite"),
    ((np.zeros((2, 3, 3), np.int32), FILT, ONES, ZEROS), {"channels_in": 33}, "packed words"),
])
def test_tf_op_rejects_bad_input(args, attrs, message):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        raw_bgemm(*args, **attrs)


@pytest.mark.parametrize("call, error, message", [
    (lambda: ops.bgemm(X.astype(np.float64), FILT), TypeError, "float64"),
    (lambda: ops.bgemm(X, FILT.astype(np.int64)), TypeError, "int64"),
    (lambda: ops.bgemm(X, FILT[None]), ValueError, "2-D"),
    (lambda: ops.bgemm(np.float32(1), FILT), ValueError, "scalar"),
    (lambda: ops.bgemm(X.astype(np.int32), FILT), ValueError, "channels_in"),
    (lambda: ops.bgemm(X, np.zeros((33, 4), np.float32), channels_in=32), ValueError,
     "does not match"),
    (lambda: ops.bgemm(X, FILT, activation="tanh"), ValueError, "tanh"),
    (lambda: ops.bgemm(X, FILT, output_type="packed"), ValueError, "output_type"),
    (lambda: ops.pack_dense_kernel(np.zeros((3, 3, 4))), ValueError, "2-D"),
    (lambda: ops.bconv2d(np.zeros((5, 5, 3), np.float32), np.zeros((3, 3, 3, 2), np.float32)),
     ValueError, "4-D"),
    (lambda: ops.bconv2d(np.zeros((1, 5, 5, 3), np.float32), np.zeros((3, 3, 3), np.float32)),
     ValueError, "HWIO"),
    (lambda: ops.bconv2d(np.zeros((1, 5, 5, 3), np.float32), np.zeros((3, 3, 3, 2), np.float32),
                         kernel_size=2), ValueError, "kernel_size"),
    (lambda: ops.bconv2d(np.zeros((1, 5, 5, 3), np.float32), FILT), ValueError, "kernel_size"),
    (lambda: ops.bmaxpool2d(np.zeros((5, 5, 1), np.int32), 2, channels=3), ValueError, "4-D"),
])
def test_python_api_rejects_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_tf_conv_rejects_bad_float_filter_and_rank():
    from lowbit_tf._native import load_tf_ops

    x = np.zeros((1, 2, 5, 5, 3), np.float32)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="HWIO kernel"):
        load_tf_ops().lowbit_bconv2d(x, tf.zeros((2, 3, 3, 4), tf.float32), np.ones(4),
                                     np.zeros(4), [], channels_in=3, kernel_h=3, kernel_w=3)

    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def conv(t):
        return ops.bconv2d(t, np.zeros((3, 3, 3, 4), np.float32))

    @tf.function(input_signature=[tf.TensorSpec(None, tf.int32)])
    def pool(t):
        return ops.bmaxpool2d(t, 2, channels=3)

    with pytest.raises(tf.errors.InvalidArgumentError, match="input must be 4-D"):
        conv(np.zeros((5, 5, 3), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input must be 4-D"):
        pool(np.zeros((5, 5, 1), np.int32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not fit"):
        pool(np.zeros((2, 1, 1, 5, 1), np.int32))

