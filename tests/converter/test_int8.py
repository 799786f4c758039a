"""Post-training int8 conversion (lowbit_converter/int8.py, docs/int8.md):
float layers as int8 builtins, LowbitBconv2d / LowbitBgemm /
LowbitMultibitConv2d / LowbitFastfood reading and writing the int8 tensors, the result within
the quantization step of the Keras model, smaller than float + binary, run by
lowbit_tf.lite.Interpreter.
"""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import lowbit_converter
import lowbit_tf
from lowbit_converter import int8 as int8_pass
from lowbit_converter.tflite_schema import schema
from lowbit_models.quicknet import quicknet
from lowbit_tf import layers, quantizers
from lowbit_tf._keras import keras
from lowbit_tf.lite import Interpreter


def _ops(tflite: bytes) -> list[tuple[str, list[int], list[int]]]:
    """(op name, input tensor types, output tensor types) of each operator."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    sub = model.subgraphs[0]
    return [(int8_pass._op_name(model, op),
             [sub.tensors[t].type if t >= 0 else None for t in op.inputs],
             [sub.tensors[t].type for t in op.outputs]) for op in sub.operators]


def _quantization(tflite: bytes, name: str, output: bool = True) -> tuple[float, int]:
    """(scale, zero point) of the output (or input 0) of the first op `name`."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    sub = model.subgraphs[0]
    for op in sub.operators:
        if int8_pass._op_name(model, op) == name:
            q = sub.tensors[op.outputs[0] if output else op.inputs[0]].quantization
            return float(q.scale[0]), int(q.zeroPoint[0])
    raise AssertionError(name)


def _binary_head_model(seed: int) -> keras.Model:
    """A binary conv on the (sign-robust) input, its BatchNorm, pooling and a
    float dense head; BatchNorm statistics set so that every layer matters."""
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((8, 8, 5)),
        layers.QuantConv2D(24, 3, padding="same", pad_values=1.0, use_bias=False,
                           input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip", name="bconv"),
        keras.layers.BatchNormalization(name="bn"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(7, name="head"),
    ])
    rng = np.random.default_rng(seed)
    bn = model.get_layer("bn")
    bn.moving_mean.assign(rng.normal(0, 3, 24))
    bn.moving_variance.assign(rng.uniform(4, 30, 24))
    return model


def _inputs(rng: np.random.Generator, n: int) -> np.ndarray:
    """Values at least 0.25 away from 0 (the binary conv reads the float
    input itself here, but an int8 one would keep these signs too)."""
    x = rng.uniform(0.25, 1.0, (n, 8, 8, 5)) * rng.choice([-1.0, 1.0], (n, 8, 8, 5))
    return x.astype(np.float32)


@pytest.mark.parametrize("seed", [0, 1])
def test_int8_model_is_within_the_quantization_step_of_keras(seed):
    model = _binary_head_model(seed)
    rng = np.random.default_rng(seed)
    calibration, test = _inputs(rng, 64), _inputs(rng, 32)
    result = lowbit_converter.convert_with_report(
        model, int8=True, representative_dataset=lambda: ([x[None]] for x in calibration))
    names = [name for name, _, _ in _ops(result.tflite_model)]
    # The model input goes straight into the binary conv, which reads it as
    # float (no QUANTIZE needed) and writes int8.
    assert names == ["LowbitBconv2d", "MEAN", "FULLY_CONNECTED", "DEQUANTIZE"]
    assert result.int8_fused_tensors == 1
    got = Interpreter(model_content=result.tflite_model).predict(test)
    want = model.predict(test, verbose=0)
    # The binary conv's signs are exact (a float input), so the error is that
    # of rounding: the conv's and the pooling's outputs (half a step each,
    # through the dense weights), the dense weights (per channel, half a step
    # of max|W| / 127, times the pooled values) and the dense output.
    s_conv = _quantization(result.tflite_model, "LowbitBconv2d")[0]
    s_pool = _quantization(result.tflite_model, "MEAN")[0]
    s_out = _quantization(result.tflite_model, "FULLY_CONNECTED")[0]
    w = model.get_layer("head").kernel.numpy()
    pooled = keras.Model(model.inputs, model.layers[-2].output).predict(test, verbose=0)
    bound = (np.abs(w).sum(0) * (s_conv + s_pool) / 2 + s_out / 2
             + np.abs(pooled).sum(1, keepdims=True) * np.abs(w).max(0) / 127 / 2)
    error = np.abs(got - want)
    assert (error <= 1.05 * bound).all(), (error.max(), bound.max())
    # ... and it is an int8 model: the error is not nothing.
    assert error.max() > 1e-3 * np.abs(want).max()


