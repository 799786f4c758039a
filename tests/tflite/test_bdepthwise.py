"""The TFLite kernel of LowbitBDepthwiseConv2d in both runtimes: the same bits as
the TF op; malformed options and tensors raise, in a subprocess
(`PYTHONPATH=tests/helpers python tests/tflite/test_bdepthwise.py --bad-cases
RUNTIME`), so that a crash fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
from bdepthwise_cases import case_data, random_case, run_tf, weight_sequence
from flatbuffers import flexbuffers
from reference import bitpack_np
from repo_paths import run_bad_case_worker
from tflite_models import ModelBuilder

from lowbit_tf import lite

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


RUNTIMES = ("ai_edge_litert", "tensorflow")


# --------------------------------------------------------------------------
# TFLite kernel == TF op
# --------------------------------------------------------------------------


def op_options(case: dict, output_type: str = "float") -> dict:
    return dict(channels_in=case["cin"], depth_multiplier=case["dm"],
                kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
                stride_h=case["strides"][0], stride_w=case["strides"][1],
                dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
                padding=case["padding"], pad_value=case["pad_value"],
                activation="RELU" if case["activation"] else "NONE", output_type=output_type)


def tflite_model(x: np.ndarray, filt: np.ndarray, m, b, options: dict | bytes,
                 out_dtype=np.float32, extra_inputs: int = 0) -> bytes:
    """input -> LowbitBDepthwiseConv2d -> output; `options` a dict (None values
    drop the key) or raw custom_options bytes. The output shape is set by the
    kernel at Prepare."""
    mb = ModelBuilder()
    xi = mb.tensor(x.shape, x.dtype, name="x")
    tensors = [xi, mb.tensor(filt.shape, filt.dtype, filt, name="filter"),
               mb.tensor(m.shape, m.dtype, m, name="multiplier"),
               mb.tensor(b.shape, b.dtype, b, name="bias")]
    tensors += [tensors[-1]] * extra_inputs
    if extra_inputs < 0:
        tensors = tensors[:extra_inputs]
    y = mb.tensor((1,), out_dtype, name="y")
    if isinstance(options, dict):
        options = bytes(flexbuffers.Dumps({k: v for k, v in options.items() if v is not None}))
    mb.custom_op("LowbitBDepthwiseConv2d", tensors, [y], options)
    return mb.finish([xi], [y])


def packed_filter_np(kernel: np.ndarray) -> np.ndarray:
    kh, kw, c, dm = kernel.shape
    return bitpack_np(kernel.reshape(kh, kw, c * dm))


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(10))
def test_tflite_kernel_matches_tf_op(runtime, seed):
    case = random_case(np.random.default_rng(200 + seed))
    output_type = "bitpacked" if seed % 3 == 2 else "float"
    x, kernel, m, b = case_data(case, seed, tricky=output_type == "bitpacked")
    expected = run_tf(case, x, kernel, m, b, output_type)
    x_in = bitpack_np(x) if case["packed_input"] else x
    if seed % 4 == 1:  # rank 5: [2, n, H, W, C]
        x_in = np.stack([x_in, x_in[::-1]])
        expected = np.stack([expected, expected[::-1]])
    model = tflite_model(x_in, packed_filter_np(kernel), m, b, op_options(case, output_type),
                         np.int32 if output_type == "bitpacked" else np.float32)
    got = lite.Interpreter(model_content=model, runtime=runtime, num_threads=2).predict(x_in)
    assert got.shape == expected.shape and got.dtype == expected.dtype
    np.testing.assert_array_equal(got, expected)


# Float input on the layers whose rows the AVX-512 kernel binarises itself
# (depth multiplier 1, whole words of channels: core/bdepthwise.h), with the
# float values whose sign is easy to get wrong; other CPUs pack first. The TF
# op's float input, its packed input and the TFLite kernel give the same bits.
FUSED_CASES = [
    dict(n=1, h=9, w=11, cin=64, dm=1, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
         padding="SAME", pad_value=0, activation=None),
    dict(n=2, h=8, w=7, cin=96, dm=1, kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
         padding="SAME", pad_value=1, activation="relu"),
    dict(n=1, h=10, w=9, cin=32, dm=1, kernel=(5, 3), strides=(2, 1), dilations=(1, 2),
         padding="VALID", pad_value=0, activation=None),
    dict(n=1, h=5, w=6, cin=256, dm=1, kernel=(3, 3), strides=(2, 2), dilations=(1, 1),
         padding="SAME", pad_value=0, activation=None),
    # Binarised straight into the stride phases: three phases, 64 channels
    # (the unrolled packer), batch 2; an odd word count (5 words: a 64-bit
    # store per word pair, then one word); a dilated tap across the phases.
    dict(n=2, h=7, w=13, cin=64, dm=1, kernel=(3, 3), strides=(1, 3), dilations=(1, 1),
         padding="SAME", pad_value=1, activation="relu"),
    dict(n=1, h=6, w=10, cin=160, dm=1, kernel=(3, 3), strides=(2, 2), dilations=(2, 1),
         padding="SAME", pad_value=0, activation=None),
    dict(n=2, h=5, w=9, cin=64, dm=1, kernel=(3, 3), strides=(2, 2), dilations=(1, 2),
         padding="VALID", pad_value=0, activation=None),
]


@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
@pytest.mark.parametrize("index", range(len(FUSED_CASES)))
def test_float_input_binarised_in_the_kernel(index, output_type):
    case = dict(FUSED_CASES[index], packed_input=False)
    x, kernel, m, b = case_data(case, 40 + index, tricky=output_type == "bitpacked")
    specials = np.array([0.0, -0.0, np.nan, -np.nan, np.inf, -np.inf, 1e-40, -1e-40, -1e-30],
                        np.float32)
    rng = np.random.default_rng(index)
    where = rng.random(x.shape) < 0.3
    x[where] = rng.choice(specials, int(where.sum()))
    expected = run_tf(dict(case, packed_input=True), x, kernel, m, b, output_type)
    np.testing.assert_array_equal(run_tf(case, x, kernel, m, b, output_type), expected)
    model = tflite_model(x, packed_filter_np(kernel), m, b, op_options(case, output_type),
                         np.int32 if output_type == "bitpacked" else np.float32)
    for runtime in RUNTIMES:
        got = lite.Interpreter(model_content=model, runtime=runtime, num_threads=1).predict(x)
        np.testing.assert_array_equal(got, expected)


# Malformed options and tensors, each: (model, input, expected message).
BAD_CASE = dict(n=1, h=5, w=5, cin=33, dm=2, kernel=(3, 3), strides=(1, 1), dilations=(1, 1),
                padding="SAME", pad_value=0, activation=None)


def _bad_cases() -> dict:
    x, kernel, m, b = case_data(BAD_CASE, 3)
    filt = packed_filter_np(kernel)
    good = op_options(BAD_CASE)

    def model(options=None, x_=x, filt_=filt, m_=m, b_=b, **kwargs):
        return tflite_model(x_, filt_, m_, b_, good if options is None else options, **kwargs)

    def opts(**changes):
        return dict(good, **changes)

    return {
        "control": (model(), x, "OK"),
        "no_options": (model(b""), x, "custom options are missing"),
        "corrupt_options": (model(b"\x00\x01\x02\x03"), x, "bad custom options"),
        "missing_channels_in": (model(opts(channels_in=None)), x, "channels_in"),
        "missing_depth_multiplier": (model(opts(depth_multiplier=None)), x, "depth_multiplier"),
        "depth_multiplier_0": (model(opts(depth_multiplier=0)), x, "depth_multiplier"),
        "kernel_h_string": (model(opts(kernel_h="3")), x, "kernel_h"),
        "stride_negative": (model(opts(stride_w=-1)), x, "stride_w"),
        "padding_full": (model(opts(padding="FULL")), x, "padding"),
        "pad_value_2": (model(opts(pad_value=2)), x, "pad_value"),
        "activation_tanh": (model(opts(activation="TANH")), x, "activation"),
        "output_type_packed": (model(opts(output_type="packed")), x, "output_type"),
        "too_many_outputs_channels": (
            model(opts(channels_in=2**20, depth_multiplier=2**11)), x, "exceed"),
        "kernel_too_large": (model(opts(kernel_h=5000, kernel_w=5000)), x, "exceeds"),
        "valid_too_large": (model(opts(padding="VALID", dilation_h=3)), x, "does not fit"),
        "filter_shape": (model(filt_=filt[:, :, :2]), x, "filter must have shape"),
        "filter_float": (model(filt_=filt.astype(np.float32)), x, "filter must be INT32"),
        "multiplier_shape": (model(m_=m[:65]), x, "multiplier must have shape"),
        "bias_int": (model(b_=b.astype(np.int32)), x, "bias must be FLOAT32"),
        "input_depth": (model(x_=x[..., :32]), x[..., :32], "input depth 32 (channels)"),
        "packed_input_depth": (model(x_=bitpack_np(x)[..., :1]), bitpack_np(x)[..., :1],
                               "packed words"),
        "input_rank3": (model(x_=x[0]), x[0], "rank >= 4"),
        "input_int8": (model(x_=x.astype(np.int8)), x.astype(np.int8),
                       "input is INT8 but has no quantization"),
        "input_int16": (model(x_=x.astype(np.int16)), x.astype(np.int16),
                        "input must be FLOAT32, INT32 (packed) or INT8, got INT16"),
        "three_inputs": (model(extra_inputs=-1), x, "expected 4 inputs"),
        "five_inputs": (model(extra_inputs=1), x, "expected 4 inputs"),
        "nonfinite_bitpacked": (
            model(opts(output_type="bitpacked"), m_=np.where(np.arange(66) == 9, np.inf, m)
                  .astype(np.float32), out_dtype=np.int32), x, "finite"),
    }


def _worker(runtime: str) -> None:
    """Runs every bad case, one JSON line each (flushed: a crash shows where)."""
    for name, (model, x, _) in _bad_cases().items():
        try:
            lite.Interpreter(model_content=model, runtime=runtime).predict(x)
            raised, message = None, ""
        except Exception as e:  # noqa: BLE001 - reported to the test
            raised, message = type(e).__name__, str(e)
        print(json.dumps({"name": name, "raised": raised, "message": message[-600:]}),
              flush=True)
    print(json.dumps({"name": "__done__"}), flush=True)


_RESULTS: dict = {}


def _worker_results(runtime: str) -> dict:
    if runtime not in _RESULTS:
        _RESULTS[runtime] = run_bad_case_worker(__file__, runtime)
    return _RESULTS[runtime]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tflite_bad_inputs_raise_without_crashing(runtime):
    results = _worker_results(runtime)
    assert results["__returncode__"] == 0 and "__done__" in results, results["__stderr__"]
    for name, (_, _, expect) in _bad_cases().items():
        result = results[name]
        if expect == "OK":
            assert result["raised"] is None, result["message"]
        else:
            assert result["raised"] in ("ModelError", "ValueError", "RuntimeError"), (name, result)
            assert expect in result["message"], (name, result["message"])


# The kernel keeps the layer's plan (filter layout, thresholds) between
# invocations (bdepthwise_op.cc, UpdatePlan): new weights, given as model
# inputs or written into the model's constants with set_tensor, must give the
# TF op's result again, bit for bit.
PLAN_CASE = dict(n=1, h=6, w=7, cin=70, dm=1, kernel=(3, 3), strides=(2, 1), dilations=(1, 1),
                 padding="SAME", pad_value=0, activation=None, packed_input=False)


@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kept_plan_follows_weights_given_as_inputs(runtime, output_type):
    x, sequence = weight_sequence(PLAN_CASE)
    kernel, m, b = sequence[0]
    filt = packed_filter_np(kernel)
    mb = ModelBuilder()
    xi = mb.tensor(x.shape, np.float32, name="x")
    fi = mb.tensor(filt.shape, np.int32, name="filter")
    mi = mb.tensor(m.shape, np.float32, name="multiplier")
    bi = mb.tensor(b.shape, np.float32, name="bias")
    y = mb.tensor((1,), np.int32 if output_type == "bitpacked" else np.float32, name="y")
    mb.custom_op("LowbitBDepthwiseConv2d", [xi, fi, mi, bi], [y],
                 bytes(flexbuffers.Dumps(op_options(PLAN_CASE, output_type))))
    interp = lite.Interpreter(model_content=mb.finish([xi, fi, mi, bi], [y]), runtime=runtime)
    for k_i, m_i, b_i in sequence:
        got = interp.predict(x, packed_filter_np(k_i), m_i, b_i)
        np.testing.assert_array_equal(got, run_tf(PLAN_CASE, x, k_i, m_i, b_i, output_type))


@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_kept_plan_follows_set_tensor_on_constant_weights(runtime, output_type):
    """set_tensor writes a constant's buffer in place (the tensor keeps its
    address), so the kernel cannot take an unchanged address for unchanged
    weights."""
    x, sequence = weight_sequence(PLAN_CASE)
    kernel, m, b = sequence[0]
    mb = ModelBuilder()
    xi = mb.tensor(x.shape, np.float32, name="x")
    filt = packed_filter_np(kernel)
    weights = [mb.tensor(filt.shape, np.int32, filt, name="filter"),
               mb.tensor(m.shape, np.float32, m, name="multiplier"),
               mb.tensor(b.shape, np.float32, b, name="bias")]
    y = mb.tensor((1,), np.int32 if output_type == "bitpacked" else np.float32, name="y")
    mb.custom_op("LowbitBDepthwiseConv2d", [xi, *weights], [y],
                 bytes(flexbuffers.Dumps(op_options(PLAN_CASE, output_type))))
    # A copy of its own: set_tensor writes into the model bytes themselves.
    interp = lite.Interpreter(model_content=bytes(bytearray(mb.finish([xi], [y]))),
                              runtime=runtime)
    for k_i, m_i, b_i in sequence:
        for index, value in zip(weights, (packed_filter_np(k_i), m_i, b_i), strict=True):
            interp.set_tensor(index, value)
        got = interp.predict(x)
        np.testing.assert_array_equal(got, run_tf(PLAN_CASE, x, k_i, m_i, b_i, output_type))


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bad-cases":
        _worker(sys.argv[2])
