"""Tests for lowbit_tf.layers and lowbit_tf.constraints."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import tensorflow as tf
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from reference import same_padding

from lowbit_tf import constraints, layers, quantizers
from lowbit_tf._keras import keras


@pytest.fixture(params=["eager", "tf_function"])
def run(request):
    """Runs ``fn(*args)`` eagerly or inside a ``tf.function``."""
    if request.param == "eager":
        return lambda fn, *args: fn(*args)
    return lambda fn, *args: tf.function(fn)(*args)


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _json(config):
    """``config`` as it reads back from JSON (tuples become lists)."""
    return json.loads(json.dumps(config))


# ------------------------------------------------------------------ NumPy reference


def _np_sign(x: np.ndarray) -> np.ndarray:
    return np.where(x >= 0, 1.0, -1.0)


def _np_same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    """(before, after) of reference.same_padding."""
    return same_padding(size, k, s, d)[1:]


def _np_conv2d(x, w, strides=(1, 1), dilation=(1, 1), padding="valid", pad_value=0.0):
    """Direct NHWC convolution in float64; ``w`` is (kh, kw, in, out)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    kh, kw, _, filters = w.shape
    (sh, sw), (dh, dw) = strides, dilation
    if padding == "same":
        ph = _np_same_padding(x.shape[1], kh, sh, dh)
        pw = _np_same_padding(x.shape[2], kw, sw, dw)
        x = np.pad(x, [(0, 0), ph, pw, (0, 0)], constant_values=pad_value)
    oh = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    ow = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    out = np.zeros((x.shape[0], oh, ow, filters))
    for i in range(kh):
        for j in range(kw):
            rows = slice(i * dh, i * dh + (oh - 1) * sh + 1, sh)
            cols = slice(j * dw, j * dw + (ow - 1) * sw + 1, sw)
            out += np.einsum("nhwc,cf->nhwf", x[:, rows, cols, :], w[i, j])
    return out


def _tf_conv_is_wrong(x, w, strides, dilation, padding, pad_value):
    """True where TensorFlow's own conv2d disagrees with the NumPy reference.

    With oneDNN (TF 2.21 on x86, the default) ``tf.nn.conv2d`` returns wrong
    values for some degenerate shapes: one input channel, batch >= 2, rows >= 2,
    row stride 1, column stride >= 2 and a single output column, e.g. x (2, 2, 3, 1),
    kernel (1, 2), strides (1, 2), "valid". keras.layers.Conv2D (and Larq) run the
    same op and inherit the bug; the sweep skips those shapes rather than test
    TensorFlow. ``x`` and ``w`` are the already binarised values.
    """
    expected = _np_conv2d(x, w, strides, dilation, padding, pad_value)
    if padding == "same" and pad_value != 0.0:  # the layer's explicit-padding route
        pads = [_np_same_padding(x.shape[i], w.shape[i - 1], strides[i - 1], dilation[i - 1])
                for i in (1, 2)]  # fmt: skip
        x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
        padding = "valid"
    actual = tf.nn.conv2d(x.astype("float32"), w.astype("float32"), strides=strides,
                          padding=padding.upper(), dilations=dilation)  # fmt: skip
    return not np.array_equal(actual.numpy(), expected.astype("float32"))


def _built_pair(config, input_shape, seed=0, **quant_kwargs):
    """A QuantConv2D and a keras Conv2D with the same random weights."""
    ref = keras.layers.Conv2D(**config)
    quant = layers.QuantConv2D(**config, **quant_kwargs)
    ref.build(input_shape)
    quant.build(input_shape)
    weights = [_rng(seed + i).normal(size=v.shape).astype("float32")
               for i, v in enumerate(ref.get_weights())]  # fmt: skip
    ref.set_weights(weights)
    quant.set_weights(weights)
    return quant, ref


def _channels_last_twin(ref, shape):
    """Keras's channels_last twin of a built channels_first layer ``ref``, applied to
    transposed data: the reference for channels_first. Keras 3.15's own channels_first
    conv layers add their bias along the last axis when it is as long as the channels
    (keras.ops.add guesses a bias_add's axis from the sizes; our layers name it)."""
    twin = type(ref).from_config({**ref.get_config(), "data_format": "channels_last"})
    twin.build((shape[0], *shape[2:], shape[1]))
    twin.set_weights(ref.get_weights())
    return lambda x: tf.transpose(twin(tf.transpose(x, [0, 2, 3, 1])), [0, 3, 1, 2])


# ------------------------------------------------------------ equality with Keras


KERAS_CONFIGS = [
    dict(filters=4, kernel_size=3),
    dict(filters=5, kernel_size=3, padding="same"),
    dict(filters=3, kernel_size=(3, 2), strides=2, padding="same"),
    dict(filters=4, kernel_size=3, strides=(2, 1), use_bias=False),
    dict(filters=2, kernel_size=3, dilation_rate=2, padding="same"),
    dict(filters=6, kernel_size=(2, 3), dilation_rate=(1, 2), padding="valid"),
    dict(filters=3, kernel_size=1, use_bias=False, activation="relu"),
    dict(filters=4, kernel_size=3, groups=2, padding="same"),
    dict(filters=4, kernel_size=2, strides=2, padding="same", data_format="channels_first"),
]


@pytest.mark.parametrize("quantizer", [None, "identity"])
@pytest.mark.parametrize("config", KERAS_CONFIGS, ids=lambda c: json.dumps(c))
def test_identity_quantizers_equal_keras_conv2d(run, config, quantizer):
    shape = (2, 9, 8, 4)
    if config.get("data_format") == "channels_first":
        shape = (2, 4, 9, 8)
    quant, ref = _built_pair(config, shape, input_quantizer=quantizer, kernel_quantizer=quantizer)
    if config.get("data_format") == "channels_first":
        ref = _channels_last_twin(ref, shape)
    x = tf.constant(_rng(1).normal(size=shape).astype("float32"))
    expected = run(ref, x).numpy()
    actual = run(quant, x).numpy()
    assert actual.shape == expected.shape == tuple(quant.compute_output_shape(shape))
    np.testing.assert_array_equal(actual, expected)


@pytest.mark.parametrize("pad_values", [1.0, -0.5, 3.0])
@pytest.mark.parametrize(
    "config",
    [dict(kernel_size=3), dict(kernel_size=(4, 3), strides=2), dict(kernel_size=3, dilation_rate=2),
     dict(kernel_size=(2, 5), strides=(1, 3))],
    ids=str,
)  # fmt: skip
def test_explicit_padding_equals_valid_conv_of_padded_input(run, config, pad_values):
    shape = (2, 7, 10, 3)
    same = dict(filters=4, padding="same", **config)
    valid = dict(filters=4, padding="valid", **config)
    quant, _ = _built_pair(same, shape, pad_values=pad_values)
    ref = keras.layers.Conv2D(**valid)
    ref.build(shape)
    ref.set_weights(quant.get_weights())
    assert quant.explicit_padding
    x = _rng(2).normal(size=shape).astype("float32")
    pads = quant.spatial_padding(shape)
    padded = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_values)
    expected = run(ref, tf.constant(padded)).numpy()
    actual = run(quant, tf.constant(x)).numpy()
    assert actual.shape == tuple(keras.layers.Conv2D(**same).compute_output_shape(shape))
    np.testing.assert_array_equal(actual, expected)


