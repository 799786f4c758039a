"""Every Larq layer, held to real Larq's outputs and gradients.

tests/data/larq/layers.{json,npz} were made by real Larq 0.14 on Keras 2
(tests/helpers/make_larq_reference.py, run in its side environment): per case
the Larq layer's class and arguments, an input, seeded weights, the output of
``layer(x, training=True)`` and the gradients of ``sum(y * r)``. Here our layer
of the same name gets the same arguments and weights and must give the same
numbers (1e-5 relative to the largest value: the sums run in another order).
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from lowbit_tf import layers
from lowbit_tf._keras import KERAS_3, variable_name

DATA = Path(__file__).resolve().parents[1] / "data" / "larq"
CASES = json.loads((DATA / "layers.json").read_text())
ARRAYS = np.load(DATA / "layers.npz")


# Weights whose Keras 3 name differs from Keras 2's (same shape and meaning).
RENAMED = {("QuantDepthwiseConv2D", "depthwise_kernel"): "kernel"} if KERAS_3 else {}


def assert_close(actual, expected, what):
    expected = np.asarray(expected)
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(np.asarray(actual), expected, rtol=0, atol=1e-5 * scale,
                               err_msg=what)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_layer_matches_larq(case):
    name = case["name"]
    layer = getattr(layers, case["class"])(**case["kwargs"])
    x = tf.constant(ARRAYS[f"{name}/x"])
    layer.build(x.shape)
    ours = [variable_name(w) for w in layer.weights]
    theirs = [RENAMED.get((case["class"], w), w) for w in case["weights"]]
    assert ours == theirs, f"weight order {ours} vs Larq's {case['weights']}"
    for k, w in enumerate(layer.weights):
        assert tuple(w.shape) == ARRAYS[f"{name}/w{k}"].shape
        w.assign(ARRAYS[f"{name}/w{k}"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * ARRAYS[f"{name}/r"])
    assert_close(y, ARRAYS[f"{name}/y"], f"{name}: output")
    assert_close(tape.gradient(loss, x), ARRAYS[f"{name}/dx"], f"{name}: input gradient")
    for k, w in enumerate(layer.weights):
        if f"{name}/dw{k}" in ARRAYS:
            assert_close(tape.gradient(loss, w), ARRAYS[f"{name}/dw{k}"],
                         f"{name}: gradient of {case['weights'][k]}")


def test_every_larq_layer_is_covered():
    larq_layers = {
        "QuantConv1D", "QuantConv2D", "QuantConv3D", "QuantConv2DTranspose",
        "QuantConv3DTranspose", "QuantDense", "QuantDepthwiseConv2D", "QuantSeparableConv1D",
        "QuantSeparableConv2D", "QuantLocallyConnected1D", "QuantLocallyConnected2D",
    }  # fmt: skip
    assert larq_layers <= set(layers.__all__)
    assert {c["class"] for c in CASES} == larq_layers


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_config_round_trip(case):
    layer = getattr(layers, case["class"])(**case["kwargs"])
    layer.build(tuple(case["input_shape"]))
    clone = type(layer).from_config(layer.get_config())
    clone.build(tuple(case["input_shape"]))
    clone.set_weights(layer.get_weights())
    x = ARRAYS[f"{case['name']}/x"]
    np.testing.assert_array_equal(clone(x).numpy(), layer(x).numpy())
    for arg in ("input_quantizer", "kernel_quantizer", "depthwise_quantizer",
                "pointwise_quantizer", "pad_values", "implementation"):
        if arg in case["kwargs"]:
            assert arg in layer.get_config(), arg


@pytest.mark.parametrize("cls", ["QuantConv1D", "QuantConv3D", "QuantConv2DTranspose",
                                 "QuantConv3DTranspose", "QuantSeparableConv1D",
                                 "QuantSeparableConv2D", "QuantLocallyConnected1D",
                                 "QuantLocallyConnected2D"])
def test_defaults_are_larqs(cls):
    """The defaults Larq 0.14 documents for these layers (its signatures)."""
    params = inspect.signature(getattr(layers, cls).__init__).parameters
    expected = {"padding": "valid", "activation": None, "use_bias": True,
                "input_quantizer": None, "bias_initializer": "zeros"}
    if "Separable" in cls:
        expected.update(depthwise_quantizer=None, pointwise_quantizer=None, pad_values=0.0,
                        depth_multiplier=1)
    else:
        expected.update(kernel_quantizer=None, kernel_initializer="glorot_uniform")
    if "Locally" in cls:
        expected.update(implementation=1)
    if cls in ("QuantConv1D", "QuantConv3D"):
        expected.update(pad_values=0.0, groups=1)
    if cls == "QuantConv1D":
        expected.update(data_format="channels_last", strides=1)
    for arg, value in expected.items():
        assert params[arg].default == value, (cls, arg)


def test_causal_padding_refuses_pad_values():
    with pytest.raises(ValueError, match="causal.*pad_values=1.0"):
        layers.QuantConv1D(4, 3, padding="causal", pad_values=1.0)


@pytest.mark.parametrize("kwargs, match", [
    (dict(implementation=3), "implementation=3.*sparse.*not supported"),
    (dict(implementation=0), "implementation"),
    (dict(padding="same"), "padding='same' needs implementation=2"),
    (dict(padding="causal", implementation=2), "padding"),
    (dict(kernel_size=0), "kernel_size"),
    (dict(filters=0), "filters"),
])
def test_locally_connected_bad_arguments(kwargs, match):
    args = {"filters": 2, "kernel_size": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        layers.QuantLocallyConnected2D(**args)


def test_locally_connected_needs_known_sizes_and_room():
    layer = layers.QuantLocallyConnected2D(2, 3, name="local")
    with pytest.raises(ValueError, match="local.*must be known"):
        layer.build((None, None, 5, 3))
    with pytest.raises(ValueError, match="local.*smaller than kernel_size"):
        layers.QuantLocallyConnected2D(2, 3, name="local").build((1, 2, 5, 3))
    with pytest.raises(ValueError, match="rank 4.*rank 3"):
        layers.QuantLocallyConnected2D(2, 3).build((1, 5, 3))


def test_separable_binary_pointwise_without_constraint_warns(caplog):
    with caplog.at_level("WARNING", logger="lowbit_tf.layers"):
        layers.QuantSeparableConv2D(4, 3, pointwise_quantizer="ste_sign", name="starving")
    assert "starving" in caplog.text and "pointwise_constraint" in caplog.text


def test_separable_marks_binary_kernels_for_bop():
    layer = layers.QuantSeparableConv2D(4, 3, depthwise_quantizer="ste_sign",
                                        pointwise_quantizer="ste_sign",
                                        depthwise_constraint="weight_clip",
                                        pointwise_constraint="weight_clip")
    layer.build((1, 6, 6, 2))
    assert layer.depthwise_kernel.precision == 1 and layer.pointwise_kernel.precision == 1


def test_new_layers_train_in_a_model(tmp_path):
    """fit, .keras save/load: the layers are ordinary Keras 3 layers."""
    keras = tf.keras
    sign = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip")
    inputs = keras.Input((8, 8, 2))
    x = layers.QuantSeparableConv2D(4, 3, padding="same", pad_values=1.0,
                                    input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                    depthwise_constraint="weight_clip")(inputs)
    x = layers.QuantConv2DTranspose(3, 2, strides=2, **sign)(x)
    x = layers.QuantLocallyConnected2D(2, 3, strides=2, **sign)(x)
    x = keras.layers.Reshape((-1, 2))(x)
    x = layers.QuantConv1D(2, 3, padding="causal", **sign)(x)
    outputs = keras.layers.GlobalAveragePooling1D()(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "mse")
    rng = np.random.default_rng(0)
    data = rng.normal(size=(16, 8, 8, 2)).astype("float32")
    before = [w.copy() for w in model.get_weights()]
    model.fit(data, rng.normal(size=(16, 2)).astype("float32"), epochs=1, verbose=0)
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(data, verbose=0), model.predict(data, verbose=0))


@pytest.mark.parametrize("cls, shape", [("QuantConv1D", (1, 3, 6)), ("QuantConv2D", (1, 3, 5, 6)),
                                        ("QuantConv3D", (1, 3, 3, 5, 6))])
def test_channels_first_bias_when_last_size_equals_channels(cls, shape):
    """The bias goes on the channel axis even when the output's last spatial size
    equals the number of channels (Keras 3.15's keras.ops.add gets this wrong)."""
    layer = getattr(layers, cls)(4, 3, data_format="channels_first", kernel_initializer="zeros",
                                 bias_initializer="zeros")
    layer.build(shape)
    layer.bias.assign([1.0, 2.0, 3.0, 4.0])
    y = layer(np.ones(shape, "float32")).numpy()
    assert y.shape[1] == 4 and y.shape[-1] == 4
    channels_last = np.moveaxis(y, 1, -1)
    np.testing.assert_array_equal(channels_last,
                                  np.broadcast_to([1.0, 2, 3, 4], channels_last.shape))
