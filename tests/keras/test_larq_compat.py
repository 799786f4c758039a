"""lowbit_tf.compat.load_larq_model on files real Larq saved.

tests/data/larq/{mnist_cnn,every_layer,sequences}.h5 were saved by Larq 0.14 on
Keras 2 (tests/helpers/make_larq_reference.py) with seeded weights;
models.npz holds an input and Larq's output (inference) for each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf

import lowbit_tf
from lowbit_tf import compat, layers, lite, quantizers

DATA = Path(__file__).resolve().parents[1] / "data" / "larq"
EXPECTED = np.load(DATA / "models.npz")
MODELS = ["mnist_cnn", "every_layer", "sequences"]


@pytest.mark.parametrize("name", MODELS)
def test_larq_model_loads_with_larqs_outputs(name):
    model = compat.load_larq_model(DATA / f"{name}.h5")
    x, expected = EXPECTED[f"{name}/x"], EXPECTED[f"{name}/y"]
    y = model(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(y, expected, rtol=0, atol=1e-5 * np.max(np.abs(expected)))
    larq_layers = [layer for layer in model.layers if type(layer).__name__.startswith("Quant")]
    assert larq_layers and all(type(layer).__module__.startswith("lowbit_tf.")
                               for layer in larq_layers)


def test_every_larq_object_is_translated():
    model = compat.load_larq_model(DATA / "every_layer.h5")
    by_name = {layer.name: layer for layer in model.layers}
    conv = by_name["binary_conv"]
    assert isinstance(conv, layers.QuantConv2D) and conv.pad_values == 1.0
    assert conv.kernel_quantizer.clip_value == 1.25 and conv.kernel_constraint.clip_value == 1.25
    kinds = {type(q).__name__ for layer in model.layers
             for q in (getattr(layer, "input_quantizer", None),
                       getattr(layer, "kernel_quantizer", None),
                       getattr(layer, "depthwise_quantizer", None),
                       getattr(layer, "pointwise_quantizer", None)) if q is not None}
    assert kinds == {"SteSign", "ApproxSign", "MagnitudeAwareSign", "SwishSign", "NoOp",
                     "SteHeaviside", "SteTern", "DoReFa"}
    separable = next(layer for layer in model.layers
                     if isinstance(layer, layers.QuantSeparableConv2D))
    assert isinstance(separable.pointwise_quantizer, quantizers.NoOp)
    assert separable.pointwise_kernel.precision == 1
    activations = {layer.activation for layer in model.layers if hasattr(layer, "activation")}
    assert {lowbit_tf.activations.hard_tanh, lowbit_tf.activations.leaky_tanh} <= activations


def test_loaded_model_trains_saves_and_converts(tmp_path):
    model = compat.load_larq_model(DATA / "mnist_cnn.h5")
    x = EXPECTED["mnist_cnn/x"]
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(np.repeat(x, 4, axis=0), np.arange(8) % 10, epochs=1, verbose=0)
    model.save(tmp_path / "moved.keras")
    reloaded = tf.keras.models.load_model(tmp_path / "moved.keras")
    np.testing.assert_array_equal(reloaded.predict(x, verbose=0), model.predict(x, verbose=0))
    interpreter = lite.Interpreter(model_content=lowbit_tf.convert(model))
    np.testing.assert_allclose(interpreter.predict(x), model.predict(x, verbose=0), atol=1e-4)


def _copy_with_config(tmp_path, edit):
    path = tmp_path / "edited.h5"
    shutil.copyfile(DATA / "mnist_cnn.h5", path)
    with h5py.File(path, "r+") as f:
        config = json.loads(f.attrs["model_config"])
        edit(config)
        f.attrs["model_config"] = json.dumps(config)
    return path


def test_unknown_larq_quantizer_is_named(tmp_path):
    def edit(config):
        layer = config["config"]["layers"][1]["config"]
        layer["kernel_quantizer"] = {"module": "larq.quantizers", "class_name": "MyQuantizer",
                                     "config": {}}

    with pytest.raises(compat.LarqFileError, match="MyQuantizer.*custom_objects"):
        compat.load_larq_model(_copy_with_config(tmp_path, edit))


def test_unknown_class_without_custom_objects_fails_clearly(tmp_path):
    def edit(config):
        config["config"]["layers"][2]["class_name"] = "MyPooling"

    with pytest.raises(ValueError, match="MyPooling"):
        compat.load_larq_model(_copy_with_config(tmp_path, edit))
    loaded = compat.load_larq_model(_copy_with_config(tmp_path, edit),
                                    custom_objects={"MyPooling": tf.keras.layers.MaxPooling2D})
    x = EXPECTED["mnist_cnn/x"]
    np.testing.assert_allclose(loaded(x).numpy(), EXPECTED["mnist_cnn/y"], atol=1e-5)


def test_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.h5"):
        compat.load_larq_model(tmp_path / "nowhere.h5")
    text = tmp_path / "model.h5"
    text.write_text("not hdf5")
    with pytest.raises(compat.LarqFileError, match="not an HDF5"):
        compat.load_larq_model(text)
    weights_only = tmp_path / "only.weights.h5"
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(2)])
    model.save_weights(weights_only)
    with pytest.raises(compat.LarqFileError, match="no model config.*load_weights"):
        compat.load_larq_model(weights_only)
