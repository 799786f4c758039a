"""LowbitBgemm (binary dense / GEMM) and the N-d inputs of LowbitBconv2d and
LowbitBMaxPool2d.

NumPy reference (tests/reference.py) = TF op = TFLite kernel, bit for bit, on
random shapes with channel tails (K = 1, 31, 33, 100, 257; N_out 1..70),
leading dimensions, float and bit-packed outputs, and every kernel path
(LOWBIT_KERNEL, in a subprocess as in tests/test_kernels.py). Small batches,
rows 1..9, cross the SIMD kernels' GEMV path (rows below the convolution tile:
AVX2 4, AVX-512 8) into the tiled one, with N_out past several channel blocks. Rank-5 conv and
max-pool inputs equal the rank-4 results per leading index. Bad input raises
(TFLite cases in a subprocess, so that a crash fails a test instead of pytest).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from reference import bconv2d_np, bgemm_np, bitpack_np, bmaxpool2d_np
from test_packed_chain import tricky_transform
from test_tflite_runtime import ModelBuilder

TESTS = Path(__file__).resolve().parent

tf = pytest.importorskip("tensorflow")
from flatbuffers import flexbuffers  # noqa: E402

from lowbit_tf import ops  # noqa: E402
from lowbit_tf._native import kernel_path_names  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]

RUNTIMES = ("ai_edge_litert", "tensorflow")
K_VALUES = (1, 31, 33, 100, 257)


def random_case(rng: np.random.Generator) -> dict:
    rank = int(rng.integers(1, 4))  # input rank: [K], [M, K], [A, B, K]
    return dict(
        leading=[int(d) for d in rng.integers(1, 6, rank - 1)],
        k=int(rng.choice(K_VALUES)),
        cout=int(rng.integers(1, 71)),
        activation=[None, "relu"][int(rng.random() < 0.3)],
        packed_input=bool(rng.random() < 0.5),
        output_type=["float", "bitpacked"][int(rng.random() < 0.4)],
        seed=int(rng.integers(0, 2**31 - 1)),
    )


def case_data(case: dict):
    rng = np.random.default_rng(case["seed"])
    x = rng.standard_normal((*case["leading"], case["k"])).astype(np.float32)
    x[rng.random(x.shape) < 0.05] = 0.0  # sign(0) = +1
    kernel = rng.standard_normal((case["k"], case["cout"])).astype(np.float32)
    if case["output_type"] == "bitpacked":  # flip points on and next to integers
        m, b = tricky_transform(rng, case["cout"], case["k"])
    else:
        m = rng.uniform(-2, 2, case["cout"]).astype(np.float32)
        b = rng.uniform(-3, 3, case["cout"]).astype(np.float32)
    return x, kernel, m, b


def reference(case: dict, x, kernel, m, b) -> np.ndarray:
    y = bgemm_np(x, kernel, m, b, case["activation"])
    return bitpack_np(y) if case["output_type"] == "bitpacked" else y


def run_tf(case: dict, x, kernel, m, b) -> np.ndarray:
    inputs = bitpack_np(x) if case["packed_input"] else x
    return ops.bgemm(inputs, ops.pack_dense_kernel(kernel), m, b, channels_in=case["k"],
                     activation=case["activation"], output_type=case["output_type"]).numpy()


def gemm_options(case: dict, **overrides) -> bytes:
    options = dict(channels_in=case["k"], activation="RELU" if case["activation"] else "NONE",
                   output_type=case["output_type"])
    options.update(overrides)
    return bytes(flexbuffers.Dumps({k: v for k, v in options.items() if v is not None}))


def tflite_gemm(case: dict, kernel, m, b, *, options: bytes | None = None,
                filter_data=None, input_shape=None, input_dtype=None) -> bytes:
    """A model of one LowbitBgemm with constant weights (tests/test_tflite_runtime.py's
    ModelBuilder)."""
    words = ops.packed_words(case["k"])
    depth = words if case["packed_input"] else case["k"]
    in_shape = input_shape or (*case["leading"], depth)
    bitpacked = case["output_type"] == "bitpacked"
    out_depth = ops.packed_words(case["cout"]) if bitpacked else case["cout"]
    mb = ModelBuilder()
    x = mb.tensor(in_shape, input_dtype or (np.int32 if case["packed_input"] else np.float32),
                  name="x")
    fil = bitpack_np(kernel.T) if filter_data is None else filter_data
    f = mb.tensor(fil.shape, fil.dtype, fil, name="filter")
    mt = mb.tensor(m.shape, np.float32, m, name="multiplier")
    bt = mb.tensor(b.shape, np.float32, b, name="bias")
    y = mb.tensor((*in_shape[:-1], out_depth), np.int32 if bitpacked else np.float32, name="y")
    mb.custom_op("LowbitBgemm", [x, f, mt, bt], [y],
                 gemm_options(case) if options is None else options)
    return mb.finish([x], [y])


def run_tflite(case: dict, x, kernel, m, b, runtime: str = "ai_edge_litert") -> np.ndarray:
    from lowbit_tf.lite import Interpreter

    inputs = bitpack_np(x) if case["packed_input"] else x
    model = tflite_gemm(case, kernel, m, b)
    return Interpreter(model_content=model, runtime=runtime, num_threads=2).predict(inputs)


# --------------------------------------------------------------------------
# LowbitBgemm: reference == TF op == TFLite
# --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(40))
def test_tf_op_matches_reference(seed):
    case = random_case(np.random.default_rng(100 + seed))
    x, kernel, m, b = case_data(case)
    got = run_tf(case, x, kernel, m, b)
    expected = reference(case, x, kernel, m, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


# Rows 1..9: the GEMV path of each SIMD kernel (rows < its tile), the tile
# itself and a tile plus one; N_out within one block, at and past a block
# (AVX2 16, AVX-512 32 channels) and over several groups of blocks.
SMALL_ROWS = range(1, 10)
SMALL_COUTS = (1, 15, 17, 33, 70, 129, 300)


def small_batch_case(rows: int, k: int, cout: int, seed: int) -> dict:
    return dict(leading=[rows], k=k, cout=cout, activation=[None, "relu"][seed % 2],
                packed_input=seed % 3 == 0, output_type=["float", "bitpacked"][seed % 4 == 3],
                seed=seed)


def small_batch_mismatches(run, ks=K_VALUES, couts=SMALL_COUTS) -> list:
    """The (rows, k, cout, output_type) where run(case, x, kernel, m, b) is not
    the reference bit for bit."""
    bad = []
    seed = 0
    for rows in SMALL_ROWS:
        for k in ks:
            for cout in couts:
                seed += 1
                case = small_batch_case(rows, k, cout, seed)
                x, kernel, m, b = case_data(case)
                expected = reference(case, x, kernel, m, b).view(np.uint32)
                got = run(case, x, kernel, m, b)
                if got.shape != expected.shape or not np.array_equal(got.view(np.uint32),
                                                                     expected):
                    bad.append((rows, k, cout, case["output_type"]))
    return bad


def test_small_batches_match_reference():
    assert small_batch_mismatches(run_tf) == []


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_small_batches_tflite(runtime):
    def run(case, x, kernel, m, b):
        return run_tflite(case, x, kernel, m, b, runtime)

    assert small_batch_mismatches(run, ks=(33, 257), couts=(17, 70, 300)) == []


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


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(10))
def test_tflite_kernel_matches_tf_op(runtime, seed):
    case = random_case(np.random.default_rng(200 + seed))
    x, kernel, m, b = case_data(case)
    expected = reference(case, x, kernel, m, b)
    np.testing.assert_array_equal(run_tf(case, x, kernel, m, b).view(np.uint32),
                                  expected.view(np.uint32))
    got = run_tflite(case, x, kernel, m, b, runtime)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint32), expected.view(np.uint32))


def test_tf_converter_emits_lowbit_bgemm_with_its_options():
    """TF's converter emits the op as CUSTOM "LowbitBgemm"; our flatbuffer pass
    keeps exactly the documented options and the delegate runs it."""
    from lowbit_converter.flatbuffer_pass import run_pass
    from lowbit_converter.tflite_schema import schema
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(4)
    kernel = rng.standard_normal((70, 20)).astype(np.float32)
    packed = ops.pack_dense_kernel(kernel)
    m = rng.uniform(0.5, 2, 20).astype(np.float32)
    b = rng.uniform(-1, 1, 20).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([2, 3, 70], tf.float32)])
    def fn(x):
        return ops.bgemm(x, packed, m, b, activation="relu")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.allow_custom_ops = True
    model, report = run_pass(converter.convert())
    assert report.custom_ops == {"LowbitBgemm": 1}
    (op,) = [op for op in schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
             .subgraphs[0].operators]
    assert flexbuffers.Loads(bytes(bytearray(op.customOptions))) == {
        "channels_in": 70, "activation": "RELU"}
    x = rng.standard_normal((2, 3, 70)).astype(np.float32)
    np.testing.assert_array_equal(Interpreter(model_content=model).predict(x), fn(x).numpy())
    np.testing.assert_array_equal(fn(x).numpy(), bgemm_np(x, kernel, m, b, "relu"))


# --------------------------------------------------------------------------
# Every kernel path, in a fresh process each (LOWBIT_KERNEL is read when an op
# is created); a path this CPU lacks falls back to a lesser one.
# --------------------------------------------------------------------------

PATHS = ["reference", *kernel_path_names()]  # the native kernel table

PATH_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import test_bgemm as t
bad = [("tf small", c) for c in t.small_batch_mismatches(t.run_tf)]
bad += [("tflite small", c) for c in t.small_batch_mismatches(t.run_tflite, ks=(33,),
                                                               couts=(17, 300))]
for seed in range(24):
    case = t.random_case(np.random.default_rng(300 + seed))
    x, kernel, m, b = t.case_data(case)
    expected = t.reference(case, x, kernel, m, b).view(np.uint32)
    if not np.array_equal(t.run_tf(case, x, kernel, m, b).view(np.uint32), expected):
        bad.append(("tf", seed))
    if seed % 3 == 0 and not np.array_equal(
            t.run_tflite(case, x, kernel, m, b).view(np.uint32), expected):
        bad.append(("tflite", seed))
print("BAD " + json.dumps(bad))
"""


