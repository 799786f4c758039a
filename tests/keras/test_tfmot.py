"""TensorFlow Model Optimization (TFMOT) on models with lowbit layers
(lowbit_tf/tfmot.py, docs/int8.md "TFMOT"): its QAT with LowbitQuantizeConfig
on the lowbit layers, the QAT model converted to int8 + binary and run in our
runtime, its pruning on the float layers.

TFMOT 0.8 needs tf-keras: test_tf_keras_mode.py runs this file in a fresh
interpreter with TF_USE_LEGACY_KERAS=1; in the default Keras 3 mode it skips.
"""

from __future__ import annotations

import numpy as np
import pytest

from lowbit_tf import _keras

if _keras.KERAS_3:
    pytest.skip("TFMOT runs in the tf-keras mode (test_tf_keras_mode.py runs this file there)",
                allow_module_level=True)
tfmot = pytest.importorskip("tensorflow_model_optimization",
                            reason="TFMOT is installed by the README's test command")

import lowbit_converter  # noqa: E402
import lowbit_tf  # noqa: E402
import lowbit_tf.tfmot as lowbit_tfmot  # noqa: E402
from lowbit_converter import int8 as int8_pass  # noqa: E402
from lowbit_converter.tflite_schema import schema  # noqa: E402
from lowbit_tf import layers  # noqa: E402
from lowbit_tf._keras import keras  # noqa: E402
from lowbit_tf.lite import Interpreter  # noqa: E402

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip", use_bias=False)


