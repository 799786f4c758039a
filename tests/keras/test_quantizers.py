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


def _param_id(value) -> str:
    """A test id that is the same in every process (pytest-xdist's workers
    must collect the same ids): a function's name, not its repr, which holds
    its address."""
    return value.__name__ if callable(value) and hasattr(value, "__name__") else repr(value)



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
    ids=_param_id,
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


# =========================================================================== issue 3
# The remaining quantizers. Reference values below are written from the formulas in
# the quantizers' docstrings (and Larq's, where Larq has the quantizer).


def _vg(quantizer, x, dy=None, **kwargs):
    """Eager (q(x), d<q(x), dy>/dx) as NumPy arrays; ``kwargs`` go to the call."""
    x = tf.convert_to_tensor(x)
    dy = tf.ones_like(x) if dy is None else tf.convert_to_tensor(dy, x.dtype)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x, **kwargs)
    return y.numpy(), tape.gradient(y, x, output_gradients=dy).numpy()


def _f32(*values):
    return np.array(values, np.float32)


SIGN_FORWARD = [
    quantizers.approx_sign,
    quantizers.ApproxSign(),
    quantizers.get("approx_sign"),
    quantizers.swish_sign,
    quantizers.SwishSign(beta=2.0),
    quantizers.get("swish_sign"),
    quantizers.StochasticSign(seed=1),  # inference: the deterministic sign
]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("quantizer", SIGN_FORWARD, ids=_param_id)
def test_sign_forward_quantizers_are_sign(run, quantizer, dtype):
    x = EDGE_VALUES.astype(dtype)
    y = run(quantizer, tf.constant(x)).numpy()
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, _np_sign(x))
    nan = quantizer(tf.constant([np.nan, -1.0], dtype)).numpy()
    assert np.isnan(nan[0]) and nan[1] == -1.0


# ------------------------------------------------------------------------ approx_sign


@pytest.mark.parametrize("quantizer", [quantizers.approx_sign, quantizers.ApproxSign()],
                         ids=_param_id)
def test_approx_sign_gradient_is_two_minus_two_abs_x(run, quantizer):
    above = np.nextafter(np.float32(1), np.float32(2))
    x = _f32(-np.inf, -1.5, -above, -1, -0.75, -0.5, -0.25, -0.0, 0, 0.25, 0.5, 0.75, 1, above, 2)
    fn, xt, dy = _value_and_grad(quantizer, x)
    _, grad = run(fn, xt, dy)
    np.testing.assert_array_equal(
        grad.numpy(), [0, 0, 0, 0, 0.5, 1, 1.5, 2, 2, 1.5, 1, 0.5, 0, 0, 0]
    )
    # Scales the incoming gradient.
    _, grad = _vg(quantizer, _f32(0.5, -0.25), dy=_f32(3.0, -2.0))
    np.testing.assert_array_equal(grad, [3.0, -3.0])


# ------------------------------------------------------------------------- swish_sign


def _swish_grad(x, beta):
    bx = beta * np.asarray(x, np.float64)
    return beta * (2 - bx * np.tanh(bx / 2)) / (1 + np.cosh(bx))


@pytest.mark.parametrize("beta", [5.0, 2.0, 10.0])
def test_swish_sign_gradient_matches_formula(beta):
    x = np.linspace(-3, 3, 61, dtype=np.float32)
    _, grad = _vg(quantizers.SwishSign(beta), x)
    np.testing.assert_allclose(grad, _swish_grad(x, beta), rtol=2e-5, atol=1e-6)
    _, grad = _vg(lambda t: quantizers.swish_sign(t, beta=beta), x)
    np.testing.assert_allclose(grad, _swish_grad(x, beta), rtol=2e-5, atol=1e-6)


def test_swish_sign_pinned_gradients():
    # beta = 5: d/dx at 0 is beta; at x = 1/beta it is beta (2 - tanh(1/2)) / (1 + cosh 1).
    x = _f32(0.0, -0.0, 0.2, -0.2, 100.0, np.inf, -np.inf)
    _, grad = _vg(quantizers.swish_sign, x)
    at_fifth = 5 * (2 - math.tanh(0.5)) / (1 + math.cosh(1.0))
    np.testing.assert_allclose(grad[:4], [5.0, 5.0, at_fifth, at_fifth], rtol=1e-6)
    # Far out cosh overflows and the gradient is 0; at +-inf it is 0 too (Larq: NaN).
    np.testing.assert_array_equal(grad[4:], [0.0, 0.0, 0.0])


# ---------------------------------------------------------------- magnitude_aware_sign


@pytest.mark.parametrize(
    "quantizer",
    [quantizers.magnitude_aware_sign, quantizers.MagnitudeAwareSign(), "magnitude_aware_sign"],
    ids=_param_id,
)
def test_magnitude_aware_sign_pinned(quantizer):
    q = quantizers.get(quantizer)
    w = _f32([-3.0, 0.5], [1.0, -1.5])  # column means of |w|: 2 and 1
    y, grad = _vg(q, w)
    np.testing.assert_array_equal(y, [[-2.0, 1.0], [2.0, -1.0]])
    # alpha_c times the clipped (|w| <= 1, inclusive) straight-through gradient.
    np.testing.assert_array_equal(grad, [[0.0, 1.0], [2.0, 0.0]])


def test_magnitude_aware_sign_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(3, 3, 4, 5)).astype(np.float32)
    w[0, 0, 0, 0] = 0.0
    dy = rng.normal(size=w.shape).astype(np.float32)
    y, grad = _vg(quantizers.MagnitudeAwareSign(clip_value=0.5), w, dy)
    alpha = np.abs(w).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(y, alpha * _np_sign(w), rtol=1e-6)
    np.testing.assert_allclose(grad, alpha * np.where(np.abs(w) <= 0.5, dy, 0), rtol=1e-6)
    assert y[0, 0, 0, 0] == alpha[0]  # zero maps to +alpha


