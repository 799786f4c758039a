"""LowbitFastfood: the Adaptive Fastfood transform (lowbit_tf.layers.FastfoodDense)
as one op, in TensorFlow and in TFLite, on one C++ core (core/fastfood.h).

Exactness: the float32 butterfly reference in the Keras layer's order of
operations (tests/reference.py fastfood_np) == the Keras layer == the TF op ==
the TFLite kernel, bit for bit (values; a zero may differ in sign only where a
bias is added); the float64 dense-matrix reference (fastfood_dense_np) within
a float32 tolerance. Gradients: the op's registered gradient against
tf.GradientTape through the Keras layer's float ops. Malformed TFLite models
run in a separate process (`python tests/test_fastfood_op.py --bad-cases
RUNTIME`), so that a crash fails a test instead of killing pytest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
from flatbuffers import flexbuffers
from reference import fastfood_dense_np, fastfood_np
from test_tflite_runtime import ModelBuilder

TESTS = Path(__file__).resolve().parent

tf = pytest.importorskip("tensorflow")
from lowbit_tf import layers, ops  # noqa: E402
from lowbit_tf._keras import keras  # noqa: E402
from lowbit_tf._native import load_tf_ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")

RUNTIMES = ("ai_edge_litert", "tensorflow")
F32 = np.float32


def random_weights(rng: np.random.Generator, k: int, n: int, units: int, bias: bool = True):
    """b, g, s, permutation, bias with general float values (not just the
    layer's +-1 b), so that any change in the order of operations would show."""
    b = (rng.choice([-1.0, 1.0], (k, n)) * rng.uniform(0.5, 1.5, (k, n))).astype(F32)
    g = rng.standard_normal((k, n)).astype(F32)
    s = rng.uniform(0.1, 2.0, (k, n)).astype(F32)
    permutation = np.stack([rng.permutation(n) for _ in range(k)]).astype(np.int32)
    return b, g, s, permutation, (rng.standard_normal(units).astype(F32) if bias else None)


def next_pow2(d: int) -> int:
    return 1 << max(d - 1, 0).bit_length()


# (lead shape, units as a function of n, block_size factor, activation, use_bias)
VARIANTS = [
    ((5,), lambda n: max(n // 2, 1), 1, None, True),  # units < n: part of one block
    ((1,), lambda n: 3 * n - 1, 1, "relu", True),  # several blocks, the last one partial
    ((2, 3), lambda n: 2 * n, 2, None, False),  # rank 3, a larger block, whole blocks
    ((0,), lambda n: n + 1, 1, "relu", False),  # no rows
    ((4, 1, 2), lambda n: n, 1, "tanh", True),  # rank 4, a trailing float activation
]
DIMS = (1, 3, 17, 64, 100)


def layer_case(d: int, variant: int, seed: int = 0):
    """A built FastfoodDense with random weights, its input, and its op arguments."""
    lead, units_of, factor, activation, use_bias = VARIANTS[variant]
    n = next_pow2(d) * factor
    units = units_of(n)
    layer = layers.FastfoodDense(units, block_size=n, activation=activation, use_bias=use_bias,
                                 seed=seed)  # fmt: skip
    layer.build((*lead, d))
    rng = np.random.default_rng(100 * d + variant)
    b, g, s, _, bias = random_weights(rng, layer.num_blocks, n, units, use_bias)
    for var, value in ((layer.b, b), (layer.g, g), (layer.s, s), (layer.bias, bias)):
        if var is not None:
            var.assign(value)
    x = rng.standard_normal((*lead, d)).astype(F32)
    args = (b, g, s, layer.permutation, bias)
    return layer, x, args, units, activation


@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("d", DIMS)
def test_op_equals_keras_layer_and_references(d, variant):
    layer, x, args, units, activation = layer_case(d, variant)
    fused = activation if activation == "relu" else None
    got = ops.fastfood(x, *args, units=units, activation=fused).numpy()
    if activation == "tanh":  # not fused: the layer's float op runs after
        got = layer.activation(got).numpy()
    expected = layer(x).numpy()
    assert got.shape == expected.shape == (*x.shape[:-1], units)
    np.testing.assert_array_equal(got, expected)
    if activation == "tanh":
        return
    np.testing.assert_array_equal(got, fastfood_np(x, *args, units=units, activation=fused))
    dense = fastfood_dense_np(x, *args, units=units, activation=fused)
    np.testing.assert_allclose(got, dense, rtol=1e-5, atol=2e-6 * np.abs(dense).max(initial=0))


def test_unused_blocks_are_ignored():
    """k * n may exceed units by more than a block: the extra blocks are skipped
    and get zero gradients."""
    rng = np.random.default_rng(3)
    b, g, s, permutation, bias = random_weights(rng, 4, 16, 10)
    x = rng.standard_normal((3, 11)).astype(F32)
    got = ops.fastfood(x, b, g, s, permutation, bias)  # units: the bias length
    np.testing.assert_array_equal(got.numpy(),
                                  fastfood_np(x, b, g, s, permutation, bias, units=10))
    variables = [tf.Variable(v) for v in (b, g, s)]
    with tf.GradientTape() as tape:
        y = ops.fastfood(x, *variables, permutation, bias, units=10)
        loss = tf.reduce_sum(y * y)
    for grad in tape.gradient(loss, variables):
        grad = grad.numpy()
        assert np.abs(grad[0]).max() > 0 and not grad[1:].any()


def test_rows_do_not_depend_on_their_batch():
    """The kernel transforms rows in interleaved groups: every row must get the
    bits it gets alone, wherever it sits in the batch."""
    rng = np.random.default_rng(11)
    args = random_weights(rng, 3, 32, 70)
    x = rng.standard_normal((19, 30)).astype(F32)
    together = ops.fastfood(x, *args, activation="relu").numpy()
    alone = np.concatenate([ops.fastfood(row[None], *args, activation="relu") for row in x])
    np.testing.assert_array_equal(together, alone)
    np.testing.assert_array_equal(together, fastfood_np(x, *args, units=70, activation="relu"))


def test_python_wrapper_defaults_and_conversions():
    rng = np.random.default_rng(4)
    b, g, s, permutation, bias = random_weights(rng, 2, 8, 16)
    x = rng.standard_normal((2, 5)).astype(F32)
    # units defaults to the bias length, else k * n; the permutation may be any
    # integer array that fits in int32.
    full = ops.fastfood(x, b, g, s, permutation.astype(np.int64), bias).numpy()
    assert full.shape == (2, 16)
    no_bias = ops.fastfood(x, b, g, s, permutation)
    np.testing.assert_array_equal(no_bias.numpy(), fastfood_np(x, b, g, s, permutation))
    np.testing.assert_array_equal(
        ops.fastfood(x[0], b, g, s, permutation, units=3).numpy(),  # rank 1
        fastfood_np(x[0], b, g, s, permutation, units=3))


# --------------------------------------------------------------------------
# Bad inputs: clear errors from the wrapper and from the kernel itself
# --------------------------------------------------------------------------

GOOD = random_weights(np.random.default_rng(5), 2, 8, 12)
X = np.ones((3, 6), F32)


def _with(index: int, value):
    args = list(GOOD)
    args[index] = value
    return args


BAD_PERMUTATIONS = {
    "out_of_range": (np.arange(16).reshape(2, 8), r"permutation\[1\]\[0\] = 8 is out of range"),
    "negative": (np.array([[0, 1, 2, 3, 4, 5, 6, -1], list(range(8))]), "= -1 is out of range"),
    "repeated": (np.array([[0, 1, 2, 3, 4, 5, 6, 6], list(range(8))]),
                 "row 0 is not a permutation.*value 6 appears at 6 and 7"),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(BAD_PERMUTATIONS))
def test_bad_permutation_raises_in_the_kernel(name):
    permutation, message = BAD_PERMUTATIONS[name]
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        ops.fastfood(X, *_with(3, permutation.astype(np.int32)))


@pytest.mark.parametrize("x, args, kwargs, error, message", [
    (X.astype(np.float64), GOOD, {}, TypeError, "x must be float32"),
    (np.float32(1), GOOD, {}, ValueError, "rank >= 1"),
    (X, _with(3, GOOD[3].astype(F32)), {}, TypeError, "integers"),
    (X, _with(3, tf.constant(GOOD[3], tf.int64)), {}, TypeError, "int32"),
    (X, _with(3, GOOD[3].astype(np.int64) + 2**32), {}, ValueError, "fit in int32"),
    (X, _with(0, GOOD[0][0]), {}, ValueError, "b must be 2-D"),
    (X, _with(1, GOOD[1][:, :4]), {}, ValueError, "g has shape"),
    (X, _with(3, GOOD[3][:1]), {}, ValueError, "permutation has shape"),
    (np.ones((3, 9), F32), GOOD, {}, ValueError, "d = 9 must be in"),
    (X, _with(4, GOOD[4][:5]), dict(units=12), ValueError, r"bias has shape.*\[12\]"),
    (X, GOOD, dict(units=17), ValueError, "units = 17 must be <= k"),
    (X, GOOD[:4], dict(units=0), ValueError, "units must be a positive"),
    (X, GOOD, dict(activation="tanh"), ValueError, "activation"),
    (X, [v[:, :6] for v in GOOD[:4]], {}, ValueError, "power of two"),
])  # fmt: skip
def test_wrapper_rejects_bad_arguments(x, args, kwargs, error, message):
    with pytest.raises(error, match=message):
        ops.fastfood(x, *args, **kwargs)


def _raw(x=X, b=GOOD[0], g=GOOD[1], s=GOOD[2], permutation=GOOD[3], bias=GOOD[4],
         units=12, activation="NONE"):  # fmt: skip
    return load_tf_ops().lowbit_fastfood(x, b, g, s, permutation, bias, units=units,
                                         activation=activation)  # fmt: skip


@pytest.mark.parametrize("kwargs, message", [
    (dict(b=GOOD[0][:, :6], g=GOOD[1][:, :6], s=GOOD[2][:, :6], permutation=GOOD[3][:, :6]),
     "block size n = 6 must be a power of two"),
    (dict(x=np.ones((3, 9), F32)), "input width d = 9 must be in"),
    (dict(x=np.ones((3, 0), F32)), "input width d = 0"),
    (dict(units=17, bias=np.zeros(17, F32)), r"units = 17 must be (in|<=)"),
    (dict(bias=np.zeros(11, F32)), r"bias must be \[units\] = \[12\]"),
    (dict(s=GOOD[2][:1]), "s has shape"),
    (dict(permutation=np.zeros((2, 8), np.int32)), "not a permutation"),
    (dict(permutation=np.full((2, 8), 2**31 - 1, np.int32)), "out of range"),
    (dict(x=np.float32(1.0)), "rank"),
])  # fmt: skip
def test_kernel_rejects_bad_inputs(kwargs, message):
    """The op itself, without the wrapper's checks (graph-building errors from
    the shape function are ValueErrors in eager mode too)."""
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        _raw(**kwargs)


def test_kernel_rejects_bad_attributes():
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="units"):
        _raw(units=0)
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match="activation"):
        _raw(activation="TANH")
    with pytest.raises((TypeError, tf.errors.InvalidArgumentError)):
        _raw(permutation=tf.constant(GOOD[3].astype(F32)))


# --------------------------------------------------------------------------
# Gradients and training through the op
# --------------------------------------------------------------------------


@pytest.mark.parametrize("d, variant", [(3, 1), (17, 0), (64, 2), (100, 1), (1, 4)])
def test_gradients_match_keras_layer(d, variant):
    layer, x, args, units, activation = layer_case(d, variant)
    if x.shape[0] == 0:
        x = np.ones((2, *x.shape[1:]), F32)
    fused = activation if activation == "relu" else None
    upstream = np.random.default_rng(d).standard_normal((*x.shape[:-1], units)).astype(F32)
    x = tf.constant(x)
    variables = [v for v in (layer.b, layer.g, layer.s, layer.bias) if v is not None]
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        keras_loss = tf.reduce_sum(layer(x) * upstream)
        y = ops.fastfood(x, layer.b, layer.g, layer.s, layer.permutation, layer.bias,
                         units=units, activation=fused)  # fmt: skip
        if activation == "tanh":
            y = tf.tanh(y)
        op_loss = tf.reduce_sum(y * upstream)
    for name, want, got in zip(["x", "b", "g", "s", "bias"],
                               tape.gradient(keras_loss, [x, *variables]),
                               tape.gradient(op_loss, [x, *variables]), strict=False):  # fmt: skip
        want, got = np.asarray(want), np.asarray(got)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * np.abs(want).max(),
                                   err_msg=name)  # fmt: skip