def _ops(tflite: bytes) -> list[tuple[str, list, list]]:
    """(op name, input tensor types, output tensor types) of each operator."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    sub = model.subgraphs[0]
    return [(int8_pass._op_name(model, op),
             [sub.tensors[t].type if t >= 0 else None for t in op.inputs],
             [sub.tensors[t].type for t in op.outputs]) for op in sub.operators]


def _sequential() -> keras.Model:
    keras.utils.set_random_seed(3)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", name="stem"),
        keras.layers.BatchNormalization(name="stem_bn"),
        keras.layers.ReLU(name="stem_relu"),
        layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv1", **BINARY),
        keras.layers.BatchNormalization(name="bn1"),
        layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, name="bconv2", **BINARY),
        keras.layers.BatchNormalization(name="bn2"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        layers.QuantDense(10, name="bdense", **BINARY),
        keras.layers.BatchNormalization(name="bn3"),
        keras.layers.Activation("softmax", name="softmax"),
    ])


def _functional() -> keras.Model:
    """A residual binary block and a binary depthwise conv between float parts."""
    keras.utils.set_random_seed(4)
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, padding="same", name="stem")(x)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    shortcut = x = keras.layers.ReLU(name="stem_relu")(x)
    x = layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, name="bconv", **BINARY)(x)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Add(name="add")([x, shortcut])
    x = layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, name="bdw",
                                    input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                                    depthwise_constraint="weight_clip", use_bias=False)(x)
    x = keras.layers.BatchNormalization(name="dw_bn")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    outputs = keras.layers.Dense(4, name="head")(x)
    return keras.Model(inputs, outputs)


def _data(shape: tuple, classes: int, n: int = 128) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(5)
    return rng.uniform(-1, 1, (n, *shape)).astype(np.float32), rng.integers(0, classes, n)


def _wrapper_variables(model: keras.Model, name: str) -> set[str]:
    """Local names of the quantizer variables of the wrapper of layer `name`."""
    wrapper = model.get_layer("quant_" + name)
    return {v.name.split("/", 1)[1] for v in wrapper.weights
            if v.name.startswith(wrapper.name + "/") and "optimizer_step" not in v.name}


def test_binary_layers_get_no_weight_or_input_fake_quant():
    qat = lowbit_tfmot.quantize_model(_sequential())
    # TFMOT's default scheme on the float layers: the stem's kernel is
    # fake-quantized (per channel), its ReLU's output too.
    assert {"kernel_min:0", "kernel_max:0"} <= _wrapper_variables(qat, "stem")
    assert _wrapper_variables(qat, "stem_relu") == {"output_min:0", "output_max:0"}
    for name in ("bconv1", "bconv2", "bdense"):
        wrapper = qat.get_layer("quant_" + name)
        assert isinstance(wrapper.quantize_config, lowbit_tfmot.LowbitQuantizeConfig)
        # Read only by their BatchNormalization (folded by the converter): no
        # quantizer at all, kernels untouched (still the layers' variables).
        assert _wrapper_variables(qat, name) == set(), name
        assert wrapper.layer.kernel is wrapper.layer.trainable_weights[0]
    # bn1 is read only by the binary bconv2 (its signs): no range; bn2 by the
    # pooling (an int8 tensor): a range; so bn3 (the logits before softmax).
    assert _wrapper_variables(qat, "bn1") == set()
    assert _wrapper_variables(qat, "bn2") == {"output_min:0", "output_max:0"}
    assert _wrapper_variables(qat, "bn3") == {"output_min:0", "output_max:0"}


def test_binary_layer_output_quantized_when_read_as_float():
    qat = lowbit_tfmot.quantize_model(_functional())
    # bconv's BatchNormalization feeds the float Add: its output has a range.
    assert _wrapper_variables(qat, "bn") == {"output_min:0", "output_max:0"}
    assert _wrapper_variables(qat, "bconv") == set()
    assert isinstance(qat.get_layer("quant_bdw").quantize_config,
                      lowbit_tfmot.LowbitQuantizeConfig)


def test_quantize_config_round_trips_and_outputs():
    config = lowbit_tfmot.LowbitQuantizeConfig(quantize_output=False)
    again = lowbit_tfmot.LowbitQuantizeConfig.from_config(config.get_config())
    assert again.quantize_output is False and again.get_output_quantizers(None) == []
    (quantizer,) = lowbit_tfmot.LowbitQuantizeConfig().get_output_quantizers(None)
    assert isinstance(quantizer, tfmot.quantization.keras.quantizers.MovingAverageQuantizer)


@pytest.mark.parametrize("build, shape, classes", [(_sequential, (8, 8, 1), 10),
                                                   (_functional, (8, 8, 3), 4)])
def test_qat_model_converts_to_int8_and_binary(build, shape, classes, tmp_path):
    x, y = _data(shape, classes)
    qat = lowbit_tfmot.quantize_model(build())
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=classes == 4)
    qat.compile(keras.optimizers.Adam(1e-3), loss)
    qat.fit(x, y, epochs=2, batch_size=32, verbose=0)
    want = qat.predict(x[:32], verbose=0)

    # Stripped of TFMOT's layers, the model computes exactly the same: its
    # ranges are FakeQuantInt8 layers holding TFMOT's.
    stripped = lowbit_tfmot.strip_quantization(qat)
    assert not any("Quantize" in type(layer).__name__ for layer in stripped.layers)
    np.testing.assert_array_equal(stripped.predict(x[:32], verbose=0), want)

    result = lowbit_converter.convert_with_report(qat, int8=True)  # no data: TFMOT's ranges
    ops = _ops(result.tflite_model)
    names = [name for name, _, _ in ops]
    # The lowbit ops read and write int8 tensors, or bit-packed signs (int32)
    # between two binary layers.
    int8_or_packed = (schema.TensorType.INT8, schema.TensorType.INT32)
    lowbit = [(inputs[0], *outputs) for name, inputs, outputs in ops if name.startswith("Lowbit")]
    assert lowbit and all(t in int8_or_packed for types in lowbit for t in types), ops
    # float32 only at the model's input and output (a QUANTIZE and a DEQUANTIZE).
    assert names.count("QUANTIZE") == 1 and names.count("DEQUANTIZE") <= 1, names
    for name, _, outputs in ops:
        if name not in ("QUANTIZE", "DEQUANTIZE"):
            assert schema.TensorType.FLOAT32 not in outputs, (name, ops)
    if build is _sequential:
        assert names == ["QUANTIZE", "CONV_2D", "LowbitBconv2d", "LowbitBconv2d",
                         "MAX_POOL_2D", "RESHAPE", "LowbitBgemm", "SOFTMAX", "DEQUANTIZE"], names
    else:
        assert {"LowbitBconv2d", "LowbitBDepthwiseConv2d", "ADD"} <= set(names), names

    got = Interpreter(model_content=result.tflite_model).predict(x[:32])
    # The converted model computes on the ranges the Keras QAT model learnt;
    # an int8 kernel rounding its accumulator differently can move a code by
    # one, which may flip a binary layer's input sign now and then: the
    # predictions agree, and values stay within a few steps of the output.
    step = np.ptp(want) / 255
    error = np.abs(got - want)
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9, error.max() / step
    assert np.median(error) <= 2 * step, np.median(error) / step
    path = tmp_path / "qat.tflite"
    path.write_bytes(result.tflite_model)
    float_size = len(lowbit_tf.convert(stripped))
    assert len(result.tflite_model) < float_size, (len(result.tflite_model), float_size)


def test_qat_model_saves_and_loads_in_quantize_scope(tmp_path):
    qat = lowbit_tfmot.quantize_model(_sequential())
    qat.save(tmp_path / "qat.h5")
    with lowbit_tfmot.quantize_scope():
        loaded = keras.models.load_model(tmp_path / "qat.h5")
    x, _ = _data((8, 8, 1), 10, 8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), qat.predict(x, verbose=0),
                               atol=1e-6)
    assert isinstance(loaded.get_layer("quant_bconv1").quantize_config,
                      lowbit_tfmot.LowbitQuantizeConfig)


def test_pruning_skips_binary_layers_and_converts():
    model = _functional()
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = lowbit_tfmot.prune_low_magnitude(model, pruning_schedule=schedule)
    kinds = {layer.name: type(layer).__name__ for layer in pruned.layers}
    assert kinds["bconv"] == "QuantConv2D" and kinds["bdw"] == "QuantDepthwiseConv2D"
    assert kinds["prune_low_magnitude_stem"] == "PruneLowMagnitude"
    assert kinds["prune_low_magnitude_head"] == "PruneLowMagnitude"
    # TFMOT alone refuses a lowbit layer: its error says why.
    with pytest.raises(ValueError, match="Please initialize `Prune` with a supported layer"):
        tfmot.sparsity.keras.prune_low_magnitude(model.get_layer("bconv"))

    x, y = _data((8, 8, 3), 4)
    pruned.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    pruned.fit(x, y, epochs=1, batch_size=32, verbose=0,
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    kernel = stripped.get_layer("stem").kernel.numpy()
    assert np.mean(kernel == 0) == pytest.approx(0.5, abs=0.02)
    want = stripped.predict(x[:16], verbose=0)
    # The pruned model as it is (convert strips the wrappers) and stripped.
    for source in (pruned, stripped):
        got = Interpreter(model_content=lowbit_tf.convert(source)).predict(x[:16])
        np.testing.assert_allclose(got, want, atol=1e-4 * np.ptp(want) + 1e-5)
    int8 = lowbit_tf.convert(stripped, int8=True,
                             representative_dataset=lambda: ([s[None]] for s in x[:64]))
    assert "LowbitBconv2d" in [name for name, _, _ in _ops(int8)]


def test_strip_quantization_refuses_a_subclassed_model():
    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="subclassed model"):
        lowbit_tfmot.strip_quantization(Subclassed(name="sub"))


def test_annotate_by_hand_and_apply_in_quantize_scope():
    """TFMOT's own API: the lowbit layer (and the BatchNormalization after it,
    which TFMOT does not support there) annotated with LowbitQuantizeConfig."""
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    config = lowbit_tfmot.LowbitQuantizeConfig
    keras.utils.set_random_seed(6)
    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        annotate(keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem")),
        annotate(layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, name="bconv", **BINARY),
                 config(quantize_output=False)),
        annotate(keras.layers.BatchNormalization(name="bn"), config()),
        annotate(keras.layers.GlobalAveragePooling2D(name="gap")),
        annotate(keras.layers.Dense(4, name="head")),
    ])
    with lowbit_tfmot.quantize_scope():
        qat = tfmot.quantization.keras.quantize_apply(model)
    x, y = _data((8, 8, 3), 4)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    tflite = lowbit_tf.convert(qat, int8=True)
    names = [name for name, _, _ in _ops(tflite)]
    assert names == ["QUANTIZE", "CONV_2D", "LowbitBconv2d", "MEAN", "FULLY_CONNECTED",
                     "DEQUANTIZE"], names
    want = qat.predict(x[:16], verbose=0)
    got = Interpreter(model_content=tflite).predict(x[:16])
    assert np.mean(got.argmax(1) == want.argmax(1)) >= 0.9


def _cli(tmp_path, *args: str):
    """lowbit-convert in a fresh interpreter, in this (tf-keras) mode."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    paths = [str(repo), str(repo / "converter"), str(repo / "models"),
             os.environ.get("PYTHONPATH", "")]
    return subprocess.run([sys.executable, "-m", "lowbit_converter", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})


