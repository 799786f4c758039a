"""The TFLite kernel of LowbitMultibitConv2d in both runtimes: the same bits as
the TF op, with float, int8 and packed inputs and outputs; bad options,
shapes and quantization parameters raise.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from multibit_cases import BAD_CASE, case_data, int8_input, random_case, run_tf  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


RUNTIMES = ("ai_edge_litert", "tensorflow")


def tflite_model(case, x, planes, alphas, betas, bias, options=None, shapes=None, y=None,
                 quantization=None):
    """A one-op model. y: an array of the output's shape and dtype (default
    the TF op's float output); quantization: {"x": ..., "y": ...}, the int8
    tensors' (scales, zero points)."""
    from flatbuffers import flexbuffers
    from tflite_models import ModelBuilder

    quantization = quantization or {}
    if y is None:
        y = run_tf(case, x, planes, alphas, betas, bias)
    opts = dict(
        channels_in=case["cin"], kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
        stride_h=case["strides"][0], stride_w=case["strides"][1],
        dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
        padding=case["padding"], pad_value=case["pad_value"],
        activation="RELU" if case["activation"] else "NONE",
        activation_mode=case["mode"], activation_bits=case["bits"],
    )
    opts.update(options or {})
    packed = ops.pack_filter_planes(planes).numpy()
    shifts = np.zeros(0, np.float32) if case["shifts"] is None else case["shifts"]
    constants = dict(filter=packed, alphas=alphas, shifts=shifts, betas=betas, bias=bias)
    constants.update(shapes or {})
    mb = ModelBuilder()
    inputs = [mb.tensor(x.shape, x.dtype, name="x", quantization=quantization.get("x"))]
    for name, value in constants.items():
        inputs.append(mb.tensor(value.shape, value.dtype, value, name=name))
    out = mb.tensor(y.shape, y.dtype, name="y", quantization=quantization.get("y"))
    mb.custom_op("LowbitMultibitConv2d", inputs, [out], bytes(flexbuffers.Dumps(
        {k: v for k, v in opts.items() if v is not None})))
    return mb.finish([inputs[0]], [out])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(6))
def test_tflite_kernel_matches_tf_op(runtime, seed):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(100 + seed)
    case = random_case(rng)
    data = case_data(case, rng)
    expected = run_tf(case, *data)
    model = tflite_model(case, *data)
    for threads in (1, 2):
        got = Interpreter(model_content=model, runtime=runtime, num_threads=threads).predict(
            data[0])
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("options, shapes, message", [
    ({"activation_mode": "ternary"}, None, "activation_mode"),
    ({"activation_mode": None}, None, "activation_mode"),
    ({"activation_bits": 3}, None, "activation_bits"),
    ({"channels_in": 32}, None, "channels"),
    ({"kernel_h": 2}, None, "words"),
    ({"pad_value": 2}, None, "pad_value"),
    (None, {"betas": np.ones(3, np.float32)}, "betas"),
    (None, {"alphas": np.ones((3, 4), np.float32)}, "alphas"),
    (None, {"shifts": np.zeros(0, np.float32)}, "shifts"),
    (None, {"bias": np.zeros(5, np.float32)}, "bias"),
    (None, {"filter": np.zeros((2, 4, 3), np.int32)}, "words"),
])
def test_tflite_bad_input_raises(runtime, options, shapes, message):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(2)
    data = case_data(BAD_CASE, rng)
    model = tflite_model(BAD_CASE, *data, options=options, shapes=shapes)
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, runtime=runtime).predict(data[0])



# ---------------------------------------------------------------------------
# int8 and packed input and output: the TFLite kernel (quantization from the
# tensors) equal to the TF op, which tests/tf_ops/test_multibit.py holds to
# the reference.

IO_KINDS = ("int8_float", "int8_int8", "int8_bitpacked", "float_bitpacked", "packed_bitpacked",
            "packed_int8")


