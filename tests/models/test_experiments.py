"""The experiment scripts (experiments/*.py) run end to end in their --quick form.

Each runs in a subprocess, as a user would run it, into a temporary directory;
the test checks the exit status, the PNG and the table, that every accuracy in
the table lies in [0, 1] and that the float baseline learned something.

The training loop the experiments and the demo share reshuffles the batches
every epoch, reproducibly (checked on a tiny model that records what ``fit``
feeds it).
"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

pytest.importorskip("matplotlib", reason="the experiments plot with matplotlib")

# script -> regex whose group 1 is the float baseline's final test accuracy
FLOAT_BASELINE = {
    "binaryconnect": r"\| float \(32-bit weights\)\s*\| 32-bit\s*\|\s*([\d.]+)",
    "fastfood": r"\| Dense FC \(512-512\)\s*\|[^|]*\|[^|]*\|[^|]*\|\s*([\d.]+)",
    "abc_net": r"float network: ([\d.]+)",
    "fixed_point": r"float32: ([\d.]+)",
    "compress": r"\| digits_cnn\s*\| accuracy drop <= 0\.01 \|[^|]*\|\s*([\d.]+)",
    "int8_digits": r"PTQ: mean over seeds float\+binary ([\d.]+)",
    "tfmot_digits": r"TFMOT QAT: mean over seeds float\+binary ([\d.]+)",
}
# rows every quick run must have (labels of the variants it compares)
EXPECTED_ROWS = {
    "binaryconnect": ["BinaryConnect deterministic", "BinaryConnect stochastic"],
    "fastfood": ["Fastfood FC (512-512)"],
    "abc_net": ["| M=1 ", "| M=3 ", "N=1", "N=2"],
    "fixed_point": ["<8,8>", "<2,14>", "nearest", "stochastic"],
    "compress": ["| digits_cnn ", "| quicknet_style ", "size <= 1/4 float", "chosen: #"],
    "int8_digits": ["float+binary", "int8+binary PTQ", "int8+binary QAT", "target within 0.5",
                    "the same class as float+binary on"],
    "tfmot_digits": ["float+binary", "TFMOT QAT int8+binary", "target within 0.5"],
}
# scripts that need a package the [test] extra does not install -> that package
NEEDS = {"tfmot_digits": "tensorflow_model_optimization"}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FLOAT_BASELINE))
def test_experiment_quick_run(name, tmp_path):
    if name in NEEDS and importlib.util.find_spec(NEEDS[name]) is None:
        pytest.skip(f"{name} needs {NEEDS[name]} (the README's test command installs it)")
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / f"{name}.py"), "--quick", "--output-dir",
         str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    png = tmp_path / f"{name}.png"
    assert png.read_bytes().startswith(PNG_SIGNATURE)
    assert png.stat().st_size > 5000
    table = (tmp_path / f"{name}.txt").read_text()
    assert table in proc.stdout  # the table is printed, and saved as printed
    for row in EXPECTED_ROWS[name]:
        assert row in table
    # Accuracies are printed with 4 decimals; parameter counts and seconds are not.
    accuracies = [float(v) for v in re.findall(r"(?<![\d.])\d+\.\d{4}(?![\d.])", table)]
    assert accuracies and all(0.0 <= a <= 1.0 for a in accuracies), accuracies
    baseline = float(re.search(FLOAT_BASELINE[name], table).group(1))
    assert baseline > 0.5, table


@pytest.mark.slow
def test_int8_digits_quicknet_quick_run(tmp_path):
    """int8_digits.py --model quicknet: the small QuickNet on upscaled digits,
    PTQ and QAT, into its own files."""
    proc = subprocess.run(
        [sys.executable, str(EXPERIMENTS / "int8_digits.py"), "--quick", "--model", "quicknet",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "MPLBACKEND": "Agg"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "int8_digits_quicknet.png").read_bytes().startswith(PNG_SIGNATURE)
    table = (tmp_path / "int8_digits_quicknet.txt").read_text()
    assert "small QuickNet, digits upscaled to 32x32" in table
    for row in EXPECTED_ROWS["int8_digits"]:
        assert row in table
    assert float(re.search(FLOAT_BASELINE["int8_digits"], table).group(1)) > 0.5, table
    # The fidelity lines: PTQ, QAT and f32-stem agreement with float+binary.
    agreements = [float(v) for v in re.findall(
        r"the same class as float\+binary on ([\d.]+)% of all 1797 digits", table)]
    assert len(agreements) == 3 and all(50.0 < a <= 100.0 for a in agreements), table


def test_experiment_scripts_share_one_helper():
    """Every script parses the common options and writes through experiments/common.py."""
    scripts = sorted(p.stem for p in EXPERIMENTS.glob("*.py") if p.stem != "common")
    assert scripts == sorted(FLOAT_BASELINE)
    for name in scripts:
        source = (EXPERIMENTS / f"{name}.py").read_text()
        assert "common.parse_args(" in source and "common.save_figure(" in source, name


# ------------------------------------------------- batch order of the training loops

SAMPLES, BATCH, EPOCHS = 40, 8, 3


def _batch_orders(path: str, seed: int, tmp_path: Path) -> np.ndarray:
    """The sample order of every epoch (EPOCHS x SAMPLES) that ``path``'s training feeds."""
    import common

    from lowbit_tf import demo
    from lowbit_tf._keras import keras

    class BatchOrderRecorder(keras.Model):
        """Dense logits of a sample-index input; records the indices of every training batch."""

        def __init__(self):
            super().__init__()
            self.logits = keras.layers.Dense(10)
            self.seen: list[np.ndarray] = []

        def call(self, x):
            return self.logits(x)

        def compile(self, **kwargs):
            super().compile(run_eagerly=True, **kwargs)  # train_step sees concrete batches

        def train_step(self, data):
            self.seen.append(np.asarray(data[0])[:, 0].astype(int))
            return super().train_step(data)

    x = np.arange(SAMPLES, dtype=np.float32)[:, None]
    y = np.arange(SAMPLES, dtype=np.int32) % 10
    if path == "demo":  # one fit(epochs=EPOCHS)
        keras.utils.set_random_seed(seed)
        model = BatchOrderRecorder()
        model.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        demo.fit_digits(model, x, y, epochs=EPOCHS, seed=seed, batch_size=BATCH)
    else:  # experiments/common.py: one fit per epoch
        config = common.Config(name="order", quick=True, epochs=EPOCHS, batch_size=BATCH,
                               learning_rate=1e-2, seed=seed, output_dir=tmp_path)
        model = common.train("order", BatchOrderRecorder, common.Data(x, y, x, y), config).model
    return np.concatenate(model.seen).reshape(EPOCHS, SAMPLES)


