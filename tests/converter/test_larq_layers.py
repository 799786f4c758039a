"""Converting the rest of Larq's layers: binary QuantConv1D / QuantConv3D through
LowbitBconv2d (lower_conv_nd.py), the binary depthwise half of the separable
convs through LowbitBDepthwiseConv2d (lower_separable.py), binary
QuantConv2DTranspose through one LowbitBconv2d per stride phase
(lower_conv_transpose.py), 3-D transposed and locally connected layers refused
unless float_fallback (docs/custom_ops.md).
Each converted model runs in our TFLite runtime against the Keras model."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lowbit_converter import ConversionError, convert_with_report
from lowbit_tf import layers, lite
from lowbit_tf._keras import variable_name

SIGN = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip")


def _seeded(model, seed=0):
    rng = np.random.default_rng(seed)
    for w in model.weights:
        value = rng.normal(size=w.shape)
        if variable_name(w) == "moving_variance":
            value = rng.uniform(0.5, 2.0, w.shape)
        w.assign(value.astype("float32"))
    return model


def _model(shape, *stack):
    inputs = tf.keras.Input(shape)
    x = inputs
    for layer in stack:
        x = layer(x)
    return _seeded(tf.keras.Model(inputs, x))


def _check(model, lowered, ops, rtol=1e-5):
    """Converts, checks the lowered layers and the custom ops ({name: count}) of
    the flatbuffer, runs it against Keras."""
    result = convert_with_report(model)
    assert sorted(result.lowered_layers) == sorted(lowered)
    assert result.report.custom_ops == ops
    x = np.random.default_rng(1).normal(size=(2, *model.input_shape[1:])).astype("float32")
    expected = model.predict(x, verbose=0)
    actual = lite.Interpreter(model_content=result.tflite_model).predict(x)
    np.testing.assert_allclose(actual, expected, rtol=0,
                               atol=rtol * max(1.0, float(np.max(np.abs(expected)))))
    return result


@pytest.mark.parametrize("padding, pad_values, strides, dilation", [
    ("same", 1.0, 1, 1), ("same", 0.0, 2, 1), ("valid", 0.0, 1, 2), ("same", 1.0, 1, 2),
])
@pytest.mark.parametrize("folded", [False, True], ids=["plain", "bn_relu"])
def test_binary_conv1d(padding, pad_values, strides, dilation, folded):
    stack = [layers.QuantConv1D(9, 3, strides=strides, dilation_rate=dilation, padding=padding,
                                pad_values=pad_values, name="conv1d", **SIGN)]
    if folded:
        stack += [tf.keras.layers.BatchNormalization(), tf.keras.layers.ReLU()]
    _check(_model((15, 37), *stack), ["conv1d"], {"LowbitBconv2d": 1})


@pytest.mark.parametrize("padding, pad_values, strides, dilation", [
    ("same", 1.0, 1, 1), ("same", 0.0, 2, 1), ("valid", 0.0, 1, 2), ("same", 0.0, 1, 2),
    ("same", 1.0, (2, 1, 1), 1),
])
@pytest.mark.parametrize("folded", [False, True], ids=["plain", "bn_relu"])
def test_binary_conv3d(padding, pad_values, strides, dilation, folded):
    stack = [layers.QuantConv3D(6, 3, strides=strides, dilation_rate=dilation, padding=padding,
                                pad_values=pad_values, name="conv3d", **SIGN)]
    if folded:
        stack += [tf.keras.layers.BatchNormalization(), tf.keras.layers.ReLU()]
    _check(_model((5, 6, 7, 33), *stack), ["conv3d"], {"LowbitBconv2d": 3})  # a depth tap each


@pytest.mark.parametrize("rank", [1, 2])
@pytest.mark.parametrize("padding, pad_values, strides, depth_multiplier", [
    ("same", 1.0, 1, 1), ("same", 0.0, 2, 2), ("valid", 0.0, 1, 2),
])
def test_binary_separable_depthwise_half(rank, padding, pad_values, strides, depth_multiplier):
    cls = layers.QuantSeparableConv1D if rank == 1 else layers.QuantSeparableConv2D
    layer = cls(6, 3, strides=strides, depth_multiplier=depth_multiplier, padding=padding,
                pad_values=pad_values, input_quantizer="ste_sign",
                depthwise_quantizer="magnitude_aware_sign", pointwise_quantizer="ste_sign",
                depthwise_constraint="weight_clip", pointwise_constraint="weight_clip",
                activation="relu", name="separable")
    shape = (13, 19) if rank == 1 else (7, 9, 19)
    _check(_model(shape, layer, tf.keras.layers.BatchNormalization()), ["separable"],
           {"LowbitBDepthwiseConv2d": 1})


@pytest.mark.parametrize("kernel, strides, padding, output_padding, dilation", [
    (3, 2, "same", None, 1), (3, 2, "valid", None, 1), (4, 2, "same", None, 1),
    (2, 2, "valid", None, 1), (3, 3, "same", None, 1), (5, 2, "same", 1, 1),
    (3, 2, "valid", 1, 1), ((3, 2), 2, "same", None, 1), (1, 2, "valid", None, 1),
    (2, 3, "same", None, 1),  # stride > kernel: phases no tap reaches
    (3, 1, "same", None, 1), (3, 1, "valid", None, 2), (7, 2, "same", None, 1),
])
@pytest.mark.parametrize("folded", [False, True], ids=["plain", "bn_relu"])
def test_binary_conv2d_transpose(kernel, strides, padding, output_padding, dilation, folded):
    """One LowbitBconv2d per stride phase (lower_conv_transpose.py), against Keras's
    conv_transpose of the quantized values, every Keras geometry kind."""
    stack = [layers.QuantConv2DTranspose(6, kernel, strides=strides, padding=padding,
                                         output_padding=output_padding, dilation_rate=dilation,
                                         name="deconv", **SIGN)]
    if folded:
        stack += [tf.keras.layers.BatchNormalization(), tf.keras.layers.ReLU()]
    model = _model((5, 7, 37), *stack)
    _check(model, ["deconv"], {"LowbitBconv2d": min(strides, kernel if isinstance(kernel, int)
                                                    else min(kernel)) ** 2 if strides > 1 else 1})


def test_binary_conv2d_transpose_stride_above_kernel_counts_every_phase():
    model = _model((4, 4, 8), layers.QuantConv2DTranspose(3, 2, strides=3, name="deconv", **SIGN))
    result = _check(model, ["deconv"], {"LowbitBconv2d": 4})  # 4 of the 9 phases have taps
    assert model.output_shape == (None, 12, 12, 3)
    assert result.report.custom_ops == {"LowbitBconv2d": 4}


@pytest.mark.parametrize("make, match", [
    (lambda: layers.QuantConv2DTranspose(4, 3, strides=(2, 1), **SIGN), r"strides=\(2, 1\)"),
    (lambda: layers.QuantConv2DTranspose(4, 3, input_quantizer="ste_sign"),
     "kernel_quantizer=None"),
    # Larq's magnitude_aware_sign scales the transposed kernel [kh, kw, filters, in]
    # per input channel (its last axis): no per-output-channel multiplier.
    (lambda: layers.QuantConv2DTranspose(4, 3, input_quantizer="ste_sign",
                                         kernel_quantizer="magnitude_aware_sign"),
     "a \\(scaled\\) binary kernel"),
])
def test_conv2d_transpose_no_op_runs_are_named(make, match):
    model = _model((5, 5, 8), make())
    with pytest.raises(ConversionError, match=f"QuantConv2DTranspose.*{match}.*float_fallback"):
        convert_with_report(model)
    convert_with_report(model, float_fallback=True)


@pytest.mark.parametrize("make, shape", [
    (lambda: layers.QuantConv3DTranspose(4, 2, strides=2, **SIGN), (3, 4, 4, 8)),
    (lambda: layers.QuantLocallyConnected1D(4, 3, **SIGN), (9, 8)),
    (lambda: layers.QuantLocallyConnected2D(4, 3, **SIGN), (6, 6, 8)),
], ids=["transpose3d", "local1d", "local2d"])
def test_no_op_layers_refused_then_float(make, shape):
    model = _model(shape, make())
    name = type(model.layers[1]).__name__
    with pytest.raises(ConversionError, match=f"{name}.*has no lowbit op.*float_fallback=True"):
        convert_with_report(model)
    x = np.random.default_rng(2).normal(size=(1, *shape)).astype("float32")
    flat = convert_with_report(model, float_fallback=True)
    assert flat.lowered_layers == []
    np.testing.assert_allclose(lite.Interpreter(model_content=flat.tflite_model).predict(x),
                               model.predict(x, verbose=0), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("make, match", [
    (lambda: layers.QuantConv1D(4, 3, padding="causal", **SIGN), "padding='causal'"),
    (lambda: layers.QuantConv1D(4, 3, input_quantizer="dorefa", kernel_quantizer="ste_sign"),
     "sign input quantizer"),
    (lambda: layers.QuantConv3D(4, 3, input_quantizer="ste_sign"), "kernel_quantizer=None"),
    (lambda: layers.QuantSeparableConv1D(4, 3, input_quantizer="ste_sign",
                                         depthwise_quantizer="ste_tern"), "binary depthwise"),
], ids=["causal", "dorefa_input", "float_kernel", "ternary_depthwise"])
def test_quantized_layers_no_op_runs_are_named(make, match):
    layer = make()
    shape = (9, 8) if layer.rank == 1 else (4, 5, 5, 8)
    model = _model(shape, layer)
    with pytest.raises(ConversionError, match=f"{layer.name}.*{match}.*float_fallback=True"):
        convert_with_report(model)
    convert_with_report(model, float_fallback=True)


def test_float_versions_are_not_lowered():
    model = _model((9, 8), layers.QuantConv1D(4, 3), layers.QuantSeparableConv1D(4, 3))
    assert convert_with_report(model).lowered_layers == []


@pytest.mark.parametrize("make, shape, binary_macs", [
    (lambda: layers.QuantConv1D(32, 3, padding="same", **SIGN), (64, 256), 64 * 3 * 256 * 32),
    (lambda: layers.QuantConv3D(32, 3, padding="same", pad_values=1.0, **SIGN), (8, 8, 8, 32),
     8 * 8 * 8 * 27 * 32 * 32),
    (lambda: layers.QuantSeparableConv2D(16, 3, input_quantizer="ste_sign",
                                         depthwise_quantizer="ste_sign",
                                         depthwise_constraint="weight_clip"), (8, 8, 32),
     6 * 6 * 9 * 32),
    (lambda: layers.QuantConv2DTranspose(32, 3, strides=2, padding="same", **SIGN), (8, 8, 64),
     8 * 8 * 9 * 32 * 64),
], ids=["conv1d", "conv3d", "separable", "conv2d_transpose"])
def test_summary_counts_and_predicts_the_lowered_layers(make, shape, binary_macs):
    """Binary MACs as the layers compute them; the predicted .tflite size within 6%."""
    from lowbit_tf import summary

    model = _model(shape, make())
    report = summary.summary(model, print_fn=None)
    assert report.binary_macs == binary_macs
    actual = len(convert_with_report(model).tflite_model)
    assert abs(report.predicted_tflite_bytes - actual) <= 0.06 * actual, (
        report.predicted_tflite_bytes, actual)


def test_benchmark_script_rows_agree(capsys):
    """benchmarks/larq_layers_benchmark.py runs, and on its (larger) shapes our
    ops and the float twin agree in every row."""
    import larq_layers_benchmark

    assert larq_layers_benchmark.main(["--rounds", "1", "--sample-seconds", "0.01",
                                       "--quiet"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("Quant")]
    assert len(rows) == 6 and all(row.endswith("yes") for row in rows), rows