def test_magnitude_aware_sign_rank_one_is_not_reduced():
    """As Larq computes it: for rank 1 no axis is reduced, alpha = |x|."""
    x = _f32(-2.0, -0.5, 0.0, 0.25, 3.0)
    np.testing.assert_array_equal(quantizers.magnitude_aware_sign(x).numpy(), x)


# ---------------------------------------------------------------------- ste_heaviside


@pytest.mark.parametrize(
    "quantizer", [quantizers.ste_heaviside, quantizers.SteHeaviside(), "ste_heaviside"],
    ids=_param_id,
)
def test_ste_heaviside_values_and_gradient(run, quantizer):
    q = quantizers.get(quantizer)
    above = np.nextafter(np.float32(1), np.float32(2))
    x = _f32(-np.inf, -above, -1, -1e-6, -0.0, 0, 1e-6, 0.5, 1, above, np.inf)
    fn, xt, dy = _value_and_grad(q, x)
    y, grad = run(fn, xt, dy)
    np.testing.assert_array_equal(y.numpy(), [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1])
    np.testing.assert_array_equal(grad.numpy(), [0, 0, 1, 1, 1, 1, 1, 1, 1, 0, 0])


def test_ste_heaviside_clip_value():
    x = _f32(-3.0, -2.0, 0.0, 2.0, 2.5)
    _, grad = _vg(quantizers.SteHeaviside(clip_value=2.0), x)
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 0])
    _, grad = _vg(quantizers.SteHeaviside(clip_value=None), x)
    np.testing.assert_array_equal(grad, [1, 1, 1, 1, 1])


# --------------------------------------------------------------------------- ste_tern


@pytest.mark.parametrize(
    "quantizer", [quantizers.ste_tern, quantizers.SteTern(), "ste_tern"], ids=_param_id
)
def test_ste_tern_fixed_threshold(run, quantizer):
    q = quantizers.get(quantizer)
    below = np.nextafter(np.float32(0.05), np.float32(0))
    x = _f32(-2, -1, -0.05, -below, -0.0, 0, below, 0.05, 0.06, 1, 1.5)
    fn, xt, dy = _value_and_grad(q, x)
    y, grad = run(fn, xt, dy)
    # sign(sign(x + D) + sign(x - D)): x = +-D itself maps to +-1.
    np.testing.assert_array_equal(y.numpy(), [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1, 1])
    np.testing.assert_array_equal(grad.numpy(), [0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])


def test_ste_tern_twn_threshold():
    x = _f32(-1.0, -0.5, 0.1, 0.2, 0.7, 2.5)  # 0.7 * mean|x| = 0.7 * 5/6 = 0.5833
    q = quantizers.SteTern(ternary_weight_networks=True)
    y, grad = _vg(q, x)
    np.testing.assert_array_equal(y, [-1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(grad, [1, 1, 1, 1, 1, 0])
    # The threshold follows the tensor: scaling x scales it too.
    np.testing.assert_array_equal(q(10 * x).numpy(), y)
    # The fixed threshold is ignored in TWN mode; zeros stay zero.
    y = quantizers.ste_tern(_f32(0, 0, 0), threshold_value=0.0, ternary_weight_networks=True)
    np.testing.assert_array_equal(y.numpy(), [0, 0, 0])


def test_ste_tern_threshold_and_clip_arguments():
    x = _f32(-0.4, -0.3, -0.1, 0.0, 0.29, 0.3, 0.5)
    y, grad = _vg(quantizers.SteTern(threshold_value=0.3, clip_value=0.3), x)
    np.testing.assert_array_equal(y, [-1, -1, 0, 0, 0, 1, 1])
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 0])
    # Threshold 0: the plain sign with sign(0) = 0.
    y = quantizers.ste_tern(x, threshold_value=0.0).numpy()
    np.testing.assert_array_equal(y, [-1, -1, -1, 0, 1, 1, 1])


# ---------------------------------------------------------------------------- DoReFa


@pytest.mark.parametrize(
    "quantizer",
    [quantizers.DoReFa(), "dorefa", "dorefa_quantizer", "DoReFa", quantizers.dorefa_quantizer],
    ids=_param_id,
)
def test_dorefa_activations_pinned(run, quantizer):
    q = quantizers.get(quantizer)
    x = _f32(-1, -0.0, 0, 0.1, 0.2, 0.5, 0.6, 0.9, 1, 1.0001, 2)
    fn, xt, dy = _value_and_grad(q, x)
    y, grad = run(fn, xt, dy)
    # round(3 clip(x, 0, 1)) / 3, half to even (1.5 -> 2); gradient 1 on [0, 1].
    np.testing.assert_allclose(y.numpy(), [0, 0, 0, 0, 1 / 3, 2 / 3, 2 / 3, 1, 1, 1, 1], rtol=1e-6)
    np.testing.assert_array_equal(grad.numpy(), [0, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0])


def test_dorefa_weights_pinned():
    w = _f32(-2.0, -0.5, 0.0, 0.1, 0.5, 1.0)
    y, grad = _vg(quantizers.DoReFa(k_bit=2, mode="weights"), w)
    # v = tanh(w) / (2 tanh(2)) + 1/2 -> [0, .26, .5, .55, .74, .90] -> round(3v)/3 -> 2q - 1.
    np.testing.assert_allclose(y, [-1, -1 / 3, 1 / 3, 1 / 3, 1 / 3, 1], rtol=1e-6, atol=1e-7)
    expected = (1 - np.tanh(w.astype(np.float64)) ** 2) / np.tanh(2.0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5)
    # k_bit = 1: +1 for w > 0, -1 for w <= 0 (1/2 rounds to even).
    y = quantizers.dorefa_quantizer(w, k_bit=1, mode="weights").numpy()
    np.testing.assert_array_equal(y, [-1, -1, -1, 1, 1, 1])


