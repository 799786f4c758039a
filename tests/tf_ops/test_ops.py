"""The custom TF ops (bitpack, LowbitBconv2d) against the NumPy reference, bit
for bit; the filter cache; bad input raises clear exceptions; the library's
TF version check. Every kernel path: tests/core/test_ops.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from packed_chain_cases import tricky_transform
from reference import bconv2d_np, bgemm_np, bitpack_np

from lowbit_tf import ops
from lowbit_tf.quantizers import ste_sign

CHANNELS = st.sampled_from([1, 2, 7, 31, 32, 33, 63, 64, 65, 96, 130])


@st.composite
def conv_cases(draw: st.DrawFn) -> dict:
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    dh, dw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    padding = draw(st.sampled_from(["SAME", "VALID"]))
    # VALID needs the dilated kernel to fit.
    min_h = (kh - 1) * dh + 1 if padding == "VALID" else 1
    min_w = (kw - 1) * dw + 1 if padding == "VALID" else 1
    return dict(
        batch=draw(st.integers(1, 3)),
        height=draw(st.integers(min_h, min_h + 7)),
        width=draw(st.integers(min_w, min_w + 7)),
        cin=draw(CHANNELS),
        cout=draw(st.integers(1, 9)),
        kernel=(kh, kw),
        strides=(draw(st.integers(1, 3)), draw(st.integers(1, 3))),
        dilations=(dh, dw),
        padding=padding,
        pad_value=draw(st.sampled_from([0, 1])),
        activation=draw(st.sampled_from([None, "relu"])),
        seed=draw(st.integers(0, 2**31 - 1)),
    )


def make_tensors(case: dict):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal(
        (case["batch"], case["height"], case["width"], case["cin"])).astype(np.float32)
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["cout"])).astype(np.float32)
    multiplier = rng.uniform(-2, 2, case["cout"]).astype(np.float32)
    bias = rng.uniform(-3, 3, case["cout"]).astype(np.float32)
    return x, kernel, multiplier, bias


def reference(case: dict, x, kernel, multiplier, bias) -> np.ndarray:
    return bconv2d_np(x, kernel, multiplier, bias, case["strides"], case["dilations"],
                      case["padding"], case["pad_value"], case["activation"])


def run_op(case: dict, inputs, kernel, multiplier, bias) -> np.ndarray:
    return ops.bconv2d(
        inputs, ops.pack_filter(kernel), multiplier, bias, kernel_size=case["kernel"],
        channels_in=case["cin"],
        strides=case["strides"], dilations=case["dilations"], padding=case["padding"],
        pad_value=case["pad_value"], activation=case["activation"]).numpy()


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 5), min_size=0, max_size=3), channels=CHANNELS,
       seed=st.integers(0, 2**31 - 1))
def test_bitpack_matches_numpy(shape, channels, seed):
    x = np.random.default_rng(seed).standard_normal((*shape, channels)).astype(np.float32)
    x.flat[:: max(1, x.size // 5)] = 0.0  # zeros binarise to +1 (bit 0)
    np.testing.assert_array_equal(ops.bitpack(x).numpy(), bitpack_np(x))


def test_bitpack_edge_values():
    x = np.array([[0.0, -0.0, -1e-38, 1e-38, np.nan, -np.inf, np.inf, -5.0, -1.2e-38, -np.nan]],
                 np.float32)
    # bits: the negative normal numbers and -inf (indices 5, 7, 8). The negative
    # subnormal -1e-38 is +1, as in the Keras training path (TF flushes it).
    expected = (1 << 5) | (1 << 7) | (1 << 8)
    assert ops.bitpack(x).numpy()[0, 0] == expected
    assert bitpack_np(x)[0, 0] == expected
    signs = ste_sign(x).numpy()[0]
    np.testing.assert_array_equal(np.flatnonzero(signs == -1), [5, 7, 8])


@settings(max_examples=120, deadline=None)
@given(case=conv_cases())
def test_bconv2d_matches_numpy(case):
    x, kernel, multiplier, bias = make_tensors(case)
    expected = reference(case, x, kernel, multiplier, bias)
    np.testing.assert_array_equal(run_op(case, x, kernel, multiplier, bias), expected)
    # The same through an explicitly packed input.
    np.testing.assert_array_equal(run_op(case, ops.bitpack(x), kernel, multiplier, bias), expected)


def test_bconv2d_ignores_garbage_in_padding_bits():
    case = dict(batch=1, height=5, width=5, cin=33, cout=3, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=1, activation=None, seed=3)
    x, kernel, multiplier, bias = make_tensors(case)
    packed = ops.bitpack(x).numpy()
    packed[..., 1] |= np.int32(-2)  # set every bit above channel 32
    np.testing.assert_array_equal(run_op(case, packed, kernel, multiplier, bias),
                                  reference(case, x, kernel, multiplier, bias))


def test_bconv2d_in_tf_function_with_unknown_batch():
    case = dict(batch=4, height=6, width=7, cin=65, cout=5, kernel=(3, 3), strides=(2, 1),
                dilations=(1, 2), padding="SAME", pad_value=0, activation="relu", seed=11)
    x, kernel, multiplier, bias = make_tensors(case)
    filt = ops.pack_filter(kernel)

    @tf.function(input_signature=[tf.TensorSpec([None, 6, 7, 65], tf.float32)])
    def f(t):
        return ops.bconv2d(t, filt, multiplier, bias, kernel_size=3, strides=(2, 1),
                           dilations=(1, 2),
                           padding="SAME", activation="relu")

    assert f.get_concrete_function().output_shapes.as_list() == [None, 3, 7, 5]
    np.testing.assert_array_equal(f(x).numpy(), reference(case, x, kernel, multiplier, bias))


def test_filter_cache_follows_variable_updates():
    """The TF kernels keep the re-laid-out filter across calls and skip reading a
    filter that is the very tensor they prepared it from. A variable assigned
    between calls (in place where TensorFlow can, copy-on-write where the
    kernel's cache holds its buffer) must never serve the old filter: packed
    int32 and float filters, conv and dense, eager and inside one tf.function."""
    from reference import bgemm_np

    rng = np.random.default_rng(5)
    case = dict(batch=2, height=5, width=6, cin=40, cout=7, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=0, activation=None, seed=0)
    x = rng.standard_normal((2, 5, 6, 40)).astype(np.float32)
    kernels = [rng.standard_normal((3, 3, 40, 7)).astype(np.float32) for _ in range(3)]
    ones, zeros = np.ones(7, np.float32), np.zeros(7, np.float32)
    want = [reference(case, x, k, ones, zeros) for k in kernels]

    def conv(filt):
        return ops.bconv2d(x, filt, kernel_size=3, channels_in=40, padding="SAME")

    for packed in (True, False):
        variable = tf.Variable(ops.pack_filter(kernels[0]) if packed else kernels[0])
        for i in (0, 1, 2, 1):
            variable.assign(ops.pack_filter(kernels[i]) if packed else kernels[i])
            np.testing.assert_array_equal(conv(variable).numpy(), want[i])
            np.testing.assert_array_equal(conv(variable).numpy(), want[i])  # cached

        @tf.function
        def two_calls(first, second, variable=variable):
            variable.assign(first)
            y1 = conv(variable)
            with tf.control_dependencies([y1]):
                variable.assign(second)
            with tf.control_dependencies([variable.value()]):
                y2 = conv(variable)
            return y1, y2

        pick = (lambda k: ops.pack_filter(k)) if packed else (lambda k: tf.constant(k))
        y1, y2 = two_calls(pick(kernels[2]), pick(kernels[0]))
        np.testing.assert_array_equal(y1.numpy(), want[2])
        np.testing.assert_array_equal(y2.numpy(), want[0])

    # Dense: an in-place update of a variable that nothing else references.
    xs = rng.standard_normal((3, 70)).astype(np.float32)
    mats = [rng.standard_normal((70, 9)).astype(np.float32) for _ in range(2)]
    variable = tf.Variable(ops.pack_dense_kernel(mats[0]))
    for i in (0, 1, 0):
        variable.assign(ops.pack_dense_kernel(mats[i]))
        got = ops.bgemm(xs, variable, channels_in=70).numpy()
        np.testing.assert_array_equal(got, bgemm_np(xs, mats[i]))


def _aligned(array: np.ndarray, alignment: int = 64) -> np.ndarray:
    """A copy of `array` whose data starts on an `alignment`-byte boundary
    (eager TF then wraps it without copying)."""
    raw = np.empty(array.nbytes + alignment, np.uint8)
    start = -raw.ctypes.data % alignment
    out = raw[start:start + array.nbytes].view(array.dtype).reshape(array.shape)
    out[...] = array
    return out


def _aliases(array: np.ndarray) -> list:
    """Tensors that share `array`'s memory: a DLPack import, and the array
    itself (64-byte aligned, as the raw op functions receive it)."""
    return [tf.experimental.dlpack.from_dlpack(array.__dlpack__()), array]


def test_filter_cache_sees_in_place_writes_to_memory_tf_does_not_own():
    """A filter tensor that wraps memory TensorFlow does not own (DLPack, a
    NumPy array eager wraps without copying) keeps its pointer, dtype and shape
    when its owner writes it in place: the kernels must not serve the filter
    prepared from the old contents (issue 13, defect 2)."""
    from reference import bgemm_np

    rng = np.random.default_rng(8)
    case = dict(batch=1, height=5, width=5, cin=40, cout=6, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=0, activation=None, seed=0)
    x = rng.standard_normal((1, 5, 5, 40)).astype(np.float32)
    kernels = [rng.standard_normal((3, 3, 40, 6)).astype(np.float32) for _ in range(2)]
    want = [reference(case, x, k, np.ones(6, np.float32), np.zeros(6, np.float32))
            for k in kernels]
    raw = ops.load_tf_ops()
    conv_attrs = dict(channels_in=40, kernel_h=3, kernel_w=3, stride_h=1, stride_w=1,
                      dilation_h=1, dilation_w=1, padding="SAME", pad_value=0,
                      activation="NONE")
    for packed in (False, True):
        source = [ops.pack_filter(k).numpy() if packed else k for k in kernels]
        storage = _aligned(source[0])
        for alias in _aliases(storage):
            storage[...] = source[0]
            np.testing.assert_array_equal(
                ops.bconv2d(x, alias, kernel_size=3, channels_in=40, padding="SAME"), want[0])
            storage[...] = source[1]
            np.testing.assert_array_equal(
                ops.bconv2d(x, alias, kernel_size=3, channels_in=40, padding="SAME"), want[1])
        # The generated op function, given the NumPy array itself.
        storage[...] = source[0]

        def raw_conv(storage=storage):
            return raw.lowbit_bconv2d(x, storage, np.ones(6, np.float32),
                                      np.zeros(6, np.float32), [], **conv_attrs,
                                      output_type="float", epilogue="none", Tout=tf.float32)
        np.testing.assert_array_equal(raw_conv(), want[0])
        storage[...] = source[1]
        np.testing.assert_array_equal(raw_conv(), want[1])

    xs = rng.standard_normal((3, 70)).astype(np.float32)
    mats = [rng.standard_normal((70, 9)).astype(np.float32) for _ in range(2)]
    storage = _aligned(ops.pack_dense_kernel(mats[0]).numpy())
    for alias in _aliases(storage):
        for i in (0, 1):
            storage[...] = ops.pack_dense_kernel(mats[i]).numpy()
            np.testing.assert_array_equal(ops.bgemm(xs, alias, channels_in=70),
                                          bgemm_np(xs, mats[i]))

    planes = [np.sign(rng.standard_normal((2, 3, 3, 40, 6))).astype(np.float32) + 0.0
              for _ in range(2)]
    alphas = np.ones((2, 6), np.float32)
    storage = _aligned(ops.pack_filter_planes(planes[0]).numpy())
    for alias in _aliases(storage):
        results = []
        for i in (0, 1):
            storage[...] = ops.pack_filter_planes(planes[i]).numpy()
            results.append(ops.multibit_conv2d(x, alias, alphas, [1.0], activation_mode="sign",
                                               kernel_size=3, padding="SAME").numpy())
        for i in (0, 1):
            expected = ops.multibit_conv2d(x, ops.pack_filter_planes(planes[i]), alphas, [1.0],
                                           activation_mode="sign", kernel_size=3,
                                           padding="SAME").numpy()
            np.testing.assert_array_equal(results[i], expected)


def test_bconv2d_empty_batch():
    out = ops.bconv2d(np.zeros((0, 4, 4, 8), np.float32), ops.pack_filter(np.ones((3, 3, 8, 2))),
                      kernel_size=3, padding="SAME")
    assert out.shape == (0, 4, 4, 2)


def test_multithreaded_equals_single_threaded():
    """A shape big enough to be split over TF's intra-op pool."""
    case = dict(batch=2, height=20, width=20, cin=130, cout=48, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=0, activation=None, seed=5)
    x, kernel, multiplier, bias = make_tensors(case)
    np.testing.assert_array_equal(run_op(case, x, kernel, multiplier, bias),
                                  reference(case, x, kernel, multiplier, bias))


# ---------------------------------------------------------------------------
# Bad input: clear exceptions, from Python and from inside the op.

def raw_bconv2d(inputs, filt, multiplier, bias, **attrs):
    """Calls the op directly, bypassing the Python checks, to test the C++ ones."""
    from lowbit_tf._native import load_tf_ops

    attrs = {"kernel_h": 3, "kernel_w": 3, **attrs}
    return load_tf_ops().lowbit_bconv2d(inputs, filt, multiplier, bias, [], **attrs)


X = np.zeros((1, 5, 5, 33), np.float32)

FILT = np.zeros((4, 10), np.int32)  # 4 output channels, ceil(3 * 3 * 33 / 32) words

ONES, ZEROS = np.ones(4, np.float32), np.zeros(4, np.float32)


@pytest.mark.parametrize("args, attrs, message", [
    ((X[0], FILT, ONES, ZEROS), {"channels_in": 33}, "must be rank 4|4-D"),
    ((X, FILT, ONES, ZEROS), {"channels_in": 32}, "input depth 33"),
    ((X, FILT[:, :9], ONES, ZEROS), {"channels_in": 33}, "filter has 9 packed words"),
    ((X, FILT[None], ONES, ZEROS), {"channels_in": 33}, "filter must be 2-D|rank 2"),
    ((X, FILT, ONES, ZEROS), {"channels_in": 33, "kernel_h": 2**20}, "receptive field"),
    ((X, FILT, ONES[:3], ZEROS), {"channels_in": 33}, r"multiplier must have shape \[4\]"),
    ((X, FILT, ONES, ZEROS[:2]), {"channels_in": 33}, r"bias must have shape \[4\]"),
    ((X, FILT, ONES, ZEROS), {"channels_in": 33, "pad_value": 2},
     r"option 'pad_value' = 2 is out of range \[0, 1\]"),
    ((np.zeros((1, 5, 5, 2), np.int32), FILT, ONES, ZEROS), {"channels_in": 33, "stride_h": 0},
     "stride_h"),
    ((X[:, :2], FILT, ONES, ZEROS), {"channels_in": 33, "padding": "VALID"}, "does not fit"),
])
def test_op_rejects_bad_input(args, attrs, message):
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        raw_bconv2d(*args, **attrs)


def test_op_rejects_bad_input_inside_graph():
    """Checks also run when shapes are unknown until run time (inside the kernel)."""
    @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
    def f(t):
        return raw_bconv2d(t, FILT, ONES, ZEROS, channels_in=33)

    with pytest.raises(tf.errors.InvalidArgumentError, match="input depth 8"):
        f(np.zeros((1, 5, 5, 8), np.float32))
    with pytest.raises(tf.errors.InvalidArgumentError, match="input must be 4-D"):
        f(np.zeros((5, 5, 33), np.float32))


@pytest.mark.parametrize("call, error, message", [
    (lambda: ops.bitpack(np.zeros(3, np.int32)), TypeError, "dtype int32"),
    (lambda: ops.bitpack(np.float32(1)), ValueError, "scalar"),
    (lambda: ops.pack_filter(np.zeros((3, 3, 4))), ValueError, "4-D HWIO"),
    (lambda: ops.bconv2d(X, FILT, kernel_size=(3, 0)), ValueError, "kernel_size"),
    (lambda: ops.bconv2d(X.astype(np.float64), FILT, kernel_size=3), TypeError, "float64"),
    (lambda: ops.bconv2d(X, FILT.astype(np.float32), kernel_size=3), ValueError,
     "4-D HWIO kernel"),
    (lambda: ops.bconv2d(X, FILT.astype(np.int64), kernel_size=3), TypeError,
     "filter must be packed int32 or a float32 HWIO kernel"),
    (lambda: ops.bconv2d(X, FILT, padding="FULL", kernel_size=3), ValueError, "'FULL'"),
    (lambda: ops.bconv2d(X, FILT, pad_value=0.5, kernel_size=3), ValueError, "0.5"),
    (lambda: ops.bconv2d(X, FILT, strides=(1, 0), kernel_size=3), ValueError, r"\(1, 0\)"),
    (lambda: ops.bconv2d(X, FILT, activation="tanh", kernel_size=3), ValueError, "tanh"),
    (lambda: ops.bconv2d(np.zeros((1, 5, 5, 2), np.int32), FILT, kernel_size=3), ValueError,
     "channels_in"),
])
def test_python_api_rejects_bad_input(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_version_mismatch_is_reported_with_both_versions():
    from lowbit_tf._native import NativeLibraryError, check_tensorflow_version

    check_tensorflow_version("2.21.0", "2.21.3")
    with pytest.raises(NativeLibraryError, match=r"built against TensorFlow 2\.21\.0.*2\.20\.1"):
        check_tensorflow_version("2.21.0", "2.20.1")


def test_built_version_matches_running_tensorflow():
    from lowbit_tf._native import built_tensorflow_version

    assert built_tensorflow_version().split(".")[:2] == tf.__version__.split(".")[:2]


def test_tf_ops_library_override(tmp_path):
    """$LOWBIT_TF_OPS_LIBRARY loads another build of the op library (a sanitizer
    build, docs/testing.md); a path that is not a file is named."""
    from lowbit_tf import _native

    copy = tmp_path / "liblowbit_tf_ops_copy.so"
    copy.write_bytes(_native.TF_OPS_LIBRARY.read_bytes())
    code = textwrap.dedent("""
        import numpy as np
        from lowbit_tf import _native, ops
        print(_native.tf_ops_library_path())
        print(int(ops.bitpack(np.array([[-1.0, 2.0]], np.float32)).numpy()[0, 0]))
    """)
    env = {**os.environ, "LOWBIT_TF_OPS_LIBRARY": str(copy), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[-2:] == [str(copy), "1"]
    env["LOWBIT_TF_OPS_LIBRARY"] = str(tmp_path / "missing.so")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert proc.returncode != 0 and "missing.so does not name a file" in proc.stderr



@pytest.mark.parametrize("op", ["bconv2d", "bgemm"])
def test_bitpacked_thresholds_follow_a_changed_multiplier_and_bias(op):
    """The TF kernels keep the bit-packed output's thresholds per kernel
    instance (binary_kernel_util.h, ThresholdCache): one tf.function called
    with new multipliers and biases must follow them (the depthwise op's
    twin: tests/tf_ops/test_bdepthwise.py)."""
    rng = np.random.default_rng(11)
    cin, cout = 40, 70
    kernel = rng.standard_normal((3, 3, cin, cout)).astype(np.float32)
    if op == "bgemm":
        kernel = kernel.reshape(-1, cout)

    @tf.function
    def run(x_, m_, b_):
        if op == "bgemm":
            return ops.bgemm(x_, kernel, m_, b_, output_type="bitpacked")
        return ops.bconv2d(x_, kernel, m_, b_, padding="SAME", output_type="bitpacked")

    def reference(x_, m_, b_):
        if op == "bgemm":
            return bitpack_np(bgemm_np(x_, kernel, m_, b_))
        return bitpack_np(bconv2d_np(x_, kernel, m_, b_, padding="SAME"))

    m, b = tricky_transform(rng, cout, kernel.size // cout)
    b2 = b.copy()
    b2[3] = -b2[3] + 1.0
    m3, b3 = tricky_transform(rng, cout, kernel.size // cout)
    shape = (2, kernel.shape[0]) if op == "bgemm" else (1, 5, 6, cin)
    x = rng.standard_normal(shape).astype(np.float32)
    for m_i, b_i in ((m, b), (m, b), (m, b2), (m3, b3), (m3, b3)):
        got = run(tf.constant(x), tf.constant(m_i), tf.constant(b_i)).numpy()
        np.testing.assert_array_equal(got, reference(x, m_i, b_i))
