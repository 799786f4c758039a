"""The TFLite kernel of LowbitBconv2d's fused epilogue in both runtimes: the same
bits as the TF op (the float steps are the same float32 roundings in the same
order); malformed epilogues raise clear errors.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from epilogue_cases import BAD, KINDS, case_data, random_case, reference, run_tf  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


RUNTIMES = ("ai_edge_litert", "tensorflow")


def _tflite_model(case: dict, data: dict, options: dict | None = None, residual_shape=None,
                  residual_dtype=np.float32, post_shape=None) -> bytes:
    """x (and the residual, a second model input) -> LowbitBconv2d with the
    epilogue of the case; `options`, `residual_shape`, `post_shape` break it."""
    from flatbuffers import flexbuffers
    from tflite_models import ModelBuilder

    out_shape = reference(case, data, epilogue=False).shape
    conv_options = dict(
        channels_in=case["cin"], kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
        stride_h=case["strides"][0], stride_w=case["strides"][1],
        dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
        padding=case["padding"], pad_value=case["pad_value"],
        activation="RELU" if case["activation"] else "NONE", epilogue=case["kind"])
    conv_options.update(options or {})
    mb = ModelBuilder()
    x = mb.tensor(data["x"].shape, np.float32, name="x")
    packed = ops.pack_filter(data["kernel"]).numpy()
    inputs = [x, mb.tensor(packed.shape, np.int32, packed),
              mb.tensor((case["cout"],), np.float32, data["m"]),
              mb.tensor((case["cout"],), np.float32, data["b"])]
    model_inputs = [x]
    for name in ("post_multiplier", "post_bias"):
        if name in data:
            value = data[name] if post_shape is None else np.resize(data[name], post_shape)
            inputs.append(mb.tensor(value.shape, np.float32, value))
    if "residual" in data:
        r = mb.tensor(residual_shape or out_shape, residual_dtype, name="residual")
        inputs.append(r)
        model_inputs.append(r)
    y = mb.tensor(out_shape, np.float32, name="y")
    mb.custom_op("LowbitBconv2d", inputs, [y], bytes(flexbuffers.Dumps(
        {k: v for k, v in conv_options.items() if v is not None})))
    return mb.finish(model_inputs, [y])


def _predict(model: bytes, runtime: str, data: dict, threads: int = 1) -> np.ndarray:
    from lowbit_tf.lite import Interpreter

    inputs = [data["x"]] + ([data["residual"]] if "residual" in data else [])
    return Interpreter(model_content=model, runtime=runtime, num_threads=threads).predict(*inputs)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(6))
def test_tflite_kernel_matches_tf_op(runtime, seed):
    kind = KINDS[seed % 3]
    case = random_case(np.random.default_rng(900 + seed), kind)
    case["packed_input"] = False
    data = case_data(case, seed)
    expected = run_tf(case, data)
    np.testing.assert_array_equal(expected, reference(case, data))
    got = _predict(_tflite_model(case, data), runtime, data, threads=1 + seed % 2)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("breakage, message", [
    (dict(options={"epilogue": "scale"}), "epilogue"),
    (dict(options={"epilogue": 7}), "epilogue"),
    (dict(options={"epilogue": "affine"}), "expected 6 inputs"),
    (dict(options={"epilogue": "none"}), "expected 4 inputs"),
    (dict(options={"output_type": "bitpacked"}), "needs output_type"),
    (dict(residual_shape=(1, 5, 6, 41)), "residual must be FLOAT32 or INT8 of the output's shape"),
    (dict(residual_shape=(1, 30, 40)), "residual must be FLOAT32 or INT8 of the output's shape"),
    (dict(residual_dtype=np.int32), "residual must be FLOAT32"),
    (dict(post_shape=(39,)), "post_multiplier must be FLOAT32 \\[40\\]"),
])
def test_tflite_bad_epilogue_raises(runtime, breakage, message):
    from lowbit_tf.lite import Interpreter

    data = case_data(BAD, 3)
    model = _tflite_model(BAD, data, **breakage)
    interpreter = Interpreter(model_content=model, runtime=runtime)
    with pytest.raises(Exception, match=message):
        interpreter.allocate_tensors()

