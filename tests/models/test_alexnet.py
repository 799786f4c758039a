"""AlexNet definitions and loading pretrained float weights from every format.

The tests write the "pretrained" files themselves (there is no internet): a
float AlexNet is initialised at random and saved as bvlc_alexnet-style .npy, a
TF1 name-based checkpoint, a TF2 object checkpoint and a Keras .weights.h5.
A small input (67x67, pool5 1x1x256) keeps them fast; the loaders take every
shape from the model, so the same code serves 227x227.
"""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import tensorflow as tf
from reference import conv2d_np

import lowbit_converter
from lowbit_models import WeightLoadError, alexnet, load_alexnet_weights
from lowbit_models.alexnet import WEIGHT_LAYERS
from lowbit_models.safe_npy import load_npy
from lowbit_tf._keras import keras
from lowbit_tf.lite import Interpreter

SMALL = dict(num_classes=10, input_shape=(67, 67, 3))


def test_float_alexnet_matches_the_classic_architecture():
    model = alexnet("float")
    assert model.count_params() == 60_965_224
    assert [layer.name for layer in model.layers if layer.weights] == list(WEIGHT_LAYERS)
    assert tuple(model.get_layer("pool5").output.shape) == (None, 6, 6, 256)
    # The two-GPU groups: half the input channels per kernel.
    assert tuple(model.get_layer("conv2").kernel.shape) == (5, 5, 48, 256)
    assert tuple(model.get_layer("conv4").kernel.shape) == (3, 3, 192, 384)
    assert tuple(model.get_layer("fc6").kernel.shape) == (9216, 4096)


def test_unknown_variant_is_refused():
    with pytest.raises(ValueError, match="'ternary'"):
        alexnet("ternary")


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A randomly initialised float AlexNet saved in every supported format."""
    keras.utils.set_random_seed(0)
    model = alexnet("float", **SMALL)
    # Non-zero biases so that a swapped or missing bias is visible.
    for name in WEIGHT_LAYERS:
        layer = model.get_layer(name)
        layer.bias.assign(np.random.default_rng(1).normal(0, 0.1, layer.bias.shape))
    folder = tmp_path_factory.mktemp("alexnet")
    weights = {name: [np.asarray(v) for v in model.get_layer(name).get_weights()]
               for name in WEIGHT_LAYERS}
    np.save(folder / "bvlc_alexnet.npy", weights, allow_pickle=True)
    names, tensors = [], []
    for name, (kernel, bias) in weights.items():
        names += [f"{name}/weights", f"{name}/biases"]
        tensors += [kernel, bias]
    tf.raw_ops.SaveV2(prefix=str(folder / "tf1" / "model.ckpt"), tensor_names=names,
                      shape_and_slices=[""] * len(names), tensors=tensors)
    tf2_prefix = tf.train.Checkpoint(model=model).write(str(folder / "tf2" / "ckpt"))
    model.save_weights(folder / "alexnet.weights.h5")
    x = np.random.default_rng(2).standard_normal((2, 67, 67, 3)).astype(np.float32)
    return dict(
        model=model, x=x, expected=model(x, training=False).numpy(),
        sources={"npy": folder / "bvlc_alexnet.npy", "tf1": str(folder / "tf1" / "model.ckpt"),
                 "tf2": tf2_prefix, "h5": folder / "alexnet.weights.h5"},
        folder=folder, weights=weights,
    )


@pytest.mark.parametrize("fmt", ["npy", "tf1", "tf2", "h5"])
def test_float_weights_load_from_every_format(pretrained, fmt):
    model = alexnet("float", **SMALL)
    load_alexnet_weights(model, pretrained["sources"][fmt])
    out = model(pretrained["x"], training=False).numpy()
    np.testing.assert_allclose(out, pretrained["expected"], rtol=0, atol=1e-5)


def test_missing_variable_is_named(pretrained):
    weights = dict(pretrained["weights"])
    del weights["fc7"]
    path = pretrained["folder"] / "incomplete.npy"
    np.save(path, weights, allow_pickle=True)
    with pytest.raises(WeightLoadError, match="missing variable 'fc7'"):
        load_alexnet_weights(alexnet("float", **SMALL), path)


def test_missing_tf1_variable_is_named(pretrained):
    prefix = str(pretrained["folder"] / "tf1_partial" / "model.ckpt")
    kernel, bias = pretrained["weights"]["conv1"]
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=["conv1/weights", "conv1/biases"],
                      shape_and_slices=["", ""], tensors=[kernel, bias])
    with pytest.raises(WeightLoadError, match="missing variable 'conv2/weights'"):
        load_alexnet_weights(alexnet("float", **SMALL), prefix)


def test_shape_mismatch_is_named(pretrained):
    # The weights were saved for 10 classes; a 7-class model cannot take fc8.
    with pytest.raises(WeightLoadError, match=r"'fc8/weights' has shape \(4096, 10\)"):
        load_alexnet_weights(alexnet("float", num_classes=7, input_shape=(67, 67, 3)),
                             pretrained["sources"]["npy"])


def test_not_a_checkpoint_is_refused(tmp_path):
    with pytest.raises(WeightLoadError, match="not a readable TF checkpoint"):
        load_alexnet_weights(alexnet("float", **SMALL), str(tmp_path / "nothing"))


class _RunsCode:
    """Pickles as a call of `os.system`: what a crafted weights file does."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 3, 5])