def test_cli_converts_saved_tfmot_models(tmp_path):
    """A QAT model and a pruned one saved as .h5 load in the CLI (TFMOT's
    scopes) and convert: the QAT one with --int8 and no samples file (its
    learnt ranges), to the ops of lowbit_tf.convert."""
    qat = lowbit_tfmot.quantize_model(_sequential())
    x, y = _data((8, 8, 1), 10)
    qat.compile("adam", keras.losses.SparseCategoricalCrossentropy())
    qat.fit(x, y, epochs=1, batch_size=32, verbose=0)
    qat.save(tmp_path / "qat.h5")
    proc = _cli(tmp_path, "qat.h5", "--int8")
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = (tmp_path / "qat.tflite").read_bytes()
    assert [n for n, _, _ in _ops(got)] == [n for n, _, _ in
                                            _ops(lowbit_tf.convert(qat, int8=True))]
    assert "LowbitBconv2d" in [n for n, _, _ in _ops(got)]

    schedule = tfmot.sparsity.keras.ConstantSparsity(0.5, begin_step=0, frequency=1)
    pruned = lowbit_tfmot.prune_low_magnitude(_functional(), pruning_schedule=schedule)
    pruned.save(tmp_path / "pruned.h5")
    proc = _cli(tmp_path, "pruned.h5")
    assert proc.returncode == 0, proc.stderr[-3000:]
    x, _ = _data((8, 8, 3), 4, 8)
    want = Interpreter(model_content=lowbit_tf.convert(pruned)).predict(x)
    got = Interpreter(model_path=tmp_path / "pruned.tflite").predict(x)
    np.testing.assert_allclose(got, want, atol=1e-5 * np.ptp(want))
