"""The quantized layers on the custom TF ops give the float emulation's numbers.

Each check builds a layer twice with the same weights, ``use_ops=True`` (the
ops, where they can run the configuration) and ``use_ops=False`` (float conv /
matmul on the quantized values), and compares forward values (bit for bit
where they are integer sums, 1e-6 relative with a scaled kernel), gradients
(1e-6 relative), short ``model.fit`` runs (1e-5), and the graph itself: the op
must really be there (or really absent, for a configuration no op runs).
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import tensorflow as tf

import lowbit_tf
from lowbit_tf import layers, quantizers
from lowbit_tf._keras import KERAS_3, keras

OP_TYPES = {
    layers.QuantConv2D: "LowbitBconv2d",
    layers.QuantDense: "LowbitBgemm",
    layers.QuantDepthwiseConv2D: "LowbitBDepthwiseConv2d",
}
LOWBIT_OPS = {*OP_TYPES.values(), "LowbitMultibitConv2d", "LowbitFastfood"}


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _op_types(layer: keras.layers.Layer, shape: tuple[int, ...], dtype=tf.float32) -> set[str]:
    """The op types of the layer's traced call (inference) on inputs of `shape`."""
    graph = tf.function(layer).get_concrete_function(tf.TensorSpec(shape, dtype)).graph
    return {op.type for op in graph.get_operations()}


def _pair(cls, shape, seed=0, **kwargs):
    """(on the ops, emulated): the same layer twice, built, with equal random weights
    (the kernel spread over [-1.5, 1.5], so that some of it lies outside the clip)."""
    ops_layer = cls(**kwargs, use_ops=True)
    emulated = cls.from_config({**ops_layer.get_config(), "use_ops": False})
    for layer in (ops_layer, emulated):
        layer.build(shape)
    rng = _rng(seed)
    weights = [rng.uniform(-1.5, 1.5, w.shape).astype(np.float32)
               for w in ops_layer.get_weights()]  # fmt: skip
    ops_layer.set_weights(weights)
    emulated.set_weights(weights)
    return ops_layer, emulated


def _relative(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def _forward_and_gradients(layer, x, weights_of):
    """(outputs, [d loss/dx, d loss/d each weight]) for a loss whose output
    gradient is a fixed random tensor (so every output matters)."""
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        r = tf.constant(_rng(7).normal(size=y.shape).astype(np.float32), y.dtype)
        loss = tf.reduce_sum(tf.cast(y * r, tf.float32))
    sources = [x, *weights_of(layer)]
    return y.numpy(), [g.numpy() for g in tape.gradient(loss, sources)]


CONV_CASES = [
    dict(filters=8, kernel_size=3, padding="same", pad_values=1.0, use_bias=False),
    dict(filters=8, kernel_size=3, padding="same", pad_values=0.0),
    dict(filters=16, kernel_size=(3, 2), strides=2, padding="valid"),
    dict(filters=8, kernel_size=3, strides=(2, 1), padding="same", pad_values=1.0),
    dict(filters=8, kernel_size=3, dilation_rate=2, padding="same", activation="relu",
         use_bias=False),
    dict(filters=8, kernel_size=3, groups=2, padding="same", pad_values=1.0, activation="relu"),
    dict(filters=5, kernel_size=1, activation="tanh"),
]
SIGN_QUANTIZERS = ["ste_sign", "approx_sign", "swish_sign", quantizers.SteSign(clip_value=0.5)]


@pytest.mark.parametrize("config", CONV_CASES)
@pytest.mark.parametrize("input_quantizer", SIGN_QUANTIZERS)
def test_conv_on_the_op_equals_the_emulation(config, input_quantizer):
    """Sign inputs and kernel: integer sums, equal bit for bit; gradients (through
    the input quantizer's own pseudo-gradient) within 1e-6."""
    shape = (2, 9, 8, 40)
    a, b = _pair(layers.QuantConv2D, shape, input_quantizer=input_quantizer,
                 kernel_quantizer="ste_sign", **config)  # fmt: skip
    assert "LowbitBconv2d" in _op_types(a, shape)
    assert not LOWBIT_OPS & _op_types(b, shape)
    x = _rng(1).normal(size=shape).astype(np.float32) * 1.5
    weights = lambda layer: [layer.kernel, *([layer.bias] if layer.use_bias else [])]  # noqa: E731
    y_ops, g_ops = _forward_and_gradients(a, x, weights)
    y_emu, g_emu = _forward_and_gradients(b, x, weights)
    np.testing.assert_array_equal(y_ops, y_emu)
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= 1e-6
    assert np.any(g_ops[1] == 0) or np.all(np.abs(a.kernel.numpy()) <= 1)  # the clip acted


@pytest.mark.parametrize("config", CONV_CASES[:4])
def test_scaled_kernel_conv_is_within_1e6(config):
    """magnitude_aware_sign: alpha_c * (+-1) kernels run as the op's multiplier."""
    shape = (2, 7, 7, 33)
    a, b = _pair(layers.QuantConv2D, shape, input_quantizer="ste_sign",
                 kernel_quantizer="magnitude_aware_sign", **config)  # fmt: skip
    assert "LowbitBconv2d" in _op_types(a, shape)
    x = _rng(2).normal(size=shape).astype(np.float32)
    weights = lambda layer: [layer.kernel]  # noqa: E731
    y_ops, g_ops = _forward_and_gradients(a, x, weights)
    y_emu, g_emu = _forward_and_gradients(b, x, weights)
    assert _relative(y_ops, y_emu) <= 1e-6
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= 1e-6


@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "magnitude_aware_sign"])
@pytest.mark.parametrize("shape", [(4, 70), (2, 3, 33)])
@pytest.mark.parametrize("activation", [None, "relu"])
def test_dense_on_the_op_equals_the_emulation(kernel_quantizer, shape, activation):
    for use_bias in (False, True):
        a, b = _pair(layers.QuantDense, shape, units=12, input_quantizer="approx_sign",
                     kernel_quantizer=kernel_quantizer, activation=activation,
                     use_bias=use_bias)  # fmt: skip
        assert "LowbitBgemm" in _op_types(a, shape)
        x = _rng(3).normal(size=shape).astype(np.float32)
        weights = lambda layer: [layer.kernel]  # noqa: E731
        y_ops, g_ops = _forward_and_gradients(a, x, weights)
        y_emu, g_emu = _forward_and_gradients(b, x, weights)
        if kernel_quantizer == "ste_sign":
            np.testing.assert_array_equal(y_ops, y_emu)
        assert _relative(y_ops, y_emu) <= 1e-6
        if kernel_quantizer != "ste_sign" and activation == "relu":
            # Scaled outputs differ in the last bit, so an output within
            # rounding of 0 may be kept by one ReLU and cut by the other.
            continue
        for got, want in zip(g_ops, g_emu, strict=True):
            assert _relative(got, want) <= 1e-6


