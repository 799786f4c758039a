"""lowbit_models.zoo against real larq-zoo 2.4 (Keras 2).

tests/data/larq_zoo/ was written by tests/helpers/make_larq_zoo_reference.py in
a Keras 2 side environment: for every case of larq_zoo_cases.CASES, larq-zoo's
layer names and weight shapes (in order) and its logits on a seeded input with
seeded weights; training-mode logits and gradients for TRAINING_CASES; larq-zoo's
own quantizers' values and gradients; and the HDF5 layout of a larq-zoo weights
file. Our models must have the same layers and, with the same weights, compute
the same within 1e-5.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import tensorflow as tf
from larq_zoo_cases import (
    CASES,
    H5_CASE,
    NUM_CLASSES,
    QUANTIZER_SHAPE,
    TRAINING_CASES,
    gradient_summary,
    seeded_input,
    seeded_weight,
)
from tflite_models import tflite_ops

from lowbit_converter.convert import convert_with_report
from lowbit_models import zoo
from lowbit_models.zoo.custom_objects import MagnitudeAwareSignUnclipped, XnorWeightScale
from lowbit_tf import lite, quantizers
from lowbit_tf._keras import keras

DATA = Path(__file__).resolve().parents[1] / "data" / "larq_zoo"
LARQ_MODELS = json.loads((DATA / "models.json").read_text())
LARQ_LOGITS = np.load(DATA / "logits.npz")
LARQ_QUANTIZERS = np.load(DATA / "quantizers.npz")
LARQ_TRAINING = np.load(DATA / "training.npz")
H5_LAYOUT = json.loads((DATA / "h5_layout.json").read_text())


def build(case: str, **kwargs) -> keras.Model:
    builder, side = CASES[case]
    return zoo.ZOO_MODELS[builder](input_shape=(side, side, 3), num_classes=NUM_CLASSES,
                                   **kwargs)


def weighted_layers(model: keras.Model) -> list:
    return [[layer.name, [list(w.shape) for w in layer.weights]]
            for layer in model.layers if layer.weights]


def set_seeded_weights(model: keras.Model) -> None:
    for layer in model.layers:
        layer.set_weights([seeded_weight(layer.name, i, tuple(w.shape), w.name)
                           for i, w in enumerate(layer.weights)])


def logits(model: keras.Model, side: int) -> np.ndarray:
    head = keras.Model(model.input, model.layers[-1].input)
    return np.asarray(head(seeded_input(side), training=False))


def assert_larq_logits(case: str, model: keras.Model) -> None:
    expected = LARQ_LOGITS[case]
    np.testing.assert_allclose(logits(model, CASES[case][1]), expected, rtol=1e-5,
                               atol=1e-5 * np.max(np.abs(expected)))


@pytest.mark.parametrize("case", list(CASES))
def test_zoo_model_matches_larq_zoo(case):
    model = build(case)
    larq = LARQ_MODELS[case]
    assert [layer.name for layer in model.layers] == larq["layer_names"]
    assert weighted_layers(model) == [[name, [shape for _, shape in weights]]
                                      for name, weights in larq["weights"]]
    set_seeded_weights(model)
    assert_larq_logits(case, model)


@pytest.mark.parametrize("case", TRAINING_CASES)
def test_zoo_model_trains_as_larq_zoo(case):
    # Training mode (BatchNorm on the batch) and the straight-through gradients.
    model = build(case)
    set_seeded_weights(model)
    head = keras.Model(model.input, model.layers[-1].input)
    watched = [(layer.name, index, weight) for layer in model.layers
               for index, weight in enumerate(layer.trainable_weights)]
    with tf.GradientTape() as tape:
        y = head(seeded_input(CASES[case][1]), training=True)
        loss = tf.reduce_sum(y * seeded_weight("r", 0, tuple(y.shape), ""))
    grads = tape.gradient(loss, [weight.value for _, _, weight in watched])
    expected = LARQ_TRAINING[f"{case}/logits"]
    np.testing.assert_allclose(y.numpy(), expected, rtol=1e-5,
                               atol=1e-5 * np.max(np.abs(expected)))
    summary = gradient_summary([(layer, index, grad.numpy()) for (layer, index, _), grad
                                in zip(watched, grads, strict=True)])
    np.testing.assert_allclose(summary, LARQ_TRAINING[f"{case}/grads"], rtol=1e-3,
                               atol=1e-4 * np.max(np.abs(LARQ_TRAINING[f"{case}/grads"])))


@pytest.mark.parametrize("case", ["dorefanet", "meliusnet22", "quicknet_small"])
def test_zoo_model_config_round_trips(case):
    # These hold larq-zoo's own objects (quantizers, activation, initializer,
    # channel layers): they must serialize by name.
    model = keras.Model.from_config(build(case).get_config())
    set_seeded_weights(model)
    assert_larq_logits(case, model)


@pytest.mark.parametrize("name, cls", [("xnor_weight_scale", XnorWeightScale),
                                       ("magnitude_aware_sign_unclipped",
                                        MagnitudeAwareSignUnclipped)])
def test_zoo_quantizers_match_larq_zoo(name, cls):
    quantizer = quantizers.get(name)
    assert isinstance(quantizer, cls) and quantizer.precision == 1
    w = tf.constant(2 * seeded_weight("quantizer", 0, QUANTIZER_SHAPE, "kernel"))
    r = tf.constant(seeded_weight("r", 0, QUANTIZER_SHAPE, "kernel"))
    with tf.GradientTape() as tape:
        tape.watch(w)
        y = quantizer(w)
        loss = tf.reduce_sum(y * r)
    np.testing.assert_allclose(y.numpy(), LARQ_QUANTIZERS[f"{name}/y"], rtol=1e-6)
    np.testing.assert_allclose(tape.gradient(loss, w).numpy(), LARQ_QUANTIZERS[f"{name}/grad"],
                               rtol=1e-5, atol=1e-7)


def write_keras2_h5(path: Path, rename: str = "", drop: str | None = None,
                    reshape: str | None = None, whole_model: bool = False) -> None:
    """A weights file in the layout larq-zoo's Keras 2 wrote for H5_CASE, holding
    the seeded weights. `rename` prefixes every layer name, `drop` leaves a
    layer out, `reshape` gives a layer's first weight a wrong shape;
    `whole_model` puts it under "model_weights", as Keras 2's `model.save`."""
    root, groups = H5_LAYOUT["root"], H5_LAYOUT["groups"]
    layer_names = [name for name in root["layer_names"] if name != drop]
    with h5py.File(path, "w") as h5:
        file = h5.create_group("model_weights") if whole_model else h5
        file.attrs["backend"] = root["backend"].encode()
        file.attrs["keras_version"] = root["keras_version"].encode()
        file.attrs["layer_names"] = np.array([(rename + n).encode() for n in layer_names])
        for layer in layer_names:
            group = file.create_group(rename + layer)
            weight_names = groups[layer]["weight_names"]
            group.attrs["weight_names"] = np.array(
                [(rename + w).encode() for w in weight_names])
            for index, weight in enumerate(weight_names):
                shape, dtype = H5_LAYOUT["datasets"][f"{layer}/{weight}"]
                short = weight.split("/")[-1].split(":")[0]
                value = seeded_weight(layer, index, tuple(shape), short).astype(dtype)
                if layer == reshape and index == 0:
                    value = value[..., :-1]
                group.create_dataset(rename + weight, data=value)