def test_binary_dense_reads_and_writes_int8():
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((20,)),
        keras.layers.Dense(40, name="fc1"),
        layers.QuantDense(33, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                          name="bdense"),
        keras.layers.BatchNormalization(),
        keras.layers.Dense(5, name="fc2"),
    ])
    data = np.random.default_rng(3).standard_normal((48, 20)).astype(np.float32)
    tflite = lowbit_tf.convert(model, int8=True,
                               representative_dataset=lambda: ([x[None]] for x in data))
    ops = _ops(tflite)
    gemm = [op for op in ops if op[0] == "LowbitBgemm"]
    assert len(gemm) == 1
    assert gemm[0][1][0] == schema.TensorType.INT8 and gemm[0][2] == [schema.TensorType.INT8]
    assert [name for name, _, _ in ops].count("QUANTIZE") == 1  # the model input only
    got = Interpreter(model_content=tflite).predict(data[:8])
    assert got.shape == (8, 5) and np.isfinite(got).all()


def _on_the_int8_grid(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Samples on the 0.01 grid from -1.28 to 1.27 (both ends in every sample):
    the calibrated input scale is 0.01, so the int8 input holds these values
    up to float rounding."""
    data = (rng.integers(-128, 128, shape) / 100).astype(np.float32)
    flat = data.reshape(len(data), -1)  # a view: writes reach `data`
    flat[:, 0], flat[:, 1] = -1.28, 1.27
    return data


def _unfused_int8(model: keras.Model, dataset) -> bytes:
    """The int8 model as TensorFlow's quantizer leaves it, before fuse_int8_io:
    a DEQUANTIZE before and a QUANTIZE after each lowbit op, which run float."""
    return int8_pass.quantize(int8_pass.calibrate(lowbit_tf.convert(model), dataset),
                              int8_inputs=False, int8_outputs=False)


def _assert_within_half_an_output_step(tflite: bytes, op: str, model: keras.Model,
                                       data: np.ndarray, got: np.ndarray) -> None:
    """`got` (the int8 model's output for `data`) is within half of `op`'s
    output step of the Keras model (max-pool, op, max-pool) run on the values
    `op`'s int8 input holds (the max-pools commute with the monotone
    quantization), and rounded."""
    from reference import dequantize_int8_np, quantize_int8_np

    s_in, zp_in = _quantization(tflite, op, output=False)
    s_out, _ = _quantization(tflite, op)
    held = dequantize_int8_np(quantize_int8_np(data, s_in, zp_in), s_in, zp_in)
    want = model.layers[2](model.layers[1](model.layers[0](held))).numpy()
    error = np.abs(got - want)
    assert (error <= 0.5 * s_out * 1.001 + 1e-5).all(), (error.max(), s_out)
    assert error.max() > 1e-3 * s_out  # an int8 output: rounded


def _multibit_model(kind: str) -> keras.Model:
    """A multi-bit conv (ABC-Net or DoReFa 2-bit activations and weights)
    between two max-pools (int8, exact: the max of the codes)."""
    keras.utils.set_random_seed(7)
    if kind == "abc":
        multibit = layers.ABCConv2D(12, 3, padding="same", num_weight_bases=2,
                                    num_activation_bases=3, bias_initializer="random_normal",
                                    name="multibit")
    else:
        multibit = layers.QuantConv2D(12, 3, padding="same", name="multibit",
                                      input_quantizer=quantizers.DoReFa(2, "activations"),
                                      kernel_quantizer=quantizers.DoReFa(2, "weights"),
                                      bias_initializer="random_normal")
    return keras.Sequential([keras.Input((8, 8, 6)), keras.layers.MaxPooling2D(2), multibit,
                             keras.layers.MaxPooling2D(2)])


@pytest.mark.parametrize("kind", ["abc", "dorefa"])
def test_multibit_conv_reads_and_writes_int8(kind):
    """No QUANTIZE / DEQUANTIZE beside the multi-bit conv; the result is bit for
    bit the unfused int8 model's (DEQUANTIZE, the op in float, QUANTIZE), and
    within half an output step of the Keras layer on the values the int8
    input holds."""
    model = _multibit_model(kind)
    data = _on_the_int8_grid(np.random.default_rng(7), (24, 8, 8, 6))

    def dataset():
        return ([x[None]] for x in data)

    result = lowbit_converter.convert_with_report(model, int8=True,
                                                  representative_dataset=dataset)
    ops = _ops(result.tflite_model)
    assert [name for name, _, _ in ops] == [
        "QUANTIZE", "MAX_POOL_2D", "LowbitMultibitConv2d", "MAX_POOL_2D", "DEQUANTIZE"]
    int8 = schema.TensorType.INT8
    assert ops[2][1][0] == int8 and ops[2][2] == [int8]
    got = Interpreter(model_content=result.tflite_model).predict(data)

    unfused = _unfused_int8(model, dataset)
    assert "DEQUANTIZE" in [name for name, _, _ in _ops(unfused)][:3]
    np.testing.assert_array_equal(Interpreter(model_content=unfused).predict(data), got)
    _assert_within_half_an_output_step(result.tflite_model, "LowbitMultibitConv2d", model, data,
                                       got)


def test_multibit_conv_reads_int8_and_writes_a_packed_chain():
    """int8 stem -> DoReFa multi-bit conv -> binary conv: the multi-bit op reads
    the stem's int8 codes and hands the binary conv packed words (the chain is
    planned before quantization; its int32 tensor is left alone), which writes
    int8; bit for bit the unfused int8 model."""
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8, 8, 6)),
        keras.layers.Conv2D(16, 1, name="stem"),
        layers.QuantConv2D(12, 3, padding="same", name="multibit",
                           input_quantizer=quantizers.DoReFa(2, "activations"),
                           kernel_quantizer=quantizers.DoReFa(2, "weights")),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(10, 3, padding="same", input_quantizer="ste_sign",
                           kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(3),
    ])
    data = np.random.default_rng(0).uniform(-1, 2, (16, 8, 8, 6)).astype(np.float32)

    def dataset():
        return ([x[None]] for x in data)

    tflite = lowbit_tf.convert(model, int8=True, representative_dataset=dataset)
    int8, packed = schema.TensorType.INT8, schema.TensorType.INT32
    ops = [(name, inputs[0], outputs) for name, inputs, outputs in _ops(tflite)]
    assert ops == [("QUANTIZE", schema.TensorType.FLOAT32, [int8]), ("CONV_2D", int8, [int8]),
                   ("LowbitMultibitConv2d", int8, [packed]), ("LowbitBconv2d", packed, [int8]),
                   ("MEAN", int8, [int8]), ("FULLY_CONNECTED", int8, [int8]),
                   ("DEQUANTIZE", int8, [schema.TensorType.FLOAT32])]
    unfused = _unfused_int8(model, dataset)
    np.testing.assert_array_equal(Interpreter(model_content=tflite).predict(data),
                                  Interpreter(model_content=unfused).predict(data))


def _small_quicknet() -> keras.Model:
    keras.utils.set_random_seed(5)
    return quicknet(section_filters=(32, 64), section_blocks=(2, 2), input_shape=(32, 32, 3),
                    num_classes=10)


@pytest.fixture(scope="module")
def quicknet_models():
    model = _small_quicknet()
    data = np.random.default_rng(5).standard_normal((8, 32, 32, 3)).astype(np.float32)
    float_tflite = lowbit_tf.convert(model)
    result = lowbit_converter.convert_with_report(
        model, int8=True, representative_dataset=lambda: ([x[None]] for x in data))
    return model, data, float_tflite, result


def test_quicknet_int8_keeps_the_binary_blocks_int8(quicknet_models):
    _, data, float_tflite, result = quicknet_models
    ops = _ops(result.tflite_model)
    names = collections.Counter(name for name, _, _ in ops)
    assert names["LowbitBconv2d"] == 4
    # Only the model's own input and output convert: no QUANTIZE / DEQUANTIZE
    # beside a binary conv, and the transition's ReLU is folded into the
    # section's last conv (output_activation RELU).
    assert names["QUANTIZE"] == 1 and names["DEQUANTIZE"] == 1 and "RELU" not in names
    int8 = schema.TensorType.INT8
    for name, inputs, _ in ops:
        if name == "LowbitBconv2d" and inputs[0] == int8:  # a section's first conv
            assert inputs[-1] == int8  # its residual too
    assert sum(1 for name, _, outputs in ops if name == "LowbitBconv2d"
               and outputs == [int8]) == 2  # each section's last conv
    assert len(result.tflite_model) < 0.9 * len(float_tflite)  # the float weights in int8
    got = Interpreter(model_content=result.tflite_model, num_threads=2).predict(data[:2])
    assert got.shape == (2, 10) and np.isfinite(got).all()


def test_full_integer_io(quicknet_models):
    model, data, _, _ = quicknet_models
    tflite = lowbit_tf.convert(model, int8=True,
                               representative_dataset=lambda: ([x[None]] for x in data),
                               inference_input_type=tf.int8, inference_output_type=tf.int8)
    interpreter = Interpreter(model_content=tflite)
    (inp,), (out,) = interpreter.get_input_details(), interpreter.get_output_details()
    assert inp["dtype"] == np.int8 and out["dtype"] == np.int8
    scale, zero_point = inp["quantization"]
    codes = np.clip(np.round(data[:2] / scale) + zero_point, -128, 127).astype(np.int8)
    assert interpreter.predict(codes).dtype == np.int8


@pytest.mark.parametrize("dataset, error, message", [
    (lambda: [], ValueError, "yielded no samples"),
    (lambda: [[np.zeros((1, 32, 32, 3), np.float32)] * 2], ValueError, "has 2 inputs"),
    ([np.zeros((1, 32, 32, 3), np.float32)], TypeError, "must be a callable"),
])
def test_bad_representative_dataset_raises(dataset, error, message):
    with pytest.raises(error, match=message):
        lowbit_tf.convert(_small_quicknet(), int8=True, representative_dataset=dataset)


def _fake_quant_model() -> keras.Model:
    keras.utils.set_random_seed(7)
    return keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.FakeQuantInt8(name="fq_in"),
        keras.layers.Conv2D(16, 3, padding="same", name="conv"),
        layers.FakeQuantInt8(name="fq_conv"),
        layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False,
                           input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip", name="bconv"),
        keras.layers.BatchNormalization(name="bn"),
        layers.FakeQuantInt8(name="fq_bconv"),
        keras.layers.GlobalAveragePooling2D(),
        layers.FakeQuantInt8(name="fq_pool"),
        keras.layers.Dense(4, name="head"),
        layers.FakeQuantInt8(name="fq_out"),
    ])


@pytest.mark.slow  # trains
def test_quantization_aware_model_converts_without_representative_data(tmp_path):
    model = _fake_quant_model()
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (64, 8, 8, 3)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)
    fq = model.get_layer("fq_conv")
    assert float(fq.min.numpy()) < 0 < float(fq.max.numpy())  # ranges were learnt
    model.save(tmp_path / "qat.keras")  # serialisable
    model = keras.models.load_model(tmp_path / "qat.keras")
    result = lowbit_converter.convert_with_report(model, int8=True)
    ops = _ops(result.tflite_model)
    names = [name for name, _, _ in ops]
    assert names == ["QUANTIZE", "CONV_2D", "LowbitBconv2d", "MEAN", "FULLY_CONNECTED",
                     "DEQUANTIZE"], names
    int8 = schema.TensorType.INT8
    assert [(i[0], o) for n, i, o in ops if n == "LowbitBconv2d"] == [(int8, [int8])]
    # The int8 tensors carry the fake-quant ranges: the conv's output scale is
    # (max - min) / 255 of its FakeQuantInt8 (TensorFlow nudges the range by
    # less than a step to put 0 on a level).
    scale = _quantization(result.tflite_model, "LowbitBconv2d")[0]
    fq = model.get_layer("fq_bconv")
    assert scale == pytest.approx((float(fq.max.numpy()) - float(fq.min.numpy())) / 255,
                                  rel=0.02)
    got = Interpreter(model_content=result.tflite_model).predict(x[:16])
    want = model.predict(x[:16], verbose=0)
    step = _quantization(result.tflite_model, "FULLY_CONNECTED")[0]
    # The Keras model computes with the same fake-quantized values, but an
    # int8 kernel that rounds its accumulator differently moves a code by one
    # now and then, which can flip a binary conv's input sign (a change of 2 in
    # its dot product): no bound of a few steps on every value, but the
    # predictions agree and no value is far off.
    error = np.abs(got - want)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.8, error / step
    assert error.max() <= 0.25 * np.ptp(want)


def test_int8_without_data_or_fake_quant_raises():
    with pytest.raises(ValueError, match="FakeQuantInt8 layers"):
        lowbit_tf.convert(_small_quicknet(), int8=True)


def test_float_layers_stay_float32(quicknet_models):
    """int8_float_layers: the stem conv (3 input channels) stays the float32
    CONV_2D of the float model, computing the same values, with a QUANTIZE
    into the int8 rest, which is as without it."""
    from ai_edge_litert.interpreter import OpResolverType

    model, data, float_tflite, all_int8 = quicknet_models
    tflite = lowbit_tf.convert(model, int8=True, int8_float_layers=["stem_conv"],
                               representative_dataset=lambda: ([x[None]] for x in data))
    ops = _ops(tflite)
    f32, int8 = schema.TensorType.FLOAT32, schema.TensorType.INT8
    assert ops[0][0] == "CONV_2D" and ops[0][1][:2] == [f32, f32] and ops[0][2] == [f32]
    assert ops[1][0] == "QUANTIZE"  # the stem's output, into the int8 rest
    assert [n for n, _, _ in ops[2:]] == [n for n, _, _ in _ops(all_int8.tflite_model)[2:]]
    assert all(o == [int8] for n, _, o in ops[2:] if n in ("CONV_2D", "DEPTHWISE_CONV_2D"))
    stems = []
    for content in (float_tflite, tflite):
        interpreter = Interpreter(
            model_content=content, runtime="ai_edge_litert",
            experimental_preserve_all_tensors=True,
            experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        assert np.isfinite(interpreter.predict(data[:1])).all()
        op = schema.ModelT.InitFromPackedBuf(bytearray(content), 0).subgraphs[0].operators[0]
        stems.append(interpreter.get_tensor(int(op.outputs[0])))
    np.testing.assert_array_equal(stems[1], stems[0])


def test_float_layers_by_tensor_name_and_ambiguous_names():
    """Layers named "conv2d" and "conv2d_1" trace as scopes "conv2d_1" and
    "conv2d_1_2": the second is found by name, the first only by its tensor
    name (the error lists it)."""
    keras.utils.set_random_seed(3)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(4, 3, name="conv2d"),
        keras.layers.Conv2D(4, 3, name="conv2d_1"),
        keras.layers.GlobalAveragePooling2D(name="pool"),
    ])
    data = np.random.default_rng(3).standard_normal((4, 8, 8, 3)).astype(np.float32)

    def convert(names):
        return _ops(lowbit_tf.convert(model, int8=True, int8_float_layers=names,
                                      representative_dataset=lambda: ([x[None]] for x in data)))

    f32 = schema.TensorType.FLOAT32
    convs = [o for n, _, o in convert(["conv2d_1"]) if n == "CONV_2D"]
    assert convs[1] == [f32] and convs[0] != [f32]
    with pytest.raises(ValueError, match="give the .tflite output tensor name") as error:
        convert("conv2d")
    tensor = str(error.value).split("one of ['")[1].split("'")[0]
    convs = [o for n, _, o in convert([tensor]) if n == "CONV_2D"]
    assert convs[0] == [f32] and convs[1] != [f32]
    # The last op's tensor is named after the signature, not the layer.
    assert convert([])[-1][0] == "DEQUANTIZE"  # after an int8 MEAN
    assert convert(["pool"])[-1][0] == "MEAN" and convert(["pool"])[-1][2] == [f32]


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(int8_float_layers=["nope"]), ValueError, r"'nope' names no float layer.*'stem_conv'"),
    (dict(int8_float_layers=["s0_b0_bconv"]), ValueError, "names no float layer"),
    (dict(int8_float_layers=[3]), TypeError, "must hold layer names"),
])
def test_bad_float_layers_raise(quicknet_models, kwargs, error, message):
    model, data, _, _ = quicknet_models
    with pytest.raises(error, match=message):
        lowbit_tf.convert(model, int8=True, **kwargs,
                          representative_dataset=lambda: ([x[None]] for x in data))


def test_float_layers_need_post_training_int8():
    with pytest.raises(ValueError, match="int8_float_layers is for post-training int8"):
        lowbit_tf.convert(_small_quicknet(), int8_float_layers=["stem_conv"])


@pytest.mark.slow  # converts through TFLiteConverter's quantization-aware path
def test_quantization_aware_quicknet_converts_like_post_training(quicknet_models, monkeypatch):
    """A QuickNet with a FakeQuantInt8 after each float part (the QAT twin of
    experiments/int8_digits.py): TFLiteConverter leaves each section's ReLU
    float between the last binary conv and the QUANTIZE of its fake-quant; it
    folds into the conv as in post-training int8, so both give the same ops
    and tensor types."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[2] / "experiments"))
    from int8_digits import fake_quant_quicknet

    model, data, _, ptq = quicknet_models
    aware = fake_quant_quicknet(model)
    for layer in model.layers:
        aware.get_layer(layer.name).set_weights(layer.get_weights())
    aware(data, training=True)  # the fake-quant ranges from the data
    result = lowbit_converter.convert_with_report(aware, int8=True)
    assert _ops(result.tflite_model) == _ops(ptq.tflite_model)
    assert result.int8_fused_tensors == ptq.int8_fused_tensors
    got = Interpreter(model_content=result.tflite_model).predict(data[:2])
    assert got.shape == (2, 10) and np.isfinite(got).all()