class OpFastfoodDense(layers.FastfoodDense):
    """FastfoodDense running its forward pass on the op (gradient: the op's)."""

    def call(self, inputs):
        return ops.fastfood(inputs, self.b, self.g, self.s, self.permutation, self.bias,
                            units=self.units, activation="relu")  # fmt: skip


def test_training_through_the_op_lowers_the_loss():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((128, 12)).astype(F32)
    y = np.tanh(x @ rng.standard_normal((12, 3))).astype(F32)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12,)), OpFastfoodDense(24, seed=1),
                              keras.layers.Dense(3)])  # fmt: skip
    model.compile(keras.optimizers.Adam(0.02), "mse")
    before = model.evaluate(x, y, verbose=0)
    start = [v.numpy().copy() for v in model.layers[0].trainable_variables]
    history = model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert history.history["loss"][-1] < 0.5 * before
    # b, g, s and the bias all moved.
    for old, var in zip(start, model.layers[0].trainable_variables, strict=True):
        assert not np.array_equal(old, var.numpy()), var.name


# --------------------------------------------------------------------------
# TFLite kernel: same bits as the TF op
# --------------------------------------------------------------------------


def fastfood_model(x_shape, b, g, s, permutation, bias, units, activation="NONE",
                   options=None, dtypes=None, drop_input=False,
                   permutation_input=False) -> bytes:  # fmt: skip
    """A .tflite with one LowbitFastfood; `options` overrides custom options
    (None values drop the key), `dtypes` the dtype of the constant inputs;
    `permutation_input` makes the permutation a second model input."""
    dtypes = dict(dtypes or {})
    opts = dict(units=units, activation=activation)
    opts.update(options or {})
    mb = ModelBuilder()
    x = mb.tensor(x_shape, dtypes.pop("x", np.float32), name="x")
    constants = [
        mb.tensor(np.shape(v), dtypes.get(name, np.float32 if name != "permutation" else np.int32),
                  None if permutation_input and name == "permutation" else np.asarray(v),
                  name=name)
        for name, v in (("b", b), ("g", g), ("s", s), ("permutation", permutation),
                        ("bias", np.zeros(0, F32) if bias is None else bias))
    ]  # fmt: skip
    out_shape = (*x_shape[:-1], units if units is not None else 1)
    y = mb.tensor(out_shape, np.float32, name="y")
    inputs = [x, *constants][: 5 if drop_input else 6]
    mb.custom_op("LowbitFastfood", inputs, [y], bytes(flexbuffers.Dumps(
        {k: v for k, v in opts.items() if v is not None})))  # fmt: skip
    return mb.finish([x, constants[3]] if permutation_input else [x], [y])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("d, variant", [(1, 0), (3, 1), (17, 2), (64, 3), (100, 4), (17, 1)])
