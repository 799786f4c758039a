"""The converter and packed chains (issue 4): QuantConv2D -> BN -> MaxPool ->
QuantConv2D stays bit-packed between the binary ops and reproduces Keras;
chains that cannot stay packed stay float. Binary depthwise and multi-bit
layers in chains (issue 19).
"""

from __future__ import annotations

import numpy as np
import pytest
from keras_helpers import randomize_batch_norms
from tflite_models import tflite_ops

tf = pytest.importorskip("tensorflow")


pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


# --------------------------------------------------------------------------
# Converter: QuantConv2D -> BN -> MaxPool -> QuantConv2D stays packed
# --------------------------------------------------------------------------

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def _chain_model(kind: str, functional: bool):
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    body = [
        layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, name="b1", **BINARY),
        keras.layers.BatchNormalization(name="bn1"),
    ]
    if kind == "pool":
        body.append(keras.layers.MaxPooling2D(2, name="pool"))
    elif kind == "pool_same":
        body.append(keras.layers.MaxPooling2D(3, strides=2, padding="same", name="pool"))
    if kind == "dense":
        body += [keras.layers.Flatten(name="flat"),
                 layers.QuantDense(33, name="b2", **BINARY),
                 keras.layers.BatchNormalization(name="bn2"),
                 layers.QuantDense(10, name="b3", **BINARY)]
    else:
        body += [layers.QuantConv2D(35, 3, padding="same", pad_values=0.0, name="b2", **BINARY),
                 keras.layers.BatchNormalization(name="bn2"),
                 keras.layers.Flatten(name="flat"),
                 keras.layers.Dense(10, name="head")]
    inputs = keras.Input((9, 10, 5))
    if functional:
        y = inputs
        for layer in body:
            y = layer(y)
        model = keras.Model(inputs, y)
    else:
        model = keras.Sequential([inputs, *body])
    randomize_batch_norms(model, 0, signed_gamma=True)
    return model


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "sequential"])
@pytest.mark.parametrize("kind", ["pool", "pool_same", "direct", "dense"])
def test_converted_chain_stays_packed_and_reproduces_keras(kind, functional):
    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    model = _chain_model(kind, functional)
    x = np.random.default_rng(1).standard_normal((4, 9, 10, 5)).astype(np.float32)
    expected = model(x, training=False).numpy()
    lowered, plans = lower_model(model, packed_chains=True)
    # dense: Flatten sits between b1 and b2 (a float path), b2 -> bn2 -> b3 is packed.
    producer, consumer = ("b2", "b3") if kind == "dense" else ("b1", "b2")
    assert plans[producer].packed_output and plans[consumer].packed_input
    assert not plans[consumer].packed_output
    np.testing.assert_allclose(lowered(x).numpy(), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())
    tflite = lowbit_converter.convert(model)
    ops_, sub, schema = tflite_ops(tflite)
    names = [n for n, _ in ops_]
    assert names.count("LowbitBconv2d") == (1 if kind == "dense" else 2), names
    assert names.count("LowbitBgemm") == (2 if kind == "dense" else 0), names
    assert ("LowbitBMaxPool2d" in names) == kind.startswith("pool"), names
    assert "MAX_POOL_2D" not in names
    # Between the two binary layers: only packed int32 tensors and packed ops.
    binary = "LowbitBgemm" if kind == "dense" else "LowbitBconv2d"
    first = names.index(binary)
    second = names.index(binary, first + 1)
    # Walk back from the second layer's input to the first one's output: only
    # packed int32 tensors, made by packed ops (or a reshape of the words).
    producer_of = {out: (name, op) for name, op in ops_ for out in op.outputs}
    tensor = ops_[second][1].inputs[0]
    while True:
        assert sub.tensors[tensor].type == schema.TensorType.INT32, names
        name, op = producer_of[tensor]
        if op is ops_[first][1]:
            break
        assert name in ("LowbitBMaxPool2d", "RESHAPE"), (name, names)
        tensor = op.inputs[0]
    interpreter = Interpreter(model_content=tflite)
    interpreter.resize_tensor_input(0, list(x.shape))
    got = interpreter.predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # packed_chains=False: the float path, no packed op.
    names = [n for n, _ in tflite_ops(lowbit_converter.convert(model, packed_chains=False))[0]]
    assert "LowbitBMaxPool2d" not in names


