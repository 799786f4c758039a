"""LowbitBconv2d's fused epilogue (issue 7, QuickNet's residual blocks):
y = act(m * dot + b), then y * post_multiplier + post_bias, then + residual.

NumPy reference (tests/reference.py: bconv2d_np, epilogue_np) = TF op on every
kernel path = TFLite kernel, bit for bit (the float steps are the same float32
roundings in the same order); gradients against the unfused composite; the
converter turns conv -> ReLU -> BatchNorm -> Add into one op and reproduces
Keras; malformed epilogues raise clear errors in both shells.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from reference import bconv2d_np, epilogue_np

TESTS = Path(__file__).resolve().parent

tf = pytest.importorskip("tensorflow")
from lowbit_tf import ops  # noqa: E402
from lowbit_tf._native import kernel_path_names  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")

KINDS = ("affine", "add", "affine_add")
RUNTIMES = ("ai_edge_litert", "tensorflow")


def random_case(rng: np.random.Generator, kind: str) -> dict:
    while True:
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        case = dict(
            kind=kind,
            lead=tuple(int(d) for d in rng.integers(1, 3, size=int(rng.integers(1, 3)))),
            h=int(rng.integers(1, 9)),
            w=int(rng.integers(1, 11)),
            cin=int(rng.choice([1, 5, 32, 33, 64, 70])),
            cout=int(rng.choice([1, 7, 16, 31, 33, 40, 64, 65])),
            kernel=(kh, kw),
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=str(rng.choice(["SAME", "VALID"])),
            pad_value=int(rng.integers(0, 2)),
            activation=[None, "relu"][int(rng.integers(0, 2))],
            packed_input=bool(rng.random() < 0.3),
        )
        if case["padding"] == "VALID" and (
            case["h"] < (kh - 1) * case["dilations"][0] + 1
            or case["w"] < (kw - 1) * case["dilations"][1] + 1
        ):
            continue
        return case


def case_data(case: dict, seed: int) -> dict:
    """x, kernel, m, b and the epilogue inputs (residual shaped like the output)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*case["lead"], case["h"], case["w"], case["cin"]))
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["cout"]))
    data = dict(
        x=x.astype(np.float32),
        kernel=kernel.astype(np.float32),
        m=rng.uniform(-2, 2, case["cout"]).astype(np.float32),
        b=rng.uniform(-3, 3, case["cout"]).astype(np.float32),
    )
    out_shape = reference(case, data, epilogue=False).shape
    if case["kind"] in ("affine", "affine_add"):
        data["post_multiplier"] = rng.uniform(-1.7, 1.7, case["cout"]).astype(np.float32)
        data["post_bias"] = rng.uniform(-5, 5, case["cout"]).astype(np.float32)
    if case["kind"] in ("add", "affine_add"):
        data["residual"] = (rng.standard_normal(out_shape) * 7).astype(np.float32)
    return data


def epilogue_args(data: dict) -> dict:
    return {k: data[k] for k in ("post_multiplier", "post_bias", "residual") if k in data}


def reference(case: dict, data: dict, epilogue: bool = True) -> np.ndarray:
    lead = case["lead"]
    x = data["x"].reshape(-1, *data["x"].shape[len(lead):])
    y = bconv2d_np(x, data["kernel"], data["m"], data["b"], case["strides"], case["dilations"],
                   case["padding"], case["pad_value"], case["activation"])
    y = y.reshape(*lead, *y.shape[1:])
    return epilogue_np(y, **epilogue_args(data)) if epilogue else y


def conv_kwargs(case: dict) -> dict:
    return dict(kernel_size=case["kernel"], channels_in=case["cin"], strides=case["strides"],
                dilations=case["dilations"], padding=case["padding"],
                pad_value=case["pad_value"], activation=case["activation"])


def run_tf(case: dict, data: dict) -> np.ndarray:
    x = ops.bitpack(data["x"]) if case["packed_input"] else data["x"]
    return ops.bconv2d(x, ops.pack_filter(data["kernel"]), data["m"], data["b"],
                       **conv_kwargs(case), **epilogue_args(data)).numpy()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", range(10))
def test_tf_op_matches_reference(kind, seed):
    case = random_case(np.random.default_rng(500 + seed), kind)
    data = case_data(case, seed)
    np.testing.assert_array_equal(run_tf(case, data), reference(case, data))


def test_large_conv_takes_the_register_path():
    """Shapes big enough for full register tiles and several threads."""
    case = dict(kind="affine_add", lead=(2,), h=15, w=13, cin=96, cout=80, kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), padding="SAME", pad_value=1,
                activation="relu", packed_input=False)
    data = case_data(case, 1)
    np.testing.assert_array_equal(run_tf(case, data), reference(case, data))