def test_dorefa_weights_all_zero():
    y, grad = _vg(quantizers.DoReFa(k_bit=2, mode="weights"), np.zeros(4, np.float32))
    np.testing.assert_allclose(y, np.full(4, 1 / 3), rtol=1e-6)
    np.testing.assert_array_equal(grad, np.zeros(4))


@pytest.mark.parametrize("k_bit", [1, 2, 3, 4, 8])
@pytest.mark.parametrize("mode", ["activations", "weights"])
def test_dorefa_outputs_lie_on_the_k_bit_grid(k_bit, mode):
    x = np.random.default_rng(k_bit).normal(0.5, 1.0, size=500).astype(np.float32)
    y = quantizers.DoReFa(k_bit, mode)(x).numpy().astype(np.float64)
    n = 2**k_bit - 1
    levels = y * n if mode == "activations" else (y + 1) / 2 * n
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-4)
    assert levels.min() > -1e-4 and levels.max() < n + 1e-4
    assert len(np.unique(np.round(levels))) <= n + 1
    assert quantizers.DoReFa(k_bit, mode).precision == k_bit


# ------------------------------------------------------------------------ power_of_two


def test_power_of_two_pinned():
    q = quantizers.PowerOfTwo(bits=3, max_exponent=0)  # {0, +-1/4, +-1/2, +-1}
    x = _f32(0, -0.0, 0.1, 0.17, 0.18, 0.3, 0.35, 0.36, 0.5, 0.7, 0.71, 1, 1.5, 100, np.inf,
             -0.3, -0.71, -np.inf)  # fmt: skip
    y, grad = _vg(q, x)
    # Nearest in the log domain: up iff |x| >= sqrt(2) 2^floor(log2|x|).
    np.testing.assert_array_equal(
        y, [0, 0, 0, 0, 0.25, 0.25, 0.25, 0.5, 0.5, 0.5, 1, 1, 1, 1, 1, -0.25, -1, -1]
    )
    np.testing.assert_array_equal(grad, [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 1, 1, 0])


def test_power_of_two_keeps_powers_of_two_exactly():
    q = quantizers.get("power_of_two")  # bits 4, max exponent 0: 2^-6 .. 2^0
    x = np.ldexp(np.float32(1), np.arange(-6, 1)).astype(np.float32)
    np.testing.assert_array_equal(q(x).numpy(), x)
    np.testing.assert_array_equal(q(-x).numpy(), -x)
    # Below the window (e < -6) flushes to zero; the flush point is 2^-6.5.
    edge = np.float32(2.0**-6.5)
    np.testing.assert_array_equal(
        q(_f32(2.0**-7, np.nextafter(edge, np.float32(0)), np.nextafter(edge, np.float32(1)))),
        [0.0, 0.0, 2.0**-6],
    )


@pytest.mark.parametrize("bits, max_exponent", [(2, 0), (3, -2), (5, 3), (4, None)])
def test_power_of_two_outputs_lie_on_the_grid(bits, max_exponent):
    x = np.random.default_rng(bits).normal(0, 2, size=400).astype(np.float32)
    y = quantizers.PowerOfTwo(bits, max_exponent)(x).numpy()
    nonzero = y[y != 0]
    mantissa, exponent = np.frexp(np.abs(nonzero))
    np.testing.assert_array_equal(mantissa, 0.5)  # exact powers of two
    np.testing.assert_array_equal(np.sign(nonzero), np.sign(x[y != 0]))
    levels = 2 ** (bits - 1) - 1
    e_high = exponent.max() - 1 if max_exponent is None else max_exponent
    assert (exponent - 1).max() <= e_high and (exponent - 1).min() >= e_high - levels + 1
    assert len(np.unique(np.abs(y))) <= levels + 1


def test_power_of_two_window_from_data():
    q = quantizers.PowerOfTwo(bits=3, max_exponent=None)
    # max|x| = 3 rounds to 2^2 in the log domain: window 2^0 .. 2^2.
    y, grad = _vg(q, _f32(0.3, -3.0, 0.01, 0.8, 0.0))
    np.testing.assert_array_equal(y, [0, -4, 0, 1, 0])
    np.testing.assert_array_equal(grad, [1, 1, 1, 1, 1])


# ------------------------------------------------------------------------- fixed_point


def test_fixed_point_pinned_nearest_saturating():
    q = quantizers.FixedPoint(word_bits=4, fraction_bits=2)  # step 1/4, range [-2, 1.75]
    assert q.range == (-2.0, 1.75)
    x = _f32(-3, -2, -1.9, -0.125, 0.125, 0.375, 0.4, 1.75, 1.8, 2, np.inf, -np.inf)
    y, grad = _vg(q, x)
    # ceil(4x - 1/2) / 4: ties go down (Gupta et al.'s round to nearest).
    np.testing.assert_array_equal(y, [-2, -2, -2, -0.25, 0, 0.25, 0.5, 1.75, 1.75, 1.75, 1.75, -2])
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0])


def test_fixed_point_wraps_without_saturation():
    q = quantizers.FixedPoint(word_bits=4, fraction_bits=2, saturate=False)
    y = q(_f32(-3.0, -2.25, 1.75, 2.0, 2.5, 5.0)).numpy()
    # Two's complement in 4 bits: k -> ((k + 8) mod 16) - 8.
    np.testing.assert_array_equal(y, [1.0, 1.75, 1.75, -2.0, -1.5, -3.0 + 4.0])