@pytest.mark.parametrize("config", [
    dict(kernel_size=3, padding="same", pad_values=1.0),
    dict(kernel_size=3, padding="same", pad_values=0.0, depth_multiplier=2),
    dict(kernel_size=(3, 2), strides=2, padding="valid", use_bias=False),
    dict(kernel_size=3, dilation_rate=2, padding="same", pad_values=1.0),
])
@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "magnitude_aware_sign"])
def test_depthwise_on_the_op_equals_the_emulation(config, kernel_quantizer):
    """The depthwise op has no filter gradient of its own: the layer attaches it."""
    shape = (2, 9, 9, 35)
    a, b = _pair(layers.QuantDepthwiseConv2D, shape, input_quantizer="ste_sign",
                 depthwise_quantizer=kernel_quantizer, **config)  # fmt: skip
    assert "LowbitBDepthwiseConv2d" in _op_types(a, shape)
    x = _rng(4).normal(size=shape).astype(np.float32)
    weights = lambda layer: [layer.kernel, *([layer.bias] if layer.use_bias else [])]  # noqa: E731
    y_ops, g_ops = _forward_and_gradients(a, x, weights)
    y_emu, g_emu = _forward_and_gradients(b, x, weights)
    if kernel_quantizer == "ste_sign":
        np.testing.assert_array_equal(y_ops, y_emu)
    assert _relative(y_ops, y_emu) <= 1e-6
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= 1e-6


@pytest.mark.parametrize("kwargs", [
    dict(input_quantizer=None, kernel_quantizer="ste_sign"),
    dict(input_quantizer="ste_sign", kernel_quantizer=None),
    dict(input_quantizer="ste_heaviside", kernel_quantizer="ste_sign"),
    dict(input_quantizer="dorefa", kernel_quantizer=None),
    dict(input_quantizer="ste_sign", kernel_quantizer="power_of_two"),
    dict(input_quantizer="ste_sign", kernel_quantizer=quantizers.DoReFa(9, "weights")),
    dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign", padding="same", pad_values=0.5),
])
def test_configurations_no_op_runs_keep_the_emulation(kwargs):
    shape = (1, 6, 6, 8)
    a, b = _pair(layers.QuantConv2D, shape, filters=4, kernel_size=3, **kwargs)
    assert not LOWBIT_OPS & _op_types(a, shape)
    x = _rng(5).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def test_float64_and_channels_first_keep_the_emulation():
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    wide = layers.QuantConv2D(4, 3, dtype="float64", **binary)
    wide.build((1, 6, 6, 8))
    assert not LOWBIT_OPS & _op_types(wide, (1, 6, 6, 8), tf.float64)
    first = layers.QuantConv2D(4, 3, data_format="channels_first", **binary)
    first.build((1, 8, 6, 6))
    assert not LOWBIT_OPS & _op_types(first, (1, 8, 6, 6))


