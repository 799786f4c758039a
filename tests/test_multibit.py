"""LowbitMultibitConv2d: multi-bit convolution (ABC-Net, DoReFa, ternary / k-bit
weights) as a sum of binary convolutions.

NumPy reference (tests/reference.py) = TF op = TFLite kernel, bit for bit: the
plane dot products are exact integers and the reference combines them in the
op's documented float32 order. Shapes cover channel tails, strides, dilations,
both paddings and pad values, and leading dimensions beyond the batch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from reference import activation_planes_np, multibit_conv2d_np

TESTS = Path(__file__).resolve().parent

tf = pytest.importorskip("tensorflow")
from lowbit_tf import ops, quantizers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")

RUNTIMES = ("ai_edge_litert", "tensorflow")


def random_case(rng: np.random.Generator) -> dict:
    mode = str(rng.choice(["sign", "abc", "dorefa"]))
    kernel = (int(rng.integers(1, 4)), int(rng.integers(1, 4)))
    case = dict(
        mode=mode,
        lead=(int(rng.integers(1, 3)),) + ((2,) if rng.random() < 0.25 else ()),
        h=int(rng.integers(kernel[0] + 2, 9)),
        w=int(rng.integers(kernel[1] + 2, 9)),
        cin=int(rng.choice([1, 5, 31, 32, 33, 70])),
        cout=int(rng.integers(1, 20)),
        m=int(rng.integers(1, 5)),
        kernel=kernel,
        strides=(int(rng.integers(1, 3)), int(rng.integers(1, 3))),
        dilations=(int(rng.integers(1, 3)), 1),
        padding=str(rng.choice(["SAME", "VALID"])),
        pad_value=int(rng.integers(0, 2)),
        activation="relu" if rng.random() < 0.3 else None,
        shifts=None,
        bits=0,
    )
    if mode == "abc":
        case["shifts"] = rng.uniform(-0.5, 1.5, int(rng.integers(1, 5))).astype(np.float32)
    if mode == "dorefa":
        case["bits"] = int(rng.integers(1, 5))
    return case


def case_data(case: dict, rng: np.random.Generator):
    """Input (with exact plane thresholds and ties included), +-1 weight planes
    and float scales."""
    shape = case["lead"] + (case["h"], case["w"], case["cin"])
    x = rng.uniform(-1.5, 1.5, shape).astype(np.float32)
    if case["mode"] == "dorefa":  # values on rounding ties and on the grid
        n = 2 ** case["bits"] - 1
        ties = (rng.integers(0, 2 * n + 1, shape) / (2 * n)).astype(np.float32)
        x = np.where(rng.random(shape) < 0.3, ties, x)
    if case["mode"] == "abc":  # values exactly on a threshold 0.5 - v
        on = (np.float32(0.5) - case["shifts"][0]).astype(np.float32)
        x = np.where(rng.random(shape) < 0.2, on, x)
    kh, kw = case["kernel"]
    planes = rng.choice([-1.0, 1.0], (case["m"], kh, kw, case["cin"], case["cout"]))
    planes = planes.astype(np.float32)
    alphas = rng.uniform(0.1, 2.0, (case["m"], case["cout"])).astype(np.float32)
    count = {"sign": 1, "abc": len(case["shifts"]) if case["shifts"] is not None else 0,
             "dorefa": case["bits"] + 1}[case["mode"]]
    betas = rng.uniform(0.1, 1.0, count).astype(np.float32)
    bias = rng.standard_normal(case["cout"]).astype(np.float32)
    return x, planes, alphas, betas, bias


def run_tf(case, x, planes, alphas, betas, bias):
    return ops.multibit_conv2d(
        x, ops.pack_filter_planes(planes), alphas, betas, bias,
        activation_mode=case["mode"], shifts=case["shifts"], activation_bits=case["bits"],
        kernel_size=case["kernel"], strides=case["strides"], dilations=case["dilations"],
        padding=case["padding"], pad_value=case["pad_value"], activation=case["activation"],
    ).numpy()


def run_reference(case, x, planes, alphas, betas, bias):
    lead = x.shape[:-3]
    flat = x.reshape((-1,) + x.shape[-3:])
    y = multibit_conv2d_np(
        flat, planes, alphas, betas, bias, case["mode"], case["shifts"], case["bits"],
        case["strides"], case["dilations"], case["padding"], case["pad_value"],
        case["activation"],
    )
    return y.reshape(lead + y.shape[1:])


@pytest.mark.parametrize("seed", range(24))
def test_tf_op_matches_reference_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    case = random_case(rng)
    data = case_data(case, rng)
    got = run_tf(case, *data)
    expected = run_reference(case, *data)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def test_planes_reproduce_the_quantizers():
    """The activation planes with their betas are the Keras quantizers' values."""
    rng = np.random.default_rng(1)
    x = np.concatenate([rng.uniform(-0.5, 1.5, 500), np.arange(-2, 18) / 14]).astype(np.float32)
    for bits in (1, 2, 3, 4):
        planes = activation_planes_np(x, "dorefa", bits=bits)
        value = np.tensordot(ops.dorefa_activation_betas(bits).astype(np.float64), planes, 1)
        expected = quantizers.DoReFa(k_bit=bits, mode="activations")(x).numpy()
        np.testing.assert_allclose(value, expected, rtol=0, atol=1e-6)
    shifts = quantizers.abc_activation_shifts(3).astype(np.float32)
    expected = quantizers.abc_activation_bases(x, shifts).numpy()
    np.testing.assert_array_equal(activation_planes_np(x, "abc", shifts), expected)