def test_crafted_npy_cannot_run_code(pretrained, tmp_path, protocol):
    marker = tmp_path / "code_ran"
    weights = dict(pretrained["weights"])
    weights["conv1"] = [_RunsCode(marker), weights["conv1"][1]]
    path = tmp_path / "crafted.npy"
    table = np.array(weights, dtype=object)
    with open(path, "wb") as stream:  # np.save, with the pickle protocol chosen
        np.lib.format.write_array_header_1_0(
            stream, np.lib.format.header_data_from_array_1_0(table))
        pickle.dump(table, stream, protocol=protocol)
    assert pickle.loads(pickle.dumps(_RunsCode(marker))) == 0 and marker.exists()
    marker.unlink()  # the payload works when unpickled plainly; our loader must refuse it
    with pytest.raises(WeightLoadError, match=r"refusing to load (posix|os)\.system"):
        load_alexnet_weights(alexnet("float", **SMALL), path)
    assert not marker.exists()


def test_safe_npy_reads_what_numpy_writes(tmp_path):
    table = {"a": [np.arange(6, dtype=np.float32).reshape(2, 3), np.zeros(2)],
             "b": {"weights": np.float32(2), "text": "x", "raw": b"\x00", "pair": (1, 2.5)}}
    for protocol in range(6):
        path = tmp_path / f"p{protocol}.npy"
        array = np.array(table, dtype=object)
        with open(path, "wb") as stream:
            np.lib.format.write_array_header_1_0(
                stream, np.lib.format.header_data_from_array_1_0(array))
            pickle.dump(array, stream, protocol=protocol)
        loaded = load_npy(path).item()
        np.testing.assert_array_equal(loaded["a"][0], table["a"][0])
        assert loaded["b"]["text"] == "x" and loaded["b"]["raw"] == b"\x00"
        assert loaded["b"]["pair"] == (1, 2.5) and loaded["b"]["weights"] == 2
    np.save(tmp_path / "plain.npy", np.arange(4))
    np.testing.assert_array_equal(load_npy(tmp_path / "plain.npy"), np.arange(4))


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.99])
def test_truncated_npy_is_a_weight_load_error(pretrained, tmp_path, cut):
    data = pretrained["sources"]["npy"].read_bytes()
    path = tmp_path / "truncated.npy"
    path.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(WeightLoadError, match="not a readable weights .npy file"):
        load_alexnet_weights(alexnet("float", **SMALL), path)


@pytest.mark.parametrize(
    "entry, message",
    [
        (5, r"'conv2' must hold \[weights, biases\], got int"),
        ("kernel", r"'conv2' must hold \[weights, biases\], got str"),
        ([np.ones(3, np.complex64), np.zeros(2)], r"'conv2/weights' must be a real-valued "
                                                   r"array, got dtype complex64"),
        ([np.ones(3), "bias"], r"'conv2/biases' must be a real-valued array, got str"),
        ([np.ones(3), [[1.0], [1.0, 2.0]]], r"'conv2/biases' is not an array"),
    ],
)
def test_bad_npy_entries_are_named(pretrained, tmp_path, entry, message):
    weights = dict(pretrained["weights"])
    weights["conv2"] = entry
    path = tmp_path / "bad_entry.npy"
    np.save(path, np.array(weights, dtype=object), allow_pickle=True)
    with pytest.raises(WeightLoadError, match=message):
        load_alexnet_weights(alexnet("float", **SMALL), path)


# ---------------------------------------------------------------------------
# Low-bit variants

LOW_BIT = ["binary_weights", "xnor", "dorefa"]


@pytest.mark.parametrize("variant", LOW_BIT)
def test_low_bit_variants_keep_names_and_shapes(variant):
    float_model = alexnet("float", **SMALL)
    model = alexnet(variant, **SMALL)
    for name in WEIGHT_LAYERS:
        assert [tuple(w.shape) for w in model.get_layer(name).weights] == \
               [tuple(w.shape) for w in float_model.get_layer(name).weights], name


@pytest.mark.parametrize("variant", LOW_BIT)
@pytest.mark.parametrize("fmt", ["npy", "tf1"])
def test_pretrained_weights_in_low_bit_model_with_quantizers_off_give_float_outputs(
        pretrained, variant, fmt):
    model = alexnet(variant, quantize=False, **SMALL)
    load_alexnet_weights(model, pretrained["sources"][fmt])
    out = model(pretrained["x"], training=False).numpy()
    assert np.max(np.abs(out - pretrained["expected"])) <= 1e-5


