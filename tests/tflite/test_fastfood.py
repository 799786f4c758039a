"""The TFLite kernel of LowbitFastfood in both runtimes: the same bits as the TF
op, with float and int8 x and output (quantization from the tensors); bad
quantization parameters raise naming the tensor; malformed and fuzzed models
raise, never crash, in a subprocess
(`PYTHONPATH=tests/helpers python tests/tflite/test_fastfood.py --bad-cases
RUNTIME`), so that a crash fails a test instead of killing pytest.
"""

from __future__ import annotations

import json
import sys

import flatbuffers
import numpy as np
import pytest
from fastfood_cases import F32, GOOD, VARIANTS, int8_case, next_pow2, random_weights
from flatbuffers import flexbuffers
from repo_paths import run_bad_case_worker
from tflite_models import ModelBuilder

tf = pytest.importorskip("tensorflow")

from lowbit_tf import ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


RUNTIMES = ("ai_edge_litert", "tensorflow")


# --------------------------------------------------------------------------
# TFLite kernel: same bits as the TF op
# --------------------------------------------------------------------------


def fastfood_model(x_shape, b, g, s, permutation, bias, units, activation="NONE",
                   options=None, dtypes=None, drop_input=False,
                   permutation_input=False, quantization=None) -> bytes:  # fmt: skip
    """A .tflite with one LowbitFastfood; `options` overrides custom options
    (None values drop the key), `dtypes` the dtype of x, the constant inputs
    and the output y; `permutation_input` makes the permutation a second model
    input; `quantization` {"x": ..., "y": ...} the tensors' (scales, zero
    points)."""
    quantization = quantization or {}
    dtypes = dict(dtypes or {})
    opts = dict(units=units, activation=activation)
    opts.update(options or {})
    mb = ModelBuilder()
    x = mb.tensor(x_shape, dtypes.pop("x", np.float32), name="x",
                  quantization=quantization.get("x"))
    constants = [
        mb.tensor(np.shape(v), dtypes.get(name, np.float32 if name != "permutation" else np.int32),
                  None if permutation_input and name == "permutation" else np.asarray(v),
                  name=name)
        for name, v in (("b", b), ("g", g), ("s", s), ("permutation", permutation),
                        ("bias", np.zeros(0, F32) if bias is None else bias))
    ]  # fmt: skip
    out_shape = (*x_shape[:-1], units if units is not None else 1)
    y = mb.tensor(out_shape, dtypes.pop("y", np.float32), name="y",
                  quantization=quantization.get("y"))
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


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("io", ("int8_float", "int8_int8", "float_int8"))
@pytest.mark.parametrize("d, variant", [(1, 0), (3, 1), (17, 2), (100, 4), (17, 1), (5, 3)])
def test_tflite_int8_io_equals_tf_op(runtime, io, d, variant):
    """The quantization read from the tensors; the TF op (held to the reference
    by tests/tf_ops/test_fastfood.py) given the same as attributes."""
    from lowbit_tf.lite import Interpreter

    q, (xs, xz), weights, units, activation, _, (ys, yz) = int8_case(d, variant, seed=1)
    x, x_quant, kwargs = q, ([xs], [xz]), dict(input_scale=xs, input_zero_point=xz)
    if io.startswith("float"):
        x, x_quant, kwargs = (q.astype(F32) - xz) * np.float32(xs), None, {}
    y_quant = None
    if io.endswith("int8"):
        y_quant = ([ys], [yz])
        kwargs.update(output_type="int8", output_scale=ys, output_zero_point=yz)
    expected = ops.fastfood(x, *weights, units=units, activation=activation,
                            **kwargs).numpy()  # fmt: skip
    model = fastfood_model(x.shape, *weights, units, activation="RELU" if activation else "NONE",
                           options=dict(output_type=kwargs.get("output_type")),
                           dtypes=dict(x=x.dtype, y=expected.dtype),
                           quantization=dict(x=x_quant, y=y_quant))  # fmt: skip
    for threads in (1, 2):
        got = Interpreter(model_content=model, runtime=runtime, num_threads=threads).predict(x)
        assert got.dtype == expected.dtype and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("override, message", [
    (dict(x_quant=([0.0], [0])), "x scale must be finite and > 0, got 0"),
    (dict(x_quant=([float("inf")], [0])), "x scale must be finite and > 0"),
    (dict(x_quant=([0.1], [-129])), r"x zero point must be in \[-128, 127\], got -129"),
    (dict(x_quant=None), "x is INT8 but has no quantization"),
    (dict(x_quant=([0.1] * 6, [0] * 6, 1)),
     r"x must be quantized per tensor \(one scale\), got 6 scales"),
    (dict(x_dtype=np.int16), "x must be FLOAT32 or INT8, got INT16"),
    (dict(y_dtype=np.int8, y_quant=([0.0], [0]), output_type="int8"),
     "output scale must be finite and > 0, got 0"),
    (dict(y_dtype=np.int8, y_quant=([0.1], [300]), output_type="int8"),
     r"output zero point must be in \[-128, 127\], got 300"),
    (dict(y_dtype=np.int8, y_quant=None, output_type="int8"),
     "output is INT8 but has no quantization"),
    (dict(y_dtype=np.int8, y_quant=([0.1] * 12, [0] * 12, 1), output_type="int8"),
     r"output must be quantized per tensor \(one scale\), got 12 scales"),
    (dict(y_dtype=np.int16, y_quant=([0.1], [0]), output_type="int8"),
     "output tensor 'y' has type INT16, expected INT8"),
    (dict(y_dtype=np.int8, y_quant=([0.1], [0])), "output tensor 'y' has type INT8, expected"),
    (dict(output_type="bitpacked"), "output_type"),
])  # fmt: skip
def test_tflite_bad_int8_quantization_raises(override, message):
    from lowbit_tf.lite import Interpreter

    override = dict(override)
    x_dtype = override.pop("x_dtype", np.int8)
    b, g, s, permutation, bias = GOOD
    model = fastfood_model(
        (3, 6), b, g, s, permutation, bias, 12, options=dict(output_type=override.pop(
            "output_type", None)),
        dtypes=dict(x=x_dtype, y=override.pop("y_dtype", np.float32)),
        quantization=dict(x=override.pop("x_quant", ([0.1], [0])), y=override.pop("y_quant", None)))
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, num_threads=1).predict(np.zeros((3, 6), x_dtype))


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
        _WORKER_RESULTS[runtime] = run_bad_case_worker(__file__, runtime)
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


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bad-cases":
        _worker(sys.argv[2])

