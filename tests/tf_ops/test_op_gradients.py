"""Gradients of LowbitBconv2d and LowbitBgemm (lowbit_tf/ops.py) against the
float training path.

The float path is what a Keras model trains with: QuantConv2D / QuantDense
with ste_sign input and kernel quantizers and the same latent weights, then
`* multiplier + bias` (and a ReLU). Its tf.GradientTape gradients w.r.t. the
float input, the float kernel, the multiplier and the bias must equal the
registered gradients of the fast ops, which compute the same maths on
different kernels (so within float rounding of the sums, not bit for bit).
Last, a small model trained through the fast path (a tiny layer calling
ops.bconv2d with its float kernel) follows the float path's loss.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lowbit_tf import layers, ops
from lowbit_tf._keras import keras

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", use_bias=False)
MODES = ["eager", "function"]


def assert_grads_close(got, want, names):
    for g, w, name in zip(got, want, names, strict=True):
        assert g is not None, name
        w = np.asarray(w)
        # Sums of the same +-g * m terms in another order: a few ulps of the
        # largest partial sum.
        np.testing.assert_allclose(np.asarray(g), w, rtol=1e-5,
                                   atol=1e-5 * max(np.abs(w).max(), 1.0), err_msg=name)


def gradients(fn, mode, tensors):
    """Gradients of fn(*tensors) (a scalar) w.r.t. every tensor, eagerly or
    inside a tf.function (graph-mode gradient functions)."""

    def run(*args):
        with tf.GradientTape() as tape:
            tape.watch(args)
            loss = fn(*args)
        return tape.gradient(loss, args)

    if mode == "function":
        run = tf.function(run)
    return [None if g is None else g.numpy() for g in run(*[tf.constant(t) for t in tensors])]


def data(rng, x_shape, kernel_shape, cout):
    # Values on both sides of the straight-through clip |v| <= 1.
    x = rng.uniform(-2, 2, x_shape).astype(np.float32)
    kernel = rng.uniform(-1.5, 1.5, kernel_shape).astype(np.float32)
    m = rng.uniform(-2, 2, cout).astype(np.float32)
    b = rng.uniform(-3, 3, cout).astype(np.float32)
    return x, kernel, m, b


CONV_CASES = [
    dict(padding="VALID", activation=None),
    dict(padding="VALID", activation="relu", kernel=(2, 3)),
    dict(padding="SAME", pad_value=0, activation=None),
    dict(padding="SAME", pad_value=0, activation="relu", strides=2),
    dict(padding="SAME", pad_value=1, activation=None, strides=2),
    dict(padding="SAME", pad_value=1, activation="relu"),
    dict(padding="SAME", pad_value=1, activation=None, dilations=2),
    dict(padding="SAME", pad_value=0, activation=None, strides=(2, 1), cin=40),
]


def conv_case(case):
    return dict(dict(kernel=(3, 3), strides=1, dilations=1, pad_value=0, cin=5, cout=7), **case)


def float_gradients(layer, fn, tensors):
    """Gradients of the float path fn(x, m, b, weights) w.r.t. x, the layer's
    latent kernel (set to `kernel` first), m and b."""
    x, kernel, m, b, weights = (tf.constant(t) for t in tensors)
    layer.kernel.assign(kernel)
    with tf.GradientTape() as tape:
        tape.watch([x, m, b])
        loss = fn(x, m, b, weights)
    return [g.numpy() for g in tape.gradient(loss, [x, layer.kernel, m, b])]


def float_path(layer, activation):
    """layer(x) * m + b (+ ReLU), weighted and summed: the training path."""

    def fn(x, m, b, weights):
        y = layer(x) * m + b
        if activation == "relu":
            y = tf.nn.relu(y)
        return tf.reduce_sum(y * weights)

    return fn


def float_conv(case, x_shape):
    """QuantConv2D(ste_sign, ste_sign) with the case's geometry, built."""
    conv = layers.QuantConv2D(
        case["cout"], case["kernel"], strides=case["strides"], dilation_rate=case["dilations"],
        padding=case["padding"].lower(), pad_values=float(case["pad_value"]), **BINARY)
    conv.build(x_shape)
    return conv


