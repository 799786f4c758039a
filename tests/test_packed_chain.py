"""Chains of binary layers that never unpack (issue 4): LowbitBconv2d with
output_type="bitpacked" and LowbitBMaxPool2d on packed data.

NumPy reference (tests/reference.py) = TF op = TFLite kernel, bit for bit, over
random shapes with channel tails; per-channel multipliers and biases chosen to
sit on and around the flip points of the float output transform, so that the
integer thresholds are checked against the float decision exactly.
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
from keras_helpers import randomize_batch_norms
from reference import (
    bconv2d_bitpacked_np,
    bitpack_np,
    bmaxpool2d_np,
)

TESTS = Path(__file__).resolve().parent

tf = pytest.importorskip("tensorflow")
from lowbit_tf import ops  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


def tricky_transform(rng: np.random.Generator, cout: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per channel (m, b) that put the flip point of m * D + b on or next to an
    integer D, one float ulp either way, plus zeros, -0.0, tiny and huge m."""
    m = np.empty(cout, np.float32)
    b = np.empty(cout, np.float32)
    for c in range(cout):
        kind = rng.integers(0, 8)
        scale = np.float32(rng.choice([1e-3, 0.1, 0.7, 3.0, 1e5]) * rng.choice([-1, 1]))
        d = np.float32(rng.integers(-k, k + 1))
        if kind == 0:
            m[c], b[c] = 0.0, rng.choice([-1.0, 0.0, -0.0, 1.0, -1e-40])
        elif kind == 1:
            m[c], b[c] = -0.0, rng.choice([-2.0, 2.0])
        elif kind == 2:
            m[c], b[c] = rng.choice([1e38, -1e38]), rng.uniform(-1e38, 1e38)  # overflow
        elif kind == 3:
            m[c], b[c] = rng.choice([1e-42, -1e-42]), 0.0  # subnormal products
        else:
            # b = -m * d, nudged by 0..2 ulps either way
            b[c] = -(scale * d)
            for _ in range(int(rng.integers(0, 3))):
                b[c] = np.nextafter(b[c], np.float32(rng.choice([-np.inf, np.inf])))
            m[c] = scale
    return m, b


def random_case(rng: np.random.Generator) -> dict:
    while True:
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        case = dict(
            n=int(rng.integers(1, 3)),
            h=int(rng.integers(1, 8)),
            w=int(rng.integers(1, 10)),
            cin=int(rng.choice([1, 5, 31, 32, 33, 64, 70])),
            cout=int(rng.choice([1, 7, 31, 32, 33, 40, 64, 65])),
            kernel=(kh, kw),
            strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            dilations=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
            padding=str(rng.choice(["SAME", "VALID"])),
            pad_value=int(rng.integers(0, 2)),
            activation=[None, "relu"][int(rng.random() < 0.2)],
            packed_input=bool(rng.random() < 0.5),
        )
        if case["padding"] == "VALID" and (
            case["h"] < (kh - 1) * case["dilations"][0] + 1
            or case["w"] < (kw - 1) * case["dilations"][1] + 1
        ):
            continue
        return case


def case_data(case: dict, seed: int):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((case["n"], case["h"], case["w"], case["cin"])).astype(np.float32)
    kernel = rng.standard_normal((*case["kernel"], case["cin"], case["cout"])).astype(np.float32)
    k = case["kernel"][0] * case["kernel"][1] * case["cin"]
    m, b = tricky_transform(rng, case["cout"], k)
    return x, kernel, m, b


def run_tf(case: dict, x, kernel, m, b, output_type: str) -> np.ndarray:
    inputs = ops.bitpack(x) if case["packed_input"] else x
    return ops.bconv2d(
        inputs, ops.pack_filter(kernel), m, b, kernel_size=case["kernel"],
        channels_in=case["cin"], strides=case["strides"], dilations=case["dilations"],
        padding=case["padding"], pad_value=case["pad_value"], activation=case["activation"],
        output_type=output_type,
    ).numpy()


def reference(case: dict, x, kernel, m, b) -> np.ndarray:
    return bconv2d_bitpacked_np(
        x, kernel, m, b, case["strides"], case["dilations"], case["padding"],
        case["pad_value"], case["activation"],
    )


