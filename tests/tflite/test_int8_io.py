"""int8 input and output of LowbitBconv2d and LowbitBgemm (docs/custom_ops.md,
"int8 tensors"): the TF op exact against the NumPy reference of the quantized
arithmetic (tests/helpers/reference.py: int8_signs_np, quantize_int8_np), the
TFLite kernel (quantization from the tensors) equal to the TF op bit for bit,
and bad quantization parameters rejected with messages naming them, in both
shells.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import (
    bconv2d_np,
    bgemm_np,
    dequantize_int8_np,
    epilogue_np,
    int8_signs_np,
    quantize_int8_np,
)
from tflite_models import ModelBuilder, bconv_options

tf = pytest.importorskip("tensorflow")

from flatbuffers import flexbuffers  # noqa: E402

from lowbit_tf import ops  # noqa: E402
from lowbit_tf.lite import Interpreter  # noqa: E402


def _conv_case(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(
        n=int(rng.integers(1, 3)), h=int(rng.integers(3, 9)), w=int(rng.integers(3, 9)),
        cin=int(rng.choice([1, 31, 32, 33, 70])), cout=int(rng.choice([1, 17, 40, 65])),
        kernel=int(rng.choice([1, 3])), stride=int(rng.choice([1, 2])),
        padding=str(rng.choice(["SAME", "VALID"])), pad_value=int(rng.integers(0, 2)),
        activation=[None, "relu"][int(rng.integers(0, 2))],
        epilogue=str(rng.choice(["none", "affine", "add", "affine_add"])),
        int8_input=bool(rng.random() < 0.7), int8_output=bool(rng.random() < 0.7),
        output_relu=bool(rng.random() < 0.5), seed=seed,
    )


def _conv_data(case: dict) -> dict:
    rng = np.random.default_rng(case["seed"] + 1)
    x_q = rng.integers(-128, 128, (case["n"], case["h"], case["w"], case["cin"])).astype(np.int8)
    zp_in = int(rng.integers(-20, 21))
    x_q[rng.random(x_q.shape) < 0.1] = zp_in  # real value 0: +1
    kernel = rng.standard_normal((case["kernel"],) * 2 + (case["cin"], case["cout"]))
    d = dict(
        x_q=x_q, zp_in=zp_in, x_f=rng.standard_normal(x_q.shape).astype(np.float32),
        kernel=kernel.astype(np.float32),
        m=rng.uniform(-0.2, 0.3, case["cout"]).astype(np.float32),
        b=rng.uniform(-2, 2, case["cout"]).astype(np.float32),
        scale=float(rng.uniform(0.02, 0.3)), zp_out=int(rng.integers(-30, 31)),
    )
    if "affine" in case["epilogue"]:
        d["pm"] = rng.uniform(0.5, 1.5, case["cout"]).astype(np.float32)
        d["pb"] = rng.uniform(-1, 1, case["cout"]).astype(np.float32)
    return d


def _conv_kwargs(case: dict, d: dict) -> dict:
    return dict(kernel_size=case["kernel"], channels_in=case["cin"], strides=case["stride"],
                padding=case["padding"], pad_value=case["pad_value"],
                activation=case["activation"])


def _run_tf_conv(case: dict, d: dict, residual: np.ndarray | None) -> np.ndarray:
    x = d["x_q"] if case["int8_input"] else d["x_f"]
    q = {}
    if case["int8_input"]:
        q["input_zero_point"] = d["zp_in"]
    if case["int8_output"]:
        q.update(output_type="int8", output_scale=d["scale"], output_zero_point=d["zp_out"],
                 output_activation="relu" if case["output_relu"] else None)
    return ops.bconv2d(x, ops.pack_filter(d["kernel"]), d["m"], d["b"],
                       post_multiplier=d.get("pm"), post_bias=d.get("pb"), residual=residual,
                       **_conv_kwargs(case, d), **q).numpy()


def _conv_reference(case: dict, d: dict, residual: np.ndarray | None) -> np.ndarray:
    x = int8_signs_np(d["x_q"], d["zp_in"]) if case["int8_input"] else d["x_f"]
    y = bconv2d_np(x, d["kernel"], d["m"], d["b"], (case["stride"],) * 2, (1, 1),
                   case["padding"], case["pad_value"], case["activation"])
    y = epilogue_np(y, d.get("pm"), d.get("pb"), residual)
    if not case["int8_output"]:
        return y
    if case["output_relu"]:
        y = np.maximum(y, np.float32(0))
    return quantize_int8_np(y, d["scale"], d["zp_out"])


def _out_shape(case: dict) -> tuple:
    k, s = case["kernel"], case["stride"]
    if case["padding"] == "SAME":
        oh, ow = -(-case["h"] // s), -(-case["w"] // s)
    else:
        oh, ow = (case["h"] - k) // s + 1, (case["w"] - k) // s + 1
    return (case["n"], oh, ow, case["cout"])


def _residual(case: dict, seed: int) -> tuple[np.ndarray, int, float]:
    """An int8 residual (codes, zero point, scale) of the output's shape."""
    rng = np.random.default_rng(seed + 7)
    return (rng.integers(-128, 128, _out_shape(case)).astype(np.int8),
            int(rng.integers(-10, 11)), float(rng.uniform(0.01, 0.2)))


