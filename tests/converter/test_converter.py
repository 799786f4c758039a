"""Keras model -> .tflite with LowbitBconv2d -> our TFLite kernels, end to end."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from flatbuffers import flexbuffers
from keras_helpers import randomize_batch_norms

import lowbit_converter
from lowbit_converter import ConversionError
from lowbit_converter.flatbuffer_pass import run_pass
from lowbit_converter.lowering import lower_model
from lowbit_converter.tflite_schema import schema
from lowbit_tf import constraints, layers
from lowbit_tf._keras import keras
from lowbit_tf.lite import Interpreter
from lowbit_tf.quantizers import Quantizer, ste_sign

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


def operators(tflite: bytes) -> list[tuple[str, object]]:
    """(op name, operator) for every operator of the main subgraph."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    result = []
    for op in model.subgraphs[0].operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = code.customCode.decode() if code.customCode else names[builtin]
        result.append((name, op))
    return result


def run_tflite(tflite: bytes, x: np.ndarray, **kwargs) -> np.ndarray:
    return Interpreter(model_content=tflite, **kwargs).predict(x)


CONV_CONFIGS = [
    dict(filters=8, kernel_size=3, padding="same", pad_values=1.0),
    dict(filters=5, kernel_size=3, padding="same", pad_values=0.0, strides=2),
    dict(filters=7, kernel_size=(2, 3), padding="valid", dilation_rate=(2, 1)),
    dict(filters=4, kernel_size=1, padding="valid", use_bias=False),
    dict(filters=6, kernel_size=3, padding="same", pad_values=1.0, activation="relu"),
    dict(filters=3, kernel_size=3, padding="same", pad_values=0.0, activation="tanh"),
]


@pytest.mark.parametrize("channels", [1, 33, 65])
@pytest.mark.parametrize("config", CONV_CONFIGS, ids=lambda c: "-".join(map(str, c.values())))
def test_binary_conv_without_batchnorm_is_bit_exact(config, channels):
    """Without BatchNorm the TFLite output is the Keras output, bit for bit:
    the binary dot products are exact integers and the bias add rounds once."""
    rng = np.random.default_rng(channels)
    model = keras.Sequential([keras.Input((9, 10, channels)),
                              layers.QuantConv2D(**config, **BINARY,
                                                 bias_initializer="random_normal")])
    x = rng.standard_normal((3, 9, 10, channels)).astype(np.float32)
    expected = model(x).numpy()
    lowered, plans = lower_model(model)
    assert list(plans) == [model.layers[0].name]
    np.testing.assert_array_equal(lowered(x).numpy(), expected)  # TF op path
    tflite = lowbit_converter.convert(model)
    names = [name for name, _ in operators(tflite)]
    assert names.count("LowbitBconv2d") == 1 and "CONV_2D" not in names
    if config.get("activation") == "tanh":  # a float op after the custom op: TFLite's TANH
        np.testing.assert_allclose(run_tflite(tflite, x), expected, rtol=1e-5, atol=1e-6)
    else:
        np.testing.assert_array_equal(run_tflite(tflite, x), expected)


def digits_like_model(functional: bool) -> keras.Model:
    """Float stem, binary conv blocks with BatchNorm and ReLU, float head."""
    inputs = keras.Input((12, 12, 3))
    h = keras.layers.Conv2D(16, 3, padding="same", name="stem")(inputs)
    h = keras.layers.BatchNormalization(name="stem_bn")(h)
    h = layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, use_bias=False,
                           name="b1", **BINARY)(h)
    h = keras.layers.BatchNormalization(name="b1_bn")(h)
    h = keras.layers.ReLU(name="b1_relu")(h)
    h = keras.layers.MaxPooling2D(2)(h)
    h = layers.QuantConv2D(48, 3, strides=2, padding="same", name="b2", **BINARY)(h)
    h = keras.layers.BatchNormalization(name="b2_bn")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    outputs = keras.layers.Dense(10, name="head")(h)
    model = keras.Model(inputs, outputs)
    if not functional:
        model = keras.Sequential([keras.Input((12, 12, 3)), *model.layers[1:]])
    randomize_batch_norms(model)
    return model