@pytest.mark.parametrize("seed", range(30))
def test_bitpacked_output_matches_reference_and_float_path(seed):
    rng = np.random.default_rng(1000 + seed)
    case = random_case(rng)
    x, kernel, m, b = case_data(case, seed)
    got = run_tf(case, x, kernel, m, b, "bitpacked")
    expected = reference(case, x, kernel, m, b)
    assert got.dtype == np.int32 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # ... and the packing of the op's own float output.
    np.testing.assert_array_equal(got, bitpack_np(run_tf(case, x, kernel, m, b, "float")))


def test_thresholds_at_every_flip_point():
    """One channel per integer D of a small K, with b = -m * D and its float
    neighbours: every possible flip point of the float expression is hit."""
    rng = np.random.default_rng(5)
    cin, kh, kw = 3, 1, 1  # K = 3: D in {-3, -1, 1, 3}; pad 0 SAME adds 0 and +-1 +-2
    ms, bs = [], []
    for d in range(-4, 5):
        for scale in (0.3, -0.3, 7.0, -7.0, 1e-30, -1e-30):
            base = np.float32(-np.float32(scale) * np.float32(d))
            for nudge in (-1, 0, 1):
                bb = base
                for _ in range(abs(nudge)):
                    bb = np.nextafter(bb, np.float32(np.inf * nudge))
                ms.append(scale)
                bs.append(bb)
    m, b = np.array(ms, np.float32), np.array(bs, np.float32)
    x = rng.standard_normal((2, 5, 5, cin)).astype(np.float32)
    kernel = rng.standard_normal((kh, kw, cin, len(m))).astype(np.float32)
    for padding in ("SAME", "VALID"):
        got = ops.bconv2d(x, ops.pack_filter(kernel), m, b, kernel_size=1, padding=padding,
                          output_type="bitpacked").numpy()
        np.testing.assert_array_equal(
            got, bconv2d_bitpacked_np(x, kernel, m, b, padding=padding))


def test_relu_gives_all_plus_one():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((1, 4, 4, 40)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 40, 35)).astype(np.float32)
    m = rng.uniform(-2, 2, 35).astype(np.float32)
    b = rng.uniform(-50, 50, 35).astype(np.float32)
    got = ops.bconv2d(x, ops.pack_filter(kernel), m, b, kernel_size=3, activation="relu",
                      output_type="bitpacked").numpy()
    assert got.shape == (1, 2, 2, 2)
    assert not got.any()


# --------------------------------------------------------------------------
# LowbitBMaxPool2d
# --------------------------------------------------------------------------


def random_pool_case(rng):
    while True:
        case = dict(
            n=int(rng.integers(1, 3)), h=int(rng.integers(1, 9)), w=int(rng.integers(1, 9)),
            channels=int(rng.choice([1, 5, 31, 32, 33, 64, 70, 100])),
            pool=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
            strides=(int(rng.integers(1, 4)), int(rng.integers(1, 4))),
            padding=str(rng.choice(["SAME", "VALID"])),
        )
        fits = case["h"] >= case["pool"][0] and case["w"] >= case["pool"][1]
        if case["padding"] == "SAME" or fits:
            return case


@pytest.mark.parametrize("seed", range(30))
def test_bmaxpool_matches_reference_and_float_maxpool(seed):
    rng = np.random.default_rng(2000 + seed)
    case = random_pool_case(rng)
    # Mostly negative values, so that all--1 windows are common.
    x = (rng.standard_normal((case["n"], case["h"], case["w"], case["channels"])) - 0.8)
    x = x.astype(np.float32)
    packed = bitpack_np(x)
    if seed % 3 == 0:  # garbage in the padding bits is ignored
        tail = case["channels"] % 32
        if tail:
            packed = packed.copy()
            packed[..., -1] |= np.int32(np.uint32(~((1 << tail) - 1) & 0xFFFFFFFF).view(np.int32))
    got = ops.bmaxpool2d(packed, case["pool"], channels=case["channels"],
                         strides=case["strides"], padding=case["padding"]).numpy()
    expected = bmaxpool2d_np(packed, case["channels"], case["pool"], case["strides"],
                             case["padding"])
    np.testing.assert_array_equal(got, expected)
    pooled = tf.nn.max_pool2d(x, case["pool"], case["strides"], case["padding"]).numpy()
    np.testing.assert_array_equal(got, bitpack_np(pooled))


