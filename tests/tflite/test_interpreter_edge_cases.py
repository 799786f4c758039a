"""Converted models with each custom op, run by `lowbit_tf.lite.Interpreter` at
the edges a user reaches: an empty batch, an impossibly large one, errors after
errors, a scalar input, more threads than cores (issue 13, defects 4-7).

Each model has one custom op right after its input (plus the binary conv in
front of the pool for LowbitBMaxPool2d), so that the op itself, not an XNNPACK
float op, sees the odd shape.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf

import lowbit_tf
from lowbit_tf import layers
from lowbit_tf._keras import keras
from lowbit_tf.lite import Interpreter, ModelError

_SIGN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def _single_op_models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(3)

    def sequential(shape, *stack):
        return keras.Sequential([keras.Input(shape), *stack])

    return {
        "LowbitBconv2d": sequential((6, 6, 8), layers.QuantConv2D(4, 3, padding="same", **_SIGN)),
        "LowbitBMaxPool2d": sequential(
            (6, 6, 8), layers.QuantConv2D(8, 3, padding="same", **_SIGN),
            keras.layers.MaxPooling2D(2), layers.QuantConv2D(4, 3, **_SIGN)),
        "LowbitBDepthwiseConv2d": sequential(
            (6, 6, 8), layers.QuantDepthwiseConv2D(3, padding="same", input_quantizer="ste_sign",
                                                   depthwise_quantizer="ste_sign")),
        "LowbitBgemm": sequential((40,), layers.QuantDense(5, **_SIGN)),
        "LowbitMultibitConv2d": sequential(
            (6, 6, 8), layers.ABCConv2D(4, 3, num_weight_bases=2, num_activation_bases=2)),
        "LowbitFastfood": sequential((64,), layers.FastfoodDense(32)),
    }


@pytest.fixture(scope="module")
def single_op_models():
    """{op name: (keras model, tflite bytes)}; the op is checked to be in the file."""
    out = {}
    for op, model in _single_op_models().items():
        tflite = lowbit_tf.convert(model)
        assert op.encode() in tflite, op
        out[op] = (model, tflite)
    return out


OPS = sorted(["LowbitBconv2d", "LowbitBMaxPool2d", "LowbitBDepthwiseConv2d", "LowbitBgemm",
              "LowbitMultibitConv2d", "LowbitFastfood"])


def _inputs(model: keras.Model, batch: int) -> np.ndarray:
    shape = (batch, *model.input_shape[1:])
    return np.random.default_rng(batch).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("op", OPS)
def test_empty_batch_runs_and_the_interpreter_goes_on(single_op_models, op):
    model, tflite = single_op_models[op]
    interpreter = Interpreter(model_content=tflite, num_threads=2)
    x = _inputs(model, 3)
    want = model(x, training=False).numpy()
    np.testing.assert_allclose(interpreter.predict(x), want, rtol=1e-6, atol=1e-6)
    empty = interpreter.predict(x[:0])
    assert empty.shape == (0, *want.shape[1:]) and empty.dtype == np.float32
    np.testing.assert_allclose(interpreter.predict(x), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", OPS)
def test_impossible_batch_says_what_is_too_large(single_op_models, op):
    """A batch whose tensors cannot be allocated: the message names the cause
    (the op's limit, our out-of-memory report, or, when the runtime's own
    allocation fails silently, the sizes the shapes imply), never an empty
    text, and the interpreter still runs a sane batch afterwards."""
    model, tflite = single_op_models[op]
    interpreter = Interpreter(model_content=tflite)
    x = _inputs(model, 2)
    want = interpreter.predict(x)
    # 2^30 is the largest batch the ops take: its buffers (>= 40 GB) fail to allocate.
    for batch in (2**30, 2**31 - 1):
        interpreter.resize_tensor_input(0, [batch, *model.input_shape[1:]])
        with pytest.raises(ModelError) as error:
            interpreter.allocate_tensors()
        message = str(error.value)
        reason = message.removeprefix("cannot prepare the model:").strip()
        assert reason, message
        assert ("too large" in reason or "must be in [0, " in reason), message
        assert str(batch) in reason or "GB" in reason, message
    np.testing.assert_array_equal(interpreter.predict(x), want)


def test_each_error_has_its_own_message(single_op_models):
    """The runtimes keep every error text and prepend it to the next error;
    each error raised by the Interpreter carries only its own."""
    model, tflite = single_op_models["LowbitBconv2d"]
    interpreter = Interpreter(model_content=tflite)
    messages = []
    for batch in (2**31 - 1, 2**30 + 1, 2**31 - 1):
        interpreter.resize_tensor_input(0, [batch, 6, 6, 8])
        with pytest.raises(ModelError) as error:
            interpreter.allocate_tensors()
        messages.append(str(error.value))
    for batch, message in zip((2**31 - 1, 2**30 + 1, 2**31 - 1), messages, strict=True):
        assert message.count("LowbitBconv2d: batch must be") == 1, message
        assert f"got {batch}" in message, message
    assert messages[0] == messages[2]
    x = _inputs(model, 1)
    np.testing.assert_allclose(interpreter.predict(x), model(x).numpy(), rtol=1e-6, atol=1e-6)


def test_scalar_input_gives_scalar_output(tmp_path):
    @tf.function(input_signature=[tf.TensorSpec([], tf.float32)])
    def double(x):
        return 2.0 * x

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [double.get_concrete_function()], double)
    interpreter = Interpreter(model_content=converter.convert())
    out = interpreter.predict(np.float32(1.5))
    assert out.shape == () and out == 3.0
    assert interpreter.predict(4).shape == ()  # a Python number too


def test_kernel_threads_are_capped_at_the_hardware_threads(single_op_models):
    """num_threads beyond the CPU count adds threads that cannot run at once;
    the lowbit delegate's pool stops at the hardware threads (measured in a
    child process without XNNPACK, which starts its own pool)."""
    _, tflite = single_op_models["LowbitBconv2d"]
    script = textwrap.dedent("""
        import os, sys
        import numpy as np
        from ai_edge_litert.interpreter import OpResolverType
        from lowbit_tf.lite import Interpreter

        def threads():
            return len(os.listdir("/proc/self/task"))

        before = threads()
        interpreter = Interpreter(
            model_content=open(sys.argv[1], "rb").read(), num_threads=64,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        interpreter.predict(np.ones((4, 6, 6, 8), np.float32))
        print(threads() - before)
    """)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"threads_{os.getpid()}.tflite")
    with open(path, "wb") as stream:
        stream.write(tflite)
    try:
        proc = subprocess.run([sys.executable, "-c", script, path], capture_output=True,
                              text=True, timeout=120)
    finally:
        os.unlink(path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    started = int(proc.stdout.strip().splitlines()[-1])
    cores = os.cpu_count() or 1
    assert started <= cores, f"{started} threads started for num_threads=64 on {cores} CPUs"


def test_nan_rule_and_debug_check():
    """The one rule: the lowbit ops binarise NaN as +1 (docs/custom_ops.md),
    while Keras propagates NaN like Larq; check_nan=True turns a NaN that
    reaches a lowbit op into an error naming it (issue 13, defect 8)."""
    keras.utils.set_random_seed(5)
    model = keras.Sequential([
        keras.Input((6, 6, 8)),
        layers.QuantConv2D(8, 3, padding="same", **_SIGN),
        keras.layers.MaxPooling2D(2),
        layers.QuantConv2D(4, 3, padding="same", **_SIGN),
    ])
    tflite = lowbit_tf.convert(model)
    x = _inputs(model, 2)
    x_nan = x.copy()
    x_nan[1, 2, 3, 4] = np.nan
    as_plus_one = x.copy()
    as_plus_one[1, 2, 3, 4] = 1.0  # what the ops make of the NaN
    plain = Interpreter(model_content=tflite)
    np.testing.assert_array_equal(plain.predict(x_nan), plain.predict(as_plus_one))
    checked = Interpreter(model_content=tflite, check_nan=True)
    np.testing.assert_array_equal(checked.predict(x), plain.predict(x))  # no NaN: same result
    flat_index = np.ravel_multi_index((1, 2, 3, 4), x.shape)
    with pytest.raises(RuntimeError, match=rf"LowbitBconv2d.*element {flat_index} is NaN"):
        checked.predict(x_nan)
    np.testing.assert_array_equal(checked.predict(x), plain.predict(x))
    with pytest.raises(ValueError, match="check_nan must be"):
        from ai_edge_litert import interpreter as litert

        litert.load_delegate(str(lowbit_tf.lite.delegate_library_path()), {"check_nan": "yes"})


@pytest.mark.parametrize("output_type", ["float", "bitpacked"])
def test_subnormal_arithmetic_is_the_same_in_tf_and_tflite(output_type):
    """TensorFlow runs kernels with subnormals flushed to zero, TFLite does not;
    the TF shell computes in IEEE mode so that the TF op and the TFLite kernel
    agree bit for bit even for subnormal multipliers (found by the fuzzer)."""
    from tflite_models import Case, ModelBuilder

    from lowbit_tf import ops

    case = Case(n=2, h=12, w=12, c=64, cout=40, padding="SAME", seed=3)
    case.multiplier[:] = np.float32(1e-39) * np.arange(1, 41, dtype=np.float32)
    case.bias[::2] = 0.0
    case.bias[1::2] = np.float32(-2e-38)
    bitpacked = output_type == "bitpacked"
    builder = ModelBuilder()
    x = builder.tensor(case.x.shape, np.float32)
    tensors = [builder.tensor(v.shape, v.dtype, v)
               for v in (case.filter, case.multiplier, case.bias)]
    y = builder.tensor((2, 12, 12, 2 if bitpacked else 40), np.int32 if bitpacked else np.float32)
    builder.custom_op("LowbitBconv2d", [x, *tensors], [y],
                      case.options(padding="SAME", output_type=output_type))
    got = Interpreter(model_content=builder.finish([x], [y]), num_threads=2).predict(case.x)
    want = ops.bconv2d(case.x, case.filter, case.multiplier, case.bias, kernel_size=3,
                       channels_in=64, padding="SAME", output_type=output_type).numpy()
    assert np.any(want != 0)
    np.testing.assert_array_equal(got, want)


def test_model_bytes_positionally_as_lce_users_write_it(single_op_models):
    model, tflite = single_op_models["LowbitBgemm"]
    x = _inputs(model, 2)
    np.testing.assert_array_equal(Interpreter(tflite).predict(x),
                                  Interpreter(model_content=tflite).predict(x))
    with pytest.raises(ValueError, match="exactly one"):
        Interpreter(tflite, model_content=tflite)


def test_missing_runtime_says_what_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "tflite_runtime", None)  # import now fails
    with pytest.raises(ImportError, match=r"runtime='tflite_runtime' is not installed.*"
                                          r"pip install tflite-runtime"):
        Interpreter(b"\x08\0\0\0TFL3" + bytes(8), runtime="tflite_runtime")


def test_unknown_lowbit_kernel_value_is_named_in_a_warning(single_op_models):
    """The native code ignores a LOWBIT_KERNEL it does not know (and runs the
    best path); the Python side says so, in a child so the warning's cache and
    the environment stay clean."""
    _, tflite = single_op_models["LowbitBconv2d"]
    script = textwrap.dedent("""
        import sys, warnings
        import numpy as np
        from lowbit_tf.lite import Interpreter
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            Interpreter(open(sys.argv[1], "rb").read()).predict(np.ones((1, 6, 6, 8), np.float32))
        print("|".join(str(w.message) for w in caught if w.category is RuntimeWarning))
    """)
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"kernel_env_{os.getpid()}.tflite")
    with open(path, "wb") as stream:
        stream.write(tflite)
    try:
        runs = {value: subprocess.run([sys.executable, "-c", script, path], capture_output=True,
                                      text=True, timeout=120,
                                      env={**os.environ, "LOWBIT_KERNEL": value})
                for value in ("avx9000", "portable")}
    finally:
        os.unlink(path)
    for proc in runs.values():
        assert proc.returncode == 0, proc.stderr[-2000:]
    assert "LOWBIT_KERNEL='avx9000' names no kernel path (known: " in runs["avx9000"].stdout
    assert "portable" in runs["avx9000"].stdout
    assert "LOWBIT_KERNEL" not in runs["portable"].stdout
