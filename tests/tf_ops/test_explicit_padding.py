"""LowbitBconv2d's EXPLICIT padding through the TF op (lowbit_tf.ops.bconv2d
with padding=((top, bottom), (left, right))): outputs bit for bit against the
NumPy reference (windows wholly in the padding included), its gradients against
TensorFlow's float conv of the explicitly padded signs, and its errors. The
TFLite kernels run the same cases in tests/tflite/test_tflite_runtime.py and
every core kernel in custom_ops/tests/bconv2d_check.cc."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from reference import bconv2d_np, bitpack_np, sign

from lowbit_tf import ops

CASES = [
    # (n, h, w, c, f, kernel, strides, dilations, ((top, bottom), (left, right)), pad_value)
    (1, 5, 6, 33, 5, (3, 3), (1, 1), (1, 1), ((2, 0), (1, 3)), 0),
    (2, 4, 5, 65, 4, (2, 3), (2, 2), (1, 1), ((0, 3), (4, 1)), 1),
    (1, 3, 4, 40, 6, (2, 3), (1, 1), (2, 1), ((3, 4), (0, 5)), 0),  # whole windows padded
    (1, 1, 1, 7, 3, (1, 1), (1, 1), (1, 1), ((2, 2), (1, 1)), 1),
    (2, 6, 3, 64, 9, (3, 2), (1, 2), (1, 2), ((0, 0), (0, 0)), 0),  # = VALID
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("packed_input", [False, True])
def test_explicit_padding_matches_the_reference(case, packed_input):
    n, h, w, c, f, kernel, strides, dilations, padding, pad_value = case
    rng = np.random.default_rng(h * w + c)
    x = rng.standard_normal((n, h, w, c)).astype(np.float32)
    k = rng.standard_normal((*kernel, c, f)).astype(np.float32)
    m = rng.uniform(0.5, 2, f).astype(np.float32)
    b = rng.uniform(-2, 2, f).astype(np.float32)
    want = bconv2d_np(x, k, m, b, strides, dilations, padding, pad_value, "relu")
    got = ops.bconv2d(
        bitpack_np(x) if packed_input else x, ops.pack_filter(k), m, b, kernel_size=kernel,
        channels_in=c, strides=strides, dilations=dilations, padding=padding,
        pad_value=pad_value, activation="relu",
    )  # fmt: skip
    np.testing.assert_array_equal(got.numpy(), want)
    # The bit-packed output is the packing of the float one.
    packed = ops.bconv2d(x, ops.pack_filter(k), m, b, kernel_size=kernel, strides=strides,
                         dilations=dilations, padding=padding, pad_value=pad_value,
                         output_type="bitpacked")  # fmt: skip
    float_out = bconv2d_np(x, k, m, b, strides, dilations, padding, pad_value)
    np.testing.assert_array_equal(packed.numpy(), bitpack_np(float_out))


@pytest.mark.parametrize("pad_value", [0, 1])
def test_explicit_padding_gradients_equal_the_float_conv_of_padded_signs(pad_value):
    rng = np.random.default_rng(pad_value)
    x = tf.constant(rng.uniform(-1.5, 1.5, (2, 5, 4, 6)).astype(np.float32))
    k = tf.constant(rng.uniform(-1.5, 1.5, (3, 2, 6, 5)).astype(np.float32))
    padding = ((2, 1), (0, 3))
    weights = tf.constant(rng.standard_normal((2, 3, 6, 5)).astype(np.float32))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, k])
        y = ops.bconv2d(x, k, padding=padding, pad_value=pad_value, strides=(2, 1))
        loss = tf.reduce_sum(y * weights)
        # The emulation: straight-through signs (ste_sign, clip 1), padded, float conv.
        xs = x + tf.stop_gradient(sign(x.numpy()) - x)
        ks = k + tf.stop_gradient(sign(k.numpy()) - k)
        xs = xs * tf.cast(tf.abs(x) <= 1, tf.float32) + tf.stop_gradient(
            xs * tf.cast(tf.abs(x) > 1, tf.float32))
        ks = ks * tf.cast(tf.abs(k) <= 1, tf.float32) + tf.stop_gradient(
            ks * tf.cast(tf.abs(k) > 1, tf.float32))
        padded = tf.pad(xs, [[0, 0], [2, 1], [0, 3], [0, 0]], constant_values=float(pad_value))
        y_float = tf.nn.conv2d(padded, ks, strides=[1, 2, 1, 1], padding="VALID")
        loss_float = tf.reduce_sum(y_float * weights)
    np.testing.assert_array_equal(y.numpy(), y_float.numpy())
    for got, want in zip(tape.gradient(loss, [x, k]), tape.gradient(loss_float, [x, k]),
                         strict=True):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("padding, message", [
    (((1, -1), (0, 0)), "sizes >= 0"),
    (((1, 2, 3), (0, 0)), "((top, bottom), (left, right))"),
    (((1.5, 0), (0, 0)), "((top, bottom), (left, right))"),
    ("EXPLICIT", "or the sizes ((top, bottom), (left, right)), got 'EXPLICIT'"),
])
def test_bad_explicit_padding_is_a_value_error(padding, message):
    x = np.ones((1, 4, 4, 8), np.float32)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ops.bconv2d(x, np.ones((3, 3, 8, 2), np.float32), padding=padding)


def test_padded_input_smaller_than_the_window_names_the_sizes():
    x = np.ones((1, 2, 2, 8), np.float32)
    with pytest.raises(tf.errors.InvalidArgumentError, match="padded input of 3x2"):
        ops.bconv2d(x, np.ones((4, 1, 8, 2), np.float32), padding=((1, 0), (0, 0)))


def test_explicit_pads_without_explicit_padding_are_refused():
    from lowbit_tf._native import load_tf_ops

    x = tf.ones((1, 4, 4, 8))
    filters = ops.pack_filter(tf.ones((3, 3, 8, 2)))
    with pytest.raises(tf.errors.InvalidArgumentError, match='explicit_pad_left = 2 needs '
                                                             'padding "EXPLICIT"'):
        load_tf_ops().lowbit_bconv2d(
            x, filters, tf.ones([2]), tf.zeros([2]), [], channels_in=8, kernel_h=3, kernel_w=3,
            padding="SAME", explicit_pad_left=2,
        )  # fmt: skip
