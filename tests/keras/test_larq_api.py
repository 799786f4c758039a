"""Larq's API names in lowbit_tf: a Larq script runs after `import lowbit_tf as lq`."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import lowbit_tf as lq
from lowbit_tf import layers, optimizers, quantizers
from lowbit_tf._keras import KERAS_3

X = np.array([-2.0, -1.0, -0.5, -0.0, 0.0, 1e-30, 0.5, 1.0, 3.0, np.nan], "float32")


def test_math_sign_and_heaviside():
    np.testing.assert_array_equal(lq.math.sign(X).numpy(),
                                  [-1, -1, -1, 1, 1, 1, 1, 1, 1, np.nan])
    np.testing.assert_array_equal(lq.math.heaviside(X).numpy(),
                                  [0, 0, 0, 0, 0, 1, 1, 1, 1, np.nan])


def test_activations_hard_tanh_and_leaky_tanh():
    np.testing.assert_array_equal(lq.activations.hard_tanh(X[:9]).numpy(),
                                  np.clip(X[:9], -1, 1))
    leaky = lq.activations.leaky_tanh(X[:9], alpha=0.1).numpy()
    np.testing.assert_allclose(leaky, [-1.1, -1, -0.5, 0, 0, 1e-30, 0.5, 1, 1.2], rtol=1e-6)
    # By name in our layers (6 -> 1 + 5 * 0.2), as the function in Keras's; both
    # round-trip a config.
    dense = layers.QuantDense(2, activation="leaky_tanh", kernel_initializer="ones")
    np.testing.assert_allclose(dense(np.full((1, 3), 2.0, "float32")).numpy(), [[2.0, 2.0]],
                               rtol=1e-6)
    assert type(dense).from_config(dense.get_config()).activation is lq.activations.leaky_tanh
    keras_dense = tf.keras.layers.Dense(2, activation=lq.activations.hard_tanh)
    clone = tf.keras.layers.Dense.from_config(keras_dense.get_config())
    assert clone.activation is lq.activations.hard_tanh


def test_noop_marks_precision_without_quantizing(caplog):
    with caplog.at_level("WARNING", logger="lowbit_tf.layers"):
        layer = layers.QuantDense(3, kernel_quantizer=quantizers.NoOp(precision=1))
    assert "starved" not in caplog.text  # NoOp marks, it does not binarise
    layer.build((2, 4))
    assert layer.kernel.precision == 1
    assert optimizers.Bop.is_binary_variable(layer.kernel)
    np.testing.assert_array_equal(layer.quantized_kernel().numpy(), layer.kernel.numpy())
    assert quantizers.NoOpQuantizer is quantizers.NoOp
    assert quantizers.get({"class_name": "NoOp", "config": {"precision": 2}}).precision == 2
    with pytest.raises(ValueError, match="precision"):
        quantizers.NoOp(precision=0)


def test_quantized_scope_reads_quantized_weights(tmp_path):
    model = tf.keras.Sequential([
        tf.keras.Input((5, 4)),
        layers.QuantConv1D(3, 2, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
        layers.QuantSeparableConv1D(2, 2, depthwise_quantizer="ste_sign",
                                    depthwise_constraint="weight_clip"),
        tf.keras.layers.Dense(2),
    ])  # fmt: skip
    x = np.random.default_rng(0).normal(size=(2, 5, 4)).astype("float32")
    latent = model.get_weights()
    y = model(x).numpy()
    assert not lq.context.should_quantize()
    with lq.context.quantized_scope(True):
        assert lq.context.should_quantize()
        quantized = model.get_weights()
        np.testing.assert_array_equal(model(x).numpy(), y)  # computation unchanged
        model.save_weights(tmp_path / "binary.weights.h5")
        model.save(tmp_path / "binary.keras")
        with lq.context.quantized_scope(False):
            np.testing.assert_array_equal(model.get_weights()[0], latent[0])
    assert not lq.context.should_quantize()
    # conv kernel, conv bias, depthwise (quantized), pointwise, bias, dense kernel, bias
    np.testing.assert_array_equal(quantized[0], np.where(latent[0] >= 0, 1.0, -1.0))
    np.testing.assert_array_equal(quantized[2], np.where(latent[2] >= 0, 1.0, -1.0))
    for k in (1, 3, 4, 5, 6):
        np.testing.assert_array_equal(quantized[k], latent[k])
    np.testing.assert_array_equal(model.get_weights()[0], latent[0])  # outside: latent
    loaded = tf.keras.models.load_model(tmp_path / "binary.keras")
    np.testing.assert_array_equal(loaded.get_weights()[0], quantized[0])
    model.load_weights(tmp_path / "binary.weights.h5")
    np.testing.assert_array_equal(model.get_weights()[2], quantized[2])


def test_metrics_scope_is_metrics_scope():
    with lq.context.metrics_scope(["flip_ratio"]):
        assert lq.context.get_training_metrics() is lq.metrics.get_training_metrics()
        assert "flip_ratio" in lq.context.get_training_metrics()
        layer = layers.QuantDense(2, kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    layer.build((1, 3))
    assert layer.flip_ratio is not None
    assert "flip_ratio" not in lq.context.get_training_metrics()


def _fit(callback, epochs=3, steps=4):
    model = tf.keras.Sequential([tf.keras.Input((3,)), tf.keras.layers.Dense(1)])
    optimizer = tf.keras.optimizers.SGD(learning_rate=0.1)
    model.compile(optimizer, "mse")
    x = np.ones((steps * 2, 3), "float32")
    return model.fit(x, np.zeros((steps * 2, 1), "float32"), batch_size=2, epochs=epochs,
                     verbose=0, callbacks=[callback]), optimizer


def test_hyperparameter_scheduler_per_epoch_and_step():
    history, optimizer = _fit(lq.callbacks.HyperparameterScheduler(
        lambda epoch: 0.1 * 0.5**epoch, "learning_rate"))
    np.testing.assert_allclose(history.history["learning_rate"], [0.1, 0.05, 0.025], rtol=1e-6)
    seen = []
    history, optimizer = _fit(lq.callbacks.HyperparameterScheduler(
        lambda step, value: seen.append((step, value)) or 0.01 * (step + 1),
        "learning_rate", update_freq="step", log_name="lr"), epochs=2, steps=4)
    assert [s for s, _ in seen] == list(range(8))
    np.testing.assert_allclose(history.history["lr"], [0.04, 0.08], rtol=1e-6)


def test_hyperparameter_scheduler_on_bop_gamma():
    bop = optimizers.Bop(threshold=1e-6, gamma=1e-3)
    model = tf.keras.Sequential([
        tf.keras.Input((3,)),
        layers.QuantDense(1, kernel_quantizer="ste_sign", kernel_constraint="weight_clip"),
    ])
    if KERAS_3:
        model.compile(optimizers.CaseOptimizer((bop.is_binary_variable, bop),
                                               default_optimizer=tf.keras.optimizers.Adam()),
                      "mse")
    else:  # no CaseOptimizer under tf-keras (yet): Bop alone
        model.compile(bop, "mse")
    callback = lq.callbacks.HyperparameterScheduler(lambda e: 1e-3 / (e + 1), "gamma",
                                                    optimizer=bop)
    history = model.fit(np.ones((4, 3), "float32"), np.zeros((4, 1), "float32"), epochs=2,
                        verbose=0, callbacks=[callback])
    np.testing.assert_allclose(history.history["gamma"], [1e-3, 5e-4], rtol=1e-6)


def test_hyperparameter_scheduler_errors():
    with pytest.raises(ValueError, match="update_freq.*'batch'"):
        lq.callbacks.HyperparameterScheduler(lambda e: 1, "learning_rate", update_freq="batch")
    with pytest.raises(ValueError, match="no hyperparameter 'gama'"):
        _fit(lq.callbacks.HyperparameterScheduler(lambda e: 1, "gama"))


def test_larq_training_script_runs_with_lowbit_tf_as_lq(capsys):
    """Larq's documented MNIST example, names unchanged, `lq` being lowbit_tf."""
    kwargs = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip")
    model = tf.keras.models.Sequential()
    model.add(tf.keras.Input((28, 28, 1)))
    model.add(lq.layers.QuantConv2D(8, (3, 3), kernel_quantizer="ste_sign",
                                    kernel_constraint="weight_clip", use_bias=False))
    model.add(tf.keras.layers.MaxPooling2D((2, 2)))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(lq.layers.QuantConv2D(8, (3, 3), use_bias=False, **kwargs))
    model.add(tf.keras.layers.MaxPooling2D((2, 2)))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(tf.keras.layers.Flatten())
    model.add(lq.layers.QuantDense(16, use_bias=False, **kwargs))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(lq.layers.QuantDense(10, use_bias=False, **kwargs))
    model.add(tf.keras.layers.BatchNormalization(scale=False))
    model.add(tf.keras.layers.Activation("softmax"))
    lq.models.summary(model)
    assert "quant_conv2d" in capsys.readouterr().out
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    images = rng.normal(size=(32, 28, 28, 1)).astype("float32")
    labels = rng.integers(0, 10, 32)
    model.fit(images, labels, batch_size=16, epochs=1, verbose=0)
    with lq.context.quantized_scope(True):
        weights = model.get_weights()
    assert set(np.unique(weights[0])) <= {-1.0, 1.0}