CONV_SEEDS = range(24)


@pytest.mark.parametrize("seed", CONV_SEEDS)
def test_tf_bconv2d_int8_equals_reference(seed):
    case = _conv_case(seed)
    if case["padding"] == "VALID" and min(case["h"], case["w"]) < case["kernel"]:
        pytest.skip("window larger than the input")
    d = _conv_data(case)
    residual = None
    if "add" in case["epilogue"]:
        r_q, r_zp, r_scale = _residual(case, seed)
        residual = dequantize_int8_np(r_q, r_scale, r_zp)
    np.testing.assert_array_equal(_run_tf_conv(case, d, residual),
                                  _conv_reference(case, d, residual))


def _tflite_conv(case: dict, d: dict, *, input_q=None, output_q=None, residual_q=None,
                 input_dtype=None, output_dtype=None, residual_dtype=None) -> bytes:
    """A one-op LowbitBconv2d model; the *_q arguments override the
    tensors' quantization ((scales, zero points)), the dtypes their types."""
    mb = ModelBuilder()
    in_int8 = case["int8_input"]
    x = mb.tensor(d["x_q"].shape, input_dtype or (np.int8 if in_int8 else np.float32), name="x",
                  quantization=input_q or (([0.05], [d["zp_in"]]) if in_int8 else None))
    fil = np.asarray(ops.pack_filter(d["kernel"]))
    f = mb.tensor(fil.shape, np.int32, fil, name="filter")
    mt = mb.tensor(d["m"].shape, np.float32, d["m"], name="multiplier")
    bt = mb.tensor(d["b"].shape, np.float32, d["b"], name="bias")
    inputs, graph_inputs = [x, f, mt, bt], [x]
    if "affine" in case["epilogue"]:
        inputs += [mb.tensor(d["pm"].shape, np.float32, d["pm"], name="post_multiplier"),
                   mb.tensor(d["pb"].shape, np.float32, d["pb"], name="post_bias")]
    out_int8 = case["int8_output"]
    if "add" in case["epilogue"]:
        r_int8 = (in_int8 or out_int8) if residual_dtype is None else residual_dtype == np.int8
        r = mb.tensor(_out_shape(case), residual_dtype or (np.int8 if r_int8 else np.float32),
                      name="residual", quantization=residual_q or (
                          ([d["r_scale"]], [d["r_zp"]]) if r_int8 else None))
        inputs.append(r)
        graph_inputs.append(r)
    y = mb.tensor(_out_shape(case), output_dtype or (np.int8 if out_int8 else np.float32),
                  name="y", quantization=output_q or (
                      ([d["scale"]], [d["zp_out"]]) if out_int8 else None))
    options = bconv_options(
        channels_in=case["cin"], kernel_h=case["kernel"], kernel_w=case["kernel"],
        stride_h=case["stride"], stride_w=case["stride"], padding=case["padding"],
        pad_value=case["pad_value"], activation="RELU" if case["activation"] else "NONE",
        output_type="int8" if out_int8 else None,
        output_activation="RELU" if out_int8 and case["output_relu"] else None,
        epilogue=None if case["epilogue"] == "none" else case["epilogue"])
    mb.custom_op("LowbitBconv2d", inputs, [y], options)
    return mb.finish(graph_inputs, [y])


