"""The converter and LowbitMultibitConv2d: multi-bit layers (ABC-Net, DoReFa,
ternary / k-bit weights) become LowbitMultibitConv2d and reproduce Keras;
unmappable quantized layers are refused, naming the layer.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from lowbit_tf import quantizers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


# ---------------------------------------------------------------------------
# Converter: multi-bit layers -> LowbitMultibitConv2d.

def test_grid_planes_decompose_k_bit_and_ternary_kernels():
    from lowbit_converter.lower_multibit import grid_planes

    rng = np.random.default_rng(4)
    latent = rng.standard_normal((3, 3, 8, 6)).astype(np.float32)
    for bits in (1, 2, 3, 4):
        kernel = quantizers.DoReFa(k_bit=bits, mode="weights")(latent).numpy()
        planes, alphas = grid_planes(kernel)
        assert planes.shape == (bits, 3, 3, 8, 6) and set(np.unique(planes)) <= {-1.0, 1.0}
        np.testing.assert_allclose(np.einsum("m...c,mc->...c", planes, alphas), kernel,
                                   atol=1e-6)
    ternary = quantizers.SteTern()(latent).numpy() * rng.uniform(0.5, 2, 6).astype(np.float32)
    planes, alphas = grid_planes(ternary)  # per-channel scaled ternary: thermometer code
    assert planes.shape[0] == 2
    np.testing.assert_allclose(np.einsum("m...c,mc->...c", planes, alphas), ternary, atol=1e-6)
    assert grid_planes(latent) is None  # float weights are no grid


def convert_and_compare(model, x, *, custom_ops: int = 1, atol: float = 1e-5, exact=True):
    """Lowered model ~ Keras (float tolerance), TFLite == lowered model exactly
    (within float tolerance when `exact` is False: float builtins after the op);
    the model's one quantized layer becomes `custom_ops` ops."""
    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    lowered, plans = lower_model(model)
    assert [plan.op for plan in plans.values()] == ["LowbitMultibitConv2d"]
    expected = model(x).numpy()
    low = lowered(x).numpy()
    np.testing.assert_allclose(low, expected, rtol=1e-5, atol=atol * np.abs(expected).max())
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops.get("LowbitMultibitConv2d") == custom_ops
    got = Interpreter(model_content=result.tflite_model).predict(x)
    if exact:
        np.testing.assert_array_equal(got, low)
    else:
        np.testing.assert_allclose(got, low, rtol=1e-6, atol=1e-6)


def _randomized(model):
    from keras_helpers import randomize_batch_norms

    randomize_batch_norms(model, seed=0)
    return model


