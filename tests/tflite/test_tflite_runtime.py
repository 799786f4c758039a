"""Tests of the TFLite runtime shell: the lowbit external delegate
(custom_ops/tflite) and `lowbit_tf.lite.Interpreter`.

The .tflite models are built with tests/helpers/tflite_models.py (the
flatbuffers object API of the TFLite schema), so these tests need neither the
TF ops nor the converter. Results are compared with a plain NumPy binary
convolution. Malformed models and options run in a separate process
(`PYTHONPATH=tests/helpers python tests/tflite/test_tflite_runtime.py
--bad-cases RUNTIME`) so that a crash would fail the test instead of killing
pytest. The FlexBuffer reader is also fuzzed on its own under AddressSanitizer.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from flatbuffers import flexbuffers
from repo_paths import REPO, run_bad_case_worker
from tflite_models import Case, ModelBuilder, bconv2d_ref

from lowbit_tf import lite

# tf.lite.Interpreter warns that it is deprecated in favour of ai_edge_litert.
pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")




RUNTIMES = ("ai_edge_litert", "tensorflow")


# --------------------------------------------------------------------------
# Correctness
# --------------------------------------------------------------------------

CASES = {
    "c1_valid": dict(c=1, cout=2, kh=3, kw=3),
    "c33_same_pad1": dict(c=33, cout=5, padding="SAME", pad_value=1),
    "c65_same_pad0_stride2": dict(c=65, cout=7, h=7, w=6, padding="SAME", stride=(2, 2)),
    "c32_dilation2": dict(c=32, cout=3, h=8, w=9, dilation=(2, 2)),
    "c64_relu_stride_hw": dict(c=64, cout=6, h=9, w=7, stride=(2, 1), activation="RELU"),
    "c65_same_dilation_pad1": dict(
        c=65, cout=4, h=6, w=6, padding="SAME", pad_value=1, dilation=(2, 3)
    ),
    "c33_packed_input": dict(c=33, cout=4, padding="SAME", packed_input=True),
    "c100_batch3_1x1": dict(n=3, c=100, cout=9, kh=1, kw=1, h=4, w=3),
    "c7_kernel_2x4_same": dict(c=7, cout=3, kh=2, kw=4, h=5, w=8, padding="SAME", stride=(3, 2)),
    "c200_cout33": dict(c=200, cout=33, h=4, w=4, padding="SAME", pad_value=0, activation="RELU"),
    # EXPLICIT padding; pads wider than the window leave whole windows in the
    # padding (the stride phases of a transposed convolution have them).
    "c33_explicit_pad0": dict(c=33, cout=5, h=5, w=6, padding=((2, 0), (1, 3))),
    "c65_explicit_pad1_stride2": dict(c=65, cout=4, h=4, w=5, padding=((0, 3), (4, 1)),
                                      pad_value=1, stride=(2, 2)),
    "c40_explicit_pad0_dilation": dict(c=40, cout=6, h=3, w=4, kh=2, kw=3, dilation=(2, 1),
                                       padding=((3, 4), (0, 5)), activation="RELU"),
}


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", sorted(CASES))
def test_bconv2d_matches_reference(name, runtime):
    case = Case(**CASES[name])
    interpreter = lite.Interpreter(model_content=case.model(), runtime=runtime, num_threads=2)
    got = interpreter.predict(case.model_input())
    np.testing.assert_array_equal(got, case.expected())


def _chain_model(c_in=40, c_mid=35, c_out=8, mid_is_output=False):
    """ADD -> LowbitBconv2d -> LowbitBconv2d -> ADD: the two binary convs form one
    delegated partition whose middle tensor is internal unless it is an output."""
    first = Case(h=6, w=6, c=c_in, cout=c_mid, padding="SAME", pad_value=1, seed=1)
    second = Case(h=6, w=6, c=c_mid, cout=c_out, kh=3, kw=3, seed=2)
    mb = ModelBuilder()
    x = mb.tensor(first.x.shape, np.float32, name="x")
    x2 = mb.tensor(first.x.shape, np.float32, name="x2")
    mb.add_op([x, x], [x2])
    tensors = []
    for case in (first, second):
        f = mb.tensor(case.filter.shape, np.int32, case.filter)
        m = mb.tensor(case.multiplier.shape, np.float32, case.multiplier)
        b = mb.tensor(case.bias.shape, np.float32, case.bias)
        tensors.append((f, m, b))
    mid_shape = (1, 6, 6, c_mid)
    out_shape = (1, 4, 4, c_out)
    y1 = mb.tensor(mid_shape, np.float32, name="y1")
    y2 = mb.tensor(out_shape, np.float32, name="y2")
    y3 = mb.tensor(out_shape, np.float32, name="y3")
    mb.custom_op("LowbitBconv2d", [x2, *tensors[0]], [y1], first.options())
    mb.custom_op("LowbitBconv2d", [y1, *tensors[1]], [y2], second.options())
    mb.add_op([y2, y2], [y3])
    model = mb.finish([x], [y3, y1] if mid_is_output else [y3])
    mid = first.expected()
    second.x = mid
    out = second.expected()
    return model, first.x, [out + out, mid] if mid_is_output else [out + out]


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("mid_is_output", [False, True])
def test_partition_of_connected_nodes(runtime, mid_is_output):
    model, x, expected = _chain_model(mid_is_output=mid_is_output)
    interpreter = lite.Interpreter(model_content=model, runtime=runtime)
    got = interpreter.predict(x)
    got = got if isinstance(got, list) else [got]
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        np.testing.assert_array_equal(g, e)


def test_batch_resize_and_threads():
    case = Case(n=2, h=6, w=5, c=70, cout=12, padding="SAME", pad_value=1, activation="RELU")
    expected = case.expected()
    single = lite.Interpreter(model_content=case.model(), num_threads=1)
    multi = lite.Interpreter(model_content=case.model(), num_threads=3)
    np.testing.assert_array_equal(single.predict(case.x), expected)
    np.testing.assert_array_equal(multi.predict(case.x), expected)
    # Another batch size: predict() resizes the input, the kernel resizes the output.
    np.testing.assert_array_equal(multi.predict(case.x[:1]), expected[:1])
    bigger = np.concatenate([case.x, case.x[::-1]])
    np.testing.assert_array_equal(multi(bigger), np.concatenate([expected, expected[::-1]]))


def test_usual_interpreter_api():
    case = Case(c=33, cout=4, padding="SAME")
    interpreter = lite.Interpreter(model_content=case.model())
    interpreter.allocate_tensors()
    (inp,) = interpreter.get_input_details()
    (out,) = interpreter.get_output_details()
    assert inp["dtype"] == np.float32 and list(out["shape"]) == [1, 5, 5, 4]
    interpreter.set_tensor(inp["index"], case.x)
    interpreter.invoke()
    np.testing.assert_array_equal(interpreter.get_tensor(out["index"]), case.expected())
    assert interpreter.get_tensor_details()  # forwarded to the runtime
    assert "ai_edge_litert" in repr(interpreter)


def test_model_path(tmp_path):
    case = Case(c=65, cout=3)
    path = tmp_path / "bconv.tflite"
    path.write_bytes(case.model())
    np.testing.assert_array_equal(lite.Interpreter(path).predict(case.x), case.expected())
    with pytest.raises(lite.ModelError, match="cannot read"):
        lite.Interpreter(tmp_path / "missing.tflite")
    with pytest.raises(ValueError, match="exactly one"):
        lite.Interpreter()


def test_stock_interpreter_cannot_run_lowbit_ops():
    """Without the delegate the runtime rejects the custom op: the delegate is
    what makes the model run."""
    case = Case()
    interpreter = lite.Interpreter(model_content=case.model(), use_lowbit_delegate=False)
    with pytest.raises(lite.ModelError, match="LowbitBconv2d"):
        interpreter.allocate_tensors()


def test_delegate_options_are_validated():
    from ai_edge_litert import interpreter as litert

    path = str(lite.delegate_library_path())
    with pytest.raises(ValueError, match="num_threads"):
        litert.load_delegate(path, {"num_threads": "many"})
    with pytest.raises(ValueError, match="unknown option 'bogus'"):
        litert.load_delegate(path, {"bogus": "1"})
    assert litert.load_delegate(path, {"num_threads": "4"}) is not None
    with pytest.raises(ValueError, match="num_threads"):
        lite.Interpreter(model_content=Case().model(), num_threads=0)


def test_lite_works_without_tensorflow():
    """On a device without TensorFlow (simulated by making its import fail),
    lowbit_tf.lite still loads and runs models."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        sys.modules["keras"] = None
        sys.path.insert(0, sys.argv[1])
        import numpy as np
        import lowbit_tf.lite as lite
        sys.path.insert(0, sys.argv[1] + "/tests/helpers")
        from tflite_models import Case
        case = Case(c=33, cout=4)
        out = lite.Interpreter(model_content=case.model()).predict(case.x)
        assert np.array_equal(out, case.expected())
        assert lite.Interpreter(model_content=case.model()).runtime_name == "ai_edge_litert"
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


