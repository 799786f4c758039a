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


@pytest.fixture(scope="module")
def float_conv_first():
    """(keras model, tflite bytes): a float conv (XNNPACK's) in front of a binary one."""
    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, padding="same"),
        layers.QuantConv2D(4, 3, padding="same", **_SIGN), keras.layers.Flatten()])
    return model, lowbit_tf.convert(model)


def test_wrong_input_shape_says_what_the_model_takes(float_conv_first):
    """A channels-first batch, a missing batch axis, another image size: each
    is refused before the interpreter changes, naming the input, its shape
    signature and what was given; the right shape runs afterwards, and the
    same mistake gives the same message (issue 20, items 1 and 2)."""
    model, tflite = float_conv_first
    interpreter = Interpreter(model_content=tflite)
    x = _inputs(model, 2)
    want = model(x, training=False).numpy()
    name = interpreter.get_input_details()[0]["name"]
    messages = []
    for wrong in (np.transpose(x, (0, 3, 1, 2)), x[0], x[:, :6, :6], x[..., None],
                  np.transpose(x, (0, 3, 1, 2))):
        with pytest.raises(ValueError) as error:
            interpreter.predict(wrong)
        message = str(error.value)
        assert f"input 0 ({name!r}) takes shape [-1, 8, 8, 3]" in message, message
        assert f"got shape {wrong.shape} of float32" in message, message
        messages.append(message)
        np.testing.assert_allclose(interpreter.predict(x), want, rtol=1e-5, atol=1e-5)
    assert "channels-first" in messages[0] and "channels-first" not in messages[1]
    assert messages[0] == messages[-1]


def test_a_runtime_left_half_delegated_is_made_anew(float_conv_first):
    """Through the runtime's own API a channels-first shape reaches XNNPACK at
    the first allocation, which leaves the runtime unable to allocate ever
    again; the Interpreter makes it anew from the model after a failed
    allocation (the inputs keep their shapes), so the right shape runs
    afterwards."""
    model, tflite = float_conv_first
    interpreter = Interpreter(model_content=tflite)
    messages = []
    for _ in range(2):
        interpreter.resize_tensor_input(0, [1, 3, 8, 8])
        with pytest.raises(ModelError) as error:
            interpreter.allocate_tensors()
        messages.append(str(error.value))
        assert list(interpreter.get_input_details()[0]["shape"]) == [1, 3, 8, 8]
        with pytest.raises(ModelError):  # the shape is still wrong
            interpreter.allocate_tensors()
        x = _inputs(model, 3)
        np.testing.assert_allclose(interpreter.predict(x), model(x, training=False).numpy(),
                                   rtol=1e-5, atol=1e-5)
    assert "TfLiteXNNPackDelegate" in messages[0], messages[0]
    assert "runtimeNode" not in messages[0], messages[0]  # the runtime's glued texts are parted
    assert messages[0] == messages[1]  # the messages do not pile up


def test_input_dtypes_are_cast_when_same_kind_and_refused_otherwise(float_conv_first):
    model, tflite = float_conv_first
    interpreter = Interpreter(model_content=tflite)
    x = _inputs(model, 2)
    want = interpreter.predict(x)
    np.testing.assert_array_equal(interpreter.predict(x.astype(np.float64)), want)
    np.testing.assert_array_equal(interpreter.predict(np.sign(x).astype(np.int8)),
                                  interpreter.predict(np.sign(x)))
    with pytest.raises(ValueError, match="takes float32, got complex64"):
        interpreter.predict(x.astype(np.complex64))

    @tf.function(input_signature=[tf.TensorSpec([None, 3], tf.int32)])
    def plus_one(v):
        return v + 1

    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [plus_one.get_concrete_function()], plus_one)
    integers = Interpreter(model_content=converter.convert())
    np.testing.assert_array_equal(integers.predict(np.arange(6).reshape(2, 3)),
                                  np.arange(1, 7).reshape(2, 3))
    with pytest.raises(ValueError, match="takes int32, got float64: a cast would change"):
        integers.predict(np.zeros((2, 3)))
    with pytest.raises(ValueError, match=r"takes int32 \(\[-2147483648, 2147483647\]\), got int64"):
        integers.predict(np.full((1, 3), 2**40))


def test_describe_model_says_what_runs_a_lowbit_model(single_op_models, tmp_path):
    """A stock interpreter only says "Encountered unresolved custom op"; the
    converted model itself names what runs it (issue 20, item 5)."""
    from ai_edge_litert.interpreter import Interpreter as PlainInterpreter

    from lowbit_tf.lite import describe_model

    _, tflite = single_op_models["LowbitBconv2d"]
    path = tmp_path / "model.tflite"
    path.write_bytes(tflite)
    note = describe_model(path)
    assert describe_model(tflite) == note
    assert note.startswith(f"lowbit-tf {lowbit_tf.__version__} model with custom ops "
                           "LowbitBconv2d: run it with lowbit_tf.lite.Interpreter"), note
    plain = PlainInterpreter(model_path=str(path))
    with pytest.raises(RuntimeError, match="unresolved custom op: LowbitBconv2d"):
        plain.allocate_tensors()
    without = Interpreter(model_content=tflite, use_lowbit_delegate=False)
    with pytest.raises(ModelError) as error:
        without.predict(np.zeros((1, 6, 6, 8), np.float32))
    assert "use_lowbit_delegate=False" in str(error.value) and note in str(error.value)
    # Models from elsewhere: their description, and the custom ops it does not name.
    from tflite_models import Case

    assert describe_model(Case().model()) == "lowbit test model (custom ops: LowbitBconv2d)"
    foreign = Case().model().replace(b"LowbitBconv2d", b"ForeignOp2d__")
    with pytest.raises(ModelError, match=r"\[ForeignOp2d__ is not a lowbit op: the lowbit "
                                         r"delegate cannot run it; the model says: lowbit test"):
        Interpreter(foreign).predict(Case().x)
    with pytest.raises(ModelError, match="not a TFLite model"):
        describe_model(b"\0" * 16)
    with pytest.raises(ModelError, match="truncated or corrupt"):
        describe_model(tflite[:40])
