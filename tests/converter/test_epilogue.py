"""The converter and LowbitBconv2d's fused epilogue: conv -> ReLU -> BatchNorm ->
Add becomes one op and reproduces Keras; unfusable adds are left alone.
"""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")


pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


# --------------------------------------------------------------------------
# Converter: the layers after a binary conv fused into its epilogue.
# --------------------------------------------------------------------------


def _tflite_ops(model: bytes) -> list[str]:
    from tflite_models import tflite_ops as ops_of

    return [name for name, _ in ops_of(model)[0]]


def _block(variant: str):
    """A QuickNet-style residual block and variants of it."""
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    x = keras.Input((9, 10, 40))
    s = keras.layers.Conv2D(40, 1, name="stem")(x)
    y = lb_layers.QuantConv2D(
        40, 3, padding="same", pad_values=1.0, use_bias=variant == "bias",
        input_quantizer="ste_sign", kernel_quantizer="ste_sign", name="bconv",
        activation="relu" if variant == "own_relu" else None)(s)
    if variant not in ("own_relu", "add_only"):
        y = keras.layers.ReLU(name="relu")(y)
    if variant != "add_only":
        y = keras.layers.BatchNormalization(name="bn")(y)
    if variant == "bn_output":
        return keras.Model(x, [y, keras.layers.Add(name="add")([s, y])])
    if variant == "affine_only":
        return keras.Model(x, keras.layers.Conv2D(8, 1, name="head")(y))
    operands = [y, s] if variant == "residual_second" else [s, y]
    out = keras.layers.Add(name="add")(operands)
    return keras.Model(x, keras.layers.Conv2D(8, 1, name="head")(out))


@pytest.mark.parametrize("variant, expected_epilogue, expected_ops", [
    ("quicknet", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("residual_second", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("bias", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("own_relu", "affine_add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("add_only", "add", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    ("affine_only", "affine", ["CONV_2D", "LowbitBconv2d", "CONV_2D"]),
    # The BatchNorm's output is a model output too: only it is fused, the Add
    # stays a builtin.
    ("bn_output", "affine", ["CONV_2D", "LowbitBconv2d", "ADD"]),
])
def test_converter_fuses_the_block(variant, expected_epilogue, expected_ops):
    from flatbuffers import flexbuffers

    from lowbit_converter import convert
    from lowbit_converter.lowering import plan_lowering
    from lowbit_converter.tflite_schema import schema
    from lowbit_tf.lite import Interpreter

    model = _block(variant)
    rng = np.random.default_rng(11)
    for layer in model.layers:  # BatchNorm statistics away from the identity
        if layer.name == "bn":
            layer.set_weights([rng.uniform(0.5, 2, 40), rng.uniform(-1, 1, 40),
                               rng.uniform(-1, 1, 40), rng.uniform(0.5, 2, 40)])
    plan = plan_lowering(model)["bconv"]
    assert (plan.post_batch_norm is not None) == ("affine" in expected_epilogue)
    assert (plan.residual_add is not None) == ("add" in expected_epilogue)
    tflite = convert(model)
    assert _tflite_ops(tflite) == expected_ops
    fb = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    custom = [op for op in fb.subgraphs[0].operators if op.customOptions is not None]
    options = flexbuffers.Loads(bytes(bytearray(custom[0].customOptions)))
    assert options["epilogue"] == expected_epilogue
    x = rng.standard_normal((2, 9, 10, 40)).astype(np.float32)
    want = model(x, training=False)
    got = Interpreter(model_content=tflite).predict(x)
    got, want = (got, want) if isinstance(got, list) else ([got], [want])
    # TFLite may list several outputs in another order than Keras: pair each
    # Keras output with the TFLite output closest to it.
    for w in map(np.asarray, want):
        g = min(got, key=lambda g: float(np.abs(g - w).max()) if g.shape == w.shape else np.inf)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))


def test_converter_leaves_unfusable_adds():
    """An Add whose operands differ in shape (broadcast) or that has three
    operands keeps its builtin; the conv still converts."""
    from lowbit_converter import convert
    from lowbit_converter.lowering import plan_lowering
    from lowbit_tf import layers as lb_layers
    from lowbit_tf._keras import keras

    x = keras.Input((6, 6, 32))
    y = lb_layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", name="bconv")(x)
    z = lb_layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign",
                              kernel_quantizer="ste_sign", name="bconv2")(x)
    three = keras.layers.Add(name="add3")([x, y, x])
    pooled = keras.layers.GlobalAveragePooling2D(keepdims=True, name="gap")(x)
    broadcast = keras.layers.Add(name="addb")([z, pooled])
    model = keras.Model(x, [three, broadcast])
    plans = plan_lowering(model)
    assert plans["bconv"].residual_add is None and plans["bconv2"].residual_add is None
    tflite = convert(model)
    assert _tflite_ops(tflite).count("LowbitBconv2d") == 2
    from lowbit_tf.lite import Interpreter

    x_value = np.random.default_rng(2).standard_normal((1, 6, 6, 32)).astype(np.float32)
    got = Interpreter(model_content=tflite).predict(x_value)
    for w in map(np.asarray, model(x_value)):
        g = min(got, key=lambda g: float(np.abs(g - w).max()) if g.shape == w.shape else np.inf)
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-4)