def test_spatial_padding_is_tensorflow_same_geometry():
    layer = layers.QuantConv2D(1, (3, 4), strides=(2, 3), padding="same", pad_values=1.0)
    assert layer.spatial_padding((1, 7, 10, 1)) == [
        _np_same_padding(7, 3, 2, 1),
        _np_same_padding(10, 4, 3, 1),
    ]
    assert layer.spatial_padding((1, 7, 10, 1)) == [(1, 1), (1, 2)]
    assert layers.QuantConv2D(1, 3).spatial_padding((1, 7, 10, 1)) == [(0, 0), (0, 0)]
    # Kernel smaller than the stride: no padding needed, never negative.
    assert layers.QuantConv2D(1, 1, strides=3, padding="same").spatial_padding((1, 7, 9, 1)) == [
        (0, 0),
        (0, 0),
    ]


# ----------------------------------------------------- binary conv against NumPy


def _check_binary_conv(x, config, pad_values, run=None, seed=0, skip_tf_bugs=False):
    layer = layers.QuantConv2D(
        pad_values=pad_values,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip",
        **config,
    )
    layer.build(x.shape)
    weights = [_rng(seed + i).normal(size=v.shape).astype("float32")
               for i, v in enumerate(layer.get_weights())]  # fmt: skip
    layer.set_weights(weights)
    geometry = dict(strides=layer.strides, dilation=layer.dilation_rate,
                    padding=layer.padding, pad_value=pad_values)  # fmt: skip
    if skip_tf_bugs:
        assume(not _tf_conv_is_wrong(_np_sign(x), _np_sign(weights[0]), **geometry))
    actual = (run(layer, tf.constant(x)) if run else layer(x)).numpy()
    expected = _np_conv2d(_np_sign(x), _np_sign(weights[0]), **geometry)
    if layer.use_bias:
        expected = expected + weights[1].astype(np.float64)
    np.testing.assert_array_equal(actual, expected.astype(np.float32))


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
@pytest.mark.parametrize(
    "config",
    [dict(filters=8, kernel_size=3, padding="same"),
     dict(filters=5, kernel_size=(3, 2), strides=2, padding="same", use_bias=False),
     dict(filters=4, kernel_size=3, dilation_rate=2, padding="same"),
     dict(filters=3, kernel_size=2, strides=(1, 2), padding="valid")],
    ids=str,
)  # fmt: skip
def test_binary_conv_matches_numpy(run, config, pad_values):
    x = _rng(3).normal(size=(2, 8, 7, 5)).astype("float32")
    x[0, 0, 0, :] = 0.0  # zeros binarise to +1
    x[0, 1, 1, :] = -0.0
    _check_binary_conv(x, config, pad_values, run=run)


_PAIRS = st.tuples(st.integers(1, 3), st.integers(1, 3))
_ONES = st.just((1, 1))