def fast_conv(case):
    def fn(x, kernel, m, b, weights):
        y = ops.bconv2d(x, kernel, m, b, strides=case["strides"], dilations=case["dilations"],
                        padding=case["padding"], pad_value=case["pad_value"],
                        activation=case["activation"])
        return tf.reduce_sum(y * weights)

    return fn


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "-".join(map(str, c.values())))
def test_bconv2d_gradients_equal_float_path(case, mode):
    case = conv_case(case)
    rng = np.random.default_rng(len(str(case)))
    x, kernel, m, b = data(rng, (2, 9, 8, case["cin"]), (*case["kernel"], case["cin"],
                                                         case["cout"]), case["cout"])
    y = ops.bconv2d(x, kernel, m, b, strides=case["strides"], dilations=case["dilations"],
                    padding=case["padding"], pad_value=case["pad_value"])
    weights = rng.standard_normal(y.shape).astype(np.float32)
    tensors = (x, kernel, m, b, weights)
    conv = float_conv(case, x.shape)
    want = float_gradients(conv, float_path(conv, case["activation"]), tensors)
    got = gradients(fast_conv(case), mode, tensors)
    assert_grads_close(got[:4], want, ["input", "kernel", "multiplier", "bias"])


@pytest.mark.parametrize("mode", MODES)
def test_bconv2d_packed_operands_have_no_gradient(mode):
    """A packed filter: input gradient only; a packed input: kernel gradient
    only, equal to the float path's (which sees the same signs)."""
    case = conv_case(dict(padding="SAME", pad_value=1, activation="relu", cin=33))
    rng = np.random.default_rng(3)
    x, kernel, m, b = data(rng, (2, 6, 7, 33), (3, 3, 33, 7), 7)
    weights = rng.standard_normal((2, 6, 7, 7)).astype(np.float32)
    conv = float_conv(case, x.shape)
    want = float_gradients(conv, float_path(conv, case["activation"]), (x, kernel, m, b, weights))
    packed_filter = ops.pack_filter(kernel).numpy()
    packed_input = ops.bitpack(x).numpy()

    def packed_w(x, m, b, weights):
        y = ops.bconv2d(x, packed_filter, m, b, kernel_size=3, padding="SAME", pad_value=1,
                        activation="relu")
        return tf.reduce_sum(y * weights)

    def packed_x(kernel, m, b, weights):
        y = ops.bconv2d(packed_input, kernel, m, b, padding="SAME", pad_value=1,
                        activation="relu")
        return tf.reduce_sum(y * weights)

    got = gradients(packed_w, mode, (x, m, b, weights))
    assert_grads_close(got[:3], [want[0], *want[2:]], ["input", "m", "b"])
    got = gradients(packed_x, mode, (kernel, m, b, weights))
    assert_grads_close(got[:3], want[1:], ["kernel", "m", "b"])

    # The packed input itself is not differentiable.
    x_words = tf.constant(packed_input)
    with tf.GradientTape() as tape:
        tape.watch(x_words)
        loss = tf.reduce_sum(ops.bconv2d(x_words, kernel, m, b, padding="SAME"))
    assert tape.gradient(loss, x_words) is None


def test_rank5_conv_gradients_equal_rank4():
    rng = np.random.default_rng(4)
    x, kernel, m, b = data(rng, (2, 3, 6, 5, 9), (3, 3, 9, 4), 4)
    weights = rng.standard_normal((2, 3, 3, 3, 4)).astype(np.float32)

    def fn(x, kernel, m, b, weights):
        y = ops.bconv2d(x, kernel, m, b, strides=2, padding="SAME", pad_value=1)
        return tf.reduce_sum(y * weights)

    got = gradients(fn, "eager", (x, kernel, m, b, weights))
    flat = gradients(fn, "eager", (x.reshape(6, 6, 5, 9), kernel, m, b,
                                   weights.reshape(6, 3, 3, 4)))
    np.testing.assert_allclose(got[0].reshape(flat[0].shape), flat[0], rtol=1e-6, atol=1e-6)
    for g, f in zip(got[1:4], flat[1:4], strict=True):
        np.testing.assert_allclose(g, f, rtol=1e-5, atol=1e-5)


def test_bitpacked_output_has_no_gradient():
    rng = np.random.default_rng(5)
    x, kernel, m, b = data(rng, (1, 4, 4, 3), (3, 3, 3, 2), 2)
    graph = tf.Graph()
    with graph.as_default():
        conv = ops.bconv2d(tf.constant(x), tf.constant(kernel), m, b, padding="SAME",
                           output_type="bitpacked")
        gemm = ops.bgemm(tf.constant(x), tf.constant(kernel[0, 0]), m, b,
                         output_type="bitpacked")
        for out, grad_fn in ((conv, ops._bconv2d_grad), (gemm, ops._bgemm_grad)):
            assert grad_fn(out.op, tf.zeros_like(out, tf.float32)) == [None] * 4