def test_ops_scope_and_use_ops_argument():
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    assert layers.QuantConv2D(4, 3, **binary).use_ops is True
    with lowbit_tf.ops_scope(False):
        inside = layers.QuantDense(4, **binary)
        with lowbit_tf.ops_scope(True):
            assert layers.QuantDense(4, **binary).use_ops is True
        explicit = layers.QuantDense(4, use_ops=True, **binary)
    assert inside.use_ops is False and explicit.use_ops is True
    assert inside.get_config()["use_ops"] is False
    assert layers.QuantDense(4, **binary).use_ops is True
    # Fixed at construction: a scope around the call does not change it.
    layer = layers.QuantDense(4, **binary)
    with lowbit_tf.ops_scope(False):
        assert "LowbitBgemm" in _op_types(layer, (2, 40))
    layer.use_ops = False
    assert not LOWBIT_OPS & _op_types(layer, (2, 40))
    with pytest.raises(ValueError, match=r"use_ops=.yes."):
        layers.QuantDense(4, use_ops="yes")
    with pytest.raises(ValueError, match=r"enabled=1"):
        with lowbit_tf.ops_scope(1):
            pass


def _small_model(use_ops: bool, seed: int = 0) -> keras.Model:
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip", use_ops=use_ops)  # fmt: skip
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 3))
    h = layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False, **binary)(inputs)
    h = keras.layers.BatchNormalization()(h)
    h = layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0,
                                    input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                    use_ops=use_ops)(h)  # fmt: skip
    h = layers.QuantConv2D(16, 3, strides=2, padding="same", **binary)(h)
    h = keras.layers.Flatten()(h)
    outputs = layers.QuantDense(10, **binary)(h)
    return keras.Model(inputs, outputs)


def _json(config):
    return json.loads(json.dumps(config))


