"""The converter and LowbitBDepthwiseConv2d: QuantDepthwiseConv2D (+ BatchNorm +
ReLU) becomes one custom op that reproduces Keras; non-binary depthwise layers
stay builtin and bad options are refused.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit_tf import lite

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


# --------------------------------------------------------------------------
# Converter: QuantDepthwiseConv2D (+ BatchNorm + ReLU) -> one custom op
# --------------------------------------------------------------------------

BINARY = dict(input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
              depthwise_constraint="weight_clip")


def _op_names(tflite: bytes) -> list[str]:
    from lowbit_converter.tflite_schema import schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    result = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        result.append(code.customCode.decode() if code.customCode else names[builtin])
    return result


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "sequential"])
@pytest.mark.parametrize("config", [
    dict(depth_multiplier=1, padding="same", pad_values=1.0),
    dict(depth_multiplier=2, padding="same", pad_values=0.0, strides=2),
    dict(depth_multiplier=3, padding="valid", dilation_rate=2, kernel_size=(3, 2)),
], ids=["dm1-same-pad1", "dm2-same-pad0-stride2", "dm3-valid-dilation2"])
def test_converted_model_reproduces_keras(config, functional):
    from keras_helpers import randomize_batch_norms

    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    config = dict(config)
    config.setdefault("kernel_size", 3)
    body = [layers.QuantDepthwiseConv2D(**config, **BINARY, name="dw"),
            keras.layers.BatchNormalization(name="bn"), keras.layers.ReLU(name="relu"),
            keras.layers.Flatten(), keras.layers.Dense(5, name="head")]
    inputs = keras.Input((9, 10, 33))
    if functional:
        y = inputs
        for layer in body:
            y = layer(y)
        model = keras.Model(inputs, y)
    else:
        model = keras.Sequential([inputs, *body])
    randomize_batch_norms(model)
    x = np.random.default_rng(3).standard_normal((3, 9, 10, 33)).astype(np.float32)
    expected = model(x, training=False).numpy()
    tolerance = dict(rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    lowered, plans = lower_model(model)
    assert list(plans) == ["dw"] and plans["dw"].batch_norm is not None and plans["dw"].relu
    np.testing.assert_allclose(lowered(x).numpy(), expected, **tolerance)
    result = lowbit_converter.convert_with_report(model)
    assert result.lowered_layers == ["dw"]
    assert result.report.custom_ops == {"LowbitBDepthwiseConv2d": 1}
    names = _op_names(result.tflite_model)
    assert "DEPTHWISE_CONV_2D" not in names and "RELU" not in names, names
    interpreter = lite.Interpreter(model_content=result.tflite_model)
    interpreter.resize_tensor_input(0, list(x.shape))
    np.testing.assert_allclose(interpreter.predict(x), expected, **tolerance)


def test_converted_without_batchnorm_is_bit_exact():
    """No BatchNorm: multiplier 1 and the layer's bias, so the TFLite output is
    the Keras output bit for bit; a non-ReLU activation runs as a float op."""
    import lowbit_converter
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    model = keras.Sequential([
        keras.Input((7, 8, 70)),
        layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, depth_multiplier=2,
                                    bias_initializer="random_normal", name="dw1", **BINARY),
        layers.QuantDepthwiseConv2D(3, activation="tanh", bias_initializer="random_normal",
                                    name="dw2", **BINARY),
    ])
    x = np.random.default_rng(4).standard_normal((2, 7, 8, 70)).astype(np.float32)
    first = keras.Model(model.inputs[0], model.layers[0].output)
    np.testing.assert_array_equal(
        lite.Interpreter(model_content=lowbit_converter.convert(first)).predict(x),
        first(x).numpy())
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops == {"LowbitBDepthwiseConv2d": 2}
    assert "TANH" in _op_names(result.tflite_model)
    expected = model(x).numpy()
    np.testing.assert_allclose(lite.Interpreter(model_content=result.tflite_model).predict(x),
                               expected, rtol=1e-5, atol=1e-6)


def test_non_binary_depthwise_stays_builtin_and_bad_options_are_refused():
    import lowbit_converter
    from lowbit_converter import ConversionError
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    float_inputs = keras.Sequential([keras.Input((6, 6, 4)), layers.QuantDepthwiseConv2D(
        3, depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip", name="wb")])
    result = lowbit_converter.convert_with_report(float_inputs)
    assert result.lowered_layers == []
    assert "DEPTHWISE_CONV_2D" in _op_names(result.tflite_model)
    odd_pad = keras.Sequential([keras.Input((6, 6, 4)), layers.QuantDepthwiseConv2D(
        3, padding="same", pad_values=0.5, name="odd_pad", **BINARY)])
    with pytest.raises(ConversionError, match=r"'odd_pad'.*pad_values=0.5"):
        lowbit_converter.convert(odd_pad)
    channels_first = keras.Sequential([keras.Input((4, 6, 6)), layers.QuantDepthwiseConv2D(
        3, data_format="channels_first", name="cf", **BINARY)])
    with pytest.raises(ConversionError, match=r"'cf'.*data_format='channels_first'"):
        lowbit_converter.convert(channels_first)