@pytest.mark.parametrize("word_bits, fraction_bits", [(16, 8), (8, 0), (8, 7), (1, 0), (24, 12)])
def test_fixed_point_outputs_lie_on_the_grid(word_bits, fraction_bits):
    x = np.random.default_rng(word_bits).normal(0, 2.0 ** (word_bits - fraction_bits - 2), 500)
    x = x.astype(np.float32)
    for training in (False, True):
        q = quantizers.FixedPoint(word_bits, fraction_bits, rounding="stochastic", seed=3)
        k = q(x, training=training).numpy().astype(np.float64) * 2.0**fraction_bits
        np.testing.assert_array_equal(k, np.round(k))
        assert k.min() >= -(2 ** (word_bits - 1)) and k.max() <= 2 ** (word_bits - 1) - 1
        # Within range a quantized value is within one step (half a step for nearest).
        low, high = q.range
        inside = (x >= low) & (x <= high)
        tolerance = 1.0 if training else 0.5
        assert np.all(np.abs(k - x * 2.0**fraction_bits)[inside] <= tolerance)


def test_fixed_point_stochastic_rounding_probabilities():
    q = quantizers.FixedPoint(word_bits=8, fraction_bits=2, rounding="stochastic", seed=7)
    x = np.repeat(_f32(0.1, -0.6, 0.25, 1.0 - 1 / 16), 20000)
    y = q(x, training=True).numpy().reshape(4, -1)
    # 4x = 0.4, -2.4, 1 (on the grid), 3.75: up with probability frac(4x).
    for row, low, p_up in zip(y, [0.0, -0.75, 0.25, 0.75], [0.4, 0.6, 0.0, 0.75], strict=True):
        assert set(np.unique(row)) <= {low, low + 0.25}
        assert abs(np.mean(row == low + 0.25) - p_up) < 0.03
    # Unbiased: E[q(x)] = x.
    np.testing.assert_allclose(y.mean(axis=1), [0.1, -0.6, 0.25, 0.9375], atol=0.01)
    # Inference (training None or False) rounds to nearest.
    np.testing.assert_array_equal(q(_f32(0.1, -0.6, 0.9375)).numpy(), [0.0, -0.5, 1.0])
    np.testing.assert_array_equal(q(_f32(0.1), training=False).numpy(), [0.0])


# -------------------------------------------------------------- stochastic quantizers


STOCHASTIC = [
    lambda seed: quantizers.StochasticSign(seed=seed),
    lambda seed: quantizers.StochasticTern(seed=seed),
    lambda seed: quantizers.FixedPoint(8, 2, rounding="stochastic", seed=seed),
]


@pytest.mark.parametrize("make", STOCHASTIC, ids=["sign", "tern", "fixed_point"])
def test_stochastic_quantizers_are_deterministic_given_a_seed(make):
    x = np.linspace(-1.2, 1.2, 300, dtype=np.float32)
    a, b, c = make(5), make(5), make(6)
    first, second = a(x, training=True).numpy(), a(x, training=True).numpy()
    np.testing.assert_array_equal(first, b(x, training=True).numpy())
    np.testing.assert_array_equal(second, b(x, training=True).numpy())
    assert not np.array_equal(first, second)  # the stream advances
    assert not np.array_equal(first, c(x, training=True).numpy())
    # Inside tf.function: the same stream, and it advances between calls.
    d = make(5)
    f = tf.function(lambda t: d(t, training=True))
    np.testing.assert_array_equal(f(x).numpy(), first)
    np.testing.assert_array_equal(f(x).numpy(), second)


@pytest.mark.parametrize("make", STOCHASTIC, ids=["sign", "tern", "fixed_point"])
def test_stochastic_quantizers_training_flag(make):
    x = np.linspace(-1.2, 1.2, 300, dtype=np.float32)
    q = make(0)
    inference = q(x).numpy()
    np.testing.assert_array_equal(q(x, training=None).numpy(), inference)
    np.testing.assert_array_equal(q(x, training=False).numpy(), inference)
    np.testing.assert_array_equal(q(x, training=tf.constant(False)).numpy(), inference)
    assert not np.array_equal(q(x, training=True).numpy(), inference)

    # A boolean tensor that is only known when the function runs.
    @tf.function(input_signature=[tf.TensorSpec([300]), tf.TensorSpec([], tf.bool)])
    def f(t, training):
        return q(t, training=training)

    np.testing.assert_array_equal(f(x, tf.constant(False)).numpy(), inference)
    assert not np.array_equal(f(x, tf.constant(True)).numpy(), inference)


def test_deterministic_quantizers_accept_and_ignore_training():
    x = _f32(-0.5, 0.0, 0.7)
    for name in ["ste_sign", "approx_sign", "ste_tern", "dorefa", "power_of_two", "fixed_point"]:
        q = quantizers.get(name)
        np.testing.assert_array_equal(q(x, training=True).numpy(), q(x).numpy())


def test_stochastic_sign_probabilities_are_hard_sigmoid():
    w = _f32(-2.0, -1.0, -0.5, 0.0, 0.5, 0.8, 1.0, 3.0)
    x = np.repeat(w, 5000)
    y = quantizers.StochasticSign(seed=11)(x, training=True).numpy().reshape(len(w), -1)
    assert set(np.unique(y)) == {-1.0, 1.0}
    p_plus = np.mean(y == 1.0, axis=1)
    expected = np.clip((w + 1) / 2, 0, 1)  # [0, 0, .25, .5, .75, .9, 1, 1]
    np.testing.assert_allclose(p_plus, expected, atol=0.04)
    np.testing.assert_array_equal(p_plus[[0, 1, 6, 7]], [0, 0, 1, 1])  # exact at the ends