@pytest.mark.parametrize("use_ops", [True, False])
def test_keras_file_round_trip_keeps_the_switch(tmp_path, use_ops):
    model = _small_model(use_ops)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    quant = [layer for layer in loaded.layers if isinstance(layer, layers.QuantizedLayerMixin)]
    assert len(quant) == 4 and all(layer.use_ops is use_ops for layer in quant)
    assert _json(loaded.get_config()) == _json(model.get_config())
    x = _rng(6).normal(size=(3, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    # The other position on the same weights: the same numbers.
    with lowbit_tf.ops_scope(not use_ops):
        other = keras.Model.from_config(_json(model.get_config()) | {})
    other.set_weights(model.get_weights())
    np.testing.assert_array_equal(other.predict(x, verbose=0), model.predict(x, verbose=0))


def test_jit_compile_falls_back_with_a_message():
    """Keras: jit_compile=True proceeds without XLA (Keras's warning) and "auto"
    resolves to False; a tf.function(jit_compile=True) around a layer runs the
    emulation, with our warning naming the layer."""
    model = _small_model(True)
    x = _rng(8).normal(size=(4, 8, 8, 3)).astype(np.float32)
    if KERAS_3:
        assert not model.layers[1].supports_jit
        with pytest.warns(UserWarning, match="jit_compile"):
            model.compile(optimizer="sgd", loss="mse", jit_compile=True)
        assert model.jit_compile is False
        model.compile(optimizer="sgd", loss="mse", jit_compile="auto")
        assert model.jit_compile is False
    else:  # tf-keras compiles with XLA as asked: the layers fall back, warning
        model.compile(optimizer="sgd", loss="mse", jit_compile=True)
    model.fit(x, np.zeros((4, 10), np.float32), verbose=0)

    a, b = _pair(layers.QuantConv2D, (2, 6, 6, 8), filters=4, kernel_size=3,
                 input_quantizer="ste_sign", kernel_quantizer="ste_sign")  # fmt: skip
    xs = _rng(9).normal(size=(2, 6, 6, 8)).astype(np.float32)
    with pytest.warns(RuntimeWarning, match=rf"Layer '{a.name}'.*no XLA kernels"):
        y = tf.function(a, jit_compile=True)(xs)
    np.testing.assert_array_equal(y.numpy(), b(xs).numpy())
    assert "LowbitBconv2d" in _op_types(a, (2, 6, 6, 8))  # without XLA: the op again


def test_mixed_float16_runs_the_op_in_float32():
    shape = (2, 8, 8, 24)
    policy = keras.mixed_precision.Policy("mixed_float16")
    a, b = _pair(layers.QuantConv2D, shape, filters=8, kernel_size=3, padding="same",
                 pad_values=1.0, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                 dtype=policy)  # fmt: skip
    assert "LowbitBconv2d" in _op_types(a, shape, tf.float16)
    x = _rng(10).normal(size=shape).astype(np.float16)
    y_ops, y_emu = a(x), b(x)
    assert y_ops.dtype == y_emu.dtype == tf.float16
    # Sums of 216 +-1 products and a float16 bias: exact before the final rounding.
    np.testing.assert_allclose(y_ops.numpy(), y_emu.numpy(), rtol=1e-3)
    weights = lambda layer: [layer.kernel]  # noqa: E731
    _, g_ops = _forward_and_gradients(a, x, weights)
    _, g_emu = _forward_and_gradients(b, x, weights)
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= 2e-3  # float16 gradients


def _fit(model: keras.Model, x, y, steps: int) -> list[np.ndarray]:
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=len(x) // steps, epochs=1, shuffle=False, verbose=0)
    return model.get_weights()


@pytest.mark.slow
def test_twenty_fit_steps_on_digits_give_the_same_weights():
    from sklearn.datasets import load_digits

    from lowbit_models.digits import binary_digits_cnn

    digits = load_digits()
    x = (digits.images[:640] / 8.0 - 1.0).astype(np.float32)[..., None]
    y = digits.target[:640]
    results = []
    for use_ops in (True, False):
        with lowbit_tf.ops_scope(use_ops):
            keras.utils.set_random_seed(0)
            model = binary_digits_cnn()
        assert all(layer.use_ops is use_ops for layer in model.layers
                   if isinstance(layer, layers.QuantConv2D))  # fmt: skip
        results.append(_fit(model, x, y, steps=20))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_twenty_fit_steps_on_a_small_quicknet_give_the_same_weights():
    from lowbit_models.quicknet import quicknet

    rng = _rng(11)
    x = rng.uniform(-1, 1, (160, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, 160)
    results = []
    for use_ops in (True, False):
        with lowbit_tf.ops_scope(use_ops):
            keras.utils.set_random_seed(0)
            model = quicknet(num_classes=10, input_shape=(32, 32, 3),
                             section_filters=(16, 32), section_blocks=(1, 1))  # fmt: skip
        results.append(_fit(model, x, y, steps=20))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_no_warning_and_no_op_for_plain_float_layers():
    """A layer without quantizers is its Keras twin: the emulation, silently."""
    layer = layers.QuantConv2D(4, 3)
    layer.build((1, 6, 6, 8))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not LOWBIT_OPS & _op_types(layer, (1, 6, 6, 8))


@pytest.mark.parametrize("cls, kwargs, shape", [
    (layers.QuantConv2D, dict(filters=8, kernel_size=3, padding="same", pad_values=1.0,
                              groups=2, kernel_quantizer="magnitude_aware_sign"), (2, 7, 7, 34)),
    (layers.QuantConv2D, dict(filters=8, kernel_size=3, strides=2, activation="relu",
                              use_bias=False, kernel_quantizer="ste_sign"), (2, 7, 7, 34)),
    (layers.QuantDense, dict(units=9, kernel_quantizer="magnitude_aware_sign"), (3, 70)),
    (layers.QuantDepthwiseConv2D, dict(kernel_size=3, padding="same", depth_multiplier=2,
                                       depthwise_quantizer="magnitude_aware_sign"), (2, 7, 7, 34)),
    # Larq's layers: a 3-D conv caches one packed filter per depth tap, a
    # separable layer its depthwise kernel.
    (layers.QuantConv1D, dict(filters=8, kernel_size=3, padding="same", groups=2,
                              kernel_quantizer="magnitude_aware_sign"), (2, 13, 34)),
    (layers.QuantConv3D, dict(filters=8, kernel_size=3, padding="same", strides=2,
                              kernel_quantizer="ste_sign"), (2, 5, 6, 6, 34)),
    (layers.QuantConv3D, dict(filters=8, kernel_size=(3, 2, 2), groups=2,
                              kernel_quantizer="magnitude_aware_sign"), (2, 5, 6, 6, 34)),
    (layers.QuantSeparableConv1D, dict(filters=8, kernel_size=3, padding="same",
                                       depthwise_quantizer="ste_sign"), (2, 13, 34)),
    (layers.QuantSeparableConv2D, dict(filters=8, kernel_size=3, depth_multiplier=2,
                                       depthwise_quantizer="magnitude_aware_sign"),
     (2, 7, 7, 34)),
])
def test_inference_reads_the_packed_kernel_kept_fresh(cls, kwargs, shape):
    """training=False calls read the packed kernel cached once per weight update:
    the float kernel is not read (a packed int32 filter goes into the op), and
    every way the weights change reaches the cache."""
    a, b = _pair(cls, shape, input_quantizer="ste_sign", **kwargs)
    x = _rng(12).normal(size=shape).astype(np.float32)
    graph = tf.function(lambda v: a(v, training=False)).get_concrete_function(
        tf.TensorSpec(shape)).graph
    filters = [op.inputs[1].dtype for op in graph.get_operations() if op.type in LOWBIT_OPS]
    assert filters and all(dtype == tf.int32 for dtype in filters)

    def check():
        got, want = a(x, training=False).numpy(), b(x, training=False).numpy()
        assert _relative(got, want) <= 1e-6
        return got

    first = check()
    assert a._packed_kernel.fresh.numpy()
    # Later calls read the cache, not the kernel: spoil it and they follow.
    packed = a._packed_kernel.packed
    packed.assign(tf.bitwise.invert(packed))
    assert not np.array_equal(a(x, training=False).numpy(), first)
    a.kernel_changed()
    np.testing.assert_array_equal(check(), first)
    # A training call marks it stale (an optimizer step may follow) ...
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(a(x, training=True))
    assert not a._packed_kernel.fresh.numpy()
    grad = tape.gradient(loss, _latent_kernels(a)[0])
    for layer in (a, b):
        keras.optimizers.SGD(10.0).apply_gradients([(grad, _latent_kernels(layer)[0])])
    assert not np.array_equal(check(), first)  # ... and inference repacks.
    # set_weights and Keras's loading mark it stale too; a direct assign needs the call.
    weights = [-w for w in a.get_weights()]
    a.set_weights(weights)
    b.set_weights(weights)
    check()
    flipped = -_latent_kernels(a)[0].numpy()
    for layer in (a, b):
        _latent_kernels(layer)[0].assign(flipped)
    a.kernel_changed()
    check()


def test_custom_loop_with_training_none_trains_the_kernel():
    """model(x) under a tape (training=None) is not an inference call: the
    kernel gets its gradient and the cache is refreshed afterwards."""
    model = _small_model(True)
    x = _rng(13).normal(size=(4, 8, 8, 3)).astype(np.float32)
    before = model.predict(x, verbose=0)
    optimizer = keras.optimizers.SGD(1.0)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(x) ** 2)
    grads = tape.gradient(loss, model.trainable_variables)
    assert all(g is not None for g in grads)
    optimizer.apply_gradients(zip(grads, model.trainable_variables, strict=True))
    after = model.predict(x, verbose=0)
    with lowbit_tf.ops_scope(False):
        emulated = keras.Model.from_config(model.get_config())
    emulated.set_weights(model.get_weights())
    np.testing.assert_array_equal(after, emulated.predict(x, verbose=0))
    assert not np.array_equal(after, before)


@pytest.mark.parametrize("units, activation, shape", [
    (40, None, (5, 30)), (64, "relu", (2, 3, 64)), (20, "tanh", (4, 17)),
])
def test_fastfood_on_the_op_equals_the_tf_ops(units, activation, shape):
    """LowbitFastfood computes the layer's float32 operations in their order:
    equal bit for bit, with its exact gradients."""
    a = layers.FastfoodDense(units, activation=activation, seed=5)
    b = layers.FastfoodDense.from_config({**a.get_config(), "use_ops": False})
    for layer in (a, b):
        layer.build(shape)
    b.set_weights(a.get_weights())
    b.bias.assign(_rng(14).normal(size=units))
    a.bias.assign(b.bias)
    assert "LowbitFastfood" in _op_types(a, shape)
    assert "LowbitFastfood" not in _op_types(b, shape)
    x = _rng(15).normal(size=shape).astype(np.float32)
    weights = lambda layer: [layer.b, layer.g, layer.s, layer.bias]  # noqa: E731
    y_ops, g_ops = _forward_and_gradients(a, x, weights)
    y_emu, g_emu = _forward_and_gradients(b, x, weights)
    np.testing.assert_array_equal(y_ops, y_emu)
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= 1e-6
    assert a.get_config()["use_ops"] is True and b.get_config()["use_ops"] is False
    with lowbit_tf.ops_scope(False):
        assert layers.FastfoodDense(8).use_ops is False


ABC_CASES = [
    (layers.ABCConv2D, dict(filters=8, kernel_size=3, padding="same", pad_values=1.0),
     (2, 7, 7, 12)),
    (layers.ABCConv2D, dict(filters=8, kernel_size=3, padding="same", per_channel=True,
                            num_weight_bases=2, num_activation_bases=1), (2, 7, 7, 12)),
    (layers.ABCConv2D, dict(filters=6, kernel_size=(3, 2), strides=2, activation="relu"),
     (2, 9, 8, 10)),
    (layers.ABCDense, dict(units=9, per_channel=True), (4, 40)),
    (layers.ABCDense, dict(units=5, num_weight_bases=2, num_activation_bases=4), (2, 3, 33)),
]


@pytest.mark.parametrize("cls, kwargs, shape", ABC_CASES)
def test_abc_on_the_multibit_op_equals_the_emulation(cls, kwargs, shape):
    """M x N binary convolutions in one LowbitMultibitConv2d: the scaled sums
    within 1e-6, and the gradients (inputs, kernel through the bases, shifts,
    betas, bias) within 1e-6."""
    a = cls(**kwargs, use_ops=True)
    b = cls.from_config({**a.get_config(), "use_ops": False})
    for layer in (a, b):
        layer.build(shape)
    weights = [w.astype(np.float32) + _rng(16).normal(size=w.shape).astype(np.float32) * 0.1
               for w in a.get_weights()]  # fmt: skip
    a.set_weights(weights)
    b.set_weights(weights)
    assert "LowbitMultibitConv2d" in _op_types(a, shape)
    assert "LowbitMultibitConv2d" not in _op_types(b, shape)
    x = _rng(17).uniform(-0.5, 1.5, size=shape).astype(np.float32)
    variables = lambda layer: [layer.kernel, layer.activation_shifts,  # noqa: E731
                               layer.activation_betas, layer.bias]
    y_ops, g_ops = _forward_and_gradients(a, x, variables)
    y_emu, g_emu = _forward_and_gradients(b, x, variables)
    assert _relative(y_ops, y_emu) <= 1e-6
    if kwargs.get("activation") == "relu":
        return  # an output within rounding of 0 may be kept by one ReLU only
    # The shifts' and betas' gradients are each one float32 sum over every
    # output (or input) of the layer, with cancellation, summed in another
    # order by the op's gradient: 1e-5 of the largest; the rest 1e-6.
    tolerances = [1e-6, 1e-6, 1e-5, 1e-5, 1e-6]  # x, kernel, shifts, betas, bias
    for got, want, tolerance in zip(g_ops, g_emu, tolerances, strict=True):
        assert _relative(got, want) <= tolerance


MULTIBIT_CASES = [
    (layers.QuantConv2D, dict(filters=8, kernel_size=3, padding="same", pad_values=1.0,
                              input_quantizer="ste_sign", kernel_quantizer="ste_tern")),
    (layers.QuantConv2D, dict(filters=8, kernel_size=3, padding="same",
                              input_quantizer=quantizers.DoReFa(2, "activations"),
                              kernel_quantizer=quantizers.DoReFa(3, "weights"))),
    (layers.QuantConv2D, dict(filters=6, kernel_size=3, strides=2, pad_values=1.0,
                              padding="same", input_quantizer=quantizers.DoReFa(1),
                              kernel_quantizer="ste_sign")),
    (layers.QuantConv2D, dict(filters=6, kernel_size=3, input_quantizer=quantizers.DoReFa(4),
                              kernel_quantizer="magnitude_aware_sign")),
    (layers.QuantDense, dict(units=7, input_quantizer=quantizers.DoReFa(2),
                             kernel_quantizer=quantizers.SteTern(threshold_value=0.3))),
]


@pytest.mark.parametrize("cls, kwargs", MULTIBIT_CASES)
def test_multibit_quant_layers_on_the_multibit_op_equal_the_emulation(cls, kwargs):
    """Ternary / DoReFa kernels and DoReFa inputs: LowbitMultibitConv2d on the
    kernel's binary planes, within 1e-6, gradients within 1e-6."""
    shape = (2, 7, 7, 12) if cls is layers.QuantConv2D else (3, 40)
    a, b = _pair(cls, shape, **kwargs)
    assert "LowbitMultibitConv2d" in _op_types(a, shape)
    assert not LOWBIT_OPS & _op_types(b, shape)
    x = _rng(18).uniform(-0.5, 1.5, size=shape).astype(np.float32)
    weights = lambda layer: [layer.kernel, layer.bias]  # noqa: E731
    y_ops, g_ops = _forward_and_gradients(a, x, weights)
    y_emu, g_emu = _forward_and_gradients(b, x, weights)
    assert _relative(y_ops, y_emu) <= 1e-6
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= 1e-6


# ------------------------------------------------- Larq's other convolution layers
# QuantConv1D (a 2-D conv of height 1), QuantConv3D (one 2-D conv per depth
# tap, summed) and the depthwise half of QuantSeparableConv1D/2D on the ops.

LARQ_OP_TYPES = {
    layers.QuantConv1D: "LowbitBconv2d",
    layers.QuantConv3D: "LowbitBconv2d",
    layers.QuantSeparableConv1D: "LowbitBDepthwiseConv2d",
    layers.QuantSeparableConv2D: "LowbitBDepthwiseConv2d",
}
SEPARABLE = (layers.QuantSeparableConv1D, layers.QuantSeparableConv2D)

LARQ_CASES = [
    (layers.QuantConv1D, (2, 19, 40), dict(filters=8, kernel_size=3, padding="same",
                                           pad_values=1.0)),
    (layers.QuantConv1D, (2, 19, 40), dict(filters=8, kernel_size=3, padding="same",
                                           strides=2)),
    (layers.QuantConv1D, (2, 19, 40), dict(filters=6, kernel_size=4, dilation_rate=2,
                                           activation="relu", use_bias=False)),
    (layers.QuantConv1D, (2, 19, 40), dict(filters=8, kernel_size=3, groups=2, padding="same",
                                           pad_values=1.0, activation="relu")),
    (layers.QuantConv3D, (2, 5, 6, 7, 12), dict(filters=8, kernel_size=3, padding="same",
                                                pad_values=1.0)),
    (layers.QuantConv3D, (2, 5, 6, 7, 12), dict(filters=8, kernel_size=3, padding="same",
                                                strides=2)),
    (layers.QuantConv3D, (2, 6, 6, 7, 12), dict(filters=8, kernel_size=(2, 3, 3),
                                                padding="same", strides=(2, 1, 2),
                                                pad_values=1.0, use_bias=False)),
    (layers.QuantConv3D, (2, 8, 6, 7, 12), dict(filters=8, kernel_size=(3, 2, 3),
                                                dilation_rate=(2, 1, 2), padding="same")),
    (layers.QuantConv3D, (2, 8, 6, 7, 12), dict(filters=5, kernel_size=(3, 2, 2),
                                                dilation_rate=(3, 1, 1), activation="tanh")),
    (layers.QuantConv3D, (2, 5, 6, 6, 12), dict(filters=8, kernel_size=3, groups=2,
                                                padding="same", activation="relu")),
    (layers.QuantSeparableConv1D, (2, 19, 35), dict(filters=8, kernel_size=3, padding="same",
                                                    pad_values=1.0, depth_multiplier=2)),
    (layers.QuantSeparableConv1D, (2, 19, 35), dict(filters=8, kernel_size=3, strides=2)),
    (layers.QuantSeparableConv2D, (2, 9, 9, 35), dict(filters=8, kernel_size=3,
                                                      padding="same", pad_values=1.0)),
    (layers.QuantSeparableConv2D, (2, 9, 9, 35), dict(filters=8, kernel_size=3, padding="same",
                                                      dilation_rate=2, depth_multiplier=2,
                                                      activation="relu")),
    (layers.QuantSeparableConv2D, (2, 9, 9, 35), dict(filters=8, kernel_size=(3, 2),
                                                      strides=2, use_bias=False)),
]  # fmt: skip


def _larq_pair(cls, shape, kernel_quantizer, **kwargs):
    """`_pair` of a Larq conv layer with sign inputs and the given (depthwise)
    kernel quantizer; a separable layer's pointwise kernel stays float."""
    name = "depthwise_quantizer" if cls in SEPARABLE else "kernel_quantizer"
    return _pair(cls, shape, input_quantizer="ste_sign", **{name: kernel_quantizer}, **kwargs)


def _latent_kernels(layer):
    """The trained kernels and bias: a separable layer's depthwise and pointwise ones."""
    if isinstance(layer, SEPARABLE):
        kernels = [layer.depthwise_kernel, layer.pointwise_kernel]
    else:
        kernels = [layer.kernel]
    return [*kernels, *([layer.bias] if layer.use_bias else [])]


@pytest.mark.parametrize("cls, shape, config", LARQ_CASES)
@pytest.mark.parametrize("kernel_quantizer", ["ste_sign", "magnitude_aware_sign"])
def test_larq_conv_layers_on_the_op_equal_the_emulation(cls, shape, config, kernel_quantizer):
    """Sign kernels: the op's integer sums (a 3-D conv's summed over its depth
    taps) equal the emulation's bit for bit, and so does a separable layer's
    float pointwise conv of them; scaled kernels within 1e-6. Gradients of the
    inputs and every weight within 1e-6."""
    a, b = _larq_pair(cls, shape, kernel_quantizer, **config)
    assert LARQ_OP_TYPES[cls] in _op_types(a, shape)
    assert not LOWBIT_OPS & _op_types(b, shape)
    x = _rng(19).normal(size=shape).astype(np.float32)
    y_ops, g_ops = _forward_and_gradients(a, x, _latent_kernels)
    y_emu, g_emu = _forward_and_gradients(b, x, _latent_kernels)
    if kernel_quantizer == "ste_sign":
        np.testing.assert_array_equal(y_ops, y_emu)
    assert _relative(y_ops, y_emu) <= 1e-6
    np.testing.assert_array_equal(a(x, training=False).numpy(), y_ops)  # the packed kernel
    tolerance = 1e-6
    if kernel_quantizer != "ste_sign" and "activation" in config:
        if config["activation"] == "relu":
            return  # an output within rounding of 0 may be kept by one ReLU only
        # tanh' of outputs one rounding apart, summed over the batch and the
        # pixels with cancellation (the bias gradient): 1e-5 of the largest.
        tolerance = 1e-5
    for got, want in zip(g_ops, g_emu, strict=True):
        assert _relative(got, want) <= tolerance


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
def test_conv3d_on_the_op_with_an_unknown_depth(pad_values):
    """Inputs whose depth is known only at run time: the padding and the taps'
    mask are computed in the graph."""
    a, b = _larq_pair(layers.QuantConv3D, (2, 5, 6, 6, 12), "ste_sign", filters=8,
                      kernel_size=3, strides=(2, 1, 1), padding="same",
                      pad_values=pad_values)  # fmt: skip
    spec = tf.TensorSpec((None, None, 6, 6, 12))
    on_op = tf.function(lambda v: a(v, training=False), input_signature=[spec])
    graph = on_op.get_concrete_function().graph
    assert "LowbitBconv2d" in {op.type for op in graph.get_operations()}
    for depth in (3, 7):
        x = _rng(depth).normal(size=(2, depth, 6, 6, 12)).astype(np.float32)
        np.testing.assert_array_equal(on_op(x).numpy(), b(x, training=False).numpy())


def test_causal_conv1d_keeps_the_emulation_saying_why(caplog):
    a, b = _larq_pair(layers.QuantConv1D, (2, 11, 8), "ste_sign", filters=4, kernel_size=3,
                      padding="causal")  # fmt: skip
    with caplog.at_level("DEBUG", logger="lowbit_tf.layers"):
        assert not LOWBIT_OPS & _op_types(a, (2, 11, 8))
    assert 'padding="causal"' in caplog.text and a.name in caplog.text
    x = _rng(20).normal(size=(2, 11, 8)).astype(np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


@pytest.mark.parametrize("cls, shape, kwargs", [
    (layers.QuantConv1D, (1, 9, 8), dict(input_quantizer=None, kernel_quantizer="ste_sign")),
    (layers.QuantConv3D, (1, 4, 5, 5, 8), dict(input_quantizer="ste_sign",
                                               kernel_quantizer="ste_sign", padding="same",
                                               pad_values=0.5)),
    (layers.QuantConv3D, (1, 8, 4, 5, 5), dict(input_quantizer="ste_sign",
                                               kernel_quantizer="ste_sign",
                                               data_format="channels_first")),
    (layers.QuantSeparableConv2D, (1, 6, 6, 8), dict(input_quantizer="ste_sign",
                                                     depthwise_quantizer="dorefa")),
])  # fmt: skip
def test_larq_conv_configurations_no_op_runs_keep_the_emulation(cls, shape, kwargs):
    a, b = _pair(cls, shape, filters=4, kernel_size=3, **kwargs)
    assert not LOWBIT_OPS & _op_types(a, shape)
    x = _rng(21).normal(size=shape).astype(np.float32)
    np.testing.assert_array_equal(a(x).numpy(), b(x).numpy())


def _larq_model(use_ops: bool, rank: int) -> keras.Model:
    """A small model of QuantConv1D and QuantSeparableConv1D (rank 1), or of
    QuantConv3D and QuantSeparableConv2D (rank 3)."""
    sign = dict(input_quantizer="ste_sign", use_ops=use_ops)
    clipped = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", **sign)
    separable = dict(depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip", **sign)
    keras.utils.set_random_seed(rank)
    if rank == 1:
        inputs = keras.Input((16, 6))
        h = layers.QuantConv1D(12, 3, padding="same", pad_values=1.0, **clipped)(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = layers.QuantSeparableConv1D(12, 3, strides=2, **separable)(h)
    else:
        inputs = keras.Input((4, 6, 6, 3))
        h = layers.QuantConv3D(8, 3, padding="same", **clipped)(inputs)
        h = keras.layers.BatchNormalization()(h)
        h = keras.layers.Reshape((6, 6, 32))(h)
        h = layers.QuantSeparableConv2D(12, 3, padding="same", pad_values=1.0, **separable)(h)
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, layers.QuantDense(10, **clipped)(h))


@pytest.mark.parametrize("rank", [1, 3])
def test_fit_steps_of_larq_conv_layers_give_the_same_weights(rank):
    shape = (16, 6) if rank == 1 else (4, 6, 6, 3)
    rng = _rng(22)
    x = rng.uniform(-1, 1, (40, *shape)).astype(np.float32)
    y = rng.integers(0, 10, 40)
    results = []
    for use_ops in (True, False):
        model = _larq_model(use_ops, rank)
        graph = tf.function(model).get_concrete_function(tf.TensorSpec((2, *shape))).graph
        assert bool(LOWBIT_OPS & {op.type for op in graph.get_operations()}) is use_ops
        results.append(_fit(model, x, y, steps=5))
    for got, want in zip(*results, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
