"""lowbit_models.zoo against real larq-zoo 2.4 (Keras 2).

tests/data/larq_zoo/ was written by tests/helpers/make_larq_zoo_reference.py in
a Keras 2 side environment: for every case of larq_zoo_cases.CASES, larq-zoo's
layers with weights (names and shapes, in order) and its logits on a seeded
input with seeded weights; and the HDF5 layout of a larq-zoo weights file.
Our models must have the same layers and, with the same weights, the same
logits (inference mode).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
from larq_zoo_cases import CASES, H5_CASE, NUM_CLASSES, seeded_input, seeded_weight

from lowbit_models import zoo
from lowbit_tf._keras import keras

DATA = Path(__file__).resolve().parents[1] / "data" / "larq_zoo"
LARQ_LAYERS = json.loads((DATA / "models.json").read_text())
LARQ_LOGITS = np.load(DATA / "logits.npz")
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
    larq = [[name, [shape for _, shape in weights]] for name, weights in LARQ_LAYERS[case]]
    assert weighted_layers(model) == larq
    set_seeded_weights(model)
    assert_larq_logits(case, model)


def write_keras2_h5(path: Path, rename: str = "", drop: str | None = None,
                    reshape: str | None = None) -> None:
    """A weights file in the layout larq-zoo's Keras 2 wrote for H5_CASE, holding
    the seeded weights. `rename` prefixes every layer name, `drop` leaves a
    layer out, `reshape` gives a layer's first weight a wrong shape."""
    root, groups = H5_LAYOUT["root"], H5_LAYOUT["groups"]
    layer_names = [name for name in root["layer_names"] if name != drop]
    with h5py.File(path, "w") as file:
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


def test_larq_zoo_h5_loads_by_name(tmp_path):
    path = tmp_path / "zoo.h5"
    write_keras2_h5(path)
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


def test_include_top_false_keeps_the_feature_layers():
    with_top = weighted_layers(build("quicknet_small"))
    features = zoo.QuickNetSmall(input_shape=(64, 64, 3), include_top=False)
    assert weighted_layers(features) == with_top[:-1]
    assert zoo.BiRealNet(include_top=False).input_shape == (None, None, None, 3)


@pytest.mark.parametrize("kwargs, message", [
    (dict(weights="imagenet"), "download it yourself"),
    (dict(weights="no/such/file.h5"), "'no/such/file.h5'"),
    (dict(input_shape=(64, 64, 1)), r"\(64, 64, 1\)"),
    (dict(input_shape=(None, None, 3)), "static input_shape"),
    (dict(num_classes=0), "got 0"),
])
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        zoo.QuickNetSmall(**kwargs)


def test_xnornet_names_its_minimum_input():
    with pytest.raises(ValueError, match="at least 217x217"):
        zoo.XNORNet(input_shape=(128, 128, 3))