def test_stochastic_sign_inference_and_gradient():
    q = quantizers.StochasticSign(clip_value=0.5, seed=0)
    x = _f32(-1.0, -0.5, -1e-6, -0.0, 0.0, 0.3, 0.5, 0.6)
    y, grad = _vg(q, x)
    np.testing.assert_array_equal(y, [-1, -1, -1, 1, 1, 1, 1, 1])
    expected_grad = [0, 1, 1, 1, 1, 1, 1, 0]
    np.testing.assert_array_equal(grad, expected_grad)
    _, grad = _vg(q, x, training=True)  # the same straight-through gradient in training
    np.testing.assert_array_equal(grad, expected_grad)
    y = q(_f32(np.nan, 0.0), training=True).numpy()
    assert np.isnan(y[0]) and abs(y[1]) == 1


def test_stochastic_tern_probabilities():
    w = _f32(-1.5, -1.0, -0.6, -0.2, 0.0, 0.3, 0.75, 1.0)
    x = np.repeat(w, 5000)
    y = quantizers.StochasticTern(seed=2)(x, training=True).numpy().reshape(len(w), -1)
    assert set(np.unique(y)) <= {-1.0, 0.0, 1.0}
    for row, value in zip(y, w, strict=True):
        assert set(np.unique(row)) <= {0.0, float(np.sign(value))}  # never the opposite sign
    p_nonzero = np.mean(y != 0, axis=1)
    np.testing.assert_allclose(p_nonzero, np.minimum(np.abs(w), 1), atol=0.04)
    np.testing.assert_array_equal(p_nonzero[[0, 1, 4, 7]], [1, 1, 0, 1])
    np.testing.assert_allclose(y.mean(axis=1), np.clip(w, -1, 1), atol=0.04)  # E[q] = w


def test_stochastic_tern_inference_and_gradient():
    q = quantizers.get("stochastic_tern")
    below = np.nextafter(np.float32(0.5), np.float32(0))
    x = _f32(-2.0, -1.0, -0.5, -below, -0.0, 0.0, below, 0.5, 1.0, 1.5)
    y, grad = _vg(q, x)
    np.testing.assert_array_equal(y, [-1, -1, -1, 0, 0, 0, 0, 1, 1, 1])
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    _, grad = _vg(q, x, training=True)
    np.testing.assert_array_equal(grad, [0, 1, 1, 1, 1, 1, 1, 1, 1, 0])


# --------------------------------------------------------------- gradient quantizers


def _quantized_gradient(gq, dy, x=None):
    """The gradient that reaches ``x`` through ``gq`` for an incoming ``dy``."""
    dy = tf.constant(dy)
    x = tf.zeros_like(dy) if x is None else tf.constant(x)
    return _vg(gq, x, dy)


@pytest.mark.parametrize(
    "gq", [quantizers.DoReFaGradient(4, seed=0), quantizers.PowerOfTwoGradient()], ids=_param_id
)
def test_gradient_quantizers_are_identity_forward(run, gq):
    x = EDGE_VALUES[np.isfinite(EDGE_VALUES)]
    y = run(gq, tf.constant(x)).numpy()
    np.testing.assert_array_equal(y, x)
    assert gq.precision is None


@pytest.mark.parametrize("k_bit", [1, 2, 4, 6, 8])
def test_dorefa_gradient_lies_on_the_k_bit_grid(k_bit):
    dy = np.random.default_rng(k_bit).normal(0, 1e-3, size=(4, 3, 5)).astype(np.float32)
    dy[1] *= 100.0  # samples with different scales
    _, grad = _quantized_gradient(quantizers.DoReFaGradient(k_bit=k_bit, seed=1), dy)
    n = 2**k_bit - 1
    largest = np.abs(dy).max(axis=(1, 2), keepdims=True)  # per sample
    levels = (grad.astype(np.float64) / largest + 1) * n / 2
    np.testing.assert_allclose(levels, np.round(levels), atol=1e-3)
    assert levels.min() > -1e-3 and levels.max() < n + 1e-3
    # Stochastic rounding moves a value by less than one step of the grid.
    assert np.all(np.abs(grad - dy) <= 2 * largest / n * (1 + 1e-4))


def test_dorefa_gradient_is_unbiased_and_seeded():
    dy = np.concatenate([[1.0], np.full(20000, 0.3), np.full(20000, -0.55)]).astype(np.float32)
    gq = quantizers.DoReFaGradient(k_bit=2, seed=4)
    _, grad = _quantized_gradient(gq, dy)
    assert grad[0] == 1.0
    # Grid {-1, -1/3, 1/3, 1}: 0.3 becomes 1/3 (p = 0.95) or -1/3, with mean 0.3.
    assert set(np.round(np.unique(grad) * 3).astype(int)) <= {-3, -1, 1, 3}
    np.testing.assert_allclose(grad[1:20001].mean(), 0.3, atol=0.01)
    np.testing.assert_allclose(grad[20001:].mean(), -0.55, atol=0.01)
    again = _quantized_gradient(quantizers.DoReFaGradient(k_bit=2, seed=4), dy)[1]
    np.testing.assert_array_equal(grad, again)
    assert not np.array_equal(grad, _quantized_gradient(gq, dy)[1])
    # A zero gradient stays zero.
    _, zero = _quantized_gradient(gq, np.zeros((2, 3), np.float32))
    np.testing.assert_array_equal(zero, np.zeros((2, 3)))


