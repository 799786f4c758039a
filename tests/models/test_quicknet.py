"""QuickNet builds, converts (one LowbitBconv2d per binary block) and runs on our
TFLite kernels with the Keras outputs."""

from __future__ import annotations

import numpy as np
import pytest
from keras_helpers import randomize_batch_norms

import lowbit_converter
from lowbit_models.quicknet import quicknet
from lowbit_tf._keras import keras
from lowbit_tf.lite import Interpreter


@pytest.mark.parametrize("config", [
    dict(input_shape=(64, 64, 3), num_classes=10, section_filters=(32, 48),
         section_blocks=(2, 1)),
    dict(),  # the real QuickNet at 224x224x3
], ids=["small", "quicknet-224"])
def test_quicknet_converts_and_runs_on_lowbit_kernels(config):
    # Fixed weights. With Keras's global random state as earlier tests leave it,
    # some draws give a binary layer an input within ~1e-7 of zero (one seen:
    # 1.2e-7 into s2_b0_bconv after a residual add); the converted model folds
    # the batch norm into the op's multiplier and bias and adds the residual in
    # its epilogue, which rounds differently from Keras's separate ops, so that
    # sign can flip and the logits move by ~2% (every kernel path alike, the
    # reference included; the all-float .tflite of the same model matches to
    # 4e-7). A model without such near-ties is what this test can hold exact.
    keras.utils.set_random_seed(0)
    model = quicknet(**config)
    randomize_batch_norms(model)
    shape = model.input_shape[1:]
    x = np.random.default_rng(1).standard_normal((1, *shape)).astype(np.float32)
    expected = model(x, training=False).numpy()
    result = lowbit_converter.convert_with_report(model)
    binary_blocks = [layer.name for layer in model.layers if layer.name.endswith("_bconv")]
    assert result.lowered_layers == sorted(binary_blocks)
    assert result.report.custom_ops == {"LowbitBconv2d": len(binary_blocks)}
    got = Interpreter(model_content=result.tflite_model, num_threads=2).predict(x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_quicknet_size():
    model = quicknet()
    assert model.count_params() == 13_245_544
    assert sum(layer.name.endswith("_bconv") for layer in model.layers) == 16


def test_bad_configuration_is_named():
    with pytest.raises(ValueError, match="'quicknet_huge'"):
        quicknet("quicknet_huge")
    with pytest.raises(ValueError, match=r"\(32, 64\) and section_blocks \(1,\)"):
        quicknet(section_filters=(32, 64), section_blocks=(1,))