@pytest.mark.parametrize("path", PATHS)
def test_every_kernel_path_is_bit_exact(path):
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", PATH_SCRIPT, str(TESTS)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BAD ")]
    assert line and json.loads(line[-1][4:]) == [], proc.stdout[-2000:]


# --------------------------------------------------------------------------
# N-d inputs of LowbitBconv2d and LowbitBMaxPool2d
# --------------------------------------------------------------------------


def conv_options(cin, kernel, strides, padding, pad_value, activation, output_type) -> bytes:
    return bytes(flexbuffers.Dumps(dict(
        channels_in=cin, kernel_h=kernel[0], kernel_w=kernel[1], stride_h=strides[0],
        stride_w=strides[1], dilation_h=1, dilation_w=1, padding=padding, pad_value=pad_value,
        activation=activation, output_type=output_type)))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
def test_rank5_conv_equals_rank4_per_leading_index(output_type, runtime):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 3, 7, 6, 33)).astype(np.float32)
    kernel = rng.standard_normal((3, 2, 33, 40)).astype(np.float32)
    m = rng.uniform(-2, 2, 40).astype(np.float32)
    b = rng.uniform(-3, 3, 40).astype(np.float32)
    args = dict(kernel_size=(3, 2), strides=(2, 1), padding="SAME", pad_value=1,
                output_type=output_type)
    packed = ops.pack_filter(kernel)
    got = ops.bconv2d(x, packed, m, b, **args).numpy()
    assert got.shape[:2] == (2, 3)
    for i in range(2):
        want = ops.bconv2d(x[i], packed, m, b, **args).numpy()  # rank 4: [3, H, W, C]
        np.testing.assert_array_equal(got[i], want)
        ref = bconv2d_np(x[i], kernel, m, b, (2, 1), (1, 1), "SAME", 1)
        np.testing.assert_array_equal(want, bitpack_np(ref) if output_type == "bitpacked"
                                      else ref)
    # Packed rank-5 input too.
    np.testing.assert_array_equal(
        ops.bconv2d(ops.bitpack(x), packed, m, b, channels_in=33, **args).numpy(), got)

    mb = ModelBuilder()
    xt = mb.tensor(x.shape, np.float32, name="x")
    f = mb.tensor(packed.shape, np.int32, packed.numpy())
    mt, bt = mb.tensor((40,), np.float32, m), mb.tensor((40,), np.float32, b)
    yt = mb.tensor(got.shape, got.dtype, name="y")
    mb.custom_op("LowbitBconv2d", [xt, f, mt, bt], [yt],
                 conv_options(33, (3, 2), (2, 1), "SAME", 1, "NONE", output_type))
    model = mb.finish([xt], [yt])
    np.testing.assert_array_equal(Interpreter(model_content=model, runtime=runtime).predict(x),
                                  got)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_rank5_maxpool_equals_rank4_per_leading_index(runtime):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(6)
    x = (rng.standard_normal((3, 2, 7, 8, 70)) - 0.8).astype(np.float32)
    packed = bitpack_np(x)
    args = dict(strides=(2, 2), padding="SAME")
    got = ops.bmaxpool2d(packed, 3, channels=70, **args).numpy()
    for i in range(3):
        want = ops.bmaxpool2d(packed[i], 3, channels=70, **args).numpy()
        np.testing.assert_array_equal(got[i], want)
        np.testing.assert_array_equal(want, bmaxpool2d_np(packed[i], 70, (3, 3), (2, 2), "SAME"))
    mb = ModelBuilder()
    xt = mb.tensor(packed.shape, np.int32, name="x")
    yt = mb.tensor(got.shape, np.int32, name="y")
    mb.custom_op("LowbitBMaxPool2d", [xt], [yt], bytes(flexbuffers.Dumps(dict(
        channels=70, filter_h=3, filter_w=3, stride_h=2, stride_w=2, padding="SAME"))))
    model = mb.finish([xt], [yt])
    np.testing.assert_array_equal(
        Interpreter(model_content=model, runtime=runtime).predict(packed), got)


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