def test_single_plane_is_the_binary_convolution():
    """M = P = 1 with unit scales gives LowbitBconv2d's integer dot products."""
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 9, 7, 45)).astype(np.float32)
    kernel = rng.standard_normal((3, 3, 45, 12)).astype(np.float32)
    got = ops.multibit_conv2d(x, ops.pack_filter_planes(kernel[None]), np.ones((1, 12)), [1.0],
                              activation_mode="sign", kernel_size=3, padding="SAME")
    expected = ops.bconv2d(x, ops.pack_filter(kernel), kernel_size=3, padding="SAME")
    np.testing.assert_array_equal(got.numpy(), expected.numpy())


def tflite_model(case, x, planes, alphas, betas, bias, options=None, shapes=None):
    from flatbuffers import flexbuffers
    from test_tflite_runtime import ModelBuilder

    out_shape = run_tf(case, x, planes, alphas, betas, bias).shape
    opts = dict(
        channels_in=case["cin"], kernel_h=case["kernel"][0], kernel_w=case["kernel"][1],
        stride_h=case["strides"][0], stride_w=case["strides"][1],
        dilation_h=case["dilations"][0], dilation_w=case["dilations"][1],
        padding=case["padding"], pad_value=case["pad_value"],
        activation="RELU" if case["activation"] else "NONE",
        activation_mode=case["mode"], activation_bits=case["bits"],
    )
    opts.update(options or {})
    packed = ops.pack_filter_planes(planes).numpy()
    shifts = np.zeros(0, np.float32) if case["shifts"] is None else case["shifts"]
    constants = dict(filter=packed, alphas=alphas, shifts=shifts, betas=betas, bias=bias)
    constants.update(shapes or {})
    mb = ModelBuilder()
    inputs = [mb.tensor(x.shape, np.float32, name="x")]
    for name, value in constants.items():
        inputs.append(mb.tensor(value.shape, value.dtype, value, name=name))
    y = mb.tensor(out_shape, np.float32, name="y")
    mb.custom_op("LowbitMultibitConv2d", inputs, [y], bytes(flexbuffers.Dumps(
        {k: v for k, v in opts.items() if v is not None})))
    return mb.finish([inputs[0]], [y])


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("seed", range(6))
def test_tflite_kernel_matches_tf_op(runtime, seed):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(100 + seed)
    case = random_case(rng)
    data = case_data(case, rng)
    expected = run_tf(case, *data)
    model = tflite_model(case, *data)
    for threads in (1, 2):
        got = Interpreter(model_content=model, runtime=runtime, num_threads=threads).predict(
            data[0])
        np.testing.assert_array_equal(got, expected)