@pytest.mark.parametrize("functional", [True, False], ids=["functional", "sequential"])
def test_batchnorm_and_relu_fold_into_one_custom_op(functional):
    model = digits_like_model(functional)
    x = np.random.default_rng(1).standard_normal((4, 12, 12, 3)).astype(np.float32)
    expected = model(x, training=False).numpy()
    result = lowbit_converter.convert_with_report(model)
    assert result.lowered_layers == ["b1", "b2"]
    names = [name for name, _ in operators(result.tflite_model)]
    assert names.count("LowbitBconv2d") == 2
    assert names.count("CONV_2D") == 1  # the float stem
    # BN of b1/b2 and the ReLU folded: no float MUL/ADD/RELU remain after the custom ops.
    after_first = names[names.index("LowbitBconv2d"):]
    assert not {"MUL", "ADD", "RELU"} & set(after_first), names
    ops = dict(operators(result.tflite_model)[i] for i in range(len(names)))
    options = flexbuffers.Loads(bytes(bytearray(ops["LowbitBconv2d"].customOptions)))
    assert set(options) == {"channels_in", "kernel_h", "kernel_w", "stride_h", "stride_w",
                            "dilation_h", "dilation_w", "padding", "pad_value", "activation"}
    got = run_tflite(result.tflite_model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_trained_model_reproduced_by_ops_and_tflite():
    """Train a few steps so that latent weights and BN statistics are real."""
    rng = np.random.default_rng(2)
    x = rng.standard_normal((64, 8, 8, 4)).astype(np.float32)
    y = rng.integers(0, 3, 64)
    model = keras.Sequential([
        keras.Input((8, 8, 4)),
        layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, **BINARY,
                           kernel_constraint=constraints.WeightClip(1.0)),
        layers.QuantConv2D(16, 3, padding="same", **BINARY),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=3, batch_size=16, verbose=0)
    conv = model.layers[0]
    # Float outputs between the binary convs (no packed chain), to compare them.
    lowered, _ = lower_model(model, packed_chains=False)
    # The first binary conv has no BN: its op output is exactly the layer's output.
    sub = keras.Model(model.inputs, conv.output)
    sub_lowered = keras.Model(lowered.inputs, lowered.layers[0].output)
    np.testing.assert_array_equal(sub_lowered(x).numpy(), sub(x).numpy())
    expected = model(x, training=False).numpy()
    got = run_tflite(lowbit_converter.convert(model), x, num_threads=2)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def float_tensor_bytes(tflite: bytes, name_part: str) -> int:
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    total = 0
    for tensor in model.subgraphs[0].tensors:
        data = model.buffers[tensor.buffer].data
        if data is not None and name_part in tensor.name.decode() and len(tensor.shape) == 4:
            total += len(data)
    return total


def test_binary_weights_take_25x_fewer_bytes():
    """Filters are packed compactly, one bit per weight, whatever the channel
    counts (16 and 64 in, 64 and 48 out here): ~32x, less the float multiplier
    and bias vectors."""
    model = digits_like_model(functional=True)
    result = lowbit_converter.convert_with_report(model)
    float_tflite = lowbit_converter.convert(model, lowbit=False)
    float_bytes = float_tensor_bytes(float_tflite, "b1") + float_tensor_bytes(float_tflite, "b2")
    assert float_bytes == 4 * (3 * 3 * 16 * 64 + 3 * 3 * 64 * 48)
    lowbit_bytes = result.report.custom_op_weight_bytes  # filters + multipliers + biases
    assert float_bytes / lowbit_bytes >= 25, (float_bytes, lowbit_bytes)
    assert len(result.tflite_model) < len(float_tflite)


def test_float_conversion_traces_the_layers_as_float_ops():
    """lowbit=False converts the model as it is, with float ops only: the layers
    that run on the lowbit TF ops in TensorFlow are traced on their float
    emulation for it, and keep their `use_ops` afterwards."""
    from lowbit_tf.layers import QuantizedLayerMixin

    model = digits_like_model(functional=True)
    quantized = [layer for layer in model.layers if isinstance(layer, QuantizedLayerMixin)]
    assert quantized and all(layer.use_ops for layer in quantized)
    parsed = schema.ModelT.InitFromPackedBuf(
        bytearray(lowbit_converter.convert(model, lowbit=False)), 0)
    assert not [code for code in parsed.operatorCodes if code.customCode]
    assert all(layer.use_ops for layer in quantized)


def test_relu_before_max_pool_becomes_the_pools_fused_activation():
    """QuickNet's transition: ReLU -> MaxPool. The pass folds the ReLU into the
    pool (max pooling and ReLU commute) where the pool alone reads it; a ReLU
    that another op also reads stays."""
    inputs = keras.Input((12, 12, 8))
    x = layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, **BINARY)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.Add()([x, inputs])  # a residual: the ReLU after it is a float op
    relu = keras.layers.Activation("relu")(x)
    pooled = keras.layers.MaxPooling2D(2)(relu)  # the only reader: folded
    x = layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, **BINARY)(pooled)
    x = keras.layers.Add()([keras.layers.BatchNormalization()(x), pooled])
    kept = keras.layers.Activation("relu")(x)  # read by two pools: stays
    y = keras.layers.Add()([keras.layers.MaxPooling2D(2, padding="same")(kept),
                            keras.layers.AveragePooling2D(2, padding="same")(kept)])
    model = keras.Model(inputs, y)
    randomize_batch_norms(model, np.random.default_rng(3))
    x_in = np.random.default_rng(4).standard_normal((2, 12, 12, 8)).astype(np.float32)
    expected = model(x_in, training=False).numpy()
    tflite = lowbit_converter.convert(model)
    ops = operators(tflite)
    names = [name for name, _ in ops]
    assert names.count("RELU") == 1, names  # the second ReLU
    pools = [op.builtinOptions.fusedActivationFunction for name, op in ops if name == "MAX_POOL_2D"]
    assert pools == [schema.ActivationFunctionType.RELU, schema.ActivationFunctionType.NONE]
    got = run_tflite(tflite, x_in)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_converted_model_says_what_runs_it():
    """A plain TFLite interpreter reports only "Encountered unresolved custom
    op: LowbitBMaxPool2d"; the model's description and its metadata entry
    "lowbit_tf" name its lowbit ops and lowbit_tf.lite.Interpreter. A model
    without lowbit ops keeps TensorFlow's description."""
    from lowbit_tf import __version__
    from lowbit_tf.lite import METADATA_NAME, describe_model

    model = digits_like_model(functional=True)
    tflite = lowbit_converter.convert(model)
    note = (f"lowbit-tf {__version__} model with custom ops LowbitBMaxPool2d, LowbitBconv2d: "
            "run it with lowbit_tf.lite.Interpreter (pip install lowbit-tf-runtime, or lowbit-tf)")

    def notes(flatbuffer: bytes) -> tuple[bytes, list[bytes]]:
        parsed = schema.ModelT.InitFromPackedBuf(bytearray(flatbuffer), 0)
        return parsed.description, [bytes(parsed.buffers[m.buffer].data)
                                    for m in parsed.metadata or []
                                    if m.name == METADATA_NAME.encode()]

    assert notes(tflite) == (note.encode(), [note.encode()])
    assert describe_model(tflite) == note
    again, _ = run_pass(tflite)  # the pass replaces its note, it does not add one
    assert notes(again) == (note.encode(), [note.encode()])
    assert len(again) == len(tflite)
    assert notes(lowbit_converter.convert(model, lowbit=False)) == (b"MLIR Converted.", [])


