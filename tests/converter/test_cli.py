"""`lowbit-convert` (lowbit_converter.cli): bad arguments are answered before
TensorFlow loads, and a conversion prints ours, not TensorFlow's C++ log.

Asserts on what is imported and printed, never on time."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from repo_paths import REPO

from lowbit_tf._tf_logs import filtered_native_stderr, is_noise


def run_python(args: list[str], cwd, **env: str) -> subprocess.CompletedProcess:
    """`python args` with this checkout's packages first on the path and
    TensorFlow's log level as a user would have it (unset: conftest sets it)."""
    environ = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    paths = [str(REPO), str(REPO / "converter"), str(REPO / "models")]
    environ["PYTHONPATH"] = os.pathsep.join([*paths, environ.get("PYTHONPATH", "")])
    environ.update(env)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=environ, capture_output=True,
                          text=True, timeout=300)


def test_help_and_bad_paths_are_answered_without_importing_tensorflow(tmp_path):
    (tmp_path / "model.txt").write_text("not a model")
    (tmp_path / "folder.keras").mkdir()
    script = textwrap.dedent("""
        import sys
        from lowbit_converter.cli import main
        codes = []
        for argv in (["--help"], ["missing.keras"], ["model.txt"], ["folder.keras"],
                     ["missing.keras", "-o", "no/such/folder/m.tflite"]):
            try:
                codes.append(main(argv))
            except SystemExit as exit:
                codes.append(exit.code)
        heavy = sorted(m for m in ("tensorflow", "keras", "numpy") if m in sys.modules)
        print("codes", codes, "heavy", heavy)
    """)
    proc = run_python(["-c", script], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "codes [0, 2, 2, 2, 2] heavy []" in proc.stdout, proc.stdout + proc.stderr
    assert "usage: lowbit-convert" in proc.stdout
    assert "model file not found: missing.keras" in proc.stderr
    assert "expected a Keras model file (.keras, .h5, .hdf5)" in proc.stderr
    assert "folder.keras is a directory" in proc.stderr
    # python -m lowbit_converter goes the same way.
    proc = run_python(["-X", "importtime", "-m", "lowbit_converter", "missing.keras"], tmp_path)
    assert proc.returncode == 2
    assert "model file not found" in proc.stderr
    imported = [line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
                if line.startswith("import time:")]
    assert "lowbit_converter.cli" in imported
    assert not [m for m in imported if m.split(".")[0] in ("tensorflow", "keras")]


def test_conversion_prints_no_tensorflow_log(tmp_path):
    from lowbit_tf import layers
    from lowbit_tf._keras import keras

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        layers.QuantConv2D(8, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           name="bconv"),
        keras.layers.BatchNormalization(),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    model.save(tmp_path / "tiny.keras")
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "-o", "tiny.tflite"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "lowered layers: bconv" in proc.stdout
    assert (tmp_path / "tiny.tflite").stat().st_size > 0
    for noise in ("cuInit", "need TFLite custom op", "Custom ops:", "oneDNN",
                  "absl::InitializeLog", "Reading SavedModel", "cuda drivers"):
        assert noise not in proc.stderr, proc.stderr
    # Python-side warnings still show: the layer's own (no kernel_constraint).
    assert "Layer 'bconv': using a binary weight quantizer" in proc.stderr


def test_int8_conversion(tmp_path):
    import numpy as np

    from lowbit_tf import layers
    from lowbit_tf._keras import keras
    from lowbit_tf.lite import Interpreter

    model = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(8, 3, name="conv"),
        layers.QuantConv2D(8, 3, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                           kernel_constraint="weight_clip", name="bconv"),
        keras.layers.Flatten(),
        keras.layers.Dense(3),
    ])
    model.save(tmp_path / "tiny.keras")
    np.save(tmp_path / "samples.npy", np.random.default_rng(0).standard_normal((8, 8, 8, 3)))
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8", "samples.npy",
                       "--int8-io"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "fully_quantize" not in proc.stderr and "cuInit" not in proc.stderr, proc.stderr
    interpreter = Interpreter(model_path=tmp_path / "tiny.tflite")
    assert interpreter.get_input_details()[0]["dtype"] == np.int8
    assert interpreter.get_output_details()[0]["dtype"] == np.int8
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8-io"], tmp_path)
    assert proc.returncode == 2 and "--int8-io needs --int8" in proc.stderr
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8", "nope.npy"], tmp_path)
    assert proc.returncode == 2 and "--int8 samples file not found: nope.npy" in proc.stderr
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8-float-layer", "conv"],
                      tmp_path)
    assert proc.returncode == 2 and "--int8-float-layer needs --int8 SAMPLES" in proc.stderr
    # --int8 with no file: quantization-aware, which a model without fake-quant
    # layers cannot be.
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8"], tmp_path)
    assert proc.returncode == 1 and "FakeQuantInt8 layers" in proc.stderr
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8", "samples.npy",
                       "--int8-float-layer", "conv", "-o", "stem.tflite"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    interpreter = Interpreter(model_path=tmp_path / "stem.tflite")
    assert interpreter.get_input_details()[0]["dtype"] == np.float32
    first = interpreter.get_tensor_details()[interpreter._get_ops_details()[0]["outputs"][0]]
    assert first["dtype"] == np.float32  # the conv kept float
    proc = run_python(["-m", "lowbit_converter", "tiny.keras", "--int8", "samples.npy",
                       "--int8-float-layer", "nope"], tmp_path)
    assert proc.returncode == 1 and "'nope' names no float layer" in proc.stderr


def test_filtered_native_stderr_keeps_errors_and_python_output(capfd):
    lines = [
        "W0000 00:00:1796469609.307688   19329 tf_tfl_flatbuffer_helpers.cc:364] Ignored x.\n",
        "I0000 00:00:1796469609.308024   19329 reader.cc:83] Reading SavedModel from: /tmp/x\n",
        "Custom ops: LowbitBconv2d\n",
        "E0000 00:00:1796469609.308024   19329 some_op.cc:83] a real error\n",
        "a plain line\n",
    ]
    assert [is_noise(line) for line in lines] == [True, True, True, False, False]
    with filtered_native_stderr():
        for line in lines:
            os.write(2, line.encode())
        print("python stderr", file=sys.stderr)
    err = capfd.readouterr().err
    assert "a real error" in err and "a plain line" in err and "python stderr" in err
    assert "Ignored" not in err and "Reading SavedModel" not in err and "Custom ops" not in err