def test_pruned_kernels_are_stored_sparse():
    """A float kernel 80% zeros is stored in TFLite's sparse encoding (a
    DENSIFY op) and computes what the dense one does; int8 keeps it dense."""
    keras.utils.set_random_seed(11)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(32, 3, name="conv"),
        layers.QuantConv2D(32, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip", name="bconv"),
        keras.layers.Flatten(),
        keras.layers.Dense(256, name="dense"),
    ])
    x = np.random.default_rng(11).standard_normal((4, 8, 8, 3)).astype(np.float32)
    dense = model.get_layer("dense")
    kernel = dense.kernel.numpy()
    pruned = np.where(np.abs(kernel) < np.quantile(np.abs(kernel), 0.8), 0.0, kernel)
    dense.kernel.assign(np.where(pruned == 0, 1e-30, pruned))  # no zeros: stored dense
    stored_dense = lowbit_tf.convert(model)
    want = Interpreter(model_content=stored_dense).predict(x)
    dense.kernel.assign(pruned)
    sparse = lowbit_tf.convert(model)
    assert "DENSIFY" in [name for name, _, _ in _ops(sparse)]
    assert "DENSIFY" not in [name for name, _, _ in _ops(stored_dense)]
    assert len(sparse) < 0.5 * len(stored_dense), (len(sparse), len(stored_dense))
    np.testing.assert_allclose(Interpreter(model_content=sparse).predict(x), want,
                               rtol=1e-5, atol=1e-5 * np.ptp(want))
    int8 = lowbit_tf.convert(model, int8=True, representative_dataset=lambda: ([v[None]]
                                                                               for v in x))
    assert "DENSIFY" not in [name for name, _, _ in _ops(int8)]
    assert np.isfinite(Interpreter(model_content=int8).predict(x)).all()