BAD_CASE = dict(mode="abc", lead=(1,), h=5, w=5, cin=33, cout=4, m=2, kernel=(3, 3),
                strides=(1, 1), dilations=(1, 1), padding="VALID", pad_value=0,
                activation=None, shifts=np.array([0.2, 0.5], np.float32), bits=0)


@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("options, shapes, message", [
    ({"activation_mode": "ternary"}, None, "activation_mode"),
    ({"activation_mode": None}, None, "activation_mode"),
    ({"activation_bits": 3}, None, "activation_bits"),
    ({"channels_in": 32}, None, "channels"),
    ({"kernel_h": 2}, None, "words"),
    ({"pad_value": 2}, None, "pad_value"),
    (None, {"betas": np.ones(3, np.float32)}, "betas"),
    (None, {"alphas": np.ones((3, 4), np.float32)}, "alphas"),
    (None, {"shifts": np.zeros(0, np.float32)}, "shifts"),
    (None, {"bias": np.zeros(5, np.float32)}, "bias"),
    (None, {"filter": np.zeros((2, 4, 3), np.int32)}, "words"),
])
def test_tflite_bad_input_raises(runtime, options, shapes, message):
    from lowbit_tf.lite import Interpreter

    rng = np.random.default_rng(2)
    data = case_data(BAD_CASE, rng)
    model = tflite_model(BAD_CASE, *data, options=options, shapes=shapes)
    with pytest.raises(Exception, match=message):
        Interpreter(model_content=model, runtime=runtime).predict(data[0])


def test_tf_op_bad_input_raises():
    rng = np.random.default_rng(3)
    x, planes, alphas, betas, bias = case_data(BAD_CASE, rng)
    packed = ops.pack_filter_planes(planes)
    common = dict(kernel_size=3, activation_mode="abc", shifts=BAD_CASE["shifts"])
    with pytest.raises(tf.errors.InvalidArgumentError, match="betas"):
        ops.multibit_conv2d(x, packed, alphas, [1.0], **common)
    with pytest.raises(tf.errors.InvalidArgumentError, match="alphas"):
        ops.multibit_conv2d(x, packed, alphas[:1], betas, **common)
    with pytest.raises(tf.errors.InvalidArgumentError, match="words"):
        ops.multibit_conv2d(x, packed, alphas, betas, **dict(common, kernel_size=2))
    with pytest.raises(ValueError, match="shifts"):
        ops.multibit_conv2d(x, packed, alphas, betas, kernel_size=3, activation_mode="abc")
    with pytest.raises(ValueError, match="activation_mode"):
        ops.multibit_conv2d(x, packed, alphas, betas, kernel_size=3, activation_mode="tern")
    with pytest.raises(ValueError, match="activation_bits"):
        ops.multibit_conv2d(x, packed, alphas, betas, kernel_size=3, activation_mode="dorefa",
                            activation_bits=17)
    with pytest.raises(ValueError, match="rank"):
        ops.multibit_conv2d(x[0], packed, alphas, betas, **common)
    with pytest.raises(ValueError, match="filter"):
        ops.multibit_conv2d(x, planes, alphas, betas, **common)
    from lowbit_tf._native import load_tf_ops

    with pytest.raises(tf.errors.InvalidArgumentError, match="activation_bits"):
        load_tf_ops().lowbit_multibit_conv2d(
            x, packed, alphas, [], [1.0, 1.0], bias, channels_in=33, kernel_h=3, kernel_w=3,
            activation_mode="dorefa", activation_bits=0)


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
    with pytest.raises(ConversionError, match=r"'float_kernel'.*symmetric grid"):
        lowbit_converter.convert(float_kernel)
    odd_pad = keras.Sequential([
        keras.Input((6, 6, 4)),
        layers.ABCConv2D(4, 3, padding="same", pad_values=0.5, name="abc_pad"),
    ])
    with pytest.raises(ConversionError, match=r"'abc_pad'.*pad_values=0.5"):
        lowbit_converter.convert(odd_pad)


# ---------------------------------------------------------------------------
# Gradients: the op's registered gradient = the float training path's.