@pytest.mark.parametrize("seed", CONV_SEEDS)
def test_tflite_bconv2d_int8_equals_tf_op(seed):
    """The TFLite kernel reads the quantization from the tensors; an int8
    residual (here with an int8 input or output) is added as its real values
    (the TF op, given those values as a float residual, is the reference)."""
    case = _conv_case(seed)
    if case["padding"] == "VALID" and min(case["h"], case["w"]) < case["kernel"]:
        pytest.skip("window larger than the input")
    d = _conv_data(case)
    feeds = [d["x_q"] if case["int8_input"] else d["x_f"]]
    residual = None
    if "add" in case["epilogue"]:
        r_q, d["r_zp"], d["r_scale"] = _residual(case, seed)
        residual = dequantize_int8_np(r_q, d["r_scale"], d["r_zp"])
        feeds.append(r_q if case["int8_input"] or case["int8_output"] else residual)
    got = Interpreter(model_content=_tflite_conv(case, d), num_threads=2).predict(*feeds)
    want = _run_tf_conv(case, d, residual)
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


def _gemm_case(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return dict(leading=[int(v) for v in rng.integers(1, 5, int(rng.integers(0, 3)))],
                k=int(rng.choice([1, 31, 33, 100, 257])), cout=int(rng.integers(1, 70)),
                activation=[None, "relu"][seed % 2], seed=seed)


def _gemm_data(case: dict):
    rng = np.random.default_rng(case["seed"] + 3)
    x_q = rng.integers(-128, 128, (*case["leading"], case["k"])).astype(np.int8)
    zp_in = int(rng.integers(-5, 6))
    kernel = rng.standard_normal((case["k"], case["cout"])).astype(np.float32)
    m = rng.uniform(-0.1, 0.2, case["cout"]).astype(np.float32)
    b = rng.uniform(-1, 1, case["cout"]).astype(np.float32)
    return x_q, zp_in, kernel, m, b, float(rng.uniform(0.01, 0.2)), int(rng.integers(-20, 21))


def _tflite_gemm(case, kernel, m, b, x_shape, zp_in, scale, zp_out, *, output_q=None,
                 output_dtype=np.int8) -> bytes:
    mb = ModelBuilder()
    x = mb.tensor(x_shape, np.int8, name="x", quantization=([0.1], [zp_in]))
    fil = np.asarray(ops.pack_dense_kernel(kernel))
    f = mb.tensor(fil.shape, np.int32, fil, name="filter")
    mt = mb.tensor(m.shape, np.float32, m, name="multiplier")
    bt = mb.tensor(b.shape, np.float32, b, name="bias")
    y = mb.tensor((*x_shape[:-1], case["cout"]), output_dtype, name="y",
                  quantization=output_q or ([scale], [zp_out]))
    options = dict(channels_in=case["k"], activation="RELU" if case["activation"] else "NONE",
                   output_type="int8")
    mb.custom_op("LowbitBgemm", [x, f, mt, bt], [y], bytes(flexbuffers.Dumps(options)))
    return mb.finish([x], [y])


@pytest.mark.parametrize("seed", range(16))
def test_bgemm_int8_reference_tf_and_tflite(seed):
    case = _gemm_case(seed)
    x_q, zp_in, kernel, m, b, scale, zp_out = _gemm_data(case)
    want = quantize_int8_np(bgemm_np(int8_signs_np(x_q, zp_in), kernel, m, b,
                                     case["activation"]), scale, zp_out)
    got_tf = ops.bgemm(x_q, ops.pack_dense_kernel(kernel), m, b, channels_in=case["k"],
                       activation=case["activation"], output_type="int8",
                       input_zero_point=zp_in, output_scale=scale,
                       output_zero_point=zp_out).numpy()
    np.testing.assert_array_equal(got_tf, want)
    model = _tflite_gemm(case, kernel, m, b, x_q.shape, zp_in, scale, zp_out)
    got_lite = Interpreter(model_content=model, num_threads=2).predict(x_q)
    np.testing.assert_array_equal(got_lite, want)


def test_int8_float_output_and_saturation():
    """int8 input with float output; outputs far outside the int8 range
    saturate; halves round away from zero (2.5 -> 3, -2.5 -> -3)."""
    x_q = np.array([[-3, -2, 5, 0, 7, 9]], np.int8)
    kernel = np.ones((6, 3), np.float32)
    # D = sum of the signs with zero point 5: [-1, -1, +1, -1, +1, +1] -> 0.
    m = np.array([1.0, 1.0, 1.0], np.float32)
    b = np.array([2.5, -2.5, 1000.0], np.float32)
    y = ops.bgemm(x_q, ops.pack_dense_kernel(kernel), m, b, input_zero_point=5).numpy()
    np.testing.assert_array_equal(y, [[2.5, -2.5, 1000.0]])
    q = ops.bgemm(x_q, ops.pack_dense_kernel(kernel), m, b, input_zero_point=5,
                  output_type="int8", output_scale=1.0, output_zero_point=0).numpy()
    np.testing.assert_array_equal(q, [[3, -3, 127]])
    np.testing.assert_array_equal(quantize_int8_np(y, 1.0, 0), q)


@pytest.mark.parametrize("kwargs, message", [
    (dict(output_scale=0.0), "output_scale must be finite and > 0, got 0.0"),
    (dict(output_scale=-0.5), "output_scale must be finite and > 0"),
    (dict(output_scale=float("nan")), "output_scale must be finite and > 0"),
    (dict(output_zero_point=128), r"output_zero_point must be an int in \[-128, 127\], got 128"),
    (dict(input_zero_point=-200), r"input_zero_point must be an int in \[-128, 127\]"),
])
def test_python_bad_quantization_raises(kwargs, message):
    x = np.zeros((1, 40), np.int8)
    with pytest.raises(ValueError, match=message):
        ops.bgemm(x, ops.pack_dense_kernel(np.ones((40, 4), np.float32)), output_type="int8",
                  **kwargs)


def test_tf_op_bad_quantization_raises():
    """The native check, past the Python wrapper (the raw op)."""
    from lowbit_tf._native import load_tf_ops

    x = np.zeros((1, 40), np.int8)
    f = ops.pack_dense_kernel(np.ones((40, 4), np.float32))
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="LowbitBgemm: output scale must be finite and > 0, got 0"):
        load_tf_ops().lowbit_bgemm(x, f, ones, zeros, channels_in=40, output_type="int8",
                                   Tout=tf.int8, output_scale=0.0)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r"input zero point must be in \[-128, 127\], got 300"):
        load_tf_ops().lowbit_bgemm(x, f, ones, zeros, channels_in=40, input_zero_point=300)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match='output_type "int8" needs Tout = int8'):
        load_tf_ops().lowbit_bgemm(x, f, ones, zeros, channels_in=40, output_type="int8")