def io_case(seed: int, kind: str):
    """(case, data, TFLite input, its quantization, TF op kwargs, output
    quantization) of a random case read and written as `kind` says."""
    rng = np.random.default_rng(700 + seed)
    case = random_case(rng)
    if kind.startswith("packed"):
        case.update(mode="sign", shifts=None, bits=0)
    data = case_data(case, rng)
    x_quant = out_quant = None
    kwargs = {}
    x = data[0]
    if kind.startswith("int8"):
        x, scale, zero_point = int8_input(case, rng)
        x_quant = ([scale], [zero_point])
        kwargs.update(input_scale=scale, input_zero_point=zero_point)
    elif kind.startswith("packed"):
        x = ops.bitpack(x).numpy()
        kwargs.update(channels_in=case["cin"])
    out = kind.split("_")[1]
    if out == "int8":
        scale = float(np.float32(rng.uniform(0.05, 2.0)))
        out_quant = ([scale], [int(rng.integers(-30, 31))])
        kwargs.update(output_scale=scale, output_zero_point=out_quant[1][0])
    kwargs.update(output_type=out)
    return case, data, x, x_quant, kwargs, out_quant


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("kind", IO_KINDS)
@pytest.mark.parametrize("seed", range(3))
def test_tflite_int8_and_packed_io_match_tf_op(runtime, kind, seed):
    from lowbit_tf.lite import Interpreter

    case, data, x, x_quant, kwargs, out_quant = io_case(seed, kind)
    expected = run_tf(case, x, *data[1:], **kwargs)
    model = tflite_model(case, x, *data[1:], y=expected,
                         options=dict(output_type=kwargs["output_type"]),
                         quantization=dict(x=x_quant, y=out_quant))
    for threads in (1, 2):
        got = Interpreter(model_content=model, runtime=runtime, num_threads=threads).predict(x)
        assert got.dtype == expected.dtype
        np.testing.assert_array_equal(got, expected)


def _bad_io_model(x_dtype=np.int8, x_quant=([0.1], [0]), y_dtype=np.float32, y_quant=None,
                  options=None):
    rng = np.random.default_rng(2)
    x, *params = case_data(BAD_CASE, rng)
    y = run_tf(BAD_CASE, x, *params).astype(y_dtype)
    model = tflite_model(BAD_CASE, x.astype(x_dtype), *params, y=y, options=options,
                         quantization=dict(x=x_quant, y=y_quant))
    return model, np.zeros(x.shape, x_dtype)


@pytest.mark.parametrize("override, message", [
    (dict(x_quant=([0.0], [0])), "input scale must be finite and > 0, got 0"),
    (dict(x_quant=([float("nan")], [0])), "input scale must be finite and > 0"),
    (dict(x_quant=([0.1], [128])), r"input zero point must be in \[-128, 127\], got 128"),
    (dict(x_quant=None), "input is INT8 but has no quantization"),
    (dict(x_quant=([0.1] * 33, [0] * 33, 3)),
     r"input must be quantized per tensor \(one scale\), got 33 scales"),
    (dict(x_dtype=np.int16), "input must be FLOAT32, INT32 \\(packed\\) or INT8, got INT16"),
    (dict(y_dtype=np.int8, y_quant=([0.0], [0]), options=dict(output_type="int8")),
     "output scale must be finite and > 0, got 0"),
    (dict(y_dtype=np.int8, y_quant=([0.1, 0.1, 0.1, 0.1], [0] * 4, 3),
          options=dict(output_type="int8")),
     r"output must be quantized per tensor \(one scale\), got 4 scales"),
    (dict(y_dtype=np.int16, y_quant=([0.1], [0]), options=dict(output_type="int8")),
     "output tensor 'y' has type INT16, expected INT8"),
    (dict(options=dict(output_type="bitpacked")), "output tensor 'y' has type FLOAT32"),
    (dict(x_dtype=np.int32, x_quant=None),
     r'packed \(int32\) input is the single plane of activation_mode "sign"'),
])
def test_tflite_bad_int8_and_packed_io_raises(override, message):
    from lowbit_tf.lite import Interpreter

    model, x = _bad_io_model(**override)
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, num_threads=1).predict(x)