@pytest.mark.parametrize("path", ["demo", "experiments"])
def test_training_reshuffles_every_epoch_reproducibly(path, tmp_path, monkeypatch):
    """Keras 3's fit(x, y, shuffle=True) after set_random_seed repeats epoch 1's order."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    orders = _batch_orders(path, 0, tmp_path)
    for order in orders:
        np.testing.assert_array_equal(np.sort(order), np.arange(SAMPLES))
    assert len({tuple(order) for order in orders}) == EPOCHS, orders  # a new order every epoch
    np.testing.assert_array_equal(_batch_orders(path, 0, tmp_path), orders)  # same seed
    assert not np.array_equal(_batch_orders(path, 1, tmp_path), orders)  # another seed


# ------------------------------------------------- stochastic BinaryConnect


def test_stochastic_binaryconnect_samples_new_weights_every_training_step():
    """The stochastic BinaryConnect variant's low binary-weight accuracy
    (experiments/README.md) is not the sampling: inside ``fit`` each step draws
    new binary weights, with P(+1) = clip((w + 1) / 2, 0, 1) (w = 0 here: 1/2),
    and inference takes the deterministic sign."""
    import tensorflow as tf

    from lowbit_tf import layers, quantizers
    from lowbit_tf._keras import keras

    units, steps = 64, 4

    class Recorder(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = layers.QuantDense(units, use_bias=False, kernel_initializer="zeros",
                                           kernel_quantizer=quantizers.StochasticSign(seed=3),
                                           kernel_constraint="weight_clip")
            self.sampled = tf.Variable(tf.zeros((8, units)), trainable=False)
            self.seen: list[np.ndarray] = []

        def call(self, x, training=None):
            return self.dense(x, training=training)

        def train_step(self, data):
            self.sampled.assign(self(data[0], training=True))  # rows: the sampled kernel
            return super().train_step(data)

    class Keep(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.model.seen.append(self.model.sampled.numpy().copy())

    keras.utils.set_random_seed(0)
    model = Recorder()
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")  # weights stay 0
    x, y = np.eye(8, dtype=np.float32), np.zeros((8, units), np.float32)
    model.fit(x, y, batch_size=8, epochs=steps, verbose=0, callbacks=[Keep()])
    draws = np.stack(model.seen)  # steps x 8 x units
    assert draws.shape == (steps, 8, units) and set(np.unique(draws)) == {-1.0, 1.0}
    assert len({d.tobytes() for d in draws}) == steps  # new weights every step
    assert 0.4 < np.mean(draws == 1.0) < 0.6  # P(+1) = 1/2 at w = 0
    np.testing.assert_array_equal(model(x).numpy(), np.ones((8, units)))  # inference: sign(0)


def test_binaryconnect_tests_binary_weights_with_recalibrated_batch_norm(monkeypatch, tmp_path):
    """binaryconnect.latent_accuracy(binary=True) puts the sign of the latent kernels
    (and nothing else) into the float twin."""
    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import binaryconnect
    import common

    from lowbit_tf._keras import keras

    config = common.Config(name="bc", quick=True, epochs=1, batch_size=32, learning_rate=1e-2,
                           seed=0, output_dir=tmp_path)
    rng = np.random.default_rng(0)
    data = common.Data(rng.random((64, 8, 8, 1), np.float32), rng.integers(0, 10, 64),
                       rng.random((16, 8, 8, 1), np.float32), rng.integers(0, 10, 16))
    keras.utils.set_random_seed(0)
    model = binaryconnect.build("stochastic", 0)
    result = common.Result("s", [0.0], 0.0, model.count_params(), model)
    captured = []
    monkeypatch.setattr(common, "accuracy", lambda twin, data: captured.append(twin) or 0.5)
    assert binaryconnect.latent_accuracy(result, data, config, binary=True) == 0.5
    pairs = list(zip(model.get_weights(), captured[0].get_weights(), strict=True))
    kernels = [(latent, used) for latent, used in pairs if latent.ndim == 2]
    assert len(kernels) == 3  # 64 -> 256 -> 256 -> 10
    for latent, used in kernels:
        np.testing.assert_array_equal(used, np.where(latent >= 0, 1.0, -1.0))


def test_missing_matplotlib_is_reported_before_training(monkeypatch, capsys):
    """Without matplotlib an experiment stops at once, naming what to install."""
    import importlib.util

    monkeypatch.syspath_prepend(str(EXPERIMENTS))
    import binaryconnect

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "matplotlib" else real_find_spec(name, *a))
    trained = []
    monkeypatch.setattr(binaryconnect.common, "train", lambda *a, **k: trained.append(a))
    with pytest.raises(SystemExit, match=r'pip install -e "\.\[experiments\]"'):
        binaryconnect.main(["--quick"])
    assert not trained
