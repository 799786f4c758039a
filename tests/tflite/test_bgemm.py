"""The TFLite kernel of LowbitBgemm, and rank-5 LowbitBconv2d / LowbitBMaxPool2d,
in both runtimes: the same bits as the TF op and the NumPy reference (small
batches through the GEMV path too); malformed models and options raise, in a
subprocess (`PYTHONPATH=tests/helpers python tests/tflite/test_bgemm.py
--bad-cases`), so that a crash fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from reference import bconv2d_np, bitpack_np, bmaxpool2d_np
from repo_paths import run_bad_case_worker
from tflite_models import ModelBuilder

tf = pytest.importorskip("tensorflow")

from bgemm_cases import (  # noqa: E402
    case_data,
    gemm_options,
    random_case,
    reference,
    run_tf,
    run_tflite,
    small_batch_mismatches,
    tflite_gemm,
)
from flatbuffers import flexbuffers  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


RUNTIMES = ("ai_edge_litert", "tensorflow")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_small_batches_tflite(runtime):
    def run(case, x, kernel, m, b):
        return run_tflite(case, x, kernel, m, b, runtime)

    assert small_batch_mismatches(run, ks=(33, 257), couts=(17, 70, 300)) == []


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
    results = run_bad_case_worker(__file__, timeout=300)
    assert results["__returncode__"] == 0 and "__done__" in results, results["__stderr__"]
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