@settings(max_examples=150, deadline=None)
@given(
    batch=st.integers(1, 2),
    rows=st.integers(1, 9),
    cols=st.integers(1, 9),
    channels=st.integers(1, 5),
    filters=st.integers(1, 4),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    # Keras refuses strides > 1 together with dilation > 1.
    stride_dilation=st.one_of(st.tuples(_PAIRS, _ONES), st.tuples(_ONES, _PAIRS)),
    padding=st.sampled_from(["same", "valid"]),
    pad_values=st.sampled_from([0.0, 1.0]),
    use_bias=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_binary_conv_matches_numpy_sweep(
    batch, rows, cols, channels, filters, kh, kw, stride_dilation, padding, pad_values,
    use_bias, seed,
):  # fmt: skip
    stride, dilation = stride_dilation
    if padding == "valid":
        assume(rows >= (kh - 1) * dilation[0] + 1 and cols >= (kw - 1) * dilation[1] + 1)
    x = _rng(seed).normal(size=(batch, rows, cols, channels)).astype("float32")
    config = dict(filters=filters, kernel_size=(kh, kw), strides=stride,
                  dilation_rate=dilation, padding=padding, use_bias=use_bias)  # fmt: skip
    _check_binary_conv(x, config, pad_values, seed=seed, skip_tf_bugs=True)


def test_channels_first_equals_channels_last():
    x = _rng(4).normal(size=(2, 7, 6, 3)).astype("float32")
    common = dict(filters=4, kernel_size=3, strides=2, padding="same", pad_values=1.0,
                  input_quantizer="ste_sign", kernel_quantizer="ste_sign")  # fmt: skip
    last = layers.QuantConv2D(**common)
    first = layers.QuantConv2D(data_format="channels_first", **common)
    last.build(x.shape)
    first.build((2, 3, 7, 6))
    first.set_weights(last.get_weights())
    y_last = last(x).numpy()
    y_first = first(np.transpose(x, (0, 3, 1, 2))).numpy()
    np.testing.assert_array_equal(np.transpose(y_first, (0, 2, 3, 1)), y_last)
    assert first.spatial_padding((2, 3, 7, 6)) == last.spatial_padding((2, 7, 6, 3))


def test_dynamic_spatial_shape_in_tf_function():
    layer = layers.QuantConv2D(3, 3, strides=2, padding="same", pad_values=1.0,
                               input_quantizer="ste_sign", kernel_quantizer="ste_sign")  # fmt: skip
    layer.build((None, None, None, 2))
    fn = tf.function(layer, input_signature=[tf.TensorSpec([None, None, None, 2])])
    for shape in [(1, 5, 6, 2), (2, 8, 3, 2)]:
        x = _rng(5).normal(size=shape).astype("float32")
        kernel, bias = layer.get_weights()
        expected = _np_conv2d(_np_sign(x), _np_sign(kernel), strides=(2, 2), padding="same",
                              pad_value=1.0) + bias  # fmt: skip
        np.testing.assert_array_equal(fn(x).numpy(), expected.astype("float32"))


# ----------------------------------------------------------------------- gradients


def test_gradients_are_straight_through_and_clipped(run):
    shape = (2, 6, 5, 3)
    layer = layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, use_bias=False,
                               input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                               kernel_constraint="weight_clip")  # fmt: skip
    layer.build(shape)
    w = _rng(6).normal(scale=1.2, size=layer.kernel.shape).astype("float32")
    layer.set_weights([w])
    x = _rng(7).normal(scale=1.5, size=shape).astype("float32")
    assert (np.abs(w) > 1).any() and (np.abs(x) > 1).any()

    # The same computation on already-binary values with identity quantizers.
    float_layer = layers.QuantConv2D(4, 3, padding="same", pad_values=1.0, use_bias=False)
    float_layer.build(shape)
    float_layer.set_weights([np.sign(w) + (w == 0)])

    def grads(layer, x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = tf.reduce_sum(layer(x) * tf.range(1.0, 5.0))
        return tape.gradient(y, [x, layer.trainable_variables[0].value])

    gx, gw = run(grads, layer, tf.constant(x))
    ref_gx, ref_gw = run(grads, float_layer, tf.constant(_np_sign(x).astype("float32")))
    np.testing.assert_allclose(gw.numpy(), np.where(np.abs(w) <= 1, ref_gw.numpy(), 0))
    np.testing.assert_allclose(gx.numpy(), np.where(np.abs(x) <= 1, ref_gx.numpy(), 0))
    assert (gw.numpy()[np.abs(w) > 1] == 0).all() and (gw.numpy() != 0).any()


# ------------------------------------------------------------ helpers, errors, config


def test_quantized_kernel_and_quantizer_properties():
    layer = layers.QuantConv2D(4, 3, input_quantizer="ste_sign",
                               kernel_quantizer=quantizers.SteSign(0.5))  # fmt: skip
    with pytest.raises(ValueError, match="not built"):
        layer.quantized_kernel()
    layer.build((1, 5, 5, 2))
    kernel = layer.get_weights()[0]
    np.testing.assert_array_equal(layer.quantized_kernel().numpy(), _np_sign(kernel))
    assert isinstance(layer.input_quantizer, quantizers.SteSign)
    assert layer.kernel_quantizer.clip_value == 0.5
    assert layer.kernel_quantizer.precision == 1
    with pytest.raises(AttributeError):
        layer.kernel_quantizer = None

    plain = layers.QuantConv2D(4, 3)
    plain.build((1, 5, 5, 2))
    assert plain.input_quantizer is None and plain.kernel_quantizer is None
    np.testing.assert_array_equal(plain.quantized_kernel().numpy(), plain.get_weights()[0])


def test_defaults_match_larq_signature():
    layer = layers.QuantConv2D(8, 3)
    assert layer.strides == (1, 1) and layer.padding == "valid" and layer.pad_values == 0.0
    assert layer.dilation_rate == (1, 1) and layer.groups == 1 and layer.use_bias
    assert layer.data_format == "channels_last" and not layer.explicit_padding
    assert layers.QuantConv2D(8, 3, padding="same").explicit_padding is False
    assert layers.QuantConv2D(8, 3, padding="SAME", pad_values=1).explicit_padding
    assert {"QuantConv2D", "QuantDense", "QuantDepthwiseConv2D", "ABCConv2D", "ABCDense",
            "FastfoodDense", "QuantizedLayerMixin"} <= set(layers.__all__)  # fmt: skip


@pytest.mark.parametrize("bad_shape", [(2, 5, 5), (2, 5, 5, 3, 1), (5,)])
def test_wrong_input_rank_names_layer_and_rank(bad_shape):
    layer = layers.QuantConv2D(4, 3, name="my_binary_conv")
    with pytest.raises(ValueError, match="my_binary_conv") as info:
        layer(np.zeros(bad_shape, "float32"))
    assert f"ndim={len(bad_shape)}" in str(info.value)
    with pytest.raises(ValueError, match=f"my_binary_conv.*rank {len(bad_shape)}"):
        layers.QuantConv2D(4, 3, name="my_binary_conv").build(bad_shape)


@pytest.mark.parametrize("arg", ["input_quantizer", "kernel_quantizer"])
def test_unknown_quantizer_names_argument_and_value(arg):
    with pytest.raises(ValueError, match=f"{arg}.*'ste_sgn'.*ste_sign"):
        layers.QuantConv2D(4, 3, **{arg: "ste_sgn"})


@pytest.mark.parametrize("pad_values", ["1", None, True, [1.0]])
def test_bad_pad_values_raise(pad_values):
    with pytest.raises(ValueError, match="pad_values"):
        layers.QuantConv2D(4, 3, padding="same", pad_values=pad_values)


def test_binary_kernel_without_constraint_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="lowbit_tf.layers"):
        layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="starving")
    assert "starving" in caplog.text and "kernel_constraint" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="lowbit_tf.layers"):
        layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
        layers.QuantConv2D(4, 3, input_quantizer="ste_sign")
    assert caplog.text == ""


def test_activation_may_name_a_quantizer():
    layer = layers.QuantConv2D(2, 1, activation="ste_sign", use_bias=False)
    assert isinstance(layer.activation, quantizers.SteSign)
    y = layer(np.ones((1, 2, 2, 1), "float32")).numpy()
    assert set(np.unique(y)) <= {-1.0, 1.0}
    assert layers.QuantConv2D(2, 1, activation="relu").activation is keras.activations.relu
    restored = layers.QuantConv2D.from_config(layer.get_config())
    assert isinstance(restored.activation, quantizers.SteSign)


def test_get_config_round_trip():
    layer = layers.QuantConv2D(
        6, (3, 2), strides=2, padding="same", pad_values=1.0, groups=2,
        input_quantizer="ste_sign", kernel_quantizer=quantizers.SteSign(0.5),
        kernel_constraint="weight_clip", bias_constraint=constraints.WeightClip(2.0),
        name="conv",
    )  # fmt: skip
    config = layer.get_config()
    json.dumps(config)
    assert config["pad_values"] == 1.0
    assert config["kernel_quantizer"]["config"] == {"clip_value": 0.5}
    restored = layers.QuantConv2D.from_config(config)
    assert restored.get_config() == config
    assert restored.kernel_constraint.clip_value == 1.0
    assert restored.bias_constraint.clip_value == 2.0


# ---------------------------------------------------------------- training, saving


def _digits():
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0 * 2.0 - 1.0).astype("float32")[..., None]  # in [-1, 1]
    return x, digits.target.astype("int32")


def _binary_model(seed: int = 0) -> keras.Model:
    keras.utils.set_random_seed(seed)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip", use_bias=False)  # fmt: skip
    inputs = keras.Input((8, 8, 1))
    # First layer: float inputs, binary kernel (as usual for BNNs).
    x = layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False,
                           kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                           )(inputs)  # fmt: skip
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, **binary)(x)
    x = keras.layers.MaxPooling2D(2)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = layers.QuantConv2D(64, 3, strides=2, padding="same", **binary)(x)
    x = keras.layers.BatchNormalization(momentum=0.9)(x)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(10)(x)
    return keras.Model(inputs, outputs)