# --------------------------------------------------------------------------
# Converter: QuantConv2D -> BN -> MaxPool -> QuantConv2D stays packed
# --------------------------------------------------------------------------

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def _tflite_ops(tflite: bytes):
    from lowbit_converter.tflite_schema import schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    result = []
    for op in sub.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = code.customCode.decode() if code.customCode else names[builtin]
        result.append((name, op))
    return result, sub, schema


def _chain_model(kind: str, functional: bool):
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    body = [
        layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, name="b1", **BINARY),
        keras.layers.BatchNormalization(name="bn1"),
    ]
    if kind == "pool":
        body.append(keras.layers.MaxPooling2D(2, name="pool"))
    elif kind == "pool_same":
        body.append(keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool"))
    if kind == "dense":
        body += [keras.layers.Flatten(name="flat"),
                 layers.QuantDense(33, name="b2", **BINARY),
                 keras.layers.BatchNormalization(name="bn2"),
                 layers.QuantDense(10, name="b3", **BINARY)]
    else:
        body += [layers.QuantConv2D(35, 3, padding="same", pad_values=0.0, name="b2", **BINARY),
                 keras.layers.BatchNormalization(name="bn2"),
                 keras.layers.Flatten(name="flat"),
                 keras.layers.Dense(10, name="head")]
    inputs = keras.Input((9, 10, 5))
    if functional:
        y = inputs
        for layer in body:
            y = layer(y)
        model = keras.Model(inputs, y)
    else:
        model = keras.Sequential([inputs, *body])
    randomize_batch_norms(model, 0, signed_gamma=True)
    return model


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "sequential"])
@pytest.mark.parametrize("kind", ["pool", "pool_same", "direct", "dense"])
def test_converted_chain_stays_packed_and_reproduces_keras(kind, functional):
    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    model = _chain_model(kind, functional)
    x = np.random.default_rng(1).standard_normal((4, 9, 10, 5)).astype(np.float32)
    expected = model(x, training=False).numpy()
    lowered, plans = lower_model(model, packed_chains=True)
    # dense: Flatten sits between b1 and b2 (a float path), b2 -> bn2 -> b3 is packed.
    producer, consumer = ("b2", "b3") if kind == "dense" else ("b1", "b2")
    assert plans[producer].packed_output and plans[consumer].packed_input
    assert not plans[consumer].packed_output
    np.testing.assert_allclose(lowered(x).numpy(), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    tflite = lowbit_converter.convert(model)
    ops_, sub, schema = _tflite_ops(tflite)
    names = [n for n, _ in ops_]
    assert names.count("LowbitBconv2d") == (1 if kind == "dense" else 2), names
    assert names.count("LowbitBgemm") == (2 if kind == "dense" else 0), names
    assert ("LowbitBMaxPool2d" in names) == kind.startswith("pool"), names
    assert "MAX_POOL_2D" not in names
    # Between the two binary layers: only packed int32 tensors and packed ops.
    binary = "LowbitBgemm" if kind == "dense" else "LowbitBconv2d"
    first = names.index(binary)
    second = names.index(binary, first + 1)
    # Walk back from the second layer's input to the first one's output: only
    # packed int32 tensors, made by packed ops (or a reshape of the words).
    producer_of = {out: (name, op) for name, op in ops_ for out in op.outputs}
    tensor = ops_[second][1].inputs[0]
    while True:
        assert sub.tensors[tensor].type == schema.TensorType.INT32, names
        name, op = producer_of[tensor]
        if op is ops_[first][1]:
            break
        assert name in ("LowbitBMaxPool2d", "RESHAPE"), (name, names)
        tensor = op.inputs[0]
    interpreter = Interpreter(model_content=tflite)
    interpreter.resize_tensor_input(0, list(x.shape))
    got = interpreter.predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # packed_chains=False: the float path, no packed op.
    names = [n for n, _ in _tflite_ops(lowbit_converter.convert(model, packed_chains=False))[0]]
    assert "LowbitBMaxPool2d" not in names


def test_unpackable_chains_stay_float():
    """A grouped consumer, or a conv output that is also read elsewhere, keeps
    the float path (and still converts)."""
    from lowbit_converter.lowering import plan_lowering
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    inputs = keras.Input((8, 8, 4))
    a = layers.QuantConv2D(8, 3, padding="same", name="a", **BINARY)(inputs)
    b = layers.QuantConv2D(8, 3, padding="same", groups=2, name="b", **BINARY)(a)
    c = layers.QuantConv2D(8, 3, padding="same", name="c", **BINARY)(b)
    d = keras.layers.Add()([c, layers.QuantConv2D(8, 1, name="d", **BINARY)(c)])
    plans = plan_lowering(keras.Model(inputs, d), packed_chains=True)
    assert not any(p.packed_output or p.packed_input for p in plans.values())


# --------------------------------------------------------------------------
# TFLite kernels: same bits as the TF ops; bad options and shapes raise
# --------------------------------------------------------------------------

RUNTIMES = ("ai_edge_litert", "tensorflow")


def _tflite_chain(case, pool, kernel, m, b, output_type="bitpacked", overrides=None):
    """float x -> LowbitBconv2d(bitpacked) -> LowbitBMaxPool2d (if pool)."""
    from flatbuffers import flexbuffers
    from test_tflite_runtime import ModelBuilder

    overrides = dict(overrides or {})

    n, h, w, cin, cout = case["n"], case["h"], case["w"], case["cin"], case["cout"]
    y_tf = ops.bconv2d(np.zeros((n, h, w, cin), np.float32), ops.pack_filter(kernel),
                       kernel_size=case["kernel"], strides=case["strides"],
                       dilations=case["dilations"], padding=case["padding"],
                       pad_value=case["pad_value"], activation=case["activation"],
                       output_type="bitpacked")
    oh, ow = int(y_tf.shape[1]), int(y_tf.shape[2])
    options = dict(channels_in=cin, kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
                   stride_h=case["strides"][0], stride_w=case["strides"][1],
                   dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
                   padding=case["padding"], pad_value=case["pad_value"],
                   activation="RELU" if case["activation"] else "NONE", output_type=output_type)
    options.update(overrides.pop("conv", {}))
    mb = ModelBuilder()
    x = mb.tensor((n, h, w, cin), np.float32, name="x")
    f = mb.tensor((cout, ops.packed_words(kernel[..., 0].size)), np.int32,
                  ops.pack_filter(kernel).numpy())
    mt = mb.tensor((cout,), np.float32, m)
    bt = mb.tensor((cout,), np.float32, b)
    y = mb.tensor((n, oh, ow, ops.packed_words(cout)), np.int32, name="y")
    mb.custom_op("LowbitBconv2d", [x, f, mt, bt], [y], bytes(flexbuffers.Dumps(
        {k: v for k, v in options.items() if v is not None})))
    out = y
    if pool is not None:
        pool_opts = dict(channels=cout, filter_h=pool["pool"][0], filter_w=pool["pool"][1],
                         stride_h=pool["strides"][0], stride_w=pool["strides"][1],
                         padding=pool["padding"])
        pool_opts.update(overrides.pop("pool", {}))
        out = mb.tensor((n, 1, 1, ops.packed_words(cout)), np.int32, name="p")
        mb.custom_op("LowbitBMaxPool2d", [y], [out], bytes(flexbuffers.Dumps(pool_opts)))
    return mb.finish([x], [out])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(8))