@pytest.mark.parametrize("path", ["reference", *kernel_path_names()])
def test_every_kernel_path(path):
    """LOWBIT_KERNEL is read when an op kernel is created: each forced path in
    a fresh process (a path this CPU lacks falls back to a lesser one)."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        import numpy as np
        import test_epilogue as t
        bad = []
        for seed in range(9):
            kind = t.KINDS[seed % 3]
            case = t.random_case(np.random.default_rng(700 + seed), kind)
            data = t.case_data(case, seed)
            if not np.array_equal(t.run_tf(case, data), t.reference(case, data)):
                bad.append(seed)
        print(json.dumps(bad))
    """)
    env = dict(os.environ, LOWBIT_KERNEL=path)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def _tflite_model(case: dict, data: dict, options: dict | None = None, residual_shape=None,
                  residual_dtype=np.float32, post_shape=None) -> bytes:
    """x (and the residual, a second model input) -> LowbitBconv2d with the
    epilogue of the case; `options`, `residual_shape`, `post_shape` break it."""
    from flatbuffers import flexbuffers
    from test_tflite_runtime import ModelBuilder

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


BAD = dict(kind="affine_add", lead=(1,), h=5, w=6, cin=33, cout=40, kernel=(3, 3),
           strides=(1, 1), dilations=(1, 1), padding="SAME", pad_value=1, activation="relu",
           packed_input=False)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("breakage, message", [
    (dict(options={"epilogue": "scale"}), "epilogue"),
    (dict(options={"epilogue": 7}), "epilogue"),
    (dict(options={"epilogue": "affine"}), "expected 6 inputs"),
    (dict(options={"epilogue": "none"}), "expected 4 inputs"),
    (dict(options={"output_type": "bitpacked"}), "needs output_type"),
    (dict(residual_shape=(1, 5, 6, 41)), "residual must be FLOAT32 of the output's shape"),
    (dict(residual_shape=(1, 30, 40)), "residual must be FLOAT32 of the output's shape"),
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


def test_tf_op_bad_epilogue_raises():
    data = case_data(BAD, 4)
    packed = ops.pack_filter(data["kernel"])
    kwargs = conv_kwargs(BAD)
    with pytest.raises(tf.errors.InvalidArgumentError, match="residual must have the output"):
        ops.bconv2d(data["x"], packed, residual=data["residual"][..., :39], **kwargs)
    with pytest.raises(tf.errors.InvalidArgumentError, match="post_multiplier must have shape"):
        ops.bconv2d(data["x"], packed, post_multiplier=np.ones(39, np.float32), **kwargs)
    with pytest.raises(ValueError, match="output_type='float'"):
        ops.bconv2d(data["x"], packed, residual=data["residual"], output_type="bitpacked",
                    **kwargs)
    from lowbit_tf._native import load_tf_ops

    raw = dict(channels_in=33, kernel_h=3, kernel_w=3, padding="SAME")
    ones, zeros = np.ones(40, np.float32), np.zeros(40, np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="takes 3 epilogue inputs, got 1"):
        load_tf_ops().lowbit_bconv2d(data["x"], packed, ones, zeros, [ones],
                                     epilogue="affine_add", **raw)
    with pytest.raises(tf.errors.InvalidArgumentError, match="needs output_type"):
        load_tf_ops().lowbit_bconv2d(data["x"], packed, ones, zeros, [data["residual"]],
                                     epilogue="add", output_type="bitpacked", Tout=tf.int32,
                                     **raw)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="epilogue"):
        load_tf_ops().lowbit_bconv2d(data["x"], packed, ones, zeros, [], epilogue="scale",
                                     **raw)


@pytest.mark.parametrize("kind", KINDS)
def test_gradients_match_the_unfused_composite(kind):
    """Training through the fused op: the gradients of every input equal those
    of bconv2d followed by the same epilogue in plain TF ops."""
    case = dict(kind=kind, lead=(2,), h=6, w=5, cin=20, cout=12, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="SAME", pad_value=1, activation="relu",
                packed_input=False)
    data = {k: tf.constant(v) for k, v in case_data(case, 8).items()}
    kwargs = conv_kwargs(case)
    names = ["x", "kernel", "m", "b", *epilogue_args(data)]

    def loss(fused: bool) -> list:
        with tf.GradientTape() as tape:
            tape.watch([data[n] for n in names])
            if fused:
                y = ops.bconv2d(data["x"], data["kernel"], data["m"], data["b"], **kwargs,
                                **epilogue_args(data))
            else:
                y = ops.bconv2d(data["x"], data["kernel"], data["m"], data["b"], **kwargs)
                if "post_multiplier" in data:
                    y = y * data["post_multiplier"] + data["post_bias"]
                if "residual" in data:
                    y = y + data["residual"]
            total = tf.reduce_sum(y * tf.cos(y))
        return tape.gradient(total, [data[n] for n in names])

    for name, got, want in zip(names, loss(True), loss(False), strict=True):
        assert got is not None, name
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-5, atol=1e-4,
                                   err_msg=name)