def test_power_of_two_gradient_nearest_pinned():
    gq = quantizers.PowerOfTwoGradient(bits=3)
    # max|dy| = 3 rounds to 2^2: window 2^0 .. 2^2, smaller values flush to 0.
    _, grad = _quantized_gradient(gq, _f32(0.3, -3.0, 0.01, 0.8, -1.5, 0.0))
    np.testing.assert_array_equal(grad, [0, -4, 0, 1, -2, 0])
    gq = quantizers.PowerOfTwoGradient(bits=4, max_exponent=-1)
    _, grad = _quantized_gradient(gq, _f32(0.3, -3.0, 0.01, 0.71, -0.05))
    np.testing.assert_array_equal(grad, [0.25, -0.5, 2.0**-7, 0.5, -0.0625])


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("bits", [2, 3, 5])
def test_power_of_two_gradient_lies_on_powers_of_two(rounding, bits):
    dy = (np.random.default_rng(bits).standard_cauchy(size=(8, 16)) * 1e-4).astype(np.float32)
    gq = quantizers.PowerOfTwoGradient(bits=bits, rounding=rounding, seed=0)
    _, grad = _quantized_gradient(gq, dy)
    nonzero = grad != 0
    mantissa, exponent = np.frexp(np.abs(grad[nonzero]))
    np.testing.assert_array_equal(mantissa, 0.5)
    np.testing.assert_array_equal(np.sign(grad[nonzero]), np.sign(dy[nonzero]))
    assert len(np.unique(exponent)) <= 2 ** (bits - 1) - 1
    # Each value is rounded to one of its two neighbouring powers of two.
    ratio = np.abs(grad[nonzero] / dy[nonzero])
    assert np.all((ratio >= 0.5) & (ratio <= 2.0))


def test_power_of_two_gradient_stochastic_probabilities():
    dy = np.full(20000, 0.75, np.float32)  # log2 0.75 = -0.415: up to 1 w.p. 0.585
    gq = quantizers.PowerOfTwoGradient(bits=4, max_exponent=0, rounding="stochastic", seed=9)
    _, grad = _quantized_gradient(gq, dy)
    assert set(np.unique(grad)) == {0.5, 1.0}
    np.testing.assert_allclose(np.mean(grad == 1.0), math.log2(0.75) + 1, atol=0.02)
    again = _quantized_gradient(quantizers.PowerOfTwoGradient(4, 0, "stochastic", seed=9), dy)
    np.testing.assert_array_equal(grad, again[1])


def test_gradient_quantizer_in_a_model_trains():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x.sum(axis=1, keepdims=True) > 0).astype(np.float32)
    model = keras.Sequential(
        [
            keras.Input((8,)),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Activation(quantizers.get("dorefa_gradient")),
            keras.layers.Dense(1),
            keras.layers.Activation(quantizers.PowerOfTwoGradient(bits=4)),
        ]
    )
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(x, y, epochs=2, batch_size=32, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))


# ------------------------------------------------------------ lookup, serialization


ALL_NAMES = {
    "identity": quantizers.Identity,
    "ste_sign": quantizers.SteSign,
    "approx_sign": quantizers.ApproxSign,
    "swish_sign": quantizers.SwishSign,
    "magnitude_aware_sign": quantizers.MagnitudeAwareSign,
    "ste_heaviside": quantizers.SteHeaviside,
    "stochastic_sign": quantizers.StochasticSign,
    "ste_tern": quantizers.SteTern,
    "stochastic_tern": quantizers.StochasticTern,
    "dorefa": quantizers.DoReFa,
    "dorefa_quantizer": quantizers.DoReFa,
    "power_of_two": quantizers.PowerOfTwo,
    "fixed_point": quantizers.FixedPoint,
    "dorefa_gradient": quantizers.DoReFaGradient,
    "power_of_two_gradient": quantizers.PowerOfTwoGradient,
}


@pytest.mark.parametrize("name", sorted(ALL_NAMES))
def test_every_quantizer_by_name(name):
    cls = ALL_NAMES[name]
    for identifier in (name, cls.__name__, cls):
        q = quantizers.get(identifier)
        assert type(q) is cls
        assert q.get_config() == cls().get_config()  # Larq's defaults
    assert quantizers.DoReFaQuantizer is quantizers.DoReFa
    assert name in str(pytest.raises(ValueError, quantizers.get, "no_such").value)


def test_larq_defaults():
    assert quantizers.SwishSign().beta == 5.0
    assert quantizers.MagnitudeAwareSign().clip_value == 1.0
    assert quantizers.SteHeaviside().clip_value == 1.0
    assert quantizers.SteTern().get_config() == {
        "threshold_value": 0.05, "ternary_weight_networks": False, "clip_value": 1.0
    }  # fmt: skip
    assert quantizers.DoReFa().get_config() == {"k_bit": 2, "mode": "activations"}


SERIALIZABLE = [
    quantizers.ApproxSign(),
    quantizers.SwishSign(beta=2.5),
    quantizers.MagnitudeAwareSign(clip_value=None),
    quantizers.SteHeaviside(clip_value=0.5),
    quantizers.StochasticSign(clip_value=0.5, seed=3),
    quantizers.StochasticSign(),
    quantizers.SteTern(threshold_value=0.1, ternary_weight_networks=True, clip_value=None),
    quantizers.StochasticTern(seed=4),
    quantizers.DoReFa(k_bit=3, mode="weights"),
    quantizers.PowerOfTwo(bits=5, max_exponent=None),
    quantizers.PowerOfTwo(bits=3, max_exponent=-2),
    quantizers.FixedPoint(12, 4, rounding="stochastic", saturate=False, seed=8),
    quantizers.DoReFaGradient(k_bit=4, seed=2),
    quantizers.PowerOfTwoGradient(bits=3, max_exponent=-4, rounding="stochastic", seed=1),
]


@pytest.mark.parametrize("quantizer", SERIALIZABLE, ids=_param_id)
def test_new_quantizers_serialize_round_trip(quantizer):
    test_serialize_round_trip(quantizer)
    restored = quantizers.get(json.loads(json.dumps(quantizers.serialize(quantizer))))
    x = np.linspace(-1.5, 1.5, 64, dtype=np.float32)
    if getattr(quantizer, "seed", None) is not None:
        # Same seed, same stream: a restored quantizer draws what a fresh one does.
        fresh = type(quantizer).from_config(quantizer.get_config())
        np.testing.assert_array_equal(
            _vg(restored, x, training=True)[1], _vg(fresh, x, training=True)[1]
        )
        np.testing.assert_array_equal(restored(x, training=True), fresh(x, training=True))
    elif not isinstance(quantizer, quantizers.StochasticSign):
        np.testing.assert_array_equal(restored(x).numpy(), quantizer(x).numpy())