def _layer_and_planes(kind: str, seed: int):
    """A Keras layer (float training path) and the op's inputs equal to it."""
    from lowbit_converter.lower_multibit import layer_planes
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(seed)
    if kind == "abc":
        layer = layers.ABCConv2D(6, 3, padding="same", num_weight_bases=2,
                                 num_activation_bases=3, bias_initializer="random_normal")
    elif kind == "dorefa":
        layer = layers.QuantConv2D(6, 3, strides=2, padding="same",
                                   input_quantizer=quantizers.DoReFa(2, "activations"),
                                   kernel_quantizer=quantizers.DoReFa(2, "weights"),
                                   bias_initializer="random_normal")
    else:
        layer = layers.QuantConv2D(6, 3, padding="same", pad_values=1.0,
                                   input_quantizer="ste_sign", kernel_quantizer="ste_tern",
                                   bias_initializer="random_normal", activation="relu")
    layer.build((None, 7, 7, 5))
    return layer, layer_planes(layer)


@pytest.mark.parametrize("kind", ["abc", "dorefa", "sign"])
def test_gradients_match_the_float_training_path(kind):
    layer, planes = _layer_and_planes(kind, seed=11)
    x = tf.constant(np.random.default_rng(6).uniform(-1.5, 1.5, (2, 7, 7, 5)).astype(np.float32))
    upstream = tf.constant(np.random.default_rng(7).standard_normal(
        layer.compute_output_shape((2, 7, 7, 5))).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        keras_y = layer(x)
        keras_loss = tf.reduce_sum(keras_y * upstream)
    want = {"x": tape.gradient(keras_loss, x), "bias": tape.gradient(keras_loss, layer.bias)}
    if kind == "abc":
        want["shifts"] = tape.gradient(keras_loss, layer.activation_shifts)
        want["betas"] = tape.gradient(keras_loss, layer.activation_betas)

    alphas = tf.constant(planes.alphas)
    betas = tf.constant(planes.betas)
    shifts = None if planes.shifts is None else tf.constant(planes.shifts)
    bias = tf.constant(np.asarray(layer.bias))
    watched = {"x": x, "alphas": alphas, "betas": betas, "bias": bias}
    if shifts is not None:
        watched["shifts"] = shifts
    with tf.GradientTape() as tape:
        tape.watch(list(watched.values()))
        y = ops.multibit_conv2d(
            x, ops.pack_filter_planes(planes.weights), alphas, betas, bias,
            activation_mode=planes.mode, shifts=shifts, activation_bits=planes.bits,
            kernel_size=3, strides=layer.strides, padding="SAME", pad_value=int(layer.pad_values),
            activation="relu" if kind == "sign" else None,
        )
        loss = tf.reduce_sum(y * upstream)
    np.testing.assert_allclose(y, keras_y, rtol=1e-5, atol=1e-5)
    got = dict(zip(watched, tape.gradient(loss, list(watched.values())), strict=True))
    for key, value in want.items():
        np.testing.assert_allclose(got[key], value, rtol=1e-4, atol=1e-4, err_msg=key)

    # alphas: exact, against the float formula y = sum_m alphas[m] conv(a, B_m) + b.
    a = tf.constant(np.tensordot(planes.betas, activation_planes_np(
        x.numpy(), planes.mode, planes.shifts, planes.bits), 1).astype(np.float32))
    if int(layer.pad_values):
        pad = [[0, 0], [1, 1], [1, 1], [0, 0]]
        a, padding = tf.pad(a, pad, constant_values=float(np.sum(planes.betas))), "VALID"
    else:
        padding = "SAME"
    with tf.GradientTape() as tape:
        tape.watch(alphas)
        kernel = tf.einsum("mc,mhwic->hwic", alphas, planes.weights)
        y_float = tf.nn.conv2d(a, kernel, layer.strides, padding) + bias
        if kind == "sign":
            y_float = tf.nn.relu(y_float)
        loss = tf.reduce_sum(y_float * upstream)
    np.testing.assert_allclose(got["alphas"], tape.gradient(loss, alphas), rtol=1e-4, atol=1e-3)
