"""tf-keras mode: with TF_USE_LEGACY_KERAS=1 and tf-keras installed, lowbit_tf's
classes are tf-keras (Keras 2) classes and the Larq tests pass there too.

TensorFlow reads TF_USE_LEGACY_KERAS when it is first imported, so the mode runs
in a fresh interpreter: pytest on the Larq test files (every Larq layer held to
real Larq's numbers, Larq's .h5 files, Larq's API and documented script, the
conversion of those layers and the summary's size prediction) and on the layers'
TF-op path (test_layer_ops.py, test_saved_model.py), and a few direct checks.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import pytest
from repo_paths import REPO, TESTS, helper_env

pytest.importorskip("tf_keras", reason="tf-keras is installed by the [test] extra")

# The Larq tests, and the layers on the TF ops (their switch, cache, SavedModels).
MODE_TESTS = ["keras/test_larq_layers.py", "keras/test_larq_compat.py", "keras/test_larq_api.py",
              "converter/test_larq_layers.py", "keras/test_layer_ops.py",
              "keras/test_saved_model.py", "keras/test_transpose_ops.py"]


def _run(args: list[str], **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=900, cwd=REPO,
                          env=helper_env(TF_CPP_MIN_LOG_LEVEL="3", **env))


def test_tests_pass_under_tf_keras():
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   *(str(TESTS / t) for t in MODE_TESTS)], TF_USE_LEGACY_KERAS="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "failed" not in result.stdout


def test_classes_are_tf_keras_classes():
    script = textwrap.dedent("""
        import tensorflow as tf, tf_keras
        from lowbit_tf import _keras, constraints, layers, metrics, optimizers, quantizers
        assert _keras.keras is tf_keras and not _keras.KERAS_3
        assert tf.keras.layers.Dense is tf_keras.layers.Dense
        for cls in (layers.QuantConv2D, layers.QuantDense, layers.QuantLocallyConnected2D,
                    layers.QuantSeparableConv2D, layers.ABCConv2D, layers.FastfoodDense):
            assert issubclass(cls, tf_keras.layers.Layer), cls
        assert issubclass(constraints.WeightClip, tf_keras.constraints.Constraint)
        assert issubclass(metrics.FlipRatio, tf_keras.metrics.Metric)
        assert issubclass(optimizers.Bop, tf_keras.optimizers.Optimizer)
        model = tf.keras.Sequential([tf.keras.Input((6, 6, 3)), layers.QuantConv2D(
            4, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint="weight_clip")])
        assert isinstance(model, tf_keras.Model)
        print("ok")
    """)
    result = _run([sys.executable, "-c", script], TF_USE_LEGACY_KERAS="1")
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-3000:]


def test_missing_tf_keras_is_a_clear_error(tmp_path):
    (tmp_path / "tf_keras.py").write_text("raise ImportError('no tf_keras here')\n")
    result = _run([sys.executable, "-c", "import lowbit_tf.layers"], TF_USE_LEGACY_KERAS="1",
                  PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    assert result.returncode != 0
    assert "TF_USE_LEGACY_KERAS=1 asks for tf-keras" in result.stderr
    assert "pip install tf-keras" in result.stderr


def test_tfmot_under_tf_keras():
    """TFMOT's QAT and pruning on models with lowbit layers, their conversion
    (keras/test_tfmot.py, which needs the tf-keras mode)."""
    if importlib.util.find_spec("tensorflow_model_optimization") is None:
        pytest.skip("TFMOT is installed by the README's test command")
    result = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                   str(TESTS / "keras/test_tfmot.py")], TF_USE_LEGACY_KERAS="1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-3000:]


def test_tfmot_module_needs_tf_keras_mode():
    from lowbit_tf import _keras

    if not _keras.KERAS_3:
        pytest.skip("this process runs in the tf-keras mode")
    with pytest.raises(ImportError, match="needs the tf-keras mode"):
        import lowbit_tf.tfmot  # noqa: F401
