"""Tests for lowbit_tf.quantizers: values, gradients, lookup and serialization."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from lowbit_tf import quantizers
from lowbit_tf._keras import keras


def _np_sign(x: np.ndarray) -> np.ndarray:
    """Reference binarisation: +1 for x >= 0 (-0.0 included), -1 for x < 0.

    TensorFlow's CPU kernels run with flush-to-zero / denormals-are-zero, so a
    float32/float64 subnormal compares as 0 there and binarises to +1 (Larq's
    ``sign(sign(x) + 0.1)`` does the same). float16 is computed in float32, where
    its subnormals are normal numbers, so they keep their sign.
    """
    negative = x < 0
    if x.dtype in (np.float32, np.float64):
        negative &= np.abs(x) >= np.finfo(x.dtype).tiny
    return np.where(negative, -1.0, 1.0).astype(x.dtype)


@pytest.fixture(params=["eager", "tf_function"])
def run(request):
    """Runs ``fn(*args)`` eagerly or inside a ``tf.function``."""
    if request.param == "eager":
        return lambda fn, *args: fn(*args)
    return lambda fn, *args: tf.function(fn)(*args)


def _value_and_grad(quantizer, x, dy=None):
    """Returns (q(x), d<q(x), dy>/dx) as NumPy arrays."""
    x = tf.convert_to_tensor(x)
    dy = tf.ones_like(x) if dy is None else tf.convert_to_tensor(dy)

    def fn(x, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = quantizer(x)
        return y, tape.gradient(y, x, output_gradients=dy)

    return fn, x, dy


EDGE_VALUES = np.array(
    [
        -np.inf, -3.0, -1.0, -0.5, -1e-6,
        -np.finfo(np.float32).tiny,  # smallest normal
        -np.float32(1e-45),  # smallest subnormal
        -0.0, 0.0,
        np.float32(1e-45), np.finfo(np.float32).tiny, 1e-6, 0.5, 1.0, 3.0, np.inf,
    ],
    dtype=np.float32,
)  # fmt: skip


# --------------------------------------------------------------------------- values


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize(
    "quantizer",
    [quantizers.ste_sign, quantizers.SteSign(), quantizers.get("ste_sign")],
    ids=["function", "class", "by_name"],
)
def test_ste_sign_forward_edge_values(run, quantizer, dtype):
    x = EDGE_VALUES.astype(dtype)
    y = run(quantizer, tf.constant(x)).numpy()
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, _np_sign(x))
    # Spelled out: zeros of either sign are +1, the smallest normal negative is -1.
    assert y[list(x).index(0.0)] == 1.0
    assert y[np.where(np.signbit(x) & (x == 0))[0][0]] == 1.0
    if dtype != np.float16:  # below float16's range this rounds to -0.0
        assert y[5] == -1.0


@pytest.mark.parametrize(
    "dtype, value, expected",
    [(np.float32, -1e-45, 1.0), (np.float32, -1e-39, 1.0), (np.float64, -1e-320, 1.0),
     (np.float16, -6e-8, -1.0)],
)  # fmt: skip
def test_negative_subnormals_follow_tensorflow_flush_to_zero(run, dtype, value, expected):
    """TF flushes float32/float64 subnormals to zero on CPU: they binarise to +1."""
    x = tf.constant(np.array([value], dtype))
    assert run(quantizers.ste_sign, x).numpy()[0] == expected


def test_ste_sign_nan_stays_nan():
    y = quantizers.ste_sign(tf.constant([np.nan, 1.0])).numpy()
    assert np.isnan(y[0]) and y[1] == 1.0


def test_ste_sign_accepts_python_and_integer_inputs():
    y = quantizers.ste_sign([0, -3, 2])
    assert y.dtype == tf.float32
    np.testing.assert_array_equal(y.numpy(), [1.0, -1.0, 1.0])
    np.testing.assert_array_equal(quantizers.SteSign()(np.array([-0.0])), [1.0])


@settings(max_examples=60, deadline=None)
@given(
    x=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=1, max_dims=4, max_side=6),
        elements=st.floats(-4, 4, width=32),  # subnormals included
    ),
    clip_value=st.one_of(st.none(), st.floats(0.01, 3.0)),
)
def test_ste_sign_matches_reference(x, clip_value):
    dy = np.linspace(-2.0, 2.0, x.size, dtype=np.float32).reshape(x.shape)
    fn, xt, dyt = _value_and_grad(quantizers.SteSign(clip_value), x, dy)
    y, grad = fn(xt, dyt)
    np.testing.assert_array_equal(y.numpy(), _np_sign(x))
    if clip_value is None:
        expected = dy
    else:
        expected = np.where(np.abs(x) <= np.float32(clip_value), dy, 0.0)
    np.testing.assert_array_equal(grad.numpy(), expected)


# ------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("clip_value", [0.5, 1.0, 0.3, 2.0])
def test_ste_sign_gradient_is_inclusive_at_clip(run, clip_value):
    c = np.float32(clip_value)
    above = np.nextafter(c, np.float32(np.inf))
    x = np.array([-above, -c, -c / 2, -0.0, 0.0, c / 2, c, above, 10.0], np.float32)
    fn, xt, dy = _value_and_grad(quantizers.SteSign(clip_value=clip_value), x)
    _, grad = run(fn, xt, dy)
    np.testing.assert_array_equal(grad.numpy(), [0, 1, 1, 1, 1, 1, 1, 0, 0])


def test_ste_sign_default_clip_is_one(run):
    x = np.array([-1.5, -1.0, -0.25, 0.0, 0.75, 1.0, 1.0001, 100.0], np.float32)
    fn, xt, dy = _value_and_grad(quantizers.ste_sign, x)
    _, grad = run(fn, xt, dy)
    np.testing.assert_array_equal(grad.numpy(), [0, 1, 1, 1, 1, 1, 0, 0])


def test_ste_sign_clip_none_is_identity_gradient(run):
    x = EDGE_VALUES[np.isfinite(EDGE_VALUES)]
    dy = np.arange(x.size, dtype=np.float32) - 3.0
    fn, xt, dyt = _value_and_grad(quantizers.SteSign(clip_value=None), x, dy)
    _, grad = run(fn, xt, dyt)
    np.testing.assert_array_equal(grad.numpy(), dy)


def test_ste_sign_gradient_reaches_a_keras_variable():
    v = keras.Variable(np.array([0.3, -2.0, 1.0], np.float32))
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(quantizers.SteSign()(v) * tf.constant([1.0, 2.0, 3.0]))
    grad = tape.gradient(y, v.value)
    np.testing.assert_array_equal(grad.numpy(), [1.0, 0.0, 3.0])


# ------------------------------------------------------------------- identity, precision


def test_identity_quantizer(run):
    q = quantizers.get("identity")
    assert isinstance(q, quantizers.Identity) and q.precision is None
    x = np.array([-2.0, -0.0, 0.3, 5.0], np.float32)
    fn, xt, dy = _value_and_grad(q, x)
    y, grad = run(fn, xt, dy)
    np.testing.assert_array_equal(y.numpy(), x)
    np.testing.assert_array_equal(grad.numpy(), np.ones_like(x))


def test_precision():
    assert quantizers.SteSign.precision == 1
    assert quantizers.SteSign(0.5).precision == 1
    assert quantizers.ste_sign.precision == 1
    assert quantizers.Quantizer.precision is None


# ------------------------------------------------------------------ lookup, serialization


def test_get_resolves_identifiers():
    assert quantizers.get(None) is None
    for name in ["ste_sign", "SteSign", quantizers.SteSign]:
        q = quantizers.get(name)
        assert isinstance(q, quantizers.SteSign) and q.clip_value == 1.0
    instance = quantizers.SteSign(0.25)
    assert quantizers.get(instance) is instance
    assert quantizers.get(quantizers.ste_sign) is quantizers.ste_sign

    def user_fn(x):
        return x

    assert quantizers.get(user_fn) is user_fn
    q = quantizers.get({"class_name": "SteSign", "config": {"clip_value": 0.5}})
    assert isinstance(q, quantizers.SteSign) and q.clip_value == 0.5


@pytest.mark.parametrize(
    "quantizer",
    [quantizers.SteSign(), quantizers.SteSign(0.25), quantizers.SteSign(None),
     quantizers.Identity()],
    ids=repr,
)  # fmt: skip
def test_serialize_round_trip(quantizer):
    config = quantizers.serialize(quantizer)
    config = json.loads(json.dumps(config))  # JSON-compatible
    restored = quantizers.deserialize(config)
    assert type(restored) is type(quantizer)
    assert restored.get_config() == quantizer.get_config()
    assert quantizers.get(config).get_config() == quantizer.get_config()
    # Through Keras's own functions too (what model.save uses).
    again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(quantizer))
    assert type(again) is type(quantizer) and again.get_config() == quantizer.get_config()


def test_serialize_function_round_trip():
    assert quantizers.serialize(None) is None
    assert quantizers.deserialize(None) is None
    config = json.loads(json.dumps(quantizers.serialize(quantizers.ste_sign)))
    assert quantizers.deserialize(config) is quantizers.ste_sign


def test_repr():
    assert repr(quantizers.SteSign(0.5)) == "SteSign(clip_value=0.5)"


@pytest.mark.parametrize("name", ["ste_sgn", "STE_SIGN", "sign", ""])
def test_unknown_name_raises_naming_it(name):
    with pytest.raises(ValueError) as info:
        quantizers.get(name)
    message = str(info.value)
    assert repr(name) in message
    assert "ste_sign" in message and "identity" in message


@pytest.mark.parametrize("identifier", [3, 1.5, [1, 2], object()])
def test_uninterpretable_identifier_raises(identifier):
    with pytest.raises(ValueError, match="Could not interpret quantizer identifier"):
        quantizers.get(identifier)


def test_unknown_class_in_config_raises():
    with pytest.raises(ValueError, match="NoSuchQuantizer"):
        quantizers.deserialize({"class_name": "NoSuchQuantizer", "config": {}})


@pytest.mark.parametrize("clip_value", [0, 0.0, -1.0, math.nan, "1.0", True, [1.0]])
def test_bad_clip_value_raises_naming_it(clip_value):
    with pytest.raises(ValueError, match="clip_value") as info:
        quantizers.SteSign(clip_value=clip_value)
    assert repr(clip_value) in str(info.value)
    with pytest.raises(ValueError, match="clip_value"):
        quantizers.ste_sign(tf.ones(3), clip_value=clip_value)


def test_clip_value_numpy_scalar_is_stored_as_float():
    q = quantizers.SteSign(np.float32(0.5))
    assert type(q.clip_value) is float and q.clip_value == 0.5
    json.dumps(quantizers.serialize(q))


# ------------------------------------------------------------------------ extension


@quantizers.register_quantizer("test_scaled_sign")
class _ScaledSign(quantizers.Quantizer):
    """A quantizer defined the way a user (or a later issue) adds one."""

    precision = 1

    def __init__(self, scale: float = 2.0):
        self.scale = scale

    def call(self, inputs):
        return self.scale * quantizers.ste_sign(inputs)

    def get_config(self):
        return {"scale": self.scale}


def test_registering_a_quantizer_takes_a_few_lines():
    q = quantizers.get("test_scaled_sign")
    np.testing.assert_array_equal(q(np.array([-1.0, 0.0, 3.0])).numpy(), [-2.0, 2.0, 2.0])
    config = json.loads(json.dumps(quantizers.serialize(_ScaledSign(3.0))))
    restored = quantizers.deserialize(config)
    assert isinstance(restored, _ScaledSign) and restored.scale == 3.0
    assert "test_scaled_sign" in str(pytest.raises(ValueError, quantizers.get, "nope").value)


def test_registering_a_taken_name_raises():
    class Other(quantizers.Quantizer):
        pass

    with pytest.raises(ValueError, match="ste_sign"):
        quantizers.register_quantizer("ste_sign")(Other)
    with pytest.raises(TypeError):
        quantizers.register_quantizer("not_a_quantizer")(int)


def test_quantizer_base_requires_call():
    with pytest.raises(NotImplementedError):
        quantizers.Quantizer()(tf.ones(2))


def test_quantizer_as_keras_activation():
    layer = keras.layers.Activation(quantizers.SteSign())
    np.testing.assert_array_equal(layer(np.array([[-0.5, 0.0]], np.float32)), [[-1.0, 1.0]])