def test_lite_imports_no_tensorflow_in_the_full_install():
    """With TensorFlow installed, `import lowbit_tf.lite` still imports neither
    TensorFlow nor Keras (issue 20, item 6); the Keras side of the package
    loads when used, and registers its classes once Keras is imported."""
    code = textwrap.dedent(
        """
        import sys
        sys.path.insert(0, sys.argv[1])
        import numpy as np
        from lowbit_tf.lite import Interpreter
        sys.path.insert(0, sys.argv[1] + "/tests/helpers")
        from tflite_models import Case
        case = Case(c=33, cout=4)
        assert np.array_equal(Interpreter(case.model()).predict(case.x), case.expected())
        import lowbit_tf
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
        assert not loaded, loaded[:5]
        assert "layers" in dir(lowbit_tf)
        import keras
        assert "lowbit_tf>QuantConv2D" in keras.saving.get_custom_objects()
        assert lowbit_tf.layers.QuantConv2D.__name__ == "QuantConv2D"
        from lowbit_tf import quantizers
        assert quantizers.ste_sign
        print("OK")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]


def test_tf_converter_output_runs_bit_identical_to_tf_op():
    """A model converted by TF's converter from the lowbit TF op (custom options
    written by TF, with its extra "T" attribute) runs under the delegate with
    the same result as the TF op."""
    tf = pytest.importorskip("tensorflow")
    from lowbit_tf import _native

    try:
        _native.load_tf_ops()
    except ImportError as e:
        pytest.skip(f"TF op library unavailable: {e}")
    from lowbit_tf import ops

    rng = np.random.default_rng(3)
    c, cout = 33, 5
    kernel = rng.standard_normal((3, 3, c, cout)).astype(np.float32)
    packed = ops.pack_filter(kernel)
    mult = rng.uniform(0.5, 2, cout).astype(np.float32)
    bias = rng.uniform(-1, 1, cout).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([1, 7, 7, c], tf.float32)])
    def fn(x):
        return ops.bconv2d(
            x, packed, mult, bias, kernel_size=3, strides=2, padding="SAME", pad_value=1,
            activation="relu",
        )

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.allow_custom_ops = True
    model = converter.convert()
    x = rng.standard_normal((1, 7, 7, c)).astype(np.float32)
    got = lite.Interpreter(model_content=model).predict(x)
    np.testing.assert_array_equal(got, fn(x).numpy())
    weights = np.where(np.transpose(kernel, (3, 0, 1, 2)) < 0, -1.0, 1.0)
    ref = bconv2d_ref(x, weights, mult, bias, (2, 2), (1, 1), "SAME", 1, "RELU")
    np.testing.assert_array_equal(got, ref)


# --------------------------------------------------------------------------
# Malformed models and options: each must raise, never crash
# --------------------------------------------------------------------------


def _bad_cases() -> dict:
    """name -> (model bytes, input, substring the error must contain or None).

    A None substring means the case is a fuzz input that may also succeed."""
    base = Case(c=33, cout=4, padding="SAME", pad_value=1)
    good_options = base.options()
    model = base.model()
    x = base.x
    rng = np.random.default_rng(1234)
    cases = {}

    def opts(name, expect, **overrides):
        cases[name] = (base.model(options=base.options(**overrides)), x, expect)

    for i in range(6):
        junk = rng.integers(0, 256, int(rng.integers(1, 80)), dtype=np.uint8).tobytes()
        cases[f"options_random_bytes_{i}"] = (base.model(options=junk), x, "LowbitBconv2d")
    for k in (1, 2, 3, len(good_options) // 3, len(good_options) // 2, len(good_options) - 1):
        cases[f"options_truncated_end_{k}"] = (
            base.model(options=good_options[:k]),
            x,
            "LowbitBconv2d",
        )
        cases[f"options_truncated_start_{k}"] = (
            base.model(options=good_options[k:]),
            x,
            "LowbitBconv2d",
        )
    cases["options_empty"] = (base.model(options=b""), x, "custom options are missing")
    cases["options_not_a_map"] = (
        base.model(options=bytes(flexbuffers.Dumps([1, 2, 3]))),
        x,
        "expected a map",
    )
    cases["options_scalar_root"] = (
        base.model(options=bytes(flexbuffers.Dumps(7))),
        x,
        "expected a map",
    )
    opts("options_missing_channels_in", "missing option 'channels_in'", channels_in=None)
    opts("options_missing_padding", "missing option 'padding'", padding=None)
    opts("options_string_for_int", "stride_h", stride_h="2")
    opts("options_float_for_int", "stride_w", stride_w=1.5)
    opts("options_bool_for_int", "pad_value", pad_value=True)
    opts("options_int_for_string", "padding", padding=1)
    opts("options_bad_padding", 'option \'padding\' = "FULL" must be one of "SAME", "VALID"',
         padding="FULL")
    opts("options_bad_activation", "activation", activation="TANH")
    opts("options_stride_zero", "option 'stride_h' = 0 is out of range [1, 2147483647]",
         stride_h=0)
    opts("options_negative_dilation", "dilation_w", dilation_w=-1)
    opts("options_huge_dilation", "dilation_h", dilation_h=2**40)
    opts("options_pad_value_2", "option 'pad_value' = 2 is out of range [0, 1]", pad_value=2)
    opts("options_channels_zero", "channels_in", channels_in=0)
    opts("options_channels_mismatch", "channels", channels_in=34)
    opts("options_channels_words_mismatch", "channels_in", channels_in=65)
    cases["options_unknown_keys_ignored"] = (
        base.model(options=base.options(T=1, extra="x", weird=[1, 2])),
        x,
        "OK",
    )

    f = base.filter
    cases["filter_wrong_words"] = (
        base.model(filter_data=np.zeros((f.shape[0], f.shape[1] + 1), np.int32)),
        x,
        "filter",
    )
    cases["filter_rank3"] = (base.model(filter_data=f.reshape(f.shape[0], 1, -1)), x, "filter")
    opts("options_kernel_mismatch", "filter", kernel_h=2)
    opts("options_kernel_zero", "kernel_w", kernel_w=0)
    opts("options_receptive_field_too_large", "receptive field", kernel_h=2**15, kernel_w=2**15)
    cases["filter_float32"] = (
        base.model(filter_data=f.astype(np.float32)),
        x,
        "filter must be INT32",
    )
    cases["multiplier_short"] = (
        base.model(multiplier=base.multiplier[:3]),
        x,
        "multiplier",
    )
    cases["bias_int32"] = (base.model(bias=base.bias.astype(np.int32)), x, "bias must be FLOAT32")
    cases["bias_rank2"] = (base.model(bias=base.bias.reshape(2, 2)), x, "bias")
    cases["input_int64"] = (
        base.model(input_dtype=np.int64),
        x.astype(np.int64),
        "input must be FLOAT32, INT32 (packed) or INT8",
    )
    cases["input_int8"] = (base.model(input_dtype=np.int8), x.astype(np.int8),
                           "input is INT8 but has no quantization")
    cases["input_rank3"] = (base.model(input_shape=(5, 5, 33)), x[0], "input must be 4-D")
    cases["input_channels_34"] = (
        base.model(input_shape=(1, 5, 5, 34)),
        np.zeros((1, 5, 5, 34), np.float32),
        "34",
    )
    packed = Case(c=33, cout=4, packed_input=True)
    cases["packed_input_wrong_words"] = (
        packed.model(input_shape=(1, 5, 5, 3)),
        np.zeros((1, 5, 5, 3), np.int32),
        "packed words",
    )
    small = Case(h=2, w=2, kh=3, kw=3)
    cases["valid_kernel_larger_than_input"] = (
        small.model(output_shape=(1, 1, 1, 4)),
        small.x,
        "LowbitBconv2d",
    )

    for frac in (0.1, 0.5, 0.9, 0.99):
        cases[f"model_truncated_{frac}"] = (model[: int(len(model) * frac)], x, "")
    cases["model_random_bytes"] = (rng.integers(0, 256, 500, dtype=np.uint8).tobytes(), x, "")
    cases["model_empty"] = (b"", x, "")
    cases["model_not_tflite"] = (b"this is not a flatbuffer at all", x, "TFLite")
    return cases


def _fuzz_inputs(seed: int, count: int):
    """Random byte mutations of valid options and of a valid model."""
    base = Case(c=33, cout=4, padding="SAME", pad_value=1)
    good = bytearray(base.options())
    model = bytearray(base.model())
    rng = np.random.default_rng(seed)
    for i in range(count):
        target = good if i % 2 == 0 else model
        mutated = bytearray(target)
        for _ in range(int(rng.integers(1, 4))):
            mutated[int(rng.integers(0, len(mutated)))] = int(rng.integers(0, 256))
        if target is good:
            yield f"fuzz_options_{i}", base.model(options=bytes(mutated)), base.x
        else:
            yield f"fuzz_model_{i}", bytes(mutated), base.x


def _run_one(model: bytes, x: np.ndarray, runtime: str) -> tuple[str | None, str]:
    try:
        interpreter = lite.Interpreter(model_content=model, runtime=runtime)
        interpreter.predict(x)
    except Exception as e:  # noqa: BLE001 - the type is reported to the test
        return type(e).__name__, str(e)
    return None, ""


def _worker(runtime: str, fuzz_count: int) -> None:
    """Runs every bad case and fuzz input, one JSON line each (flushed, so a
    crash shows which case did it)."""
    for name, (model, x, _) in _bad_cases().items():
        raised, message = _run_one(model, x, runtime)
        print(json.dumps({"name": name, "raised": raised, "message": message[-600:]}), flush=True)
    for name, model, x in _fuzz_inputs(7, fuzz_count):
        raised, message = _run_one(model, x, runtime)
        print(json.dumps({"name": name, "raised": raised, "message": message[-200:]}), flush=True)
    print(json.dumps({"name": "__done__"}), flush=True)


_WORKER_RESULTS: dict = {}


def _worker_results(runtime: str) -> dict:
    if runtime not in _WORKER_RESULTS:
        _WORKER_RESULTS[runtime] = run_bad_case_worker(__file__, runtime, "300")
    return _WORKER_RESULTS[runtime]


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_bad_inputs_never_crash(runtime):
    results = _worker_results(runtime)
    last = [k for k in results if not k.startswith("__")][-1:]
    assert results["__returncode__"] == 0 and "__done__" in results, (
        f"worker died (rc={results['__returncode__']}) after case {last}: {results['__stderr__']}"
    )
    fuzz = [v for k, v in results.items() if k.startswith("fuzz_")]
    assert len(fuzz) == 300
    # Most random mutations must be rejected; the rest must run.
    assert sum(v["raised"] is not None for v in fuzz) > 0


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("name", sorted(_bad_cases()))
def test_bad_input_raises(runtime, name):
    expect = _bad_cases()[name][2]
    result = _worker_results(runtime).get(name)
    assert result is not None, "worker crashed before this case; see test_bad_inputs_never_crash"
    if expect == "OK":
        assert result["raised"] is None, result["message"]
        return
    assert result["raised"] in ("ModelError", "ValueError", "RuntimeError"), result
    assert expect in result["message"], result["message"]


# --------------------------------------------------------------------------
# The FlexBuffer reader on its own, under AddressSanitizer
# --------------------------------------------------------------------------

_HARNESS = r"""
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include "custom_ops/tflite/flexbuffer_reader.h"