# --------------------------------------------------------------------------
# Converter: the layers after a binary conv fused into its epilogue.
# --------------------------------------------------------------------------


def _tflite_ops(model: bytes) -> list[str]:
    from test_packed_chain import _tflite_ops as ops_of

    return [name for name, _ in ops_of(model)[0]]


def _block(variant: str):
    """A QuickNet-style residual block and variants of it."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    x = keras.Input((9, 10, 40))
    s = keras.layers.Conv2D(40, 1, name="stem")(x)
    y = lb_layers.QuantConv2D(
        40, 3, padding="same", pad_values=1.0, use_bias=variant == "bias",
        input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="bconv",
        activation="relu" if variant == "own_relu" else None)(s)
    if variant not in ("own_relu", "add_only"):
        y = keras.layers.ReLU(name="relu")(y)
    if variant != "add_only":
        y = keras.layers.BatchNormalization(name="bn")(y)
    if variant == "bn_output":
        return keras.Model(x, [y, keras.layers.Add(name="add")([s, y])])
    if variant == "affine_only":
        return keras.Model(x, keras.layers.Conv2D(8, 1, name="head")(y))
    operands = [y, s] if variant == "residual_second" else [s, y]
    out = keras.layers.Add(name="add")(operands)
    return keras.Model(x, keras.layers.Conv2D(8, 1, name="head")(out))


@pytest.mark.parametrize("variant, expected_epilogue, expected_ops", [
    ("quicknet", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("residual_second", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("bias", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("own_relu", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("add_only", "add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("affine_only", "affine", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    # The BatchNorm's output is a model output too: only it is fused, the Add
    # stays a builtin.
    ("bn_output", "affine", ["CONV_2D", "LowbitBconv2d", "ADD"]),
])
def test_converter_fuses_the_block(variant, expected_epilogue, expected_ops):
    from flatbuffers import flexbuffers

    from lowbit_converter import convert
    from lowbit_converter.lowering import plan_lowering
    from lowbit_converter.tflite_schema import schema
    from lowbit_tf.lite import Interpreter

    model = _block(variant)
    rng = np.random.default_rng(11)
    for layer in model.layers:  # BatchNorm statistics away from the identity
        if layer.name == "bn":
            layer.set_weights([rng.uniform(0.5, 2, 40), rng.uniform(-1, 1, 40),
                               rng.uniform(-1, 1, 40), rng.uniform(0.5, 2, 40)])
    plan = plan_lowering(model)["bconv"]
    assert (plan.post_batch_norm is not None) == ("affine" in expected_epilogue)
    assert (plan.residual_add is not None) == ("add" in expected_epilogue)
    tflite = convert(model)
    assert _tflite_ops(tflite) == expected_ops
    fb = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    custom = [op for op in fb.subgraphs[0].operators if op.customOptions is not None]
    options = flexbuffers.Loads(bytes(bytearray(custom[0].customOptions)))
    assert options["epilogue"] == expected_epilogue
    x = rng.standard_normal((2, 9, 10, 40)).astype(np.float32)
    want = model(x, training=False)
    got = Interpreter(model_content=tflite).predict(x)
    got, want = (got, want) if isinstance(got, list) else ([got], [want])
    # TFLite may list several outputs in another order than Keras: pair each
    # Keras output with the TFLite output closest to it.
    for w in map(np.asarray, want):
        g = min(got, key=lambda g: float(np.abs(g - w).max()) if g.shape == w.shape else np.inf)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))


def test_converter_leaves_unfusable_adds():
    """An Add whose operands differ in shape (broadcast) or that has three
    operands keeps its builtin; the conv still converts."""
    from lowbit_converter import convert
    from lowbit_converter.lowering import plan_lowering
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    x = keras.Input((6, 6, 32))
    y = lb_layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", name="bconv")(x)
    z = lb_layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", name="bconv2")(x)
    three = keras.layers.Add(name="add3")([x, y, x])
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    broadcast = keras.layers.Add(name="addb")([z, pooled])
    model = keras.Model(x, [three, broadcast])
    plans = plan_lowering(model)
    assert plans["bconv"].residual_add is None and plans["bconv2"].residual_add is None
    tflite = convert(model)
    assert _tflite_ops(tflite).count("LowbitBconv2d") == 2
    from lowbit_tf.lite import Interpreter

    x_value = np.random.default_rng(2).standard_normal((1, 6, 6, 32)).astype(np.float32)
    got = Interpreter(model_content=tflite).predict(x_value)
    for w in map(np.asarray, model(x_value)):
        g = min(got, key=lambda g: float(np.abs(g - w).max()) if g.shape == w.shape else np.inf)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)