GOOD = dict(leading=[2, 3], k=33, cout=4, activation=None, packed_input=False,
            output_type="float")


def _bad_tflite_cases() -> dict:
    """name -> (model, input, substring of the error)."""
    rng = np.random.default_rng(8)
    kernel = rng.standard_normal((33, 4)).astype(np.float32)
    m, b = np.ones(4, np.float32), np.zeros(4, np.float32)
    x = rng.standard_normal((2, 3, 33)).astype(np.float32)

    def model(case=GOOD, **kwargs):
        return tflite_gemm(case, kernel, m, b, **kwargs)

    def opts(**overrides):
        return model(options=gemm_options(GOOD, **overrides))

    cases = {
        "ok": (model(), x, "OK"),
        "options_missing": (model(options=b""), x, "custom options are missing"),
        "channels_in_missing": (opts(channels_in=None), x, "channels_in"),
        "channels_in_zero": (opts(channels_in=0), x, "channels_in"),
        "channels_in_mismatch": (opts(channels_in=34), x, "34"),
        "channels_in_words": (opts(channels_in=65), x, "does not match channels_in = 65"),
        "bad_activation": (opts(activation="TANH"), x, "activation"),
        "activation_missing": (opts(activation=None), x, "activation"),
        "bad_output_type": (opts(output_type="packed"), x, "output_type"),
        "output_type_int": (opts(output_type=3), x, "output_type"),
        "filter_float": (model(filter_data=kernel.T.copy()), x,
                         "filter must be INT32 (packed words), got FLOAT32"),
        "filter_words": (model(filter_data=np.zeros((4, 3), np.int32)), x, "filter"),
        "filter_rank3": (model(filter_data=np.zeros((4, 1, 2), np.int32)), x, "rank 2"),
        "input_int8": (model(input_dtype=np.int8), x.astype(np.int8), "INT8"),
        "input_one_value": (model(input_shape=(1,)), np.ones(1, np.float32),
                            "input depth 1 (channels)"),
        "nonfinite": (tflite_gemm(dict(GOOD, output_type="bitpacked"), kernel,
                                  np.array([1, np.nan, 1, 1], np.float32), b), x, "finite"),
    }
    for frac in (0.3, 0.7):
        good = gemm_options(GOOD)
        cases[f"options_truncated_{frac}"] = (
            model(options=good[: int(len(good) * frac)]), x, "LowbitBgemm")
    return cases