@pytest.mark.slow
def test_binary_model_trains_on_digits():
    x, y = _digits()
    model = _binary_model()
    model.compile(
        optimizer=keras.optimizers.Adam(0.01),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    x_train, y_train, x_test, y_test = x[:1400], y[:1400], x[1400:], y[1400:]
    initial_loss = model.evaluate(x_test, y_test, verbose=0)[0]
    history = model.fit(x_train, y_train, batch_size=64, epochs=6, verbose=0)
    losses = history.history["loss"]
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    assert losses[-1] < 0.5 * losses[0]
    assert test_loss < 0.5 * initial_loss
    assert test_acc > 0.8, test_acc
    for layer in model.layers:
        if isinstance(layer, layers.QuantConv2D):
            kernel = layer.get_weights()[0]
            assert np.abs(kernel).max() <= 1.0
            np.testing.assert_array_equal(layer.quantized_kernel().numpy(), _np_sign(kernel))


def test_one_eager_training_step_respects_clip():
    x, y = _digits()
    model = _binary_model(seed=1)
    model.compile(optimizer=keras.optimizers.SGD(0.1), run_eagerly=True,
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    quant = [layer for layer in model.layers if isinstance(layer, layers.QuantConv2D)]
    for layer in quant:  # latent weights outside the clip, as after a large step
        layer.set_weights([3.0 * layer.get_weights()[0] / np.abs(layer.get_weights()[0]).max()])
    before = [layer.get_weights()[0] for layer in quant]
    model.fit(x[:64], y[:64], batch_size=64, epochs=1, verbose=0)
    for layer, old in zip(quant, before, strict=True):
        kernel = layer.get_weights()[0]
        assert np.abs(kernel).max() == 1.0
        # Only the clip moved weights beyond 1 (their STE gradient is zero).
        np.testing.assert_array_equal(kernel[np.abs(old) > 1], np.clip(old, -1, 1)[np.abs(old) > 1])


def test_save_and_load_model(tmp_path):
    x, _ = _digits()
    inputs = keras.Input((8, 8, 1))
    h = layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip")(inputs)  # fmt: skip
    h = keras.layers.BatchNormalization()(h)
    h = layers.QuantConv2D(8, 3, strides=2, padding="same", input_quantizer=quantizers.SteSign(0.5),
                           kernel_quantizer=quantizers.ste_sign, activation="ste_sign",
                           kernel_constraint=constraints.WeightClip(0.75))(h)  # fmt: skip
    h = layers.QuantConv2D(4, 2, input_quantizer="identity", kernel_quantizer=None)(h)
    model = keras.Model(inputs, keras.layers.Flatten()(h))
    model.compile(optimizer="adam", loss="mse")
    model.fit(x[:64], np.zeros((64, 36), "float32"), epochs=1, verbose=0)

    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)

    np.testing.assert_array_equal(
        loaded.predict(x[:50], verbose=0), model.predict(x[:50], verbose=0)
    )
    assert _json(loaded.get_config()) == _json(model.get_config())
    pairs = [
        (a, b)
        for a, b in zip(model.layers, loaded.layers, strict=True)
        if isinstance(a, layers.QuantConv2D)
    ]
    assert len(pairs) == 3
    for original, restored in pairs:
        assert type(restored) is layers.QuantConv2D
        assert _json(restored.get_config()) == _json(original.get_config())
        assert type(restored.input_quantizer) is type(original.input_quantizer)
        assert type(restored.kernel_quantizer) is type(original.kernel_quantizer)
    assert pairs[1][1].kernel_quantizer is quantizers.ste_sign
    assert pairs[1][1].input_quantizer.clip_value == 0.5
    assert pairs[1][1].kernel_constraint.clip_value == 0.75


def test_a_bare_import_lowbit_tf_is_enough_to_load_a_model(tmp_path):
    """`import lowbit_tf` loads its Keras side lazily (so that `lowbit_tf.lite`
    needs no TensorFlow), yet registers the lowbit classes as soon as Keras is
    imported, here by `import tensorflow`, so load_model finds them."""
    import subprocess
    import sys

    model = keras.Sequential([
        keras.Input((4, 4, 2)),
        layers.QuantConv2D(3, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip"),
    ])
    path = tmp_path / "m.keras"
    model.save(path)
    code = (
        "import sys, lowbit_tf\n"
        "assert 'tensorflow' not in sys.modules\n"
        "import tensorflow as tf\n"
        "loaded = tf.keras.models.load_model(sys.argv[1])\n"
        "print(type(loaded.layers[0]).__module__, type(loaded.layers[0]).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["lowbit_tf.layers", "QuantConv2D"]


# --------------------------------------------------------------------- constraints


def test_weight_clip(run):
    clip = constraints.WeightClip(0.5)
    w = tf.constant([-2.0, -0.5, -0.1, 0.0, 0.4, 0.5, 3.0])
    expected = np.array([-0.5, -0.5, -0.1, 0.0, 0.4, 0.5, 0.5], np.float32)
    np.testing.assert_array_equal(run(clip, w).numpy(), expected)
    assert constraints.WeightClip().clip_value == 1.0


def test_constraint_lookup_and_serialization():
    assert constraints.get(None) is None
    for name in ["weight_clip", "WeightClip"]:
        assert isinstance(constraints.get(name), constraints.WeightClip)
    assert isinstance(constraints.get("non_neg"), keras.constraints.NonNeg)
    clip = constraints.WeightClip(0.25)
    assert constraints.get(clip) is clip
    config = json.loads(json.dumps(constraints.serialize(clip)))
    restored = constraints.deserialize(config)
    assert isinstance(restored, constraints.WeightClip) and restored.clip_value == 0.25
    assert isinstance(keras.constraints.get(config), constraints.WeightClip)


@pytest.mark.parametrize("clip_value", [0, -1.0, float("nan"), "1", None])
def test_weight_clip_bad_value_raises(clip_value):
    with pytest.raises(ValueError, match="clip_value") as info:
        constraints.WeightClip(clip_value)
    assert repr(clip_value) in str(info.value)


def test_unknown_constraint_raises_naming_it():
    with pytest.raises(ValueError, match="'weigth_clip'.*weight_clip"):
        constraints.get("weigth_clip")


# =========================================================== QuantDense, depthwise


def _twin_pair(quant_cls, keras_cls, config, input_shape, seed=0, **quant_kwargs):
    ref = keras_cls(**config)
    quant = quant_cls(**config, **quant_kwargs)
    ref.build(input_shape)
    quant.build(input_shape)
    weights = [_rng(seed + i).normal(size=v.shape).astype("float32")
               for i, v in enumerate(ref.get_weights())]  # fmt: skip
    ref.set_weights(weights)
    quant.set_weights(weights)
    return quant, ref


DENSE_CONFIGS = [
    dict(units=5),
    dict(units=3, use_bias=False),
    dict(units=7, activation="relu"),
    dict(units=1, activation="tanh", bias_initializer="ones"),
]


@pytest.mark.parametrize("shape", [(4, 6), (2, 3, 6)])
@pytest.mark.parametrize("quantizer", [None, "identity"])
@pytest.mark.parametrize("config", DENSE_CONFIGS, ids=lambda c: json.dumps(c))
def test_identity_quantizers_equal_keras_dense(run, config, quantizer, shape):
    quant, ref = _twin_pair(layers.QuantDense, keras.layers.Dense, config, shape,
                            input_quantizer=quantizer, kernel_quantizer=quantizer)  # fmt: skip
    x = tf.constant(_rng(1).normal(size=shape).astype("float32"))
    expected = run(ref, x).numpy()
    actual = run(quant, x).numpy()
    assert actual.shape == expected.shape == tuple(quant.compute_output_shape(shape))
    np.testing.assert_array_equal(actual, expected)


DEPTHWISE_CONFIGS = [
    dict(kernel_size=3),
    dict(kernel_size=3, padding="same", depth_multiplier=2),
    dict(kernel_size=(3, 2), strides=2, padding="same", use_bias=False),
    dict(kernel_size=2, dilation_rate=2, activation="relu"),
    dict(kernel_size=3, strides=(2, 1), depth_multiplier=3),
    dict(kernel_size=2, strides=2, padding="same", data_format="channels_first"),
]


@pytest.mark.parametrize("quantizer", [None, "identity"])
@pytest.mark.parametrize("config", DEPTHWISE_CONFIGS, ids=lambda c: json.dumps(c))
def test_identity_quantizers_equal_keras_depthwise(run, config, quantizer):
    shape = (2, 4, 9, 8) if config.get("data_format") == "channels_first" else (2, 9, 8, 4)
    quant, ref = _twin_pair(
        layers.QuantDepthwiseConv2D, keras.layers.DepthwiseConv2D, config, shape,
        input_quantizer=quantizer, depthwise_quantizer=quantizer,
    )  # fmt: skip
    if config.get("data_format") == "channels_first":
        ref = _channels_last_twin(ref, shape)
    x = tf.constant(_rng(1).normal(size=shape).astype("float32"))
    expected = run(ref, x).numpy()
    actual = run(quant, x).numpy()
    assert actual.shape == expected.shape == tuple(quant.compute_output_shape(shape))
    np.testing.assert_array_equal(actual, expected)


def _np_depthwise(x, w, strides=(1, 1), dilation=(1, 1), padding="valid", pad_value=0.0):
    """Depthwise NHWC convolution in float64; ``w`` is (kh, kw, c, mult)."""
    kh, kw, c, mult = w.shape
    full = np.zeros((kh, kw, c, c * mult))
    for ch in range(c):
        full[:, :, ch, ch * mult:(ch + 1) * mult] = w[:, :, ch, :]  # fmt: skip
    return _np_conv2d(x, full, strides, dilation, padding, pad_value)


@pytest.mark.parametrize("pad_values", [0.0, 1.0])
@pytest.mark.parametrize(
    "config",
    [dict(kernel_size=3, padding="same", depth_multiplier=2),
     dict(kernel_size=(3, 2), strides=2, padding="same", use_bias=False),
     dict(kernel_size=2, padding="valid")],
    ids=str,
)  # fmt: skip
def test_binary_depthwise_matches_numpy(run, config, pad_values):
    x = _rng(3).normal(size=(2, 7, 6, 3)).astype("float32")
    x[0, 0, 0, :] = 0.0
    layer = layers.QuantDepthwiseConv2D(pad_values=pad_values, input_quantizer="ste_sign",
                                        depthwise_quantizer="ste_sign",
                                        depthwise_constraint="weight_clip", **config)  # fmt: skip
    layer.build(x.shape)
    weights = [_rng(i).normal(size=v.shape).astype("float32")
               for i, v in enumerate(layer.get_weights())]  # fmt: skip
    layer.set_weights(weights)
    expected = _np_depthwise(_np_sign(x), _np_sign(weights[0]), layer.strides,
                             layer.dilation_rate, layer.padding, pad_values)  # fmt: skip
    if layer.use_bias:
        expected = expected + weights[1]
    np.testing.assert_array_equal(run(layer, tf.constant(x)).numpy(), expected.astype("float32"))
    assert layer.depthwise_kernel is layer.kernel
    assert isinstance(layer.depthwise_quantizer, quantizers.SteSign)
    assert layer.explicit_padding == (layer.padding == "same" and pad_values == 1.0)


def test_binary_dense_matches_numpy(run):
    x = _rng(4).normal(size=(3, 2, 33)).astype("float32")
    x[0, 0, :5] = 0.0
    layer = layers.QuantDense(7, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip")  # fmt: skip
    layer.build(x.shape)
    w, b = (_rng(i).normal(size=v.shape).astype("float32") for i, v in
            enumerate(layer.get_weights()))  # fmt: skip
    layer.set_weights([w, b])
    expected = _np_sign(x).astype(np.float64) @ _np_sign(w) + b
    np.testing.assert_array_equal(run(layer, tf.constant(x)).numpy(), expected.astype("float32"))


def test_depthwise_and_dense_config_round_trip():
    dw = layers.QuantDepthwiseConv2D(
        3, padding="same", pad_values=1.0, depth_multiplier=2, input_quantizer="ste_sign",
        depthwise_quantizer=quantizers.SteSign(0.5), depthwise_constraint="weight_clip",
    )  # fmt: skip
    config = _json(dw.get_config())
    assert "kernel_quantizer" not in config and config["depthwise_quantizer"]["config"] == {
        "clip_value": 0.5
    }
    assert _json(layers.QuantDepthwiseConv2D.from_config(config).get_config()) == config
    dense = layers.QuantDense(4, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              activation="ste_sign")  # fmt: skip
    config = _json(dense.get_config())
    restored = layers.QuantDense.from_config(config)
    assert _json(restored.get_config()) == config
    assert isinstance(restored.activation, quantizers.SteSign)


def test_depthwise_binary_without_constraint_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="lowbit_tf.layers"):
        layers.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign", name="dw_starving")
    assert "dw_starving" in caplog.text and "depthwise_constraint" in caplog.text


@pytest.mark.parametrize(
    "make, bad_shape",
    [(lambda: layers.QuantDense(3, name="bad_layer"), (5,)),
     (lambda: layers.QuantDepthwiseConv2D(3, name="bad_layer"), (2, 5, 5)),
     (lambda: layers.ABCConv2D(2, 3, name="bad_layer"), (2, 5, 5)),
     (lambda: layers.ABCDense(2, name="bad_layer"), (5,)),
     (lambda: layers.FastfoodDense(2, name="bad_layer"), (5,))],
)  # fmt: skip
def test_wrong_rank_names_layer(make, bad_shape):
    with pytest.raises(ValueError, match="bad_layer"):
        make().build(bad_shape)


# ------------------------------------------------ gradient quantizer, training flag


@keras.saving.register_keras_serializable(package="lowbit_tf_tests")
class HalfStepGradient(quantizers.Quantizer):
    """Identity forward; the gradient rounded to a multiple of 0.5 (test helper)."""

    def call(self, inputs):
        @tf.custom_gradient
        def _q(x):
            return tf.identity(x), lambda dy: tf.round(dy * 2.0) / 2.0

        return _q(inputs)


class RecordsTraining:
    """Identity (not a Quantizer subclass) recording the ``training`` values it gets."""

    needs_training = True

    def __init__(self):
        self.seen = []

    def __call__(self, inputs, training=None):
        self.seen.append(training)
        return tf.convert_to_tensor(inputs)


@pytest.mark.parametrize(
    "make",
    [lambda **kw: layers.QuantDense(3, **kw),
     lambda **kw: layers.QuantConv2D(3, 2, padding="same", **kw),
     lambda **kw: layers.QuantDepthwiseConv2D(2, padding="same", **kw),
     lambda **kw: layers.ABCDense(3, **kw),
     lambda **kw: layers.ABCConv2D(3, 2, **kw)],
    ids=["dense", "conv", "depthwise", "abc_dense", "abc_conv"],
)  # fmt: skip
def test_gradient_quantizer_quantizes_the_gradient_flowing_back(run, make):
    shape = (2, 5) if "Dense" in make().__class__.__name__ else (2, 4, 5, 2)
    plain, quant = make(), make(gradient_quantizer=HalfStepGradient())
    plain.build(shape)
    quant.build(shape)
    quant.set_weights(plain.get_weights())
    x = tf.constant(_rng(8).normal(size=shape).astype("float32"))
    out_shape = plain(x).shape
    c = tf.constant(_rng(9).normal(size=out_shape).astype("float32"))  # dL/dy

    def grads(layer, x, c):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x)
            loss = tf.reduce_sum(y * c)
        return [y, *tape.gradient(loss, [x, layer.trainable_variables[0].value])]

    y_plain, gx_plain, gw_plain = run(grads, plain, x, tf.round(c * 2.0) / 2.0)
    y_quant, gx_quant, gw_quant = run(grads, quant, x, c)
    np.testing.assert_array_equal(y_quant.numpy(), y_plain.numpy())  # identity forward
    np.testing.assert_allclose(gx_quant.numpy(), gx_plain.numpy(), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(gw_quant.numpy(), gw_plain.numpy(), rtol=1e-6, atol=1e-6)
    assert quant.get_config()["gradient_quantizer"]["class_name"] == "HalfStepGradient"


@pytest.mark.parametrize("name", ["dorefa_gradient", "power_of_two_gradient"])
def test_library_gradient_quantizers_put_layer_gradients_on_their_grid(name):
    try:
        gq = quantizers.get(name)
    except ValueError:
        pytest.skip(f"{name} is not in lowbit_tf.quantizers yet")
    layer = layers.QuantDense(4, gradient_quantizer=gq, use_bias=False)
    x = tf.eye(5)  # then dL/dW = x^T q(dL/dy) = q(dL/dy)
    c = tf.constant(_rng(13).normal(size=(5, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(x, training=True) * c)
    q = tape.gradient(loss, layer.kernel.value).numpy()
    assert not np.allclose(q, c.numpy())
    if name == "power_of_two_gradient":
        nonzero = np.abs(q) > 1e-6
        exponents = np.log2(np.abs(q[nonzero]))
        np.testing.assert_allclose(exponents, np.round(exponents), atol=1e-3)
    else:
        levels = 2**gq.k_bit - 1
        scale = 2 * np.abs(c.numpy()).max(axis=1, keepdims=True)
        grid = (q / scale + 0.5) * levels
        np.testing.assert_allclose(grid, np.round(grid), atol=1e-3)


def test_gradient_quantizer_by_name_and_errors():
    with pytest.raises(ValueError, match="gradient_quantizer.*'no_such_gradient'"):
        layers.QuantDense(3, gradient_quantizer="no_such_gradient")
    assert layers.QuantDense(3).gradient_quantizer is None


def test_training_flag_reaches_quantizers_that_want_it():
    q_in, q_k = RecordsTraining(), RecordsTraining()
    layer = layers.QuantDense(2, input_quantizer=q_in, kernel_quantizer=q_k)
    x = np.ones((1, 3), "float32")
    layer(x, training=True)
    layer(x, training=False)
    layer(x)
    layer.quantized_kernel()
    assert q_in.seen == [True, False, None]
    assert q_k.seen == [True, False, None, None]
    assert layers.apply_quantizer(None, 3.0) == 3.0
    assert layers.apply_quantizer(lambda v: v * 2, 3.0, True) == 6.0  # no `training` passed


def test_stochastic_sign_samples_only_in_training():
    try:
        quantizers.get("stochastic_sign")
    except ValueError:
        pytest.skip("stochastic_sign is not in lowbit_tf.quantizers yet")
    layer = layers.QuantDense(64, kernel_quantizer="stochastic_sign",
                              kernel_constraint="weight_clip", use_bias=False)  # fmt: skip
    layer.build((1, 32))
    layer.set_weights([np.full((32, 64), 0.2, "float32")])
    x = np.ones((1, 32), "float32")
    inference = layer(x, training=False).numpy()
    np.testing.assert_array_equal(inference, np.full((1, 64), 32.0))  # sign(0.2) = +1
    np.testing.assert_array_equal(layer.quantized_kernel().numpy(), np.ones((32, 64)))
    trained = layer(x, training=True).numpy()
    assert (trained < 32.0).any()  # some weights sampled as -1 (p = 0.4 each)


# ------------------------------------------------------------------------- ABC-Net


def _np_abc_weights(w, m, per_channel):
    axes = tuple(range(w.ndim - 1)) if per_channel else None
    mean, std = w.mean(axis=axes, keepdims=True), w.std(axis=axes, keepdims=True)
    us = [0.0] if m == 1 else np.linspace(-1, 1, m)
    bases = np.stack([_np_sign(w - mean + u * std) for u in us])
    if per_channel:
        alphas = np.stack([np.linalg.lstsq(bases[..., c].reshape(m, -1).T,
                                           w[..., c].ravel(), rcond=None)[0]
                           for c in range(w.shape[-1])], axis=1)  # fmt: skip
    else:
        alphas = np.linalg.lstsq(bases.reshape(m, -1).T, w.ravel(), rcond=None)[0]
    return bases, alphas


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("m", [1, 2, 3, 5])
def test_abc_weight_bases_are_least_squares(m, per_channel):
    layer = layers.ABCConv2D(6, 3, num_weight_bases=m, per_channel=per_channel)
    layer.build((1, 5, 5, 4))
    # Seeded weights: an unlucky random kernel can make two bases nearly equal,
    # where the alphas are ill-conditioned (the ridge term then decides them).
    weights = layer.get_weights()
    weights[0] = _rng(10 + m).normal(0, 0.2, size=weights[0].shape).astype("float32")
    layer.set_weights(weights)
    w = weights[0]
    bases, alphas = (t.numpy() for t in layer.weight_bases())
    ref_bases, ref_alphas = _np_abc_weights(w.astype(np.float64), m, per_channel)
    assert bases.shape == (m, *w.shape) and set(np.unique(bases)) <= {-1.0, 1.0}
    np.testing.assert_array_equal(bases, ref_bases)
    np.testing.assert_allclose(alphas, ref_alphas, rtol=1e-4, atol=1e-6)
    effective = layer.quantized_kernel().numpy()
    scale = ref_alphas.reshape((m,) + (1,) * 3 + ((6,) if per_channel else (1,)))
    np.testing.assert_allclose(effective, (bases * scale).sum(0), rtol=1e-5, atol=1e-6)
    # More bases never fit worse.
    if m > 1:
        fewer = _np_abc_weights(w.astype(np.float64), m - 1, per_channel)
        err = lambda b, a: np.linalg.norm(  # noqa: E731
            w - (b * a.reshape((len(b),) + (1,) * 3 + (-1,))).sum(0))
        assert err(ref_bases, ref_alphas) <= err(*fewer) + 1e-6


def _np_abc_conv(layer, x):
    """sum_ij alpha_i beta_j conv(H_j(x), B_i) + bias in float64."""
    w, b, shifts, betas = layer.get_weights()
    bases, alphas = _np_abc_weights(w.astype(np.float64), layer.num_weight_bases,
                                    layer.per_channel)  # fmt: skip
    out = 0.0
    for j in range(layer.num_activation_bases):
        h = _np_sign(np.clip(x + shifts[j], 0, 1) - 0.5)
        for i in range(layer.num_weight_bases):
            a = alphas[i] if layer.per_channel else alphas[i]
            out = out + a * betas[j] * _np_grouped_conv2d(layer, h, bases[i])
    return out + b


def _np_grouped_conv2d(layer, h, kernel):
    """Group k: input channels [k*c, (k+1)*c) with kernel columns [k*f, (k+1)*f)."""
    c, f = kernel.shape[2], kernel.shape[3] // layer.groups
    return np.concatenate([
        _np_conv2d(h[..., k * c:(k + 1) * c], kernel[..., k * f:(k + 1) * f], layer.strides,
                   layer.dilation_rate, layer.padding, layer.pad_values)
        for k in range(layer.groups)], axis=-1)  # fmt: skip


@pytest.mark.parametrize(
    "m, n, per_channel, config",
    [(1, 1, False, dict(kernel_size=3)),
     (3, 2, False, dict(kernel_size=3, padding="same", pad_values=1.0)),
     (2, 3, True, dict(kernel_size=(2, 3), strides=2, padding="same")),
     (5, 1, True, dict(kernel_size=2, dilation_rate=2)),
     (2, 2, True, dict(kernel_size=3, padding="same", groups=3)),
     (3, 2, False, dict(kernel_size=1, groups=3))],
)  # fmt: skip
def test_abc_conv_is_sum_of_scaled_binary_convs(run, m, n, per_channel, config):
    groups = config.get("groups", 1)
    layer = layers.ABCConv2D(5 * groups, num_weight_bases=m, num_activation_bases=n,
                             per_channel=per_channel, **config)  # fmt: skip
    shape = (2, 7, 6, 3 * groups)
    layer.build(shape)
    w, b, shifts, betas = layer.get_weights()
    layer.set_weights([w, _rng(1).normal(size=b.shape), shifts + _rng(2).normal(0, 0.1, n),
                       _rng(3).uniform(0.2, 1.0, n)])  # fmt: skip
    x = _rng(4).normal(size=shape).astype("float32")
    actual = run(layer, tf.constant(x)).numpy()
    np.testing.assert_allclose(actual, _np_abc_conv(layer, x), rtol=1e-4, atol=1e-4)
    h = layer.activation_bases(x).numpy()
    assert h.shape == (n, *shape) and set(np.unique(h)) <= {-1.0, 1.0}


def test_abc_dense_matches_numpy_and_handles_rank_3(run):
    layer = layers.ABCDense(4, num_weight_bases=3, num_activation_bases=2, per_channel=True)
    shape = (2, 3, 6)
    layer.build(shape)
    x = _rng(5).normal(size=shape).astype("float32")
    w, b, shifts, betas = layer.get_weights()
    bases, alphas = _np_abc_weights(w.astype(np.float64), 3, True)
    expected = sum(alphas[i] * betas[j] * (_np_sign(np.clip(x + shifts[j], 0, 1) - 0.5) @ bases[i])
                   for i in range(3) for j in range(2)) + b  # fmt: skip
    np.testing.assert_allclose(run(layer, tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-5)


def test_abc_gradients_are_straight_through():
    layer = layers.ABCConv2D(4, 3, num_weight_bases=3, num_activation_bases=2, use_bias=False)
    shape = (2, 6, 6, 3)
    layer.build(shape)
    x = tf.constant(_rng(6).normal(size=shape).astype("float32"))
    c = tf.constant(_rng(7).normal(size=(2, 4, 4, 4)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x) * c)
    gx, gw, gv, gb = tape.gradient(loss, [x, *(v.value for v in layer.trainable_variables)])
    # Kernel: dL/dW = sum_i alpha_i dL/dB_i = sum(alpha) * dL/dK at K = sum_i alpha_i B_i.
    _, alphas = layer.weight_bases()
    a_hat = tf.reduce_sum(layer.activation_bases(x) * layer.activation_betas[:, None, None, None,
                                                                             None], 0)  # fmt: skip
    kernel = tf.Variable(layer.quantized_kernel())
    with tf.GradientTape() as tape:
        loss2 = tf.reduce_sum(tf.nn.conv2d(a_hat, kernel, 1, "VALID") * c)
    expected = tf.reduce_sum(alphas).numpy() * tape.gradient(loss2, kernel).numpy()
    np.testing.assert_allclose(gw.numpy(), expected, rtol=1e-4, atol=1e-4)
    # Inputs and shifts: only through the clip window 0 <= x + v_j <= 1.
    shifts = layer.activation_shifts.numpy()
    outside = np.all([(x.numpy() + v < 0) | (x.numpy() + v > 1) for v in shifts], axis=0)
    assert (gx.numpy()[outside] == 0).all() and (gx.numpy()[~outside] != 0).any()
    assert np.all(gv.numpy() != 0) and np.all(gb.numpy() != 0)


def test_abc_bad_arguments():
    for arg in ["num_weight_bases", "num_activation_bases"]:
        for bad in [0, -1, 1.5, True]:
            with pytest.raises(ValueError, match=f"`{arg}`.*{bad!r}"):
                layers.ABCConv2D(2, 3, **{arg: bad})
            with pytest.raises(ValueError, match=f"`{arg}`"):
                layers.ABCDense(2, **{arg: bad})
    with pytest.raises(ValueError, match="per_channel"):
        layers.ABCDense(2, per_channel="yes")
    with pytest.raises(ValueError, match="kernel_quantizer"):
        layers.ABCConv2D(2, 3, kernel_quantizer="ste_sign")
    with pytest.raises(ValueError, match="channels_last.*channels_first"):
        layers.ABCConv2D(2, 3, data_format="channels_first")


# ------------------------------------------------------------------------ Fastfood


def test_walsh_hadamard_matches_the_dense_matrix(run):
    from scipy.linalg import hadamard

    for n in [1, 2, 8, 64]:
        x = _rng(n).normal(size=(3, 2, n)).astype("float32")
        y = run(layers.walsh_hadamard, tf.constant(x)).numpy()
        np.testing.assert_allclose(y, x @ hadamard(n), rtol=1e-5, atol=1e-4)
        z = layers.walsh_hadamard(layers.walsh_hadamard(x, normalize=True), normalize=True)
        np.testing.assert_allclose(z.numpy(), x, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="power of two.*12"):
        layers.walsh_hadamard(np.zeros((2, 12), "float32"))


def _np_fastfood(layer, x):
    from scipy.linalg import hadamard

    b, g, s, *bias = layer.get_weights()
    n, k = layer.padded_dim, layer.num_blocks
    h = hadamard(n)
    xp = np.pad(x.reshape(-1, x.shape[-1]), [(0, 0), (0, n - x.shape[-1])]).astype(np.float64)
    blocks = []
    for i in range(k):
        y = (xp * b[i]) @ h
        y = y[:, layer.permutation[i]] * g[i]
        blocks.append((y @ h) * s[i] / n)
    out = np.concatenate(blocks, axis=1)[:, : layer.units]
    out = out + (bias[0] if bias else 0)
    return out.reshape(*x.shape[:-1], layer.units)


@pytest.mark.parametrize(
    "units, block_size, shape",
    [(10, None, (4, 6)), (40, None, (3, 16)), (5, 32, (2, 3, 20)), (70, 8, (2, 8))],
)
def test_fastfood_matches_numpy(run, units, block_size, shape):
    layer = layers.FastfoodDense(units, block_size=block_size, seed=3)
    layer.build(shape)
    bias = [_rng(1).normal(size=(units,))]
    layer.set_weights(layer.get_weights()[:3] + bias)
    x = _rng(2).normal(size=shape).astype("float32")
    actual = run(layer, tf.constant(x)).numpy()
    assert actual.shape == (*shape[:-1], units)
    np.testing.assert_allclose(actual, _np_fastfood(layer, x), rtol=1e-4, atol=1e-4)
    n = layer.padded_dim
    assert n == (block_size or 1 << (shape[-1] - 1).bit_length())
    assert layer.num_blocks == -(-units // n)
    assert layer.count_params() == 3 * n * layer.num_blocks + units
    assert sorted(layer.permutation[0]) == list(range(n))


def test_fastfood_init_is_glorot_like_and_seeded():
    layer = layers.FastfoodDense(256, seed=0)
    layer.build((None, 256))
    w = layer.dense_kernel().numpy()
    assert w.shape == (256, 256)
    assert 0.8 / 256 < w.var() < 1.25 / 256  # like a Gaussian matrix with variance 1/n
    again = layers.FastfoodDense.from_config(layer.get_config())
    again.build((None, 256))
    np.testing.assert_array_equal(again.permutation, layer.permutation)
    np.testing.assert_array_equal(again.get_weights()[1], layer.get_weights()[1])
    keras.utils.set_random_seed(5)
    a = layers.FastfoodDense(4).seed
    keras.utils.set_random_seed(5)
    assert layers.FastfoodDense(4).seed == a


@pytest.mark.slow
def test_fastfood_trains_end_to_end():
    keras.utils.set_random_seed(0)
    rng = _rng(10)
    x = rng.normal(size=(256, 12)).astype("float32")
    y = x @ rng.normal(size=(12, 6)).astype("float32") / 3
    model = keras.Sequential([keras.Input((12,)), layers.FastfoodDense(6, seed=1)])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="mse")
    before = [w.copy() for w in model.get_weights()]
    first = model.evaluate(x, y, verbose=0)
    model.fit(x, y, epochs=15, batch_size=32, verbose=0)
    assert model.evaluate(x, y, verbose=0) < 0.5 * first
    assert all(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


@pytest.mark.parametrize(
    "kwargs, shape, match",
    [(dict(units=0), None, "`units`.*units=0"),
     (dict(units=2.5), None, "`units`.*2.5"),
     (dict(units=4, block_size=12), None, "`block_size`.*power of two.*block_size=12"),
     (dict(units=4, block_size=0), None, "`block_size`.*0"),
     (dict(units=4, seed=-1), None, "`seed`.*-1"),
     (dict(units=4, block_size=8), (None, 10), "`block_size`.*d=10.*block_size=8"),
     (dict(units=4), (None, None), "input width d.*d=None")],
)  # fmt: skip
def test_fastfood_bad_widths_name_argument_and_value(kwargs, shape, match):
    with pytest.raises(ValueError, match=match):
        layers.FastfoodDense(**kwargs).build(shape)


# ----------------------------------------------------------- saving the new layers


def test_new_layers_save_and_load(tmp_path):
    keras.utils.set_random_seed(2)
    inputs = keras.Input((8, 8, 3))
    h = layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                                    depthwise_quantizer="ste_sign",
                                    depthwise_constraint="weight_clip")(inputs)  # fmt: skip
    h = layers.ABCConv2D(
        6, 3, strides=2, padding="same", num_weight_bases=2, num_activation_bases=2,
        per_channel=True, gradient_quantizer=HalfStepGradient(), metrics=["flip_ratio"],
    )(h)  # fmt: skip
    h = keras.layers.Flatten()(h)
    h = layers.QuantDense(16, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                          kernel_constraint="weight_clip", metrics=["flip_ratio"])(h)  # fmt: skip
    h = layers.ABCDense(12, num_weight_bases=3, num_activation_bases=1)(h)
    outputs = layers.FastfoodDense(5, seed=4)(h)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    x = _rng(11).normal(size=(32, 8, 8, 3)).astype("float32")
    model.fit(x, np.zeros((32, 5), "float32"), epochs=1, verbose=0)
    path = tmp_path / "new_layers.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert _json(loaded.get_config()) == _json(model.get_config())
    for a, b in zip(model.layers, loaded.layers, strict=True):
        assert type(a) is type(b)
    np.testing.assert_array_equal(loaded.layers[-1].permutation, model.layers[-1].permutation)