def _bad_case():
    case = dict(n=1, h=4, w=4, cin=33, cout=5, kernel=3, stride=1, padding="SAME",
                pad_value=1, activation=None, epilogue="add", int8_input=True,
                int8_output=True, output_relu=False, seed=99)
    d = _conv_data(case)
    d["r_zp"], d["r_scale"] = 0, 0.1
    return case, d


@pytest.mark.parametrize("override, message", [
    (dict(output_q=([0.0], [0])), "output scale must be finite and > 0, got 0"),
    (dict(output_q=([-1.0], [0])), "output scale must be finite and > 0"),
    (dict(output_q=([0.1, 0.2, 0.1, 0.1, 0.1], [0] * 5, 3)),
     r"output must be quantized per tensor \(one scale\), got 5 scales"),
    (dict(input_q=([0.1], [-129])), r"input zero point must be in \[-128, 127\], got -129"),
    (dict(input_q=([float("inf")], [0])), "input scale must be finite and > 0"),
    (dict(residual_q=([0.0], [0])), "residual scale must be finite and > 0"),
    (dict(input_dtype=np.int16, input_q=([0.1], [0])),
     "input must be FLOAT32, INT32 \\(packed\\) or INT8, got INT16"),
    (dict(output_dtype=np.int16, output_q=([0.1], [0])),
     "output tensor 'y' has type INT16, expected INT8"),
])
def test_tflite_bad_quantization_raises(override, message):
    case, d = _bad_case()
    model = _tflite_conv(case, d, **override)
    x = np.zeros(d["x_q"].shape, override.get("input_dtype", np.int8))
    r = np.zeros(_out_shape(case), np.int8)
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, num_threads=1).predict(x, r)