def test_tflite_kernels_match_tf_ops(runtime, seed):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(3000 + seed)
    case = random_case(rng)
    case["packed_input"] = False
    x, kernel, m, b = case_data(case, seed)
    conv = run_tf(case, x, kernel, m, b, "bitpacked")
    np.testing.assert_array_equal(conv, reference(case, x, kernel, m, b))
    pool = None
    expected = conv
    if seed % 2 == 0:
        pool = dict(pool=(2, 2), strides=(1, 2), padding="SAME")
        expected = ops.bmaxpool2d(conv, pool["pool"], channels=case["cout"],
                                  strides=pool["strides"], padding="SAME").numpy()
        np.testing.assert_array_equal(
            expected, bmaxpool2d_np(conv, case["cout"], pool["pool"], pool["strides"], "SAME"))
    model = _tflite_chain(case, pool, kernel, m, b)
    got = Interpreter(model_content=model, runtime=runtime).predict(x)
    np.testing.assert_array_equal(got, expected)


BAD_CASE = dict(n=1, h=5, w=5, cin=33, cout=40, kernel=(3, 3), strides=(1, 1),
                dilations=(1, 1), padding="VALID", pad_value=0, activation=None)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("overrides, message", [
    (dict(output_type="packed"), "output_type"),
    (dict(conv={"output_type": 3}), "output_type"),
    (dict(pool={"channels": 0}), "channels"),
    (dict(pool={"channels": 100}), "packed words"),
    (dict(pool={"filter_h": 9, "padding": "VALID"}), "does not fit"),
    (dict(pool={"padding": "FULL"}), "padding"),
    (dict(pool={"stride_w": None}), "stride_w"),
    (dict(nonfinite=True), "finite"),
])
def test_tflite_bad_input_raises(runtime, overrides, message):
    from lowbit_tf.lite import Interpreter

    overrides = dict(overrides)  # the parameter is shared between runtimes
    rng = np.random.default_rng(9)
    x, kernel, m, b = case_data(dict(BAD_CASE, packed_input=False), 9)
    if overrides.pop("nonfinite", False):
        m = m.copy()
        m[3] = np.inf
    output_type = overrides.pop("output_type", "bitpacked")
    pool = dict(pool=(2, 2), strides=(2, 2), padding="SAME")
    model = _tflite_chain(BAD_CASE, pool, kernel, m, b, output_type=output_type,
                          overrides=overrides)
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, runtime=runtime).predict(
            rng.standard_normal((1, 5, 5, 33)).astype(np.float32))