@pytest.mark.parametrize(
    "fn",
    [quantizers.approx_sign, quantizers.swish_sign, quantizers.magnitude_aware_sign,
     quantizers.ste_heaviside, quantizers.ste_tern, quantizers.dorefa_quantizer],
    ids=lambda f: f.__name__,
)  # fmt: skip
def test_function_forms_serialize_round_trip(fn):
    config = json.loads(json.dumps(quantizers.serialize(fn)))
    assert quantizers.deserialize(config) is fn


def test_new_quantizers_in_a_saved_model(tmp_path):
    from lowbit_tf import layers

    inputs = keras.Input((6, 6, 2))
    h = layers.QuantConv2D(4, 3, input_quantizer="approx_sign",
                           kernel_quantizer=quantizers.SteTern(ternary_weight_networks=True),
                           activation=quantizers.DoReFa(3))(inputs)  # fmt: skip
    h = keras.layers.Activation(quantizers.PowerOfTwoGradient(bits=5))(h)
    outputs = layers.QuantConv2D(2, 3, kernel_quantizer=quantizers.FixedPoint(8, 4))(h)
    model = keras.Model(inputs, outputs)
    x = np.random.default_rng(0).normal(size=(2, 6, 6, 2)).astype(np.float32)
    path = tmp_path / "m.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_array_equal(restored(x).numpy(), model(x).numpy())
    assert isinstance(restored.layers[1].kernel_quantizer, quantizers.SteTern)
    assert restored.layers[1].kernel_quantizer.ternary_weight_networks is True


@pytest.mark.parametrize(
    "quantizer, precision",
    [(quantizers.ApproxSign(), 1), (quantizers.SwishSign(), 1),
     (quantizers.MagnitudeAwareSign(), 1), (quantizers.SteHeaviside(), 1),
     (quantizers.StochasticSign(), 1), (quantizers.SteTern(), 2),
     (quantizers.StochasticTern(), 2), (quantizers.DoReFa(5), 5), (quantizers.PowerOfTwo(3), 3),
     (quantizers.FixedPoint(12, 3), 12), (quantizers.DoReFaGradient(), None),
     (quantizers.approx_sign, 1), (quantizers.ste_tern, 2)],
    ids=_param_id,
)  # fmt: skip
def test_new_precisions(quantizer, precision):
    assert quantizer.precision == precision
    assert quantizers.DoReFaGradient(5).gradient_precision == 5
    assert quantizers.PowerOfTwoGradient(3).gradient_precision == 3


# -------------------------------------------------------------------- bad arguments


BAD_ARGUMENTS = [
    (quantizers.SwishSign, {"beta": 0.0}, "beta"),
    (quantizers.SwishSign, {"beta": -1.0}, "beta"),
    (quantizers.SwishSign, {"beta": math.inf}, "beta"),
    (quantizers.SwishSign, {"beta": "5"}, "beta"),
    (quantizers.MagnitudeAwareSign, {"clip_value": 0.0}, "clip_value"),
    (quantizers.SteHeaviside, {"clip_value": -1.0}, "clip_value"),
    (quantizers.StochasticSign, {"clip_value": 0}, "clip_value"),
    (quantizers.StochasticSign, {"seed": -1}, "seed"),
    (quantizers.StochasticSign, {"seed": 1.5}, "seed"),
    (quantizers.SteTern, {"threshold_value": -0.1}, "threshold_value"),
    (quantizers.SteTern, {"threshold_value": math.nan}, "threshold_value"),
    (quantizers.SteTern, {"ternary_weight_networks": "yes"}, "ternary_weight_networks"),
    (quantizers.SteTern, {"clip_value": 0.0}, "clip_value"),
    (quantizers.StochasticTern, {"seed": "a"}, "seed"),
    (quantizers.DoReFa, {"k_bit": 0}, "k_bit"),
    (quantizers.DoReFa, {"k_bit": -2}, "k_bit"),
    (quantizers.DoReFa, {"k_bit": 2.5}, "k_bit"),
    (quantizers.DoReFa, {"k_bit": True}, "k_bit"),
    (quantizers.DoReFa, {"mode": "weight"}, "mode"),
    (quantizers.DoReFa, {"mode": None}, "mode"),
    (quantizers.PowerOfTwo, {"bits": 1}, "bits"),
    (quantizers.PowerOfTwo, {"max_exponent": 0.5}, "max_exponent"),
    (quantizers.FixedPoint, {"word_bits": 0}, "word_bits"),
    (quantizers.FixedPoint, {"word_bits": 33}, "word_bits"),
    (quantizers.FixedPoint, {"word_bits": 8, "fraction_bits": 8}, "fraction_bits"),
    (quantizers.FixedPoint, {"fraction_bits": -1}, "fraction_bits"),
    (quantizers.FixedPoint, {"rounding": "up"}, "rounding"),
    (quantizers.FixedPoint, {"saturate": 1}, "saturate"),
    (quantizers.DoReFaGradient, {"k_bit": 0}, "k_bit"),
    (quantizers.DoReFaGradient, {"seed": -5}, "seed"),
    (quantizers.PowerOfTwoGradient, {"bits": 1}, "bits"),
    (quantizers.PowerOfTwoGradient, {"rounding": "floor"}, "rounding"),
    (quantizers.PowerOfTwoGradient, {"max_exponent": "0"}, "max_exponent"),
]


