"""The converter and LowbitBgemm: TF's converter emits the op with its options
(kept exactly by our flatbuffer pass), and a binary QuantDense on an N-d input
becomes LowbitBgemm and reproduces Keras.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import bgemm_np

tf = pytest.importorskip("tensorflow")

from flatbuffers import flexbuffers  # noqa: E402

from lowbit_tf import ops  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]


def test_tf_converter_emits_lowbit_bgemm_with_its_options():
    """TF's converter emits the op as CUSTOM "LowbitBgemm"; our flatbuffer pass
    keeps exactly the documented options and the delegate runs it."""
    from lowbit_converter.flatbuffer_pass import run_pass
    from lowbit_converter.tflite_schema import schema
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(4)
    kernel = rng.standard_normal((70, 20)).astype(np.float32)
    packed = ops.pack_dense_kernel(kernel)
    m = rng.uniform(0.5, 2, 20).astype(np.float32)
    b = rng.uniform(-1, 1, 20).astype(np.float32)

    @tf.function(input_signature=[tf.TensorSpec([2, 3, 70], tf.float32)])
    def fn(x):
        return ops.bgemm(x, packed, m, b, activation="relu")

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    converter.allow_custom_ops = True
    model, report = run_pass(converter.convert())
    assert report.custom_ops == {"LowbitBgemm": 1}
    (op,) = [op for op in schema.ModelT.InitFromPackedBuf(bytearray(model), 0)
             .subgraphs[0].operators]
    assert flexbuffers.Loads(bytes(bytearray(op.customOptions))) == {
        "channels_in": 70, "activation": "RELU"}
    x = rng.standard_normal((2, 3, 70)).astype(np.float32)
    np.testing.assert_array_equal(Interpreter(model_content=model).predict(x), fn(x).numpy())
    np.testing.assert_array_equal(fn(x).numpy(), bgemm_np(x, kernel, m, b, "relu"))


# --------------------------------------------------------------------------
# Converter: binary QuantDense on an N-d input -> LowbitBgemm
# --------------------------------------------------------------------------


def test_converted_nd_dense_chain_reproduces_keras():
    """QuantDense layers on [N, T, K]: BatchNorm and ReLU folded into the first,
    a float BatchNorm after it, then d2 -> BatchNorm -> d3 bit-packed: three
    LowbitBgemm ops on rank-3 tensors, no reshape, TFLite output equal to Keras."""
    from keras_helpers import randomize_batch_norms

    import lowbit_converter
    from lowbit_converter.lowering import lower_model
    from lowbit_converter.tflite_schema import schema
    from lowbit_tf import layers
    from lowbit_tf._keras import keras
    from lowbit_tf.lite import Interpreter

    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    inputs = keras.Input((5, 70))
    h = layers.QuantDense(40, name="d1", **binary)(inputs)
    h = keras.layers.BatchNormalization(name="bn1")(h)
    h = keras.layers.ReLU(name="relu1")(h)
    h = keras.layers.BatchNormalization(name="bn_between")(h)
    h = layers.QuantDense(33, name="d2", **binary)(h)
    h = keras.layers.BatchNormalization(name="bn2")(h)
    h = layers.QuantDense(9, name="d3", bias_initializer="random_normal", **binary)(h)
    model = keras.Model(inputs, h)
    randomize_batch_norms(model)
    x = np.random.default_rng(9).standard_normal((3, 5, 70)).astype(np.float32)
    expected = model(x, training=False).numpy()
    _, plans = lower_model(model)
    assert plans["d2"].packed_output and plans["d3"].packed_input
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops == {"LowbitBgemm": 3}
    flat = schema.ModelT.InitFromPackedBuf(bytearray(result.tflite_model), 0)
    codes = [flat.operatorCodes[op.opcodeIndex] for op in flat.subgraphs[0].operators]
    assert all(code.customCode for code in codes[-2:])  # d2 -> d3: nothing in between
    got = Interpreter(model_content=result.tflite_model).predict(x)
    assert got.shape == (3, 5, 9)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())