def layer_io(model, name, x):
    """(input, output) of layer `name` for model input x, in inference mode."""
    layer = model.get_layer(name)
    probe = keras.Model(model.inputs, [layer.input, layer.output])
    return [t.numpy() if hasattr(t, "numpy") else np.asarray(t) for t in probe(x, training=False)]


def assert_close_to_float64(actual, expected, magnitude, name):
    """float32 sums of K terms vs float64: allow a few ulps of the sum of |terms|."""
    np.testing.assert_array_less(np.abs(actual - expected), 1e-6 * magnitude + 1e-6,
                                 err_msg=name)


def test_binary_weights_layers_match_numpy(pretrained):
    """BinaryConnect AlexNet: each layer is the float layer with sign(W)."""
    model = alexnet("binary_weights", **SMALL)
    load_alexnet_weights(model, pretrained["sources"]["npy"])
    for name in ("conv1", "conv2", "conv3", "fc6", "fc8"):
        inputs, outputs = layer_io(model, name, pretrained["x"])
        kernel, bias = pretrained["weights"][name]
        signs = np.where(kernel < 0, -1.0, 1.0)
        if name.startswith("conv"):
            layer = model.get_layer(name)
            args = (layer.strides, layer.padding.upper(), layer.groups)
            z = conv2d_np(inputs, signs, *args)
            magnitude = conv2d_np(np.abs(inputs), np.abs(signs), *args)
        else:
            z = inputs.astype(np.float64) @ signs
            magnitude = np.abs(inputs).astype(np.float64) @ np.abs(signs)
        z = z + bias
        expected = z if name == "fc8" else np.maximum(z, 0)
        assert_close_to_float64(outputs, expected, magnitude, name)


def test_xnor_layers_match_numpy(pretrained):
    """XNOR-Net AlexNet: sign(inputs) * (mean|W| per output channel * sign(W))."""
    model = alexnet("xnor", **SMALL)
    load_alexnet_weights(model, pretrained["sources"]["npy"])
    for name in ("conv2", "conv3", "fc6", "fc7"):
        inputs, outputs = layer_io(model, name, pretrained["x"])
        kernel, bias = pretrained["weights"][name]
        alpha = np.abs(kernel).reshape(-1, kernel.shape[-1]).mean(axis=0)
        binary_kernel = alpha * np.where(kernel < 0, -1.0, 1.0)
        binary_inputs = np.where(inputs < 0, -1.0, 1.0)
        if name.startswith("conv"):
            layer = model.get_layer(name)
            args = (layer.strides, layer.padding.upper(), layer.groups)
            z = conv2d_np(binary_inputs, binary_kernel, *args)
            magnitude = conv2d_np(np.ones_like(inputs), np.abs(binary_kernel), *args)
        else:
            z = binary_inputs @ binary_kernel
            magnitude = np.ones_like(inputs) @ np.abs(binary_kernel)
        assert_close_to_float64(outputs, z + bias, magnitude, name)


def test_binary_alexnet_converts_and_runs_on_lowbit_kernels(pretrained):
    model = alexnet("xnor", **SMALL)
    load_alexnet_weights(model, pretrained["sources"]["npy"])
    result = lowbit_converter.convert_with_report(model)
    # conv2..conv5 and fc6, fc7 binary; the grouped conv2, conv4, conv5 give one
    # op per group, the dense layers one LowbitBgemm each.
    assert result.lowered_layers == ["conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    assert result.report.custom_ops == {"LowbitBconv2d": 7, "LowbitBgemm": 2}
    expected = model(pretrained["x"], training=False).numpy()
    got = Interpreter(model_content=result.tflite_model).predict(pretrained["x"])
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())


def test_abc_alexnet_loads_pretrained_latent_weights(pretrained):
    """ABC-Net AlexNet (M=2, N=2): grouped ABC convs, same names and kernel shapes;
    the pretrained float weights become its latent weights."""
    model = alexnet("abc", M=2, N=2, **SMALL)
    load_alexnet_weights(model, pretrained["sources"]["h5"])
    for name in WEIGHT_LAYERS:
        kernel, bias = pretrained["weights"][name]
        np.testing.assert_array_equal(np.asarray(model.get_layer(name).kernel), kernel)
        np.testing.assert_array_equal(np.asarray(model.get_layer(name).bias), bias)
    assert type(model.get_layer("conv2")).__name__ == "ABCConv2D"
    assert model.get_layer("conv2").groups == 2
    out = model(pretrained["x"], training=False).numpy()
    assert out.shape == (2, 10) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="no unquantized form"):
        alexnet("abc", quantize=False, **SMALL)