using namespace lowbit::flex;

// Reads every entry every way; returns the number of entries.
static int Exercise(const std::vector<unsigned char>& bytes, bool print) {
  // Exactly-sized heap copy, so ASan sees any read past the end.
  std::unique_ptr<unsigned char[]> buf(new unsigned char[bytes.size() ? bytes.size() : 1]);
  if (!bytes.empty()) std::memcpy(buf.get(), bytes.data(), bytes.size());
  Map map;
  lowbit::Status s = Map::Parse(buf.get(), bytes.size(), &map);
  if (!s.ok) { if (print) std::printf("error %s\n", s.message.c_str()); return -1; }
  for (std::size_t i = 0; i < map.size(); ++i) {
    std::string key = map.KeyAt(i);
    Value v;
    if (!map.Find(key.c_str(), &v)) { std::printf("lost key %s\n", key.c_str()); std::abort(); }
    std::int64_t n; double d; bool b; std::string str;
    lowbit::Status si = v.AsInt64(&n), sd = v.AsDouble(&d), sb = v.AsBool(&b),
                   ss = v.AsString(&str);
    GetInt(map, key.c_str(), &n); GetFloat(map, key.c_str(), &d);
    GetBool(map, key.c_str(), &b); GetString(map, key.c_str(), &str);
    if (print) {
      std::printf("%s %s", key.c_str(), TypeName(v.type()));
      if (si.ok) { v.AsInt64(&n); std::printf(" int=%lld", (long long)n); }
      if (sd.ok) { v.AsDouble(&d); std::printf(" double=%.17g", d); }
      if (sb.ok) { v.AsBool(&b); std::printf(" bool=%d", (int)b); }
      if (ss.ok) { v.AsString(&str); std::printf(" string=%s", str.c_str()); }
      std::printf("\n");
    }
  }
  Value v;
  map.Find("no such key", &v);
  return static_cast<int>(map.size());
}