def test_unpackable_chains_stay_float():
    """A grouped consumer, or a conv output that is also read elsewhere, keeps
    the float path (and still converts)."""
    from lowbit_converter.lowering import plan_lowering
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    inputs = keras.Input((8, 8, 4))
    a = layers.QuantConv2D(8, 3, padding="same", name="a", **BINARY)(inputs)
    b = layers.QuantConv2D(8, 3, padding="same", groups=2, name="b", **BINARY)(a)
    c = layers.QuantConv2D(8, 3, padding="same", name="c", **BINARY)(b)
    d = keras.layers.Add()([c, layers.QuantConv2D(8, 1, name="d", **BINARY)(c)])
    plans = plan_lowering(keras.Model(inputs, d), packed_chains=True)
    assert not any(p.packed_output or p.packed_input for p in plans.values())



# --------------------------------------------------------------------------
# Binary depthwise layers in packed chains (issue 19): a MobileNet-style block
# --------------------------------------------------------------------------

DEPTHWISE = dict(input_quantizer="ste_sign", depthwise_quantizer="ste_sign")


def _mobilenet_block_model(pool: bool):
    """1x1 conv -> BN -> depthwise 3x3 -> BN -> 1x1 conv -> BN -> depthwise 3x3
    (stride 2, depth multiplier 2) [-> MaxPool] -> 1x1 conv -> float head: every
    binary layer feeds only the next one, so the whole body can stay packed."""
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    body = [
        layers.QuantConv2D(40, 1, name="pw1", **BINARY),
        keras.layers.BatchNormalization(name="bn1"),
        layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, name="dw1", **DEPTHWISE),
        keras.layers.BatchNormalization(name="bn2"),
        layers.QuantConv2D(33, 1, name="pw2", **BINARY),
        keras.layers.BatchNormalization(name="bn3"),
        layers.QuantDepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2,
                                    name="dw2", **DEPTHWISE),
        keras.layers.BatchNormalization(name="bn4"),
    ]
    if pool:
        body.append(keras.layers.MaxPooling2D(2, padding="same", name="pool"))
    body += [
        layers.QuantConv2D(24, 1, name="pw3", **BINARY),
        keras.layers.BatchNormalization(name="bn5"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="head"),
    ]
    model = keras.Sequential([keras.Input((11, 12, 5)), *body])
    randomize_batch_norms(model, 0, signed_gamma=True)
    return model


def _chained_equals_float_path(model, x: np.ndarray, tolerance: float):
    """`model` lowered and converted with packed chains and without: the TF
    ops and TFLite give the float path's output (packed_chains=False) bit for
    bit, since a packed output is the sign of the float one, and Keras's within
    `tolerance` (relative, and of the largest value). Returns the chain's
    plans and its .tflite's tflite_ops."""
    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    expected = model(x, training=False).numpy()
    atol = tolerance * np.abs(expected).max()
    lowered, plans = lower_model(model, packed_chains=True)
    unchained, _ = lower_model(model, packed_chains=False)
    np.testing.assert_array_equal(lowered(x).numpy(), unchained(x).numpy())
    np.testing.assert_allclose(lowered(x).numpy(), expected, rtol=tolerance, atol=atol)

    def run(tflite: bytes) -> np.ndarray:
        interpreter = Interpreter(model_content=tflite)
        interpreter.resize_tensor_input(0, list(x.shape))
        return interpreter.predict(x)

    tflite = lowbit_converter.convert(model)
    got = run(tflite)
    np.testing.assert_array_equal(got, run(lowbit_converter.convert(model, packed_chains=False)))
    np.testing.assert_allclose(got, expected, rtol=tolerance, atol=atol)
    return plans, tflite_ops(tflite)