def test_tf_ops_bad_input_raises():
    x = np.zeros((1, 5, 5, 33), np.float32)
    kernel = np.ones((3, 3, 33, 4), np.float32)
    packed = ops.pack_filter(kernel)
    with pytest.raises(ValueError, match="output_type"):
        ops.bconv2d(x, packed, kernel_size=3, output_type="packed")
    with pytest.raises(tf.errors.InvalidArgumentError, match="finite"):
        ops.bconv2d(x, packed, [1.0, np.nan, 1, 1], [0.0] * 4, kernel_size=3,
                    output_type="bitpacked")
    from lowbit_tf._native import load_tf_ops

    with pytest.raises(tf.errors.InvalidArgumentError, match="Tout"):
        load_tf_ops().lowbit_bconv2d(x, packed, [1.0] * 4, [0.0] * 4, [], channels_in=33,
                                     kernel_h=3, kernel_w=3, output_type="bitpacked")
    words = ops.bitpack(x)
    with pytest.raises(tf.errors.InvalidArgumentError, match="packed words"):
        ops.bmaxpool2d(words, 2, channels=65)
    with pytest.raises(tf.errors.InvalidArgumentError, match="does not fit"):
        ops.bmaxpool2d(words, 6, channels=33)
    with pytest.raises(TypeError):
        ops.bmaxpool2d(x, 2, channels=33)
    with pytest.raises(ValueError, match="padding"):
        ops.bmaxpool2d(words, 2, channels=33, padding="FULL")


# The packing pass is shared by every kernel (tests/test_kernels.py and
# tests/test_cross_kernels.py cover the kernels themselves): the reference,
# the portable and this machine's best path are enough here.
@pytest.mark.parametrize("path", ["reference", "portable", "auto"])
def test_every_kernel_path_packs_the_same_bits(path):
    """LOWBIT_KERNEL is read when an op kernel is created: each forced path in
    a fresh process, against the NumPy reference."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(TESTS)!r})
        import numpy as np
        import test_packed_chain as t
        bad = []
        for seed in range(6):
            rng = np.random.default_rng(4000 + seed)
            case = t.random_case(rng)
            x, kernel, m, b = t.case_data(case, seed)
            got = t.run_tf(case, x, kernel, m, b, "bitpacked")
            if not np.array_equal(got, t.reference(case, x, kernel, m, b)):
                bad.append(seed)
        print(json.dumps(bad))
    """)
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