@pytest.mark.parametrize("whole_model", [False, True])
def test_larq_zoo_h5_loads_by_name(tmp_path, whole_model):
    path = tmp_path / "zoo.h5"
    write_keras2_h5(path, whole_model=whole_model)
    assert_larq_logits(H5_CASE, build(H5_CASE, weights=path))


def test_larq_zoo_h5_with_other_names_loads_in_order(tmp_path):
    # Saved after other layers were built: Keras 2's counters ran on; larq-zoo's
    # own load_weights matches such files in order, and so do we.
    path = tmp_path / "zoo.h5"
    write_keras2_h5(path, rename="other_")
    assert_larq_logits(H5_CASE, build(H5_CASE, weights=path))


def test_larq_zoo_h5_mismatch_names_the_layer(tmp_path):
    path = tmp_path / "missing.h5"
    write_keras2_h5(path, drop="batch_normalization_3")
    with pytest.raises(ValueError, match="no weights for layer 'batch_normalization_3'"):
        build(H5_CASE, weights=path)
    path = tmp_path / "shape.h5"
    write_keras2_h5(path, reshape="quant_conv2d_4")
    with pytest.raises(ValueError, match="layer 'quant_conv2d_4' holds weights of shapes"):
        build(H5_CASE, weights=path)
    path = tmp_path / "not.h5"
    path.write_text("not hdf5")
    with pytest.raises(ValueError, match="not an HDF5 weights file"):
        build(H5_CASE, weights=path)
    path = tmp_path / "keras3.weights.h5"
    with h5py.File(path, "w") as file:  # Keras 3's layout: groups, no layer_names
        file.create_group("layers")
    with pytest.raises(ValueError, match="not a Keras 2 .h5 weights file"):
        build(H5_CASE, weights=path)


def test_quicknet_small_converts_with_its_binary_convs_lowered():
    # A larq-zoo user's path: larq-zoo weights in, our TFLite flatbuffer out.
    model = build("quicknet_small")
    set_seeded_weights(model)
    result = convert_with_report(keras.Model(model.input, model.layers[-1].input))
    binary = [name for name, weights in LARQ_MODELS["quicknet_small"]["weights"]
              if name.startswith("quant_conv2d") and weights[0][1][:2] == [3, 3]
              and name != "quant_conv2d"]  # the 3x3 stem conv is float
    assert sorted(result.lowered_layers) == sorted(binary)
    ops, _, _ = tflite_ops(result.tflite_model)
    assert [name for name, _ in ops].count("LowbitBconv2d") == len(binary) == 16
    interpreter = lite.Interpreter(model_content=result.tflite_model)
    x = seeded_input(CASES["quicknet_small"][1])
    interpreter.resize_tensor_input(interpreter.get_input_details()[0]["index"], x.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()
    got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
    expected = LARQ_LOGITS["quicknet_small"]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.max(np.abs(expected)))


def test_include_top_false_keeps_the_feature_layers():
    with_top = weighted_layers(build("quicknet_small"))
    features = zoo.QuickNetSmall(input_shape=(64, 64, 3), include_top=False)
    assert weighted_layers(features) == with_top[:-1]
    assert zoo.BiRealNet(include_top=False).input_shape == (None, None, None, 3)
    inputs = keras.Input((64, 64, 3))
    assert zoo.QuickNetSmall(input_tensor=inputs, include_top=False).input is inputs


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="imagenet"), "download it yourself"),
    (dict(weights="no/such/file.h5"), "'no/such/file.h5'"),
    (dict(input_shape=(64, 64, 1)), r"\(64, 64, 1\)"),
    (dict(input_shape=(None, None, 3)), "static input_shape"),
    (dict(num_classes=0), "got 0"),
    (dict(input_tensor=np.zeros((1, 64, 64, 3))), "input_tensor must be a Keras tensor"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.QuickNetSmall(**kwargs)


def test_xnornet_names_its_minimum_input():
    with pytest.raises(ValueError, match="at least 217x217"):
        zoo.XNORNet(input_shape=(128, 128, 3))
