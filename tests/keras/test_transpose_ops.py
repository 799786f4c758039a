"""QuantConv2DTranspose on LowbitBconv2d (lowbit_tf/_transpose_ops.py: one op per
stride phase) gives the float emulation's numbers: the same layer with
``use_ops=True`` and ``use_ops=False``, equal weights, outputs bit for bit
(integer sums), gradients for the input, kernel and bias, a few fit steps, and
the graph itself (the op really runs, or really does not)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lowbit_tf import layers
from lowbit_tf._keras import keras

SIGN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def _pair(shape, **kwargs):
    on_ops = layers.QuantConv2DTranspose(**kwargs, use_ops=True)
    emulated = layers.QuantConv2DTranspose.from_config({**on_ops.get_config(), "use_ops": False})
    for layer in (on_ops, emulated):
        layer.build(shape)
    rng = np.random.default_rng(0)
    weights = [rng.uniform(-1.5, 1.5, w.shape).astype(np.float32) for w in on_ops.get_weights()]
    on_ops.set_weights(weights)
    emulated.set_weights(weights)
    return on_ops, emulated


def _op_count(layer, shape) -> int:
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape)).graph
    return sum(op.type == "LowbitBconv2d" for op in graph.get_operations())


def _forward_and_gradients(layer, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        r = tf.constant(np.random.default_rng(7).normal(size=y.shape).astype(np.float32))
        loss = tf.reduce_sum(y * r)
    sources = [x, layer.kernel, *([layer.bias] if layer.use_bias else [])]
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, sources)]


@pytest.mark.parametrize("config, phases", [
    (dict(kernel_size=3, strides=2, padding="same"), 4),
    (dict(kernel_size=3, strides=2, padding="valid", activation="relu", use_bias=False), 4),
    (dict(kernel_size=4, strides=2, padding="same", output_padding=1), 4),
    (dict(kernel_size=(3, 2), strides=3, padding="same"), 6),  # phases without taps
    (dict(kernel_size=3, strides=1, padding="valid", dilation_rate=2), 1),
    (dict(kernel_size=5, strides=2, padding="valid", output_padding=1), 4),
])
def test_conv2d_transpose_on_the_op_equals_the_emulation(config, phases):
    shape = (2, 5, 6, 37)
    a, b = _pair(shape, filters=7, **SIGN, **config)
    assert _op_count(a, shape) == phases
    assert _op_count(b, shape) == 0
    x = np.random.default_rng(1).normal(size=shape).astype(np.float32) * 1.5
    y_ops, g_ops = _forward_and_gradients(a, x)
    y_emu, g_emu = _forward_and_gradients(b, x)
    np.testing.assert_array_equal(y_ops, y_emu)
    for got, want in zip(g_ops, g_emu, strict=True):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.max(np.abs(want)))


@pytest.mark.parametrize("kwargs, reason", [
    (dict(kernel_quantizer="magnitude_aware_sign"), "per input channel"),
    (dict(strides=(2, 1)), "square block"),
    (dict(input_quantizer=None), "does not output only -1 and +1"),
])
def test_configurations_no_op_runs_keep_the_emulation(kwargs, reason, caplog):
    shape = (1, 4, 4, 8)
    layer = layers.QuantConv2DTranspose(3, 3, **{**SIGN, "strides": 2, **kwargs})
    layer.build(shape)
    with caplog.at_level("DEBUG", logger="lowbit_tf.layers"):
        assert _op_count(layer, shape) == 0
    assert reason in caplog.text


def test_unknown_height_keeps_the_emulation():
    """The phases need the input's height and width when the call is traced."""
    from lowbit_tf._transpose_ops import conv2d_transpose_problem

    layer = layers.QuantConv2DTranspose(3, 3, strides=2, **SIGN)
    layer.build((None, None, None, 8))
    assert "need the height and width" in conv2d_transpose_problem(
        layer, tf.TensorSpec((1, None, 5, 8)))
    assert conv2d_transpose_problem(layer, tf.TensorSpec((1, 4, 5, 8))) is None
    assert _op_count(layer, (1, 4, 5, 8)) == 4


def test_fit_steps_give_the_same_weights():
    """Five SGD steps of a small decoder on the ops and emulated end equal."""
    def model(use_ops):
        inputs = keras.Input((6, 6, 16))
        x = layers.QuantConv2DTranspose(8, 3, strides=2, padding="same", use_ops=use_ops,
                                        kernel_constraint="weight_clip", **SIGN)(inputs)
        x = keras.layers.BatchNormalization()(x)
        x = layers.QuantConv2DTranspose(4, 4, strides=2, padding="same", use_ops=use_ops,
                                        **SIGN)(x)
        return keras.Model(inputs, x)

    rng = np.random.default_rng(3)
    x = rng.normal(size=(8, 6, 6, 16)).astype(np.float32)
    y = rng.normal(size=(8, 24, 24, 4)).astype(np.float32)
    trained = []
    for use_ops in (True, False):
        m = model(use_ops)
        keras.utils.set_random_seed(0)
        m.set_weights([np.random.default_rng(4 + i).uniform(-1, 1, w.shape).astype(np.float32)
                       if w.ndim == 4 else w for i, w in enumerate(m.get_weights())])
        m.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
        m.fit(x, y, batch_size=4, epochs=1, verbose=0, shuffle=False)
        m.fit(x, y, batch_size=8, epochs=3, verbose=0, shuffle=False)
        trained.append(m.get_weights())
    for got, want in zip(*trained, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
