"""Tests for the training tools: Bop and CaseOptimizer, the flip-ratio metric, summary."""

from __future__ import annotations

import contextlib
import importlib
import io
import json

import numpy as np
import pytest
import tensorflow as tf

from lowbit_tf import layers, metrics, optimizers, quantizers
from lowbit_tf._keras import keras

# The module (``lowbit_tf.summary`` may be bound to the function by the package).
lb_summary = importlib.import_module("lowbit_tf.summary")

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint="weight_clip")  # fmt: skip


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


# ----------------------------------------------------------------------------- Bop


def test_bop_update_rule_on_hand_made_values():
    threshold, gamma = 0.05, 0.5
    w0 = np.array([1.0, 1.0, -1.0, -1.0, 1.0, -1.0, 0.3, 1.0], np.float32)
    m0 = np.array([0.0, 0.0, 0.0, 0.0, 0.2, -0.2, 0.0, 0.0], np.float32)
    g = np.array([0.4, -0.4, -0.4, 0.4, 0.0, 0.0, 0.0, 0.1], np.float32)
    var = keras.Variable(w0)
    opt = optimizers.Bop(threshold=threshold, gamma=gamma)
    opt.build([var])
    opt._gradient_averages[0].assign(m0)
    opt.apply([tf.constant(g)], [var])
    m1 = m0 + gamma * (g - m0)
    np.testing.assert_allclose(opt._gradient_averages[0].numpy(), m1)
    # w*m1:   0.2   -0.2   0.2   -0.2   0.1   0.1   0     0.05 (= threshold: tie -> +1)
    expected = [-1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    np.testing.assert_array_equal(var.numpy(), expected)
    # Reference formula, as Larq writes it.
    ref = np.where(-np.sign(w0 * m1 - threshold) * w0 >= 0, 1.0, -1.0)
    np.testing.assert_array_equal(var.numpy(), ref)
    assert int(opt.iterations.numpy()) == 1


def test_bop_config_and_bad_arguments():
    opt = optimizers.Bop(threshold=1e-6, gamma=1e-3)
    config = json.loads(json.dumps(opt.get_config()))
    assert config["threshold"] == 1e-6 and config["gamma"] == pytest.approx(1e-3)
    assert "learning_rate" not in config
    restored = optimizers.Bop.from_config(config)
    assert restored.threshold == 1e-6 and float(restored.gamma) == pytest.approx(1e-3)
    default = optimizers.Bop()
    assert default.threshold == 1e-8 and float(default.gamma) == pytest.approx(1e-4)  # Larq's
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-2, 10, 0.5)
    config = optimizers.Bop(gamma=schedule).get_config()
    restored = optimizers.Bop.from_config(config)
    assert restored.get_config()["gamma"]["class_name"] == "ExponentialDecay"
    with pytest.raises(ValueError, match="threshold.*-1"):
        optimizers.Bop(threshold=-1.0)
    with pytest.raises(ValueError, match="gamma=1.5"):
        optimizers.Bop(gamma=1.5)


def test_binary_kernels_are_marked_for_bop():
    binary = layers.QuantDense(3, **BINARY)
    plain = layers.QuantDense(3)
    depthwise = layers.QuantDepthwiseConv2D(3, depthwise_quantizer="ste_sign",
                                            depthwise_constraint="weight_clip")  # fmt: skip
    binary.build((1, 4))
    plain.build((1, 4))
    depthwise.build((1, 5, 5, 2))
    assert optimizers.Bop.is_binary_variable(binary.kernel)
    assert optimizers.Bop.is_binary_variable(depthwise.kernel)
    assert not optimizers.Bop.is_binary_variable(binary.bias)
    assert not optimizers.Bop.is_binary_variable(plain.kernel)


def _bop_model(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((16,)),
        layers.QuantDense(32, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                          use_bias=False, metrics=["flip_ratio"]),
        keras.layers.BatchNormalization(),
        keras.layers.Activation("relu"),
        layers.QuantDense(4, **BINARY, use_bias=False),
        keras.layers.Dense(4),
    ])  # fmt: skip