def _bad_worker() -> None:
    from lowbit_tf.lite import Interpreter

    for name, (model, x, _) in _bad_tflite_cases().items():
        try:
            Interpreter(model_content=model).predict(x)
            result = None, ""
        except Exception as e:  # noqa: BLE001 - reported to the test
            result = type(e).__name__, str(e)
        print(json.dumps({"name": name, "raised": result[0], "message": result[1][-600:]}),
              flush=True)
    print(json.dumps({"name": "__done__"}), flush=True)


@pytest.fixture(scope="module")
def bad_results() -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, __file__, "--bad-cases"], capture_output=True,
                          text=True, timeout=300, env=env)
    results = {json.loads(ln)["name"]: json.loads(ln) for ln in proc.stdout.splitlines()
               if ln.startswith("{")}
    assert proc.returncode == 0 and "__done__" in results, proc.stderr[-3000:]
    return results


@pytest.mark.parametrize("name", sorted(_bad_tflite_cases()))
def test_tflite_bad_input_raises(name, bad_results):
    expect = _bad_tflite_cases()[name][2]
    result = bad_results[name]
    if expect == "OK":
        assert result["raised"] is None, result["message"]
        return
    assert result["raised"] is not None, name
    assert expect in result["message"], result["message"]


if __name__ == "__main__" and sys.argv[1:] == ["--bad-cases"]:
    _bad_worker()


