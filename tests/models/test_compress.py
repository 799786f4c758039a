"""lowbit_tf.compress on a tiny digits CNN with tiny budgets: a reachable
constraint is met and the returned model converts and runs in our runtime with
the accuracy the report claims; an unreachable one is reported with the
smallest reachable cost; the budget and an interruption are respected; bad
arguments are errors naming them. lowbit_tf.cost_model's estimates follow the
summary's MAC counts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import lowbit_tf
from lowbit_tf import compress as compress_module
from lowbit_tf import cost_model, lite
from lowbit_tf._keras import keras
from lowbit_tf.demo import load_digits_split

# Fixed rates: no timing in the tests (x86's are measured on first use).
RATES = cost_model.TargetRates("x86", binary_macs_per_ms=2e7, float_macs_per_ms=1e6,
                               per_layer_ms=0.001, source="test rates")


@pytest.fixture(scope="module")
def digits():
    return load_digits_split(0)


@pytest.fixture(scope="module")
def float_model(digits):
    """Conv -> ReLU -> BN blocks (BN after the ReLU: the next conv's inputs are
    signed; momentum 0.9, so that the moving statistics follow a short
    training), a float dense head; trained briefly."""
    x_train, y_train, x_val, y_val = digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", name="stem"),
        keras.layers.ReLU(), keras.layers.BatchNormalization(momentum=0.9),
        keras.layers.Conv2D(64, 3, padding="same", name="conv1"),
        keras.layers.ReLU(), keras.layers.BatchNormalization(momentum=0.9),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, padding="same", name="conv2"),
        keras.layers.ReLU(), keras.layers.BatchNormalization(momentum=0.9),
        keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(10, name="logits"),
    ])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=6, batch_size=32, verbose=0)
    assert np.mean(np.argmax(model.predict(x_val, verbose=0), -1) == y_val) > 0.9
    return model


def _accuracy(content: bytes, x, y) -> float:
    interpreter = lite.Interpreter(model_content=content)
    return float(np.mean(np.argmax(interpreter.predict(x), -1) == y))


def test_reachable_size_is_met_and_the_model_runs_with_the_claimed_accuracy(digits,
                                                                             float_model):
    x_train, y_train, x_val, y_val = digits
    lines = []
    result = lowbit_tf.compress(
        float_model, (x_train, y_train), (x_val, y_val), target_size_bytes=30_000, budget=2,
        finetune_epochs=2, rates=RATES, progress=lines.append)
    report = result.report
    assert report.met and result.model is not None, str(report)
    chosen = report.chosen
    assert chosen.predicted_bytes <= 30_000 and chosen.meets
    assert set(chosen.precisions.values()) - {"float"}  # something was compressed
    assert report.finetunes <= 2
    # The returned model converts and runs in our runtime with the report's figures.
    content = lowbit_tf.convert(result.model)
    assert content == result.tflite_model and len(content) == chosen.tflite_bytes
    assert abs(len(content) - chosen.predicted_bytes) <= 0.06 * len(content)
    assert _accuracy(content, x_val, y_val) == chosen.accuracy
    assert chosen.accuracy > 0.5  # it learned (chance is 0.1)
    # The report: a table row per candidate, the chosen one marked; progress lines.
    text = str(report)
    assert "float model: accuracy" in text and "*" in text and "chosen: #" in text
    assert any(line.startswith("candidate") for line in lines)
    assert any(line.startswith("sensitivity conv1") for line in lines)


def test_accuracy_drop_is_met_by_the_float_model_at_worst(digits, float_model):
    x_train, y_train, x_val, y_val = digits
    result = lowbit_tf.compress(float_model, (x_train, y_train), (x_val, y_val),
                                max_accuracy_drop=0.5, budget=2, finetune_epochs=1,
                                rates=RATES, progress=False)
    report = result.report
    assert report.met and report.finetunes <= 2
    assert report.chosen.accuracy >= report.baseline_accuracy - 0.5
    # With a drop this generous the smallest candidate evaluated wins.
    assert report.chosen.predicted_bytes < report.candidates[0].predicted_bytes


def test_unreachable_constraint_is_reported_with_the_smallest_cost(digits, float_model):
    x_train, y_train, x_val, y_val = digits
    result = lowbit_tf.compress(float_model, (x_train, y_train), (x_val, y_val),
                                target_size_bytes=500, budget=2, rates=RATES, progress=False)
    report = result.report
    assert not report.met and result.model is None and report.finetunes == 0
    assert "unreachable" in report.message and "500" not in report.message
    smallest = report.candidates[-1].predicted_bytes
    assert f"predicted at {smallest} bytes" in report.message
    assert "chosen: none" in str(report)


def test_interruption_keeps_the_best_so_far(digits, float_model):
    x_train, y_train, x_val, y_val = digits
    seen = []

    def progress(line: str) -> None:
        seen.append(line)
        if line.startswith("candidate 1"):
            raise KeyboardInterrupt

    result = lowbit_tf.compress(float_model, (x_train, y_train), (x_val, y_val),
                                max_accuracy_drop=0.9, budget=5, finetune_epochs=1,
                                rates=RATES, progress=progress)
    report = result.report
    assert report.stopped == "interrupted" and report.finetunes == 1
    assert report.met and result.model is not None  # candidate 1 (or the float model)
    assert "interrupted: keeping the best candidate so far" in seen


def test_pareto_front_and_plot(digits, float_model, tmp_path):
    pytest.importorskip("matplotlib")
    x_train, y_train, x_val, y_val = digits
    report = lowbit_tf.compress(float_model, (x_train, y_train), (x_val, y_val),
                                max_accuracy_drop=0.05, budget=2, finetune_epochs=1,
                                rates=RATES, progress=False).report
    front = report.pareto_front()
    assert front and all(a.predicted_bytes <= b.predicted_bytes and a.accuracy < b.accuracy
                         for a, b in zip(front, front[1:], strict=False))
    png = report.plot(tmp_path / "pareto.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_relu_inputs_get_no_sign_precision(digits):
    """A conv right after a ReLU (no BN between) may only become ABC."""
    x_train, y_train, x_val, y_val = digits
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="a"),
        keras.layers.Conv2D(8, 3, activation="relu", name="b"),
        keras.layers.MaxPooling2D(), keras.layers.Conv2D(8, 1, name="c"),
        keras.layers.Flatten(), keras.layers.Dense(10, name="d")])
    report = lowbit_tf.compress(model, (x_train[:64], y_train[:64]), (x_val[:64], y_val[:64]),
                                target_size_bytes=10**9, budget=1, rates=RATES,
                                precisions=("binary",), progress=False).report
    # Only b is searchable with "binary" (a and d are first and last; c reads a ReLU).
    assert set(report.candidates[0].precisions) == {"b"}


@pytest.mark.parametrize("kwargs, message", [
    ({}, "at least one of max_accuracy_drop"),
    ({"max_accuracy_drop": -1}, "max_accuracy_drop must be a number >= 0"),
    ({"max_accuracy_drop": 0.1, "target": "riscv"}, "target must be one of"),
    ({"max_accuracy_drop": 0.1, "precisions": ("int4",)}, "unknown precision 'int4'"),
    ({"max_accuracy_drop": 0.1, "budget": 0}, "budget must be a positive number"),
])
def test_bad_arguments_name_the_value(digits, float_model, kwargs, message):
    x_train, y_train, x_val, y_val = digits
    with pytest.raises(ValueError, match=message):
        lowbit_tf.compress(float_model, (x_train, y_train), (x_val, y_val), rates=RATES,
                           progress=False, **kwargs)


def test_cost_model_follows_the_macs():
    """Binary MACs cost 1/rate_binary each, float 1/rate_float, k-bit k binary;
    a layer without MACs costs nothing."""
    from lowbit_tf import layers

    inputs = keras.Input((8, 8, 32))
    x = layers.QuantConv2D(32, 3, padding="same", input_quantizer="ste_sign",
                           kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                           use_bias=False)(inputs)
    x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    summary = lowbit_tf.summary(keras.Model(inputs, x), print_fn=None)
    binary, flt = 8 * 8 * 9 * 32 * 32, 8 * 8 * 32 * 16
    want = 2 * RATES.per_layer_ms + binary / RATES.binary_macs_per_ms \
        + flt / RATES.float_macs_per_ms
    assert cost_model.estimate_latency_ms(summary, RATES) == pytest.approx(want)
    assert RATES.mac_cost_ms(2, 100) == pytest.approx(200 / RATES.binary_macs_per_ms)
    with pytest.raises(ValueError, match="target must be one of"):
        cost_model.rates_for("mips")
    assert "Pi 4" in cost_model.rates_for("aarch64").source


def test_fastfood_replaces_a_large_dense_layer(digits):
    """"fastfood" applies to Dense layers (a FastfoodDense learned in the fine-tune)."""
    x_train, y_train, x_val, y_val = digits
    keras.utils.set_random_seed(1)
    model = keras.Sequential([
        keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(256, activation="relu", name="hidden"),
        keras.layers.Dense(10, name="logits")])
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x_train, y_train, epochs=3, verbose=0)
    result = lowbit_tf.compress(model, (x_train, y_train), (x_val, y_val),
                                target_size_bytes=40_000, precisions=("fastfood",), budget=1,
                                finetune_epochs=3, rates=RATES, progress=False)
    chosen = result.report.chosen
    assert chosen is not None and chosen.precisions == {"hidden": "fastfood"}
    assert isinstance(result.model.get_layer("hidden"), lowbit_tf.layers.FastfoodDense)
    content = lowbit_tf.convert(result.model)
    assert _accuracy(content, x_val, y_val) == chosen.accuracy > 0.5


def test_int8_float_parts_are_a_move_of_the_search(digits, float_model):
    """int8=True: the float parts may go int8; the report's .tflite is the int8
    one, which runs in our runtime with the claimed accuracy, smaller than
    float and predicted within 10%."""
    x_train, y_train, x_val, y_val = digits
    rates = dataclasses.replace(RATES, int8_macs_per_ms=4e6)
    result = lowbit_tf.compress(float_model, (x_train, y_train), (x_val, y_val),
                                target_size_bytes=60_000, precisions=("binary",), int8=True,
                                budget=2, finetune_epochs=2, rates=rates, progress=False)
    report = result.report
    assert report.met, str(report)
    int8_candidates = [c for c in report.candidates
                       if c.precisions.get(compress_module.FLOAT_PARTS) == "int8"
                       and c.tflite_bytes is not None]
    assert int8_candidates, str(report)
    for c in int8_candidates:
        assert abs(c.predicted_bytes - c.tflite_bytes) <= 0.1 * c.tflite_bytes
        assert _accuracy(c.tflite, x_val, y_val) == c.accuracy
    assert "int8: float parts" in str(report)
    assert _accuracy(result.tflite_model, x_val, y_val) == report.chosen.accuracy
    # int8 float parts: the estimate counts their MACs at the int8 rate.
    summary = lowbit_tf.summary(float_model, print_fn=None)
    assert cost_model.estimate_latency_ms(summary, rates, int8=True) < \
        cost_model.estimate_latency_ms(summary, rates)