@pytest.mark.parametrize("per_channel", [False, True])
def test_abc_conv_with_batch_norm_relu_and_groups_reproduces_keras(per_channel):
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(1)
    model = _randomized(keras.Sequential([
        keras.Input((9, 9, 12)),
        layers.ABCConv2D(16, 3, padding="same", num_weight_bases=3, num_activation_bases=2,
                         per_channel=per_channel, groups=2, name="abc"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
    ]))
    x = np.random.default_rng(0).uniform(-1, 2, (3, 9, 9, 12)).astype(np.float32)
    convert_and_compare(model, x, custom_ops=2)  # one op per group


def test_abc_dense_on_sequences_reproduces_keras():
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(2)
    model = keras.Sequential([keras.Input((5, 40)),
                              layers.ABCDense(24, num_weight_bases=2, num_activation_bases=4,
                                              activation="tanh")])
    x = np.random.default_rng(1).uniform(-1, 2, (2, 5, 40)).astype(np.float32)
    convert_and_compare(model, x, exact=False)  # tanh runs as a float builtin


@pytest.mark.parametrize("bits, pad_values", [(1, 0.0), (2, 1.0), (3, 0.0)])
def test_dorefa_conv_and_dense_reproduce_keras(bits, pad_values):
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(3)
    dorefa = dict(input_quantizer=quantizers.DoReFa(bits, "activations"),
                  kernel_quantizer=quantizers.DoReFa(bits, "weights"))
    model = _randomized(keras.Sequential([
        keras.Input((8, 8, 6)),
        layers.QuantConv2D(10, 3, padding="same", pad_values=pad_values, strides=2, **dorefa),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        layers.QuantDense(7, **dorefa),
    ]))
    rng = np.random.default_rng(bits)
    x = rng.uniform(-0.5, 1.5, (4, 8, 8, 6)).astype(np.float32)
    convert_and_compare(keras.Sequential([keras.Input((8, 8, 6)), *model.layers[:2]]), x,
                        custom_ops=1)
    # The dense layer on its own (its input would carry the conv's rounding).
    dense_in = rng.uniform(-0.5, 1.5, (4, 160)).astype(np.float32)
    convert_and_compare(keras.Sequential([keras.Input((160,)), model.layers[-1]]), dense_in,
                        custom_ops=1)


def test_ternary_weights_with_sign_inputs_reproduce_keras():
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(4)
    model = keras.Sequential([
        keras.Input((7, 7, 33)),
        layers.QuantConv2D(9, (3, 2), padding="same", dilation_rate=2, input_quantizer="ste_sign",
                           kernel_quantizer=quantizers.SteTern(ternary_weight_networks=True),
                           activation="relu"),
    ])
    x = np.random.default_rng(5).standard_normal((2, 7, 7, 33)).astype(np.float32)
    convert_and_compare(model, x, custom_ops=1, atol=0)


def test_unmappable_quantized_layers_are_refused_naming_the_layer():
    import lowbit_converter
    from lowbit_converter import ConversionError
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    model = keras.Sequential([
        keras.Input((6, 6, 4)),
        layers.QuantConv2D(4, 3, input_quantizer="ste_heaviside", kernel_quantizer="ste_sign",
                           name="step_conv"),
    ])
    with pytest.raises(ConversionError, match=r"'step_conv'.*input_quantizer.*float_fallback"):
        lowbit_converter.convert(model)
    result = lowbit_converter.convert_with_report(model, float_fallback=True)
    assert result.lowered_layers == [] and not result.report.custom_ops
    float_kernel = keras.Sequential([
        keras.Input((6, 6, 4)),
        layers.QuantConv2D(4, 3, input_quantizer="ste_sign", name="float_kernel"),
    ])
    with pytest.raises(ConversionError, match=r"'float_kernel'.*SteSign.* but kernel_quantizer="
                       r"None: a binary-input layer needs a binary \(or multi-bit\) "
                       r"kernel_quantizer.*'ste_sign'.*keep it a float layer"):
        lowbit_converter.convert(float_kernel)
    wide_kernel = keras.Sequential([
        keras.Input((6, 6, 4)),
        layers.QuantConv2D(4, 3, input_quantizer="ste_sign", name="wide_kernel",
                           kernel_quantizer=quantizers.DoReFa(k_bit=12, mode="weights")),
    ])
    with pytest.raises(ConversionError, match=r"'wide_kernel'.*k_bit=12.* not a sum of at most 8 "
                       r"binary planes.*at most 8-bit kernel quantizer"):
        lowbit_converter.convert(wide_kernel)
    float_dense = keras.Sequential([
        keras.Input((6,)),
        layers.QuantDense(3, input_quantizer="ste_sign", name="float_dense"),
    ])
    with pytest.raises(ConversionError, match=r"'float_dense'.*but kernel_quantizer=None"):
        lowbit_converter.convert(float_dense)
    float_depthwise = keras.Sequential([
        keras.Input((6, 6, 4)),
        layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign", name="float_dw"),
    ])
    with pytest.raises(ConversionError, match=r"'float_dw'.*but depthwise_quantizer=None.*set "
                       r"depthwise_quantizer"):
        lowbit_converter.convert(float_depthwise)
    odd_pad = keras.Sequential([
        keras.Input((6, 6, 4)),
        layers.ABCConv2D(4, 3, padding="same", pad_values=0.5, name="abc_pad"),
    ])
    with pytest.raises(ConversionError, match=r"'abc_pad'.*pad_values=0.5"):
        lowbit_converter.convert(odd_pad)