def test_tflite_kernel_equals_tf_op(runtime, d, variant):
    from lowbit_tf.lite import Interpreter

    lead, units_of, factor, activation, use_bias = VARIANTS[variant]
    n = next_pow2(d) * factor
    units = units_of(n)
    rng = np.random.default_rng(7 * d + variant)
    b, g, s, permutation, bias = random_weights(rng, -(-units // n), n, units, use_bias)
    fused = "relu" if activation == "relu" else None
    x = rng.standard_normal((*lead, d)).astype(F32)
    expected = ops.fastfood(x, b, g, s, permutation, bias, units=units,
                            activation=fused).numpy()  # fmt: skip
    model = fastfood_model(x.shape, b, g, s, permutation, bias, units,
                           activation="RELU" if fused else "NONE")  # fmt: skip
    interpreter = Interpreter(model_content=model, runtime=runtime, num_threads=2)
    got = interpreter.predict(x)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    if x.shape[0]:  # another batch size through the same interpreter
        x2 = np.concatenate([x, -x, 2 * x])
        np.testing.assert_array_equal(
            interpreter.predict(x2),
            ops.fastfood(x2, b, g, s, permutation, bias, units=units, activation=fused))


def _bad_tflite_cases() -> dict:
    """name -> (model bytes, input, substring the error must contain)."""
    b, g, s, permutation, bias = GOOD
    x = np.ones((3, 6), F32)
    cases = {}

    def case(name, expect, *, x_in=x, **kwargs):
        args = dict(b=b, g=g, s=s, permutation=permutation, bias=bias, units=12)
        args.update({k: kwargs.pop(k) for k in list(kwargs) if k in args})
        shape = x_in[0].shape if isinstance(x_in, tuple) else x_in.shape
        model = fastfood_model(shape, args["b"], args["g"], args["s"], args["permutation"],
                               args["bias"], args["units"], **kwargs)  # fmt: skip
        cases[name] = (model, x_in, expect)

    case("options_missing_units", "missing option 'units'", options={"units": None})
    case("options_missing_activation", "activation", options={"activation": None})
    case("options_units_zero", "'units' = 0", options={"units": 0})
    case("options_units_string", "units", options={"units": "12"})
    case("options_units_float", "units", options={"units": 12.0})
    case("options_units_huge", "units", options={"units": 2**40})
    case("options_bad_activation", "activation", options={"activation": "TANH"})
    case("options_unknown_keys_ignored", "OK", options={"T": 1, "extra": "x"})
    case("units_larger_than_blocks", "units = 17 must be in", units=17, bias=np.zeros(17, F32))
    case("bias_wrong_length", "bias must be [units] = [12]", bias=np.zeros(11, F32))
    case("no_bias_ok", "OK", bias=None)
    case("permutation_out_of_range", "permutation[1][0] = 8 is out of range",
         permutation=np.arange(16, dtype=np.int32).reshape(2, 8))
    case("permutation_negative", "= -1 is out of range",
         permutation=np.array([[-1, *range(1, 8)], list(range(8))], np.int32))
    case("permutation_repeated", "row 1 is not a permutation",
         permutation=np.array([list(range(8)), [0] * 8], np.int32))
    # A permutation that is not a constant is checked when it changes, in Eval.
    case("permutation_input_ok", "OK", permutation_input=True, x_in=(x, permutation))
    case("permutation_input_bad", "] = 99 is out of range",
         permutation_input=True, x_in=(x, np.where(permutation == 3, 99, permutation)))
    case("permutation_float", "permutation must be INT32", permutation=permutation.astype(F32),
         dtypes={"permutation": np.float32})
    case("g_wrong_shape", "g has shape [2, 4]", g=g[:, :4])
    case("s_rank1", "s has shape [16]", s=s.reshape(-1))
    case("b_rank3", "b must have rank 2", b=b[None], g=g[None], s=s[None],
         permutation=permutation[None])
    case("bias_int32", "bias must be FLOAT32", bias=np.zeros(12, np.int32),
         dtypes={"bias": np.int32})
    case("x_int32", "x must be FLOAT32", x_in=x.astype(np.int32), dtypes={"x": np.int32})
    case("x_wider_than_block", "input width d = 9", x_in=np.ones((3, 9), F32))
    case("block_not_power_of_two", "power of two", b=b[:, :6], g=g[:, :6], s=s[:, :6],
         permutation=permutation[:, :6], x_in=np.ones((3, 5), F32))
    case("five_inputs", "expected 6 inputs", drop_input=True)
    good = fastfood_model(x.shape, b, g, s, permutation, bias, 12)
    options = bytes(flexbuffers.Dumps({"units": 12, "activation": "NONE"}))
    for k in (1, 3, len(options) // 2, len(options) - 1):
        cases[f"options_truncated_{k}"] = (_replace_options(good, options[:k]), x, "LowbitFastfood")
    cases["options_empty"] = (_replace_options(good, b""), x, "custom options are missing")
    return cases


def _replace_options(model: bytes, options: bytes) -> bytes:
    from lowbit_converter.tflite_schema import schema

    m = schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
    m.subgraphs[0].operators[0].customOptions = list(options)
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _fuzzed_models(count: int):
    """Random byte mutations of valid custom options: most fail, none may crash."""
    b, g, s, permutation, bias = GOOD
    options = bytearray(flexbuffers.Dumps({"units": 12, "activation": "NONE"}))
    good = fastfood_model((3, 6), b, g, s, permutation, bias, 12)
    rng = np.random.default_rng(8)
    for i in range(count):
        mutated = bytearray(options)
        for _ in range(int(rng.integers(1, 4))):
            mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        yield f"fuzz_{i}", _replace_options(good, bytes(mutated))


def _worker(runtime: str) -> None:
    from lowbit_tf import lite

    def run(model, x):
        try:
            lite.Interpreter(model_content=model, runtime=runtime).predict(
                *(x if isinstance(x, tuple) else (x,)))
        except Exception as e:  # noqa: BLE001 - the type is reported to the test
            return type(e).__name__, str(e)
        return None, ""

    for name, (model, x, _) in _bad_tflite_cases().items():
        raised, message = run(model, x)
        print(json.dumps({"name": name, "raised": raised, "message": message[-600:]}), flush=True)
    for name, model in _fuzzed_models(100):
        raised, message = run(model, np.ones((3, 6), F32))
        print(json.dumps({"name": name, "raised": raised, "message": message[-200:]}), flush=True)
    print(json.dumps({"name": "__done__"}), flush=True)


_WORKER_RESULTS: dict = {}


def _worker_results(runtime: str) -> dict:
    if runtime not in _WORKER_RESULTS:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, __file__, "--bad-cases", runtime],
                              capture_output=True, text=True, timeout=600, env=env)  # fmt: skip
        results = {}
        for line in proc.stdout.splitlines():
            if line.startswith("{"):
                entry = json.loads(line)
                results[entry["name"]] = entry
        results["__returncode__"] = proc.returncode
        results["__stderr__"] = proc.stderr[-3000:]
        _WORKER_RESULTS[runtime] = results
    return _WORKER_RESULTS[runtime]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_tflite_bad_inputs_never_crash(runtime):
    results = _worker_results(runtime)
    assert results["__returncode__"] == 0 and "__done__" in results, results["__stderr__"]
    fuzz = [v for k, v in results.items() if k.startswith("fuzz_")]
    assert len(fuzz) == 100 and any(v["raised"] for v in fuzz)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", sorted(_bad_tflite_cases()))
def test_tflite_bad_input_raises(runtime, name):
    expect = _bad_tflite_cases()[name][2]
    result = _worker_results(runtime).get(name)
    assert result is not None, "worker crashed before this case"
    if expect == "OK":
        assert result["raised"] is None, result["message"]
    else:
        assert result["raised"] in ("ModelError", "ValueError", "RuntimeError"), result
        assert expect in result["message"], result["message"]


# --------------------------------------------------------------------------
# Converter: FastfoodDense -> one LowbitFastfood
# --------------------------------------------------------------------------


def _fastfood_model(functional: bool, rank3: bool):
    body = [
        keras.layers.Dense(20, name="dense_in"),
        layers.FastfoodDense(40, activation="relu", name="ff_relu", seed=1),
        layers.FastfoodDense(12, activation="tanh", use_bias=False, name="ff_tanh", seed=2),
        layers.FastfoodDense(64, block_size=32, name="ff_plain", seed=3),
        keras.layers.Dense(5, name="dense_out"),
    ]
    inputs = keras.Input((3, 7) if rank3 else (7,))
    if functional:
        y = inputs
        for layer in body:
            y = layer(y)
        model = keras.Model(inputs, y)
    else:
        model = keras.Sequential([inputs, *body])
    rng = np.random.default_rng(9)
    for layer in model.layers:
        if isinstance(layer, layers.FastfoodDense) and layer.bias is not None:
            layer.bias.assign(rng.standard_normal(layer.units).astype(F32))
    return model


@pytest.mark.parametrize("functional, rank3", [(True, False), (False, True)])
def test_converted_fastfood_reproduces_keras(functional, rank3):
    from test_packed_chain import _tflite_ops

    from lowbit_converter.convert import convert_with_report
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    model = _fastfood_model(functional, rank3)
    x = np.random.default_rng(10).standard_normal((6, *model.input_shape[1:])).astype(F32)
    expected = model(x).numpy()
    lowered, plans = lower_model(model)
    assert {"ff_relu", "ff_tanh", "ff_plain"} <= set(plans)
    np.testing.assert_array_equal(lowered(x).numpy(), expected)  # the op equals the layer
    with contextlib.redirect_stdout(io.StringIO()):
        result = convert_with_report(model)
    assert result.lowered_layers == ["ff_plain", "ff_relu", "ff_tanh"]
    assert result.report.custom_ops == {"LowbitFastfood": 3}
    found, _, _ = _tflite_ops(result.tflite_model)
    names = [name for name, _ in found]
    assert "TANH" in names, names
    if not rank3:  # only the Dense layers and the ops remain (no butterflies, no gather)
        assert sorted(set(names)) == ["FULLY_CONNECTED", "LowbitFastfood", "TANH"], names
    options = [flexbuffers.Loads(bytes(op.customOptions)) for name, op in found
               if name == "LowbitFastfood"]  # fmt: skip
    assert options == [{"units": 40, "activation": "RELU"}, {"units": 12, "activation": "NONE"},
                       {"units": 64, "activation": "NONE"}]  # fmt: skip
    interpreter = Interpreter(model_content=result.tflite_model)
    got = interpreter.predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_unconvertible_fastfood_raises_conversion_error():
    from lowbit_converter import ConversionError
    from lowbit_converter.lowering import lower_model

    model = keras.Sequential([keras.Input((6,)),
                              layers.FastfoodDense(8, dtype="mixed_float16", name="half_ff")])
    with pytest.raises(ConversionError, match=r"'half_ff'.*compute dtype 'float16'"):
        lower_model(model)


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bad-cases":
        _worker(sys.argv[2])