def _fastfood_model(activation: str | None, use_bias: bool) -> keras.Model:
    """A FastfoodDense (rows of width 6, zero-padded to n = 8, 3 blocks, 20
    units) between two max-pools (int8, exact: the max of the codes)."""
    keras.utils.set_random_seed(11)
    fastfood = layers.FastfoodDense(20, block_size=8, activation=activation, use_bias=use_bias,
                                    bias_initializer="random_normal", name="fastfood")
    return keras.Sequential([keras.Input((8, 6)), keras.layers.MaxPooling1D(2), fastfood,
                             keras.layers.MaxPooling1D(2)])


@pytest.mark.parametrize("activation, use_bias", [("relu", True), (None, False)])
def test_fastfood_reads_and_writes_int8(activation, use_bias):
    """No QUANTIZE / DEQUANTIZE beside the Fastfood op; the result is bit for
    bit the unfused int8 model's (DEQUANTIZE, the op in float, QUANTIZE), and
    within half an output step of the Keras layer on the values the int8
    input holds."""
    model = _fastfood_model(activation, use_bias)
    data = _on_the_int8_grid(np.random.default_rng(11), (24, 8, 6))

    def dataset():
        return ([x[None]] for x in data)

    result = lowbit_converter.convert_with_report(model, int8=True,
                                                  representative_dataset=dataset)
    ops = _ops(result.tflite_model)
    names = [name for name, _, _ in ops]
    at = names.index("LowbitFastfood")
    assert names.count("LowbitFastfood") == 1
    assert names[:at].count("QUANTIZE") == 1 and "DEQUANTIZE" not in names[:at]  # the input's
    assert "QUANTIZE" not in names[at:] and names[at + 1:].count("DEQUANTIZE") == 1
    assert names[-1] == "DEQUANTIZE"  # the model output's
    int8 = schema.TensorType.INT8
    assert ops[at][1][0] == int8 and ops[at][2] == [int8]
    assert result.int8_fused_tensors == 2
    got = Interpreter(model_content=result.tflite_model).predict(data)

    unfused = _unfused_int8(model, dataset)
    unfused_names = [name for name, _, _ in _ops(unfused)]
    at = unfused_names.index("LowbitFastfood")
    assert unfused_names[at - 1] == "DEQUANTIZE" and unfused_names[at + 1] == "QUANTIZE"
    np.testing.assert_array_equal(Interpreter(model_content=unfused).predict(data), got)
    _assert_within_half_an_output_step(result.tflite_model, "LowbitFastfood", model, data, got)
