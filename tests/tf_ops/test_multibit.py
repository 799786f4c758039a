"""LowbitMultibitConv2d: multi-bit convolution (ABC-Net, DoReFa, ternary / k-bit
weights) as a sum of binary convolutions, as a TF op.

NumPy reference (tests/helpers/reference.py) = TF op, bit for bit: the plane
dot products are exact integers and the reference combines them in the op's
documented float32 order. Shapes cover channel tails, strides, dilations, both
paddings and pad values, and leading dimensions beyond the batch. Bad input
raises; the op's registered gradient equals the float training path's. The
TFLite kernel: tests/tflite/test_multibit.py; the converter:
tests/converter/test_multibit.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import activation_planes_np, bitpack_np, quantize_int8_np

tf = pytest.importorskip("tensorflow")

from multibit_cases import (  # noqa: E402
    BAD_CASE,
    case_data,
    int8_input,
    int8_reference_input,
    random_case,
    run_reference,
    run_tf,
)

from lowbit_tf import ops, quantizers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")


@pytest.mark.parametrize("seed", range(24))
def test_tf_op_matches_reference_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    case = random_case(rng)
    data = case_data(case, rng)
    got = run_tf(case, *data)
    expected = run_reference(case, *data)
    assert got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


def int8_case(seed: int):
    """A random case with int8 input data, the float input of the same planes
    and an output quantization that neither saturates everything nor rounds
    everything to the zero point."""
    rng = np.random.default_rng(300 + seed)
    case = random_case(rng)
    data = case_data(case, rng)
    q, scale, zero_point = int8_input(case, rng)
    x = int8_reference_input(case, q, scale, zero_point)
    y = run_reference(case, x, *data[1:])
    out_scale = float(np.float32(max(float(np.abs(y).max()), 1.0) / 100))
    out_zero_point = int(rng.integers(-30, 31))
    return case, data, (q, scale, zero_point), x, y, (out_scale, out_zero_point)


@pytest.mark.parametrize("seed", range(20))
def test_tf_op_int8_matches_reference_bit_for_bit(seed):
    case, data, (q, scale, zero_point), x, y, (out_scale, out_zero_point) = int8_case(seed)
    int8_in = dict(input_scale=scale, input_zero_point=zero_point)
    params = data[1:]
    np.testing.assert_array_equal(run_tf(case, q, *params, **int8_in), y)
    # The same planes as the float input of the dequantized values.
    np.testing.assert_array_equal(run_tf(case, q, *params, **int8_in), run_tf(case, x, *params))
    got = run_tf(case, q, *params, output_type="int8", output_scale=out_scale,
                 output_zero_point=out_zero_point, **int8_in)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, quantize_int8_np(y, out_scale, out_zero_point))
    # int8 in, packed out (an int8 model's multi-bit conv before a binary one).
    np.testing.assert_array_equal(run_tf(case, q, *params, output_type="bitpacked", **int8_in),
                                  bitpack_np(y))


@pytest.mark.parametrize("seed", range(16))
def test_tf_op_packed_input_and_output_match_reference(seed):
    """Bit-packed output: the signs of the float output, packed as the next
    binary layer packs them; packed input ("sign"): the bitpack of the input."""
    rng = np.random.default_rng(500 + seed)
    case = random_case(rng)
    if seed % 2:
        case.update(mode="sign", shifts=None, bits=0)
    x, *params = case_data(case, rng)
    y = run_reference(case, x, *params)
    got = run_tf(case, x, *params, output_type="bitpacked")
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, bitpack_np(y))
    if case["mode"] == "sign":
        packed = ops.bitpack(x).numpy()
        np.testing.assert_array_equal(run_tf(case, packed, *params, channels_in=case["cin"]), y)
        np.testing.assert_array_equal(
            run_tf(case, packed, *params, channels_in=case["cin"], output_type="bitpacked"),
            bitpack_np(y))


def test_tf_op_bad_int8_and_packed_io_raises():
    from lowbit_tf._native import load_tf_ops

    rng = np.random.default_rng(3)
    x, planes, alphas, betas, bias = case_data(BAD_CASE, rng)
    packed = ops.pack_filter_planes(planes)
    q = np.zeros(x.shape, np.int8)
    common = dict(kernel_size=3, activation_mode="abc", shifts=BAD_CASE["shifts"])
    with pytest.raises(ValueError, match="input_scale must be finite and > 0, got 0.0"):
        ops.multibit_conv2d(q, packed, alphas, betas, input_scale=0.0, **common)
    with pytest.raises(ValueError, match=r"input_zero_point must be an int in \[-128, 127\]"):
        ops.multibit_conv2d(q, packed, alphas, betas, input_zero_point=200, **common)
    with pytest.raises(ValueError, match="output_scale must be finite and > 0"):
        ops.multibit_conv2d(q, packed, alphas, betas, output_type="int8", output_scale=-1.0,
                            **common)
    with pytest.raises(ValueError, match="packed int32 input with activation_mode='sign' only"):
        ops.multibit_conv2d(ops.bitpack(x), packed, alphas, betas, channels_in=33, **common)
    with pytest.raises(ValueError, match="needs channels_in for a packed input"):
        ops.multibit_conv2d(ops.bitpack(x), packed, alphas, betas[:1], kernel_size=3,
                            activation_mode="sign")
    with pytest.raises(TypeError, match="inputs must be float32, int8 or packed int32"):
        ops.multibit_conv2d(x.astype(np.float16), packed, alphas, betas, **common)
    raw = dict(channels_in=33, kernel_h=3, kernel_w=3, activation_mode="abc")
    args = (packed, alphas, BAD_CASE["shifts"], betas, bias)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="LowbitMultibitConv2d: input scale must be finite and > 0, got 0"):
        load_tf_ops().lowbit_multibit_conv2d(q, *args, input_scale=0.0, **raw)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match="LowbitMultibitConv2d: output scale must be finite and > 0"):
        load_tf_ops().lowbit_multibit_conv2d(q, *args, output_type="int8", Tout=tf.int8,
                                             output_scale=float("inf"), **raw)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match='output_type "int8" needs Tout = int8'):
        load_tf_ops().lowbit_multibit_conv2d(q, *args, output_type="int8", **raw)
    with pytest.raises(tf.errors.InvalidArgumentError,
                       match=r'packed \(int32\) input is the single plane of activation_mode'):
        load_tf_ops().lowbit_multibit_conv2d(ops.bitpack(x), *args, **raw)


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

