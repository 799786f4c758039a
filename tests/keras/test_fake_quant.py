"""lowbit_tf.layers.FakeQuantInt8: the range it learns and the values it gives."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from lowbit_tf import layers


def test_range_follows_training_batches_only():
    layer = layers.FakeQuantInt8(momentum=0.5)
    first = np.array([[-2.0, 1.0, 3.0]], np.float32)
    layer(first, training=True)  # the first batch sets the range
    assert (layer.min.numpy(), layer.max.numpy()) == (-2.0, 3.0)
    layer(np.array([[-4.0, 5.0]], np.float32), training=True)  # then halfway (momentum 0.5)
    assert (layer.min.numpy(), layer.max.numpy()) == (-3.0, 4.0)
    layer(np.array([[-100.0, 100.0]], np.float32), training=False)  # inference: fixed
    assert (layer.min.numpy(), layer.max.numpy()) == (-3.0, 4.0)


def test_values_are_tensorflows_fake_quant_of_the_range():
    layer = layers.FakeQuantInt8()
    x = np.linspace(-5, 5, 101, dtype=np.float32)[None]
    layer(np.array([[-3.0, 4.0]], np.float32), training=True)
    want = tf.quantization.fake_quant_with_min_max_vars(x, -3.0, 4.0, num_bits=8)
    np.testing.assert_array_equal(layer(x).numpy(), want.numpy())
    assert len(np.unique(layer(x).numpy())) <= 256


def test_positive_range_still_holds_zero():
    layer = layers.FakeQuantInt8()
    layer(np.array([[1.0, 2.0]], np.float32), training=True)
    assert layer(np.array([[0.0]], np.float32)).numpy()[0, 0] == 0.0


def test_bad_momentum_raises():
    with pytest.raises(ValueError, match="momentum must be in \\[0, 1\\), got 1.5"):
        layers.FakeQuantInt8(momentum=1.5, name="fq")