def test_tflite_int8_tensor_without_quantization_raises():
    case, d = _bad_case()
    mb_model = _tflite_conv(dict(case, epilogue="none"), d, input_q=([], []))
    with pytest.raises(Exception, match="input is INT8 but has no quantization"):
        Interpreter(model_content=mb_model, num_threads=1).predict(np.zeros(d["x_q"].shape,
                                                                            np.int8))


def test_tflite_residual_of_another_type_raises():
    case, d = _bad_case()
    model = _tflite_conv(case, d, residual_dtype=np.int16, residual_q=([0.1], [0]))
    with pytest.raises(Exception, match="residual must be FLOAT32 or INT8 of the output's shape"):
        Interpreter(model_content=model, num_threads=1).predict(
            np.zeros(d["x_q"].shape, np.int8), np.zeros(_out_shape(case), np.int16))


@pytest.mark.parametrize("zero_point", [-128, -7, 0, 127])
def test_int8_output_edge_values_in_both_shells(zero_point):
    """Values at and next to halves, past the int8 range, infinities and NaN,
    on 40 channels (the 16-wide vector path of the quantization and its
    scalar tail): multiplier 0 makes y = bias exactly."""
    edges = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 0.49999997, -0.49999997, 126.5, -127.5,
             127.49998, 1e30, -1e30, np.inf, -np.inf, np.nan, 1e-40, -1e-40, 0.0, -0.0]
    b = np.array(edges * 2, np.float32) * np.float32(0.75)
    b[20:] = -b[20:]
    m = np.zeros(40, np.float32)
    case = dict(leading=[3], k=33, cout=40, activation=None, seed=0)
    kernel = np.ones((33, 40), np.float32)
    x_q = np.zeros((3, 33), np.int8)
    want = quantize_int8_np(np.broadcast_to(b, (3, 40)), 0.75, zero_point)
    got_tf = ops.bgemm(x_q, ops.pack_dense_kernel(kernel), m, b, output_type="int8",
                       output_scale=0.75, output_zero_point=zero_point).numpy()
    np.testing.assert_array_equal(got_tf, want)
    model = _tflite_gemm(case, kernel, m, b, x_q.shape, 0, 0.75, zero_point)
    np.testing.assert_array_equal(Interpreter(model_content=model).predict(x_q), want)


def test_output_activation_needs_an_int8_output():
    case, d = _bad_case()
    with pytest.raises(ValueError, match="output_activation='relu' needs output_type='int8'"):
        ops.bconv2d(d["x_q"], ops.pack_filter(d["kernel"]), output_activation="relu",
                    **_conv_kwargs(case, d))
    case = dict(case, int8_output=False, epilogue="none")
    mb = ModelBuilder()
    x = mb.tensor(d["x_q"].shape, np.int8, name="x", quantization=([0.1], [0]))
    fil = np.asarray(ops.pack_filter(d["kernel"]))
    inputs = [x, mb.tensor(fil.shape, np.int32, fil), mb.tensor((5,), np.float32, d["m"]),
              mb.tensor((5,), np.float32, d["b"])]
    y = mb.tensor(_out_shape(case), np.float32, name="y")
    mb.custom_op("LowbitBconv2d", inputs, [y], bconv_options(
        channels_in=33, padding="SAME", pad_value=1, output_activation="RELU"))
    with pytest.raises(Exception, match='output_activation "RELU" needs output_type "int8"'):
        Interpreter(model_content=mb.finish([x], [y])).predict(d["x_q"])