# --------------------------------------------------------------------------
# LowbitBgemm
# --------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k, units, leading, activation", [
    (1, 3, (4,), None),
    (33, 17, (2, 3), "relu"),
    (100, 40, (5,), None),
    (257, 9, (2, 2, 2), "relu"),
])
def test_bgemm_gradients_equal_float_path(k, units, leading, activation, mode):
    rng = np.random.default_rng(k)
    x, kernel, m, b = data(rng, (*leading, k), (k, units), units)
    weights = rng.standard_normal((*leading, units)).astype(np.float32)
    tensors = (x, kernel, m, b, weights)
    dense = layers.QuantDense(units, **BINARY)
    dense.build(x.shape)
    want = float_gradients(dense, float_path(dense, activation), tensors)

    def fast(x, kernel, m, b, weights):
        return tf.reduce_sum(ops.bgemm(x, kernel, m, b, activation=activation) * weights)

    got = gradients(fast, mode, tensors)
    assert_grads_close(got[:4], want, ["input", "kernel", "multiplier", "bias"])

    # Packed filter: the same input gradient; packed input: the same kernel one.
    packed_filter = ops.pack_dense_kernel(kernel).numpy()
    packed_input = ops.bitpack(x).numpy()

    def packed_w(x, m, b, weights):
        y = ops.bgemm(x, packed_filter, m, b, activation=activation)
        return tf.reduce_sum(y * weights)

    def packed_x(kernel, m, b, weights):
        y = ops.bgemm(packed_input, kernel, m, b, activation=activation)
        return tf.reduce_sum(y * weights)

    assert_grads_close(gradients(packed_w, mode, (x, m, b, weights))[:1], want[:1], ["input"])
    assert_grads_close(gradients(packed_x, mode, (kernel, m, b, weights))[:1], want[1:2],
                       ["kernel"])


# --------------------------------------------------------------------------
# Training through the fast path
# --------------------------------------------------------------------------


class FastBConv2D(keras.layers.Layer):
    """A binary conv layer that runs (and trains) through ops.bconv2d, with its
    float kernel, a per-channel multiplier and a bias."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.filters, self.kernel_size = filters, kernel_size

    def build(self, input_shape):
        shape = (self.kernel_size, self.kernel_size, input_shape[-1], self.filters)
        self.kernel = self.add_weight(shape=shape, initializer="glorot_uniform", name="kernel")
        self.multiplier = self.add_weight(shape=(self.filters,), initializer="ones",
                                          name="multiplier")
        self.bias = self.add_weight(shape=(self.filters,), initializer="zeros", name="bias")

    def call(self, inputs):
        return ops.bconv2d(inputs, self.kernel, self.multiplier, self.bias, padding="SAME",
                           pad_value=1, activation="relu")


class FloatBConv2D(keras.layers.Layer):
    """The same layer on the float training path."""

    def __init__(self, filters, kernel_size, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.QuantConv2D(filters, kernel_size, padding="same", pad_values=1.0,
                                       **BINARY)

    def build(self, input_shape):
        self.conv.build(input_shape)
        filters = self.conv.filters
        self.multiplier = self.add_weight(shape=(filters,), initializer="ones",
                                          name="multiplier")
        self.bias = self.add_weight(shape=(filters,), initializer="zeros", name="bias")

    def call(self, inputs):
        return tf.nn.relu(self.conv(inputs) * self.multiplier + self.bias)


def tiny_model(layer):
    inputs = keras.Input((6, 6, 4))
    h = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inputs)
    h = layer(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(3, name="head")(h)
    return keras.Model(inputs, outputs)


def test_model_trains_through_the_fast_path_like_the_float_path():
    rng = np.random.default_rng(7)
    x = rng.standard_normal((32, 6, 6, 4)).astype(np.float32)
    y = rng.integers(0, 3, 32)
    keras.utils.set_random_seed(1)
    fast = tiny_model(FastBConv2D(16, 3, name="bconv"))
    slow = tiny_model(FloatBConv2D(16, 3, name="bconv"))
    for name in ("stem", "head"):  # same initial weights
        slow.get_layer(name).set_weights(fast.get_layer(name).get_weights())
    fast_b, slow_b = fast.get_layer("bconv"), slow.get_layer("bconv")
    for a, b in ((fast_b.kernel, slow_b.conv.kernel), (fast_b.multiplier, slow_b.multiplier),
                 (fast_b.bias, slow_b.bias)):
        b.assign(a)
    for model in (fast, slow):
        model.compile(keras.optimizers.SGD(0.05),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    np.testing.assert_allclose(fast.predict(x, verbose=0), slow.predict(x, verbose=0),
                               rtol=1e-5, atol=1e-5)
    fast_loss = fast.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0).history["loss"]
    slow_loss = slow.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(fast_loss, slow_loss, rtol=1e-3)
    assert fast_loss[-1] < fast_loss[0]
    np.testing.assert_allclose(fast_b.kernel.numpy(), slow_b.conv.kernel.numpy(), rtol=1e-4,
                               atol=1e-5)