# Larq 0.14's public names (its modules' __all__ and public functions), as
# recorded from the installed package by tests/helpers/make_larq_reference.py's
# environment; the migration page must map each.
LARQ_NAMES = {
    "activations": ["hard_tanh", "leaky_tanh"],
    "callbacks": ["HyperparameterScheduler"],
    "constraints": ["WeightClip", "weight_clip"],
    "context": ["get_training_metrics", "metrics_scope", "quantized_scope", "should_quantize"],
    "layers": ["QuantConv1D", "QuantConv2D", "QuantConv2DTranspose", "QuantConv3D",
               "QuantConv3DTranspose", "QuantDense", "QuantDepthwiseConv2D",
               "QuantLocallyConnected1D", "QuantLocallyConnected2D", "QuantSeparableConv1D",
               "QuantSeparableConv2D", "QuantizerBase", "QuantizerBaseConv",
               "QuantizerDepthwiseBase", "QuantizerSeparableBase"],
    "math": ["heaviside", "sign"],
    "metrics": ["FlipRatio"],
    "models": ["summary", "ModelProfile"],
    "optimizers": ["Bop", "CaseOptimizer"],
    "quantizers": ["ApproxSign", "DoReFa", "DoReFaQuantizer", "MagnitudeAwareSign", "NoOp",
                   "NoOpQuantizer", "Quantizer", "SteHeaviside", "SteSign", "SteTern",
                   "SwishSign", "ste_sign", "approx_sign", "swish_sign", "magnitude_aware_sign",
                   "ste_heaviside", "ste_tern", "dorefa_quantizer"],
    "utils": ["memory_as_readable_str", "patch_object", "register_alias",
              "register_keras_custom_object", "set_precision"],
    "quantized_variable": ["QuantizedVariable"],
}  # fmt: skip
MIGRATION = Path(__file__).resolve().parents[2] / "docs" / "migrating_from_larq.md"


def _table_rows():
    rows = [line.split("|")[1:-1] for line in MIGRATION.read_text().splitlines()
            if line.startswith("| `")]
    return [(larq, ours) for larq, ours, _ in rows]


def test_migration_page_maps_every_larq_name():
    larq_column = " ".join(larq for larq, _ in _table_rows())
    for module, names in LARQ_NAMES.items():
        for name in names:
            assert re.search(rf"`larq\.{module}\.{name}`|`{name}`", larq_column), (module, name)


def test_migration_page_names_exist():
    import importlib

    for _, ours in _table_rows():
        for ref in re.findall(r"`(lowbit_tf(?:\.\w+)+)`", ours):
            module, _, attr = ref.rpartition(".")
            if module == "lowbit_tf":
                assert hasattr(lq, attr), ref
                continue
            assert hasattr(importlib.import_module(module), attr), ref
        for short in re.findall(r"(?<=, )`(\w+)`", ours):  # "`...SteSign`, `ste_sign`"
            first = re.search(r"`(lowbit_tf(?:\.\w+)+)\.\w+`", ours).group(1)
            assert hasattr(importlib.import_module(first), short), (first, short)