@pytest.mark.parametrize("pool", [False, True], ids=["direct", "pool"])
def test_depthwise_block_stays_packed_and_matches_the_float_path(pool):
    """Every binary layer of the block hands the next one packed int32 words
    (depthwise layers read and write them too); the output of the TF ops and
    of TFLite equals the float path's (packed_chains=False) bit for bit, since
    a packed output is the sign of the float one, and reproduces Keras."""
    model = _mobilenet_block_model(pool)
    x = np.random.default_rng(7).standard_normal((3, 11, 12, 5)).astype(np.float32)
    plans, (ops_, sub, schema) = _chained_equals_float_path(model, x, 1e-5)
    chain = ["pw1", "dw1", "pw2", "dw2", "pw3"]
    for producer, consumer in zip(chain[:-1], chain[1:], strict=True):
        assert plans[producer].packed_output and plans[consumer].packed_input, (producer, plans)
    assert not plans["pw3"].packed_output and not plans["pw1"].packed_input
    assert (plans["dw2"].pool is not None) == pool

    names = [n for n, _ in ops_]
    assert names.count("LowbitBDepthwiseConv2d") == 2 and names.count("LowbitBconv2d") == 3
    assert ("LowbitBMaxPool2d" in names) == pool and "DEPTHWISE_CONV_2D" not in names
    binary = {"LowbitBconv2d", "LowbitBDepthwiseConv2d"}
    positions = [i for i, name in enumerate(names) if name in binary]
    for i in positions[1:]:
        # Each later binary op reads packed int32 words.
        assert sub.tensors[ops_[i][1].inputs[0]].type == schema.TensorType.INT32, names
    for i in positions[:-1]:
        assert sub.tensors[ops_[i][1].outputs[0]].type == schema.TensorType.INT32, names


# --------------------------------------------------------------------------
# Multi-bit layers in packed chains (issue 19): binary -> multi-bit -> binary
# --------------------------------------------------------------------------


def _multibit_chain_model(kind: str, pool: bool):
    """Binary conv -> BN [-> MaxPool] -> multi-bit conv -> BN -> binary conv ->
    BN -> float head. "sign_2bit" / "sign_tern": sign activations with 2-bit
    (DoReFa) / ternary weights, packed in and out; "dorefa" / "abc": the
    multi-bit layer reads values, so only its output is packed."""
    from lowbit_tf import layers, quantizers
    from lowbit_tf._keras import keras

    if kind == "abc":
        multibit = layers.ABCConv2D(35, 3, padding="same", num_weight_bases=2,
                                    num_activation_bases=2, name="mb")
    else:
        input_quantizer = (quantizers.DoReFa(2, "activations") if kind == "dorefa"
                           else "ste_sign")
        kernel_quantizer = "ste_tern" if kind == "sign_tern" else quantizers.DoReFa(2, "weights")
        multibit = layers.QuantConv2D(35, 3, padding="same", pad_values=1.0, name="mb",
                                      input_quantizer=input_quantizer,
                                      kernel_quantizer=kernel_quantizer)
    body = [
        layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, name="b1", **BINARY),
        keras.layers.BatchNormalization(name="bn1"),
        *([keras.layers.MaxPooling2D(2, name="pool")] if pool else []),
        multibit,
        keras.layers.BatchNormalization(name="bn2"),
        layers.QuantConv2D(24, 3, padding="same", name="b2", **BINARY),
        keras.layers.BatchNormalization(name="bn3"),
        keras.layers.Flatten(name="flat"),
        keras.layers.Dense(10, name="head"),
    ]
    model = keras.Sequential([keras.Input((9, 10, 5)), *body])
    randomize_batch_norms(model, 0, signed_gamma=True)
    return model


@pytest.mark.parametrize("kind, pool", [
    ("sign_2bit", False), ("sign_2bit", True), ("sign_tern", False), ("dorefa", False),
    ("abc", True)])
def test_multibit_chain_stays_packed_and_matches_the_float_path(kind, pool):
    """A "sign" multi-bit conv reads the binary conv's packed words and every
    multi-bit conv hands the next binary conv packed words; the TF ops and
    TFLite give the float path's output (packed_chains=False) bit for bit."""
    model = _multibit_chain_model(kind, pool)
    x = np.random.default_rng(3).standard_normal((3, 9, 10, 5)).astype(np.float32)
    plans, (ops_, sub, schema) = _chained_equals_float_path(model, x, 1e-4)
    sign = kind.startswith("sign")
    assert plans["b1"].packed_output == sign and plans["mb"].packed_input == sign
    assert (plans["b1"].pool is not None) == (sign and pool)
    assert plans["mb"].packed_output and plans["b2"].packed_input

    names = [n for n, _ in ops_]
    assert names.count("LowbitMultibitConv2d") == 1 and names.count("LowbitBconv2d") == 2
    assert ("LowbitBMaxPool2d" in names) == (sign and pool), names
    # Which convs read packed int32 words.
    packed = [(name, sub.tensors[op.inputs[0]].type == schema.TensorType.INT32)
              for name, op in ops_ if name in ("LowbitBconv2d", "LowbitMultibitConv2d")]
    assert packed == [("LowbitBconv2d", False), ("LowbitMultibitConv2d", sign),
                      ("LowbitBconv2d", True)], names