int main(int argc, char** argv) {
  std::ifstream in(argv[2], std::ios::binary);
  std::vector<unsigned char> seed((std::istreambuf_iterator<char>(in)), {});
  if (std::strcmp(argv[1], "dump") == 0) { Exercise(seed, true); return 0; }
  const int rounds = std::atoi(argv[3]);
  std::mt19937 rng(12345);
  int parsed = 0;
  for (int r = 0; r < rounds; ++r) {
    std::vector<unsigned char> m = seed;
    switch (r % 4) {
      case 0: {  // flip a few bytes
        int flips = 1 + rng() % 4;
        for (int k = 0; k < flips && !m.empty(); ++k) m[rng() % m.size()] = rng() & 255;
        break;
      }
      case 1: m.resize(rng() % (m.size() + 1)); break;             // truncate the end
      case 2: m.erase(m.begin(), m.begin() + rng() % (m.size() + 1)); break;  // the start
      default: {  // random bytes ending in a plausible root
        m.resize(rng() % 64);
        for (auto& c : m) c = rng() & 255;
        if (m.size() >= 2) {
          m[m.size() - 1] = 1 << (rng() % 4);
          m[m.size() - 2] = (9 << 2) | (rng() % 4);
        }
      }
    }
    if (Exercise(m, false) >= 0) ++parsed;
  }
  std::printf("rounds=%d parsed=%d\n", rounds, parsed);
  return 0;
}
"""


def _flex_seed() -> bytes:
    b = flexbuffers.Builder()
    with b.Map():
        b.IndirectInt("a", -5, 8)
        b.IndirectUInt("b", 7, 2)
        b.IndirectFloat("c", 2.5, 8)
        b.Float("d", 1.25)
        b.Bool("e", True)
        b.String("f", "hello")
        b.Int("g", -(2**40))
        b.UInt("h", 2**63 + 1)
        b.Int("i", 3, 8)
        b.IndirectFloat("j", -0.5, 4)
    return bytes(b.Finish())


@pytest.fixture(scope="module")
def flex_harness(tmp_path_factory):
    compiler = shutil.which("g++")
    if compiler is None:
        pytest.skip("g++ is not installed")
    tmp = tmp_path_factory.mktemp("flex")
    src = tmp / "harness.cc"
    src.write_text(_HARNESS)
    exe = tmp / "harness"
    cmd = [
        compiler,
        "-std=c++17",
        "-O1",
        "-g",
        "-fsanitize=address,undefined",
        "-fno-sanitize-recover=all",
        f"-I{REPO}",
        str(src),
        str(REPO / "custom_ops/tflite/flexbuffer_reader.cc"),
        "-o",
        str(exe),
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return exe, tmp


def _harness(flex_harness, mode: str, data: bytes, *args: str) -> str:
    exe, tmp = flex_harness
    path = tmp / f"input_{mode}.bin"
    path.write_bytes(data)
    result = subprocess.run(
        [str(exe), mode, str(path), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout[-1000:] + result.stderr[-3000:]
    return result.stdout


def test_flexbuffer_reader_values(flex_harness):
    lines = dict(
        line.split(" ", 1) for line in _harness(flex_harness, "dump", _flex_seed()).splitlines()
    )
    assert lines["a"] == "int (indirect) int=-5 double=-5 bool=1"
    assert lines["b"] == "uint (indirect) int=7 double=7 bool=1"
    assert lines["c"] == "float (indirect) double=2.5"
    assert lines["d"] == "float double=1.25"
    assert lines["e"] == "bool int=1 bool=1"
    assert lines["f"] == "string string=hello"
    assert lines["g"] == "int int=-1099511627776 double=-1099511627776 bool=1"
    assert lines["h"] == "uint"  # does not fit in int64: every integer read fails
    assert lines["i"] == "int int=3 double=3 bool=1"
    assert lines["j"] == "float (indirect) double=-0.5"
    tf_like = _harness(flex_harness, "dump", Case().options())
    assert "channels_in int int=3" in tf_like and "padding string string=VALID" in tf_like


@pytest.mark.parametrize("seed", ["mixed", "bconv"])
def test_flexbuffer_reader_fuzz_under_asan(flex_harness, seed):
    data = _flex_seed() if seed == "mixed" else Case(c=33).options(T=1, extra="x")
    out = _harness(flex_harness, "fuzz", data, "20000")
    rounds, parsed = (int(field.split("=")[1]) for field in out.split())
    assert rounds == 20000 and parsed > 100  # many mutants still parse and get read


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--bad-cases":
        _worker(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 300)


def test_runtime_only_install_says_what_it_lacks(tmp_path):
    """The lowbit-tf-runtime wheel is marked by its own _variant.py
    (RUNTIME_ONLY = True): lite works without TensorFlow, and what the wheel
    lacks fails naming the runtime-only install. The package is staged as
    runtime/setup.py stages it (its MODULES and VARIANT, read from the file)."""
    import ast
    import shutil

    setup_tree = ast.parse((REPO / "runtime" / "setup.py").read_text())
    constants = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in setup_tree.body
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
        and node.targets[0].id in ("MODULES", "VARIANT", "LIBRARY")
    }
    package = tmp_path / "lowbit_tf"
    for module in constants["MODULES"]:
        (package / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REPO / "lowbit_tf" / module, package / module)
    (package / "_variant.py").write_text(constants["VARIANT"])
    library = constants["LIBRARY"]
    shutil.copyfile(REPO / "lowbit_tf" / "_native" / library, package / "_native" / library)
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # a device without TensorFlow
        sys.path.insert(0, sys.argv[1])
        import lowbit_tf
        assert lowbit_tf.RUNTIME_ONLY and lowbit_tf.lite.Interpreter
        for call in (lambda: lowbit_tf.layers, lambda: lowbit_tf.convert(None)):
            try:
                call()
            except (AttributeError, ImportError) as error:
                assert "lowbit-tf-runtime" in str(error), error
                print(type(error).__name__)
        """
    )
    result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["AttributeError", "ImportError"]


def test_undecodable_tensor_name_is_a_model_error():
    """A corrupt name (not UTF-8) makes the runtime's details calls fail to
    decode; the Interpreter says what it could not read."""
    case = Case(c=8, cout=2)
    builder = ModelBuilder()
    x = builder.tensor(case.x.shape, np.float32, name="input")
    builder.tensors[x].name = b"bad\xff\xfename"
    weights = [builder.tensor(v.shape, v.dtype, v)
               for v in (case.filter, case.multiplier, case.bias)]
    y = builder.tensor(case.expected().shape, np.float32, name="output")
    builder.custom_op("LowbitBconv2d", [x, *weights], [y], case.options())
    interpreter = lite.Interpreter(model_content=builder.finish([x], [y]))
    with pytest.raises(lite.ModelError, match="cannot read the input details"):
        interpreter.get_input_details()
    assert interpreter.get_output_details()[0]["name"] == "output"