def test_cli_converts_a_saved_model(tmp_path):
    model = digits_like_model(functional=True)
    model.save(tmp_path / "m.keras")
    out = tmp_path / "m.tflite"
    proc = subprocess.run([sys.executable, "-m", "lowbit_converter", str(tmp_path / "m.keras"),
                           "-o", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lowered layers: b1, b2" in proc.stdout
    x = np.random.default_rng(3).standard_normal((2, 12, 12, 3)).astype(np.float32)
    expected = model(x, training=False).numpy()
    got = Interpreter(model_path=out).predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_cli_reports_missing_and_bad_files(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "lowbit_converter", str(tmp_path / "no.keras")],
                             capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0 and "not found" in missing.stderr
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip file")
    proc = subprocess.run([sys.executable, "-m", "lowbit_converter", str(bad)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "lowbit-convert: error" in proc.stderr


# ---------------------------------------------------------------------------
# What cannot be converted is refused, naming the layer.

def test_unsupported_pad_value_is_refused_naming_the_layer():
    model = keras.Sequential([keras.Input((6, 6, 4)),
                              layers.QuantConv2D(4, 3, padding="same", pad_values=0.5,
                                                 name="odd_pad", **BINARY)])
    with pytest.raises(ConversionError, match=r"'odd_pad'.*pad_values=0.5"):
        lowbit_converter.convert(model)


def test_non_binary_quant_conv_stays_float():
    model = keras.Sequential([keras.Input((6, 6, 4)),
                              layers.QuantConv2D(4, 3, kernel_quantizer="ste_sign", name="wb")])
    result = lowbit_converter.convert_with_report(model)
    assert result.lowered_layers == []
    assert "CONV_2D" in [name for name, _ in operators(result.tflite_model)]


def test_subclassed_model_is_refused():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = layers.QuantConv2D(4, 3, **BINARY)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(np.zeros((1, 6, 6, 4), np.float32))
    with pytest.raises(ValueError, match="Sequential or functional"):
        lowbit_converter.convert(net)


def test_not_a_model_is_refused():
    with pytest.raises(TypeError, match="keras.Model"):
        lowbit_converter.convert("model.keras")


def rewrite_custom_options(tflite: bytes, new_options: bytes) -> bytes:
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    for op in model.subgraphs[0].operators:
        if model.operatorCodes[op.opcodeIndex].customCode:
            op.customOptions = np.frombuffer(new_options, np.uint8)
    import flatbuffers

    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


GOOD_OPTIONS = {"channels_in": 4, "kernel_h": 3, "kernel_w": 3, "stride_h": 1, "stride_w": 1,
                "dilation_h": 1, "dilation_w": 1, "padding": "VALID", "pad_value": 0,
                "activation": "NONE"}


@pytest.mark.parametrize("options, message", [
    (b"\x00\x01\x02", "not a FlexBuffer map"),
    (flexbuffers.Dumps({"channels_in": 4, "kernel_h": 3, "kernel_w": 3}), "'stride_h' is missing"),
    (flexbuffers.Dumps({**GOOD_OPTIONS, "padding": "FULL"}), "'padding' = 'FULL'"),
    (flexbuffers.Dumps({**GOOD_OPTIONS, "channels_in": 0}), "'channels_in' = 0"),
    (flexbuffers.Dumps({**GOOD_OPTIONS, "stride_w": "2"}), "'stride_w' = '2' is not int"),
])
def test_flatbuffer_pass_rejects_corrupt_custom_options(options, message):
    model = keras.Sequential([keras.Input((6, 6, 4)), layers.QuantConv2D(4, 3, **BINARY)])
    tflite = lowbit_converter.convert(model)
    run_pass(rewrite_custom_options(tflite, flexbuffers.Dumps(GOOD_OPTIONS)))  # control: passes
    with pytest.raises(ConversionError, match=message):
        run_pass(rewrite_custom_options(tflite, options))


def test_flatbuffer_pass_rejects_foreign_custom_ops():
    @tf.function(input_signature=[tf.TensorSpec([1, 4], tf.float32)])
    def f(x):
        return tf.raw_ops.Atanh(x=x) * 2.0

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    converter.allow_custom_ops = True
    tflite = converter.convert()
    custom = [n for n, _ in operators(tflite) if n not in vars(schema.BuiltinOperator)]
    if not custom:
        pytest.skip("this TFLite version has a builtin for the probe op")
    with pytest.raises(ConversionError, match="no lowbit kernel implements"):
        run_pass(tflite)


class ChannelScaledSign(Quantizer):
    """A kernel quantizer of XNOR-Net's form: mean|W| per output channel times sign(W)."""

    def call(self, kernel):
        alpha = tf.reduce_mean(tf.abs(kernel), axis=[0, 1, 2], keepdims=True)
        return alpha * ste_sign(kernel)


def test_scaled_binary_kernels_fold_into_the_multiplier():
    """conv(x, alpha_c * s) = alpha_c * dot(x, s): a per-channel scaled binary kernel
    still lowers to one LowbitBconv2d, alpha going into the multiplier (and
    through BatchNorm folding)."""
    inputs = keras.Input((8, 8, 20))
    h = layers.QuantConv2D(12, 3, padding="same", input_quantizer="ste_sign",
                           kernel_quantizer=ChannelScaledSign(), name="xnor_conv",
                           bias_initializer="random_normal")(inputs)
    h = keras.layers.BatchNormalization(name="bn")(h)
    model = keras.Model(inputs, h)
    randomize_batch_norms(model)
    x = np.random.default_rng(4).standard_normal((2, 8, 8, 20)).astype(np.float32)
    expected = model(x, training=False).numpy()
    result = lowbit_converter.convert_with_report(model)
    assert result.lowered_layers == ["xnor_conv"]
    got = run_tflite(result.tflite_model, x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_ternary_kernel_values_lower_to_the_multibit_op():
    """A ternary kernel (zeros beside +-1) is not binary: it becomes two weight
    planes of a LowbitMultibitConv2d, not a LowbitBconv2d."""
    def ternary(kernel):
        return tf.where(tf.abs(kernel) < 0.05, 0.0, tf.sign(kernel))

    model = keras.Sequential([keras.Input((6, 6, 4)),
                              layers.QuantConv2D(4, 3, input_quantizer="ste_sign",
                                                 kernel_quantizer=ternary)])
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops == {"LowbitMultibitConv2d": 1}
    x = np.random.default_rng(8).standard_normal((2, 6, 6, 4)).astype(np.float32)
    np.testing.assert_array_equal(run_tflite(result.tflite_model, x), model(x).numpy())


def test_grouped_binary_conv_lowers_to_one_op_per_group():
    inputs = keras.Input((7, 7, 48))
    h = layers.QuantConv2D(20, 3, padding="same", pad_values=1.0, groups=2, name="grouped",
                           bias_initializer="random_normal", **BINARY)(inputs)
    model = keras.Model(inputs, h)
    x = np.random.default_rng(5).standard_normal((2, 7, 7, 48)).astype(np.float32)
    expected = model(x).numpy()
    result = lowbit_converter.convert_with_report(model)
    assert result.report.custom_ops == {"LowbitBconv2d": 2}
    # 24 channels per group: the groups are not word-aligned in a packed input,
    # which is why the input is split before packing.
    np.testing.assert_array_equal(run_tflite(result.tflite_model, x), expected)


def test_binary_dense_lowers_to_one_lowbit_bgemm():
    """QuantDense with sign inputs and kernel: one LowbitBgemm (no reshapes),
    bit-exact without BatchNorm, BatchNorm and ReLU folded otherwise."""
    inputs = keras.Input((70,))
    h = layers.QuantDense(40, name="bdense1", bias_initializer="random_normal",
                          **BINARY)(inputs)
    exact = keras.Model(inputs, h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = layers.QuantDense(9, name="bdense2", kernel_quantizer="magnitude_aware_sign",
                          input_quantizer="ste_sign")(h)
    model = keras.Model(inputs, h)
    randomize_batch_norms(model)
    x = np.random.default_rng(6).standard_normal((3, 70)).astype(np.float32)
    np.testing.assert_array_equal(run_tflite(lowbit_converter.convert(exact), x),
                                  exact(x).numpy())
    result = lowbit_converter.convert_with_report(model)
    assert result.lowered_layers == ["bdense1", "bdense2"]
    names = [name for name, _ in operators(result.tflite_model)]
    assert names.count("LowbitBgemm") == 2 and "FULLY_CONNECTED" not in names
    assert "RESHAPE" not in names and "LowbitBconv2d" not in names, names
    expected = model(x, training=False).numpy()
    np.testing.assert_allclose(run_tflite(result.tflite_model, x), expected, rtol=1e-5,
                               atol=1e-5 * np.abs(expected).max())


# ---------------------------------------------------------------------------
# Models used as layers (issue 13, defect 3)


def _binary_block(name: str, channels: int = 16) -> keras.Sequential:
    return keras.Sequential(
        [keras.Input((6, 6, channels)),
         layers.QuantConv2D(channels, 3, padding="same", input_quantizer="ste_sign",
                            kernel_quantizer="ste_sign", use_bias=False),
         keras.layers.BatchNormalization()],
        name=name,
    )


def _nested_models() -> dict[str, keras.Model]:
    keras.utils.set_random_seed(4)
    inputs = keras.Input((6, 6, 3))
    stem = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    block = _binary_block("block")
    functional_outer = keras.Model(
        inputs, keras.layers.GlobalAveragePooling2D()(block(stem)), name="outer")
    inner_input = keras.Input((6, 6, 16))
    inner_functional = keras.Model(inner_input, _binary_block("chain")(inner_input),
                                   name="inner")
    twice = keras.Sequential(
        [keras.Input((6, 6, 16)), _binary_block("deep"), inner_functional], name="middle")
    sequential_outer = keras.Sequential(
        [keras.Input((6, 6, 3)), keras.layers.Conv2D(16, 3, padding="same"), twice,
         keras.layers.Flatten(), keras.layers.Dense(4)], name="outer_seq")
    for model in (functional_outer, sequential_outer):
        for layer in model._flatten_layers():
            if isinstance(layer, keras.Model):
                randomize_batch_norms(layer)
    return {"functional_outer": functional_outer, "two_levels": sequential_outer}


@pytest.mark.parametrize("name, lowered", [
    ("functional_outer", ["block/quant_conv2d"]),
    ("two_levels", ["middle/deep/quant_conv2d", "middle/inner/chain/quant_conv2d"]),
])
def test_binary_layers_in_nested_models_are_lowered(name, lowered):
    model = _nested_models()[name]
    result = lowbit_converter.convert_with_report(model)
    # Keras names the inner convs quant_conv2d, quant_conv2d_1, ...: compare
    # the model paths.
    assert [p.rsplit("/", 1)[0] for p in result.lowered_layers] == \
        [p.rsplit("/", 1)[0] for p in lowered]
    ops = [op for op, _ in operators(result.tflite_model)]
    assert ops.count("LowbitBconv2d") == len(lowered), ops
    assert "CONV_2D" in ops  # the float stem
    x = np.random.default_rng(0).standard_normal((3, 6, 6, 3)).astype(np.float32)
    want = model(x, training=False).numpy()
    np.testing.assert_allclose(run_tflite(result.tflite_model, x), want, rtol=1e-5, atol=1e-4)
    float_size = len(lowbit_converter.convert(model, lowbit=False))
    assert len(result.tflite_model) < float_size


class _Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = layers.QuantConv2D(8, 3, padding="same", input_quantizer="ste_sign",
                                       kernel_quantizer="ste_sign")

    def call(self, inputs):
        return self.conv(inputs)


def test_subclassed_model_with_lowbit_layers_inside_is_refused():
    inputs = keras.Input((6, 6, 8))
    inner = _Subclassed(name="custom_block")
    model = keras.Model(inputs, keras.layers.Flatten()(inner(inputs)))
    with pytest.raises(ConversionError, match=r"'custom_block' \(_Subclassed\).*float_fallback"):
        lowbit_converter.convert(model)
    tflite = lowbit_converter.convert(model, float_fallback=True)
    x = np.random.default_rng(1).standard_normal((2, 6, 6, 8)).astype(np.float32)
    np.testing.assert_allclose(run_tflite(tflite, x), model(x).numpy(), rtol=1e-5, atol=1e-5)