def _case_optimizer():
    return optimizers.CaseOptimizer(
        (optimizers.Bop.is_binary_variable, optimizers.Bop(threshold=1e-5, gamma=1e-2)),
        default_optimizer=keras.optimizers.Adam(0.01),
    )


@pytest.mark.slow
def test_bop_trains_a_toy_problem():
    """A binary teacher: y = x sign(W*) A. Bop flips the binary kernel, Adam the head."""
    rng = _rng(0)
    x = rng.normal(size=(1024, 16)).astype("float32")
    teacher = np.where(rng.normal(size=(16, 8)) >= 0, 1.0, -1.0)
    y = (x @ teacher @ rng.normal(size=(8, 4)) / 4).astype("float32")
    keras.utils.set_random_seed(0)
    binary = layers.QuantDense(8, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                               use_bias=False, metrics=["flip_ratio"], name="bin")  # fmt: skip
    model = keras.Sequential([keras.Input((16,)), binary, keras.layers.Dense(4)])
    model.compile(optimizer=optimizers.CaseOptimizer(
        (optimizers.Bop.is_binary_variable, optimizers.Bop(threshold=1e-6, gamma=1e-2)),
        default_optimizer=keras.optimizers.Adam(0.01),
    ), loss="mse")  # fmt: skip
    initial = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    model.fit(x, y, epochs=1, batch_size=64, verbose=0)  # the first step binarises
    after_one = binary.kernel.numpy()
    history = model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    final = model.evaluate(x, y, verbose=0, return_dict=True)["loss"]
    assert final < 0.25 * initial, (initial, final)
    now = binary.kernel.numpy()
    assert set(np.unique(now)) <= {-1.0, 1.0}  # Bop keeps no latent weights
    assert (now != after_one).any()  # weights flipped
    assert all(0 < r < 0.5 for r in history.history["bin_flip_ratio"])
    opt = model.optimizer
    assert opt.variable_mapping == [0, 1, 1]  # kernel -> Bop; head -> Adam
    steps = 6 * 16
    assert int(opt.iterations.numpy()) == int(opt.optimizers[1].iterations.numpy()) == steps
    assert int(opt.optimizers[0].iterations.numpy()) == steps


