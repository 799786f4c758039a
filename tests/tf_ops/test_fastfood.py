"""LowbitFastfood: the Adaptive Fastfood transform (lowbit_tf.layers.FastfoodDense)
as one TF op, on one C++ core (core/fastfood.h).

Exactness: the float32 butterfly reference in the Keras layer's order of
operations (tests/helpers/reference.py fastfood_np) == the Keras layer == the
TF op, bit for bit (values; a zero may differ in sign only where a bias is
added); the float64 dense-matrix reference (fastfood_dense_np) within a
float32 tolerance. Bad inputs: clear errors from the wrapper and the kernel.
Gradients: the op's registered gradient against tf.GradientTape through the
Keras layer's float ops, and training through the op. The TFLite kernel:
tests/tflite/test_fastfood.py; the converter: tests/converter/test_fastfood.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from fastfood_cases import F32, GOOD, VARIANTS, int8_case, next_pow2, random_weights
from reference import dequantize_int8_np, fastfood_dense_np, fastfood_np, quantize_int8_np

tf = pytest.importorskip("tensorflow")

from lowbit_tf import layers, ops  # noqa: E402
from lowbit_tf._keras import keras  # noqa: E402
from lowbit_tf._native import load_tf_ops  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


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
    # (TF's op wrapper: a TypeError, or a ValueError since x's type is an attribute)
    with pytest.raises((TypeError, ValueError, tf.errors.InvalidArgumentError)):
        _raw(permutation=tf.constant(GOOD[3].astype(F32)))


# --------------------------------------------------------------------------
# int8 x and output (int8 models, docs/int8.md): exact against the reference
# of the quantized arithmetic, DEQUANTIZE -> float32 Fastfood -> QUANTIZE
# --------------------------------------------------------------------------


@pytest.mark.parametrize("d", (1, 17, 100))
@pytest.mark.parametrize("variant", range(len(VARIANTS)))
@pytest.mark.parametrize("io", ("int8_float", "int8_int8", "float_int8"))
def test_int8_io_equals_quantized_reference(d, variant, io):
    q, (xs, xz), weights, units, activation, y, (ys, yz) = int8_case(d, variant, seed=d)
    kwargs = dict(units=units, activation=activation)
    if io.startswith("int8"):
        x = q
        kwargs.update(input_scale=xs, input_zero_point=xz)
    else:
        x = dequantize_int8_np(q, xs, xz)  # the same real values, as float32
    if io.endswith("int8"):
        kwargs.update(output_type="int8", output_scale=ys, output_zero_point=yz)
        expected = quantize_int8_np(y, ys, yz)
    else:
        expected = y
    got = ops.fastfood(x, *weights, **kwargs).numpy()
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_int8_output_rounds_halves_away_from_zero_and_saturates():
    """Values on exact halves of the output step and past the int8 range: x
    chosen so that y = x * b * g * s exactly (n = 1, one block)."""
    one = np.ones((1, 1), F32)
    x = np.array([[0.5], [1.5], [-0.5], [-2.5], [1000.0], [-1000.0], [np.nan]], F32)
    got = ops.fastfood(x, one, one, one, np.zeros((1, 1), np.int32), output_type="int8",
                       output_scale=1.0, output_zero_point=3).numpy()  # fmt: skip
    np.testing.assert_array_equal(got[:, 0], [4, 5, 2, 0, 127, -128, 3])
    np.testing.assert_array_equal(got, quantize_int8_np(x, 1.0, 3))


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(output_type="int8", output_scale=0.0), ValueError, "output_scale must be finite"),
    (dict(output_type="int8", output_scale=float("inf")), ValueError, "output_scale"),
    (dict(input_scale=-1.0), ValueError, "input_scale must be finite and > 0"),
    (dict(output_zero_point=128), ValueError, r"output_zero_point must be an int in \[-128"),
    (dict(input_zero_point=3), ValueError, "input_zero_point applies to an int8 input"),
    (dict(output_type="bitpacked"), ValueError, "output_type must be 'float' or 'int8'"),
])  # fmt: skip
def test_wrapper_rejects_bad_quantization(kwargs, error, message):
    with pytest.raises(error, match=message):
        ops.fastfood(X, *GOOD, **kwargs)


def test_wrapper_rejects_int16_x():
    with pytest.raises(TypeError, match="float32 or int8, got dtype int16"):
        ops.fastfood(X.astype(np.int16), *GOOD)


@pytest.mark.parametrize("attrs, message", [
    (dict(output_type="int8", Tout=tf.int8, output_scale=0.0),
     "output scale must be finite and > 0, got 0"),
    (dict(output_type="int8", Tout=tf.int8, output_zero_point=-129),
     r"output zero point must be in \[-128, 127\], got -129"),
    (dict(input_scale=float("nan")), "input scale must be finite and > 0"),
    (dict(input_zero_point=200), r"input zero point must be in \[-128, 127\], got 200"),
    (dict(output_type="int8"), 'output_type "int8" needs Tout = int8, got float'),
    (dict(Tout=tf.int8), 'output_type "float" needs Tout = float, got int8'),
])  # fmt: skip
def test_kernel_rejects_bad_quantization(attrs, message):
    """The op itself names the tensor of a bad scale or zero point."""
    with pytest.raises((tf.errors.InvalidArgumentError, ValueError), match=message):
        load_tf_ops().lowbit_fastfood(X.astype(np.int8), *GOOD[:4], GOOD[4], units=12,
                                      **attrs)  # fmt: skip


def test_int8_op_has_no_gradient():
    q = tf.constant(np.zeros((2, 5), np.int8))
    b = tf.Variable(GOOD[0])
    with tf.GradientTape() as tape:
        y = ops.fastfood(q, b, *GOOD[1:4], GOOD[4], input_scale=0.1)
        loss = tf.reduce_sum(y)
    assert tape.gradient(loss, b) is None


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

