"""The TFLite kernel of LowbitMultibitConv2d in both runtimes: the same bits as
the TF op; bad options and shapes raise.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from multibit_cases import BAD_CASE, case_data, random_case, run_tf  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


RUNTIMES = ("ai_edge_litert", "tensorflow")


def tflite_model(case, x, planes, alphas, betas, bias, options=None, shapes=None):
    from flatbuffers import flexbuffers
    from tflite_models import ModelBuilder

    out_shape = run_tf(case, x, planes, alphas, betas, bias).shape
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
    inputs = [mb.tensor(x.shape, np.float32, name="x")]
    for name, value in constants.items():
        inputs.append(mb.tensor(value.shape, value.dtype, value, name=name))
    y = mb.tensor(out_shape, np.float32, name="y")
    mb.custom_op("LowbitMultibitConv2d", inputs, [y], bytes(flexbuffers.Dumps(
        {k: v for k, v in opts.items() if v is not None})))
    return mb.finish([inputs[0]], [y])


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