@pytest.mark.parametrize("seed", range(10))
def test_bdepthwise_int8_reference_tf_and_tflite(seed):
    """LowbitBDepthwiseConv2d with int8 input and output: the TF op exact
    against the reference, the TFLite kernel (quantization from the tensors)
    equal to it."""
    from reference import bdepthwise_conv2d_np

    rng = np.random.default_rng(seed + 100)
    n, h, w = int(rng.integers(1, 3)), int(rng.integers(3, 9)), int(rng.integers(3, 9))
    cin, dm, k = int(rng.choice([1, 17, 40])), int(rng.choice([1, 2])), int(rng.choice([1, 3]))
    stride, padding = int(rng.choice([1, 2])), str(rng.choice(["SAME", "VALID"]))
    pad_value, relu = int(rng.integers(0, 2)), bool(rng.integers(0, 2))
    x_q = rng.integers(-128, 128, (n, h, w, cin)).astype(np.int8)
    zp_in, zp_out = int(rng.integers(-10, 11)), int(rng.integers(-20, 21))
    scale = float(rng.uniform(0.02, 0.2))
    kernel = rng.standard_normal((k, k, cin, dm)).astype(np.float32)
    m = rng.uniform(-0.5, 0.5, cin * dm).astype(np.float32)
    b = rng.uniform(-1, 1, cin * dm).astype(np.float32)
    y = bdepthwise_conv2d_np(int8_signs_np(x_q, zp_in), kernel, m, b, (stride, stride), (1, 1),
                             padding, pad_value, "relu" if relu else None)
    want = quantize_int8_np(y, scale, zp_out)
    packed = np.asarray(ops.pack_depthwise_filter(kernel))
    got_tf = ops.bdepthwise_conv2d(
        x_q, packed, m, b, channels_in=cin, depth_multiplier=dm, strides=stride,
        padding=padding, pad_value=pad_value, activation="relu" if relu else None,
        output_type="int8", input_zero_point=zp_in, output_scale=scale,
        output_zero_point=zp_out).numpy()
    np.testing.assert_array_equal(got_tf, want)
    mb = ModelBuilder()
    xt = mb.tensor(x_q.shape, np.int8, name="x", quantization=([0.3], [zp_in]))
    inputs = [xt, mb.tensor(packed.shape, np.int32, packed), mb.tensor(m.shape, np.float32, m),
              mb.tensor(b.shape, np.float32, b)]
    yt = mb.tensor(want.shape, np.int8, name="y", quantization=([scale], [zp_out]))
    options = bconv_options(channels_in=cin, kernel_h=k, kernel_w=k, stride_h=stride,
                            stride_w=stride, padding=padding, pad_value=pad_value,
                            activation="RELU" if relu else "NONE", depth_multiplier=dm,
                            output_type="int8")
    mb.custom_op("LowbitBDepthwiseConv2d", inputs, [yt], options)
    got_lite = Interpreter(model_content=mb.finish([xt], [yt])).predict(x_q)
    np.testing.assert_array_equal(got_lite, want)


@pytest.mark.parametrize("zero_point", [-7, 0, 100])
def test_bconv2d_int8_output_rounds_y_times_the_inverse_scale(zero_point):
    """The int8 output is round(y * (1 / scale)) with the reciprocal in
    float32, not TFLite's reference round(y / scale): at y = (k + 1/2) * scale
    the two differ by one code for some k (two roundings against one). The
    conv (quantized in the x86 SIMD kernels' epilogue: whole tiles of 25
    pixels and a partial one, 40 channels: a whole block and a tail) in both
    shells on such values: multiplier 0 makes y = bias exactly."""
    scale = np.float32(0.3)
    halves = (np.arange(-130, 130) + 0.5).astype(np.float32) * scale
    by_division = np.sign(halves / scale) * np.floor(np.abs(halves / scale) + 0.5)
    by_inverse = quantize_int8_np(halves, scale, 0).astype(np.float64)
    differ = np.clip(by_division, -128, 127) != by_inverse
    assert differ.sum() >= 10  # the two definitions really differ here
    b = halves[differ][:20]
    b = np.concatenate([b, halves[~differ][::5][:40 - len(b)]])
    case = dict(n=1, h=5, w=5, cin=64, cout=40, kernel=1, stride=1, padding="VALID",
                pad_value=0, activation=None, epilogue="none", int8_input=True,
                int8_output=True, output_relu=False)
    rng = np.random.default_rng(5)
    d = dict(x_q=rng.integers(-128, 128, (1, 5, 5, 64)).astype(np.int8), zp_in=0,
             kernel=rng.standard_normal((1, 1, 64, 40)).astype(np.float32),
             m=np.zeros(40, np.float32), b=b, scale=float(scale), zp_out=zero_point)
    want = quantize_int8_np(np.broadcast_to(b, (1, 5, 5, 40)), scale, zero_point)
    np.testing.assert_array_equal(_run_tf_conv(case, d, None), want)
    got = Interpreter(model_content=_tflite_conv(case, d)).predict(d["x_q"])
    np.testing.assert_array_equal(got, want)