def test_case_optimizer_save_and_load(tmp_path):
    rng = _rng(1)
    x = rng.normal(size=(128, 16)).astype("float32")
    y = rng.normal(size=(128, 4)).astype("float32")
    model = _bop_model(1)
    model.compile(optimizer=_case_optimizer(), loss="mse")
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    path = tmp_path / "bop.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    opt, new = model.optimizer, loaded.optimizer
    assert isinstance(new, optimizers.CaseOptimizer)
    assert isinstance(new.optimizers[0], optimizers.Bop) and new.optimizers[0].threshold == 1e-5
    assert new.variable_mapping == opt.variable_mapping
    assert len(new.variables) == len(opt.variables)
    for a, b in zip(opt.variables, new.variables, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # Both continue identically.
    model.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    loaded.fit(x, y, epochs=1, batch_size=32, verbose=0, shuffle=False)
    for a, b in zip(model.get_weights(), loaded.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_case_optimizer_learning_rate_and_errors():
    opt = _case_optimizer()
    assert float(opt.learning_rate) == pytest.approx(0.01)
    opt.learning_rate = 0.5
    assert float(opt.default_optimizer.learning_rate) == pytest.approx(0.5)
    with pytest.raises(TypeError, match=r"predicate_optimizer_pairs\[0\]"):
        optimizers.CaseOptimizer((lambda v: True, "adam"))
    with pytest.raises(TypeError, match="default_optimizer"):
        optimizers.CaseOptimizer(default_optimizer="adam")
    a, b = keras.Variable(np.ones(2, "float32"), name="a"), keras.Variable(np.ones(2, "float32"))
    twice = optimizers.CaseOptimizer((lambda v: True, keras.optimizers.SGD()),
                                     (lambda v: True, keras.optimizers.SGD()))  # fmt: skip
    with pytest.raises(ValueError, match="claimed by several"):
        twice.build([a, b])
    idle = optimizers.CaseOptimizer((lambda v: False, keras.optimizers.SGD(name="idle_sgd")),
                                    default_optimizer=keras.optimizers.SGD())  # fmt: skip
    with pytest.raises(ValueError, match="idle_sgd.*did not claim"):
        idle.build([a, b])
    with pytest.warns(UserWarning, match="not trained"):
        optimizers.CaseOptimizer((lambda v: v is a, keras.optimizers.SGD())).build([a, b])


# ----------------------------------------------------------------------- flip ratio


def test_flip_ratio_on_hand_made_steps():
    m = metrics.FlipRatio(values_shape=(2,))
    results = []
    for values in [(1, 1), (2, 2), (1, 2)]:
        m.update_state(values)
        results.append(float(m.result()))
    assert results == [0.0, 1.0, 0.75]
    m.reset_state()
    assert float(m.result()) == 0.0
    m.update_state((1, 3))  # compared with (1, 2): the last values survive a reset
    assert float(m.result()) == 0.5
    m4 = metrics.FlipRatio(values_shape=(2, 2))
    m4.update_state([[1, -1], [1, 1]])
    m4.update_state([[1, 1], [-1, 1]])
    m4.update_state([[1, 1], [-1, 1]])
    assert float(m4.result()) == pytest.approx((0.5 + 0.0) / 2)
    config = m4.get_config()
    assert config["values_shape"] == [2, 2] and config["values_dtype"] == "int8"
    assert metrics.FlipRatio.from_config(config).values_shape == [2, 2]


def test_flip_ratio_in_fit_matches_kernel_snapshots():
    rng = _rng(2)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.normal(size=(64, 3)).astype("float32")
    keras.utils.set_random_seed(3)
    layer = layers.QuantDense(3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              metrics=["flip_ratio"], name="binary")  # fmt: skip
    model = keras.Sequential([keras.Input((8,)), layer])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    signs = []

    class Snapshot(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            signs.append(np.where(layer.kernel.numpy() >= 0, 1, -1))

    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                        callbacks=[Snapshot()])  # fmt: skip
    flips = [np.mean(a != b) for a, b in zip(signs[1:], signs[:-1], strict=True)]
    assert max(flips) > 0
    # Epoch 1: steps 2..8 compared with the step before; epoch 2: all 8 steps.
    expected = [np.mean(flips[:7]), np.mean(flips[7:])]
    np.testing.assert_allclose(history.history["binary_flip_ratio"], expected, rtol=1e-6)
    assert layer.flip_ratio is not None and layer.flip_ratio in model.metrics


def test_metrics_scope_and_bad_names():
    with metrics.scope(["flip_ratio"]) as active:
        assert active == {"flip_ratio"}
        layer = layers.QuantDense(2, kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    assert metrics.get_training_metrics() == set()
    layer.build((1, 3))
    assert isinstance(layer.flip_ratio, metrics.FlipRatio)
    assert layer.get_config()["metrics"] == ["flip_ratio"]
    with pytest.raises(ValueError, match="'flop_ratio'.*flip_ratio"):
        layers.QuantDense(2, metrics=["flop_ratio"])
    with pytest.raises(ValueError, match="flop_ratio"):
        with metrics.scope(["flop_ratio"]):
            pass


# -------------------------------------------------------------------------- summary


def _known_model():
    inputs = keras.Input((8, 8, 3))
    x = layers.QuantConv2D(16, 3, padding="same", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip", name="conv1")(inputs)  # fmt: skip
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = layers.QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, **BINARY,
                           name="bconv2")(x)  # fmt: skip
    x = keras.layers.MaxPooling2D(2, name="pool")(x)
    x = keras.layers.Flatten(name="flat")(x)
    x = layers.QuantDense(10, **BINARY, name="bdense")(x)
    outputs = keras.layers.Dense(10, name="head")(x)
    return keras.Model(inputs, outputs, name="known")


def test_summary_counts_on_a_known_model():
    model = _known_model()
    printed = []
    s = lb_summary.summary(model, print_fn=printed.append)
    rows = {r.name: r for r in s.layers}
    assert rows["conv1"].params == {1: 432, 32: 16}
    assert (rows["conv1"].weight_bits, rows["conv1"].input_bits) == (1, 32)
    assert rows["conv1"].macs == {32: 8 * 8 * 16 * 27}
    assert rows["bn1"].params == {32: 64} and rows["bn1"].macs == {}
    assert rows["bconv2"].params == {1: 4608}
    assert rows["bconv2"].macs == {1: 8 * 8 * 32 * 144}
    assert rows["pool"].params == {} and rows["flat"].output_shape == (None, 512)
    assert rows["bdense"].params == {1: 5120, 32: 10} and rows["bdense"].macs == {1: 5120}
    assert rows["head"].params == {32: 110} and rows["head"].macs == {32: 100}
    assert s.params_by_precision == {1: 10160, 32: 200}
    assert s.total_params == model.count_params() == 10360
    assert s.memory_bytes == 10160 / 8 + 200 * 4 == 2070
    assert s.float32_memory_bytes == 41440
    assert s.compression_ratio == pytest.approx(41440 / 2070)
    assert s.macs_by_precision == {1: 294912 + 5120, 32: 27648 + 100}
    assert s.binary_macs == 300032
    table = printed[0]
    assert table == str(s)
    for text in ["conv1 (QuantConv2D)", "bdense (QuantDense)", "4,608@1b", "binary: 300,032",
                 "compression 20.02x", "predicted .tflite"]:  # fmt: skip
        assert text in table, text
    # The lowered conv's size: 32 channels * (4 * ceil(144 / 32) words + 8) bytes.
    assert rows["bconv2"].predicted_tflite_bytes == (
        lb_summary.TFLITE_OP_BYTES + lb_summary.TFLITE_CUSTOM_OP_BYTES + 32 * (4 * 5 + 8)
    )


def test_summary_of_abc_fastfood_and_depthwise_layers():
    inputs = keras.Input((6, 6, 4))
    x = layers.QuantDepthwiseConv2D(
        3, depth_multiplier=2, input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
        depthwise_constraint="weight_clip", name="dw",
    )(inputs)  # fmt: skip
    x = layers.ABCConv2D(5, 3, num_weight_bases=3, num_activation_bases=2, name="abc")(x)
    x = keras.layers.Flatten()(x)
    x = layers.ABCDense(7, num_weight_bases=2, num_activation_bases=3, use_bias=False,
                        name="abcd")(x)  # fmt: skip
    outputs = layers.FastfoodDense(20, name="ff", seed=0)(x)
    model = keras.Model(inputs, outputs)
    s = lb_summary.summary(model, print_fn=None)
    rows = {r.name: r for r in s.layers}
    assert rows["dw"].params == {1: 72, 32: 8} and rows["dw"].macs == {1: 4 * 4 * 8 * 9}
    assert (rows["abc"].weight_bits, rows["abc"].input_bits) == (3, 2)
    assert rows["abc"].params == {3: 360, 32: 5 + 2 + 2}
    assert rows["abc"].macs == {1: 3 * 2 * (2 * 2 * 5 * 72)}
    assert rows["abcd"].params == {2: 140, 32: 6} and rows["abcd"].macs == {1: 6 * 140}
    # Fastfood: d = 7 -> n = 8, k = ceil(20 / 8) = 3 blocks.
    assert rows["ff"].params == {32: 3 * 3 * 8 + 20}
    assert rows["ff"].macs == {32: 3 * 8 * (3 + 2 * 3)}
    assert s.total_params == model.count_params()


def _randomize(model, seed=0):
    rng = _rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            n = weights[0].shape[0]
            layer.set_weights([rng.uniform(0.5, 2, n), rng.uniform(-1, 1, n),
                               rng.uniform(-1, 1, n), rng.uniform(0.5, 2, n)])  # fmt: skip
        elif weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in weights])
    return model


def _size_models():
    binary = dict(BINARY, use_bias=False)
    bnn = keras.Sequential([
        keras.Input((16, 16, 3)),
        layers.QuantConv2D(32, 3, padding="same", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip"),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(64, 3, padding="same", pad_values=1.0, **binary),
        keras.layers.MaxPooling2D(2),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(128, 3, strides=2, padding="same", pad_values=1.0, **binary),
        keras.layers.BatchNormalization(),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10),
    ], name="bnn")  # fmt: skip
    deep = keras.Sequential(
        [keras.Input((8, 8, 128))]
        + [x for _ in range(3) for x in (layers.QuantConv2D(128, 3, padding="same",
                                                             pad_values=1.0, **binary),
                                          keras.layers.BatchNormalization(),
                                          keras.layers.ReLU())]
        + [keras.layers.Flatten(), keras.layers.Dense(10)],
        name="deep",
    )  # fmt: skip
    mlp = keras.Sequential([keras.Input((64,)), keras.layers.Dense(128, activation="relu"),
                            keras.layers.Dense(64), keras.layers.BatchNormalization(),
                            keras.layers.Dense(10)], name="mlp")  # fmt: skip
    abc = keras.Sequential([
        keras.Input((16, 16, 3)),
        keras.layers.Conv2D(32, 3, padding="same"),
        keras.layers.BatchNormalization(),
        layers.ABCConv2D(64, 3, padding="same", num_weight_bases=3, num_activation_bases=3),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.MaxPooling2D(2),
        layers.ABCConv2D(64, 3, padding="same", groups=2, num_weight_bases=2,
                         num_activation_bases=2),
        keras.layers.GlobalAveragePooling2D(),
        layers.ABCDense(10),
    ], name="abc")  # fmt: skip
    dorefa = dict(input_quantizer=quantizers.DoReFa(2, "activations"),
                  kernel_quantizer=quantizers.DoReFa(2, "weights"))
    multibit = keras.Sequential([
        keras.Input((16, 16, 8)),
        layers.QuantConv2D(64, 3, padding="same", **dorefa),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(64, 3, padding="same", input_quantizer="ste_sign",
                           kernel_quantizer="ste_tern"),
        keras.layers.Flatten(),
        layers.QuantDense(32, **dorefa),
        keras.layers.Dense(10),
    ], name="dorefa_ternary")  # fmt: skip
    fastfood = keras.Sequential([
        keras.Input((100,)),
        keras.layers.Dense(256, activation="relu"),
        layers.FastfoodDense(512, activation="relu", seed=1),
        layers.FastfoodDense(300, use_bias=False, seed=2),
        keras.layers.Dense(10),
    ], name="fastfood")  # fmt: skip
    binary_dw = dict(input_quantizer="ste_sign", depthwise_quantizer="ste_sign", use_bias=False)
    depthwise = keras.Sequential([
        keras.Input((16, 16, 48)),
        layers.QuantDepthwiseConv2D(3, padding="same", depth_multiplier=2, **binary_dw),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(64, 1, **binary),
        keras.layers.BatchNormalization(),
        layers.QuantDepthwiseConv2D(3, strides=2, **binary_dw),
        keras.layers.Flatten(),
        layers.QuantDense(10, **binary),
    ], name="depthwise")  # fmt: skip
    return [bnn, deep, mlp, abc, multibit, fastfood, depthwise]


SIZE_MODELS = [
    "bnn", "deep_bnn", "float_mlp", "abc", "dorefa_ternary", "fastfood", "depthwise",
]


@pytest.mark.slow
@pytest.mark.parametrize("index", range(len(SIZE_MODELS)), ids=SIZE_MODELS)
def test_predicted_tflite_size_is_close_to_the_converted_file(index):
    import lowbit_converter

    model = _randomize(_size_models()[index])
    s = lb_summary.summary(model, print_fn=None)
    with contextlib.redirect_stdout(io.StringIO()):
        size = len(lowbit_converter.convert(model))
    assert abs(s.predicted_tflite_bytes - size) <= 0.05 * size, (s.predicted_tflite_bytes, size)


def test_summary_module_is_callable():
    model = keras.Sequential([keras.Input((3,)), layers.QuantDense(2)])
    assert lb_summary(model, print_fn=None).total_params == 8
    assert lb_summary.summary(model, print_fn=None).total_params == 8


def test_summary_rejects_unbuilt_models_and_non_models():
    with pytest.raises(TypeError, match="keras.Model.*QuantDense"):
        lb_summary.summary(layers.QuantDense(2))
    with pytest.raises(ValueError, match="not built"):
        lb_summary.summary(keras.Sequential([layers.QuantDense(2)]))