# --------------------------------------------------------------------------
# Converter: binary QuantDense on an N-d input -> LowbitBgemm
# --------------------------------------------------------------------------


def test_converted_nd_dense_chain_reproduces_keras():
    """QuantDense layers on [N, T, K]: BatchNorm and ReLU folded into the first,
    a float BatchNorm after it, then d2 -> BatchNorm -> d3 bit-packed: three
    LowbitBgemm ops on rank-3 tensors, no reshape, TFLite output equal to Keras."""
    from keras_helpers import randomize_batch_norms

    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_converter.tflite_schema import schema
    from lowbit_tf import layers
    from lowbit_tf._keras import keras
    from lowbit_tf.lite import Interpreter

    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    inputs = keras.Input((5, 70))
    h = layers.QuantDense(40, name="d1", **binary)(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.BatchNormalization(name="bn_between")(h)
    h = layers.QuantDense(33, name="d2", **binary)(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = layers.QuantDense(9, name="d3", bias_initializer="random_normal", **binary)(h)
    model = keras.Model(inputs, h)
    randomize_batch_norms(model)
    x = np.random.default_rng(9).standard_normal((3, 5, 70)).astype(np.float32)
    expected = model(x, training=False).numpy()
    _, plans = lower_model(model)
    assert plans["d2"].packed_output and plans["d3"].packed_input
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops == {"LowbitBgemm": 3}
    flat = schema.ModelT.InitFromPackedBuf(bytearray(result.tflite_model), 0)
    codes = [flat.operatorCodes[op.opcodeIndex] for op in flat.subgraphs[0].operators]
    assert all(code.customCode for code in codes[-2:])  # d2 -> d3: nothing in between
    got = Interpreter(model_content=result.tflite_model).predict(x)
    assert got.shape == (3, 5, 9)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