@pytest.mark.parametrize(
    "cls, kwargs, argument", BAD_ARGUMENTS, ids=[f"{c.__name__}-{k}" for c, k, _ in BAD_ARGUMENTS]
)
def test_bad_arguments_raise_naming_argument_and_value(cls, kwargs, argument):
    with pytest.raises(ValueError, match=f"`{argument}`") as info:
        cls(**kwargs)
    assert f"{argument}={kwargs[argument]!r}" in str(info.value)


@pytest.mark.parametrize(
    "call, argument",
    [(lambda x: quantizers.swish_sign(x, beta=0), "beta"),
     (lambda x: quantizers.ste_tern(x, threshold_value=-1), "threshold_value"),
     (lambda x: quantizers.ste_tern(x, clip_value=0), "clip_value"),
     (lambda x: quantizers.ste_heaviside(x, clip_value=-2), "clip_value"),
     (lambda x: quantizers.magnitude_aware_sign(x, clip_value=0), "clip_value"),
     (lambda x: quantizers.dorefa_quantizer(x, k_bit=0), "k_bit"),
     (lambda x: quantizers.dorefa_quantizer(x, k_bit=17), "k_bit"),
     (lambda x: quantizers.DoReFa(k_bit=99), "k_bit"),
     (lambda x: quantizers.dorefa_quantizer(x, mode="kernel"), "mode")],
)  # fmt: skip
def test_function_forms_validate_arguments(call, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        call(tf.ones(3))


def test_quantizer_subclass_with_training_receives_it():
    seen = []

    class Probe(quantizers.Quantizer):
        def call(self, inputs, training=None):
            seen.append(training)
            return inputs

    Probe()(tf.ones(2), training=True)
    Probe()(tf.ones(2))
    assert seen == [True, None]
    assert not quantizers.SteSign._call_takes_training
    assert quantizers.StochasticSign._call_takes_training


# ----------------------------------------------------------------------------- ABC-Net


@pytest.mark.parametrize("num_bases, per_channel", [(1, False), (3, False), (2, True), (5, True)])
def test_abc_weights_is_the_least_squares_sum_of_binary_bases(num_bases, per_channel):
    rng = np.random.default_rng(num_bases)
    w = rng.normal(size=(3, 3, 4, 6)).astype(np.float32)
    q = quantizers.AbcWeights(num_bases, per_channel)
    bases, alphas = (t.numpy() for t in q.bases(w))
    assert bases.shape == (num_bases, *w.shape) and set(np.unique(bases)) <= {-1.0, 1.0}
    axes = (0, 1, 2) if per_channel else None
    mean, std = w.mean(axis=axes, keepdims=True), w.std(axis=axes, keepdims=True)
    shifts = [0.0] if num_bases == 1 else np.linspace(-1, 1, num_bases)
    for i, u in enumerate(shifts):
        np.testing.assert_array_equal(bases[i], np.where(w - mean + u * std < 0, -1.0, 1.0))
    # Least squares: the residual is orthogonal to every base (per channel).
    approx = q(w).numpy()
    residual = (w - approx).reshape(-1, w.shape[-1]) if per_channel else (w - approx).ravel()
    for i in range(num_bases):
        b = bases[i].reshape(residual.shape)
        dots = (residual * b).sum(axis=0)
        np.testing.assert_allclose(dots, 0, atol=1e-3 * np.abs(w).sum())
    assert q.precision == num_bases


def test_abc_weights_gradient_is_straight_through_sum_of_alphas():
    w = tf.Variable(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    q = quantizers.get("abc_weights")
    with tf.GradientTape() as tape:
        y = tf.reduce_sum(q(w))
    _, alphas = q.bases(w)
    np.testing.assert_allclose(tape.gradient(y, w).numpy(),
                               np.full((5, 4), alphas.numpy().sum()), rtol=1e-6)


def test_abc_activations_values_gradient_and_config():
    q = quantizers.AbcActivations(num_bases=2, shifts=[0.5, 0.0], betas=[0.75, 0.25])
    x = tf.constant([-0.5, 0.0, 0.3, 0.6, 1.2])
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = q(x)
    # H_0.5(x) = +1 iff x + 0.5 >= 0.5; H_0(x) = +1 iff x >= 0.5.
    h0 = np.where(x.numpy() + 0.5 >= 0.5, 1.0, -1.0)
    h1 = np.where(x.numpy() >= 0.5, 1.0, -1.0)
    np.testing.assert_allclose(y.numpy(), 0.75 * h0 + 0.25 * h1)
    # Gradient: the clips' (1 inside [0, 1] after the shift) times the betas.
    inside0 = ((x.numpy() + 0.5 >= 0) & (x.numpy() + 0.5 <= 1)).astype(np.float32)
    inside1 = ((x.numpy() >= 0) & (x.numpy() <= 1)).astype(np.float32)
    np.testing.assert_allclose(tape.gradient(y, x).numpy(), 0.75 * inside0 + 0.25 * inside1)
    restored = quantizers.deserialize(quantizers.serialize(q))
    assert restored.get_config() == q.get_config()
    np.testing.assert_array_equal(restored(x).numpy(), y.numpy())
    default = quantizers.get("abc_activations")
    assert default.num_bases == 3 and default.betas == [1 / 3] * 3


@pytest.mark.parametrize("make, message", [
    (lambda: quantizers.AbcWeights(num_bases=0), "num_bases"),
    (lambda: quantizers.AbcWeights(per_channel="yes"), "per_channel"),
    (lambda: quantizers.AbcActivations(num_bases=2, shifts=[0.1]), "shifts"),
    (lambda: quantizers.AbcActivations(num_bases=2, betas=[1, 2, 3]), "betas"),
])
def test_abc_quantizers_reject_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()
