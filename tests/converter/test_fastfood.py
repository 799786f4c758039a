"""The converter and LowbitFastfood: FastfoodDense becomes one LowbitFastfood
that reproduces Keras; what cannot be converted raises a ConversionError.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import pytest
from fastfood_cases import F32
from flatbuffers import flexbuffers

tf = pytest.importorskip("tensorflow")

from lowbit_tf import layers  # noqa: E402
from lowbit_tf._keras import keras  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


# --------------------------------------------------------------------------
# Converter: FastfoodDense -> one LowbitFastfood
# --------------------------------------------------------------------------


def _fastfood_model(functional: bool, rank3: bool):
    body = [
        keras.layers.Dense(20, name="dense_in"),
        layers.FastfoodDense(40, activation="relu", name="ff_relu", seed=1),
        layers.FastfoodDense(12, activation="tanh", use_bias=False, name="ff_tanh", seed=2),
        layers.FastfoodDense(64, block_size=32, name="ff_plain", seed=3),
        keras.layers.Dense(5, name="dense_out"),
    ]
    inputs = keras.Input((3, 7) if rank3 else (7,))
    if functional:
        y = inputs
        for layer in body:
            y = layer(y)
        model = keras.Model(inputs, y)
    else:
        model = keras.Sequential([inputs, *body])
    rng = np.random.default_rng(9)
    for layer in model.layers:
        if isinstance(layer, layers.FastfoodDense) and layer.bias is not None:
            layer.bias.assign(rng.standard_normal(layer.units).astype(F32))
    return model


@pytest.mark.parametrize("functional, rank3", [(True, False), (False, True)])
def test_converted_fastfood_reproduces_keras(functional, rank3):
    from tflite_models import tflite_ops

    from lowbit_converter.convert import convert_with_report
    from lowbit_converter.lowering import lower_model
    from lowbit_tf.lite import Interpreter

    model = _fastfood_model(functional, rank3)
    x = np.random.default_rng(10).standard_normal((6, *model.input_shape[1:])).astype(F32)
    expected = model(x).numpy()
    lowered, plans = lower_model(model)
    assert {"ff_relu", "ff_tanh", "ff_plain"} <= set(plans)
    np.testing.assert_array_equal(lowered(x).numpy(), expected)  # the op equals the layer
    with contextlib.redirect_stdout(io.StringIO()):
        result = convert_with_report(model)
    assert result.lowered_layers == ["ff_plain", "ff_relu", "ff_tanh"]
    assert result.report.custom_ops == {"LowbitFastfood": 3}
    found, _, _ = tflite_ops(result.tflite_model)
    names = [name for name, _ in found]
    assert "TANH" in names, names
    if not rank3:  # only the Dense layers and the ops remain (no butterflies, no gather)
        assert sorted(set(names)) == ["FULLY_CONNECTED", "LowbitFastfood", "TANH"], names
    options = [flexbuffers.Loads(bytes(op.customOptions)) for name, op in found
               if name == "LowbitFastfood"]  # fmt: skip
    assert options == [{"units": 40, "activation": "RELU"}, {"units": 12, "activation": "NONE"},
                       {"units": 64, "activation": "NONE"}]  # fmt: skip
    interpreter = Interpreter(model_content=result.tflite_model)
    got = interpreter.predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_unconvertible_fastfood_raises_conversion_error():
    from lowbit_converter import ConversionError
    from lowbit_converter.lowering import lower_model

    model = keras.Sequential([keras.Input((6,)),
                              layers.FastfoodDense(8, dtype="mixed_float16", name="half_ff")])
    with pytest.raises(ConversionError, match=r"'half_ff'.*compute dtype 'float16'"):
        lower_model(model)

