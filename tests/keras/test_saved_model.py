"""SavedModels of models whose layers run on the lowbit ops, served by TensorFlow.

`model.export` and `tf.saved_model.save` write the custom ops into the graph;
a fresh process serves them with `tf.saved_model.load` after `import lowbit_tf`
(nothing else: the import registers the op library once TensorFlow is
imported). Without it TensorFlow's loader fails naming the op type. Each check
runs the loading side in a subprocess, as a server would.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from repo_paths import REPO

import lowbit_tf
from lowbit_tf import layers
from lowbit_tf._keras import KERAS_3, keras

SHAPE = (8, 8, 3)

SERVE = """
import sys
import numpy as np
{imports}
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
x = np.load(sys.argv[2])
out = loaded.signatures["serving_default"](tf.constant(x))
np.save(sys.argv[3], next(iter(out.values())).numpy())
"""


def _model() -> keras.Model:
    keras.utils.set_random_seed(3)
    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip")  # fmt: skip
    inputs = keras.Input(SHAPE)
    h = keras.layers.Conv2D(16, 3, padding="same")(inputs)
    h = layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False, **binary)(h)
    h = keras.layers.BatchNormalization()(h)
    h = layers.QuantDepthwiseConv2D(3, input_quantizer="ste_sign",
                                    depthwise_quantizer="magnitude_aware_sign")(h)  # fmt: skip
    h = keras.layers.Flatten()(h)
    return keras.Model(inputs, layers.QuantDense(10, **binary)(h))


def _graph_op_types(path: Path, named: str = "") -> set[str]:
    """Op types in the SavedModel's functions (read from saved_model.pb), or in
    those whose name contains `named`."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((path / "saved_model.pb").read_bytes())
    return {node.op for graph in proto.meta_graphs for function in graph.graph_def.library.function
            if named in function.signature.name for node in function.node_def}  # fmt: skip


def _serve(path: Path, x: np.ndarray, tmp_path: Path, imports: str):
    np.save(tmp_path / "x.npy", x)
    code = SERVE.format(imports=imports)
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [sys.executable, "-c", code, str(path), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip


def _export(model: keras.Model, path: Path, how: str) -> None:
    if how == "export":
        model.export(path, **({"verbose": False} if KERAS_3 else {}))  # tf-keras: no verbose
    else:
        serve = tf.function(lambda x: model(x, training=False),
                            input_signature=[tf.TensorSpec((None, *SHAPE), tf.float32)])
        tf.saved_model.save(model, str(path), signatures={"serving_default": serve})


@pytest.mark.parametrize("how", ["export", "tf.saved_model.save"])
def test_saved_model_serves_with_the_ops_after_import_lowbit_tf(tmp_path, how):
    model = _model()
    x = np.random.default_rng(0).normal(size=(5, *SHAPE)).astype(np.float32)
    want = model.predict(x, verbose=0)
    path = tmp_path / "saved"
    _export(model, path, how)
    types = _graph_op_types(path)
    assert {"LowbitBconv2d", "LowbitBDepthwiseConv2d", "LowbitBgemm"} <= types
    result = _serve(path, x, tmp_path, "import lowbit_tf")
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


def test_saved_model_without_lowbit_tf_fails_naming_the_op(tmp_path):
    """TensorFlow's own loader error: it names the op type (README, "Serving")."""
    model = _model()
    path = tmp_path / "saved"
    _export(model, path, "export")
    result = _serve(path, np.zeros((1, *SHAPE), np.float32), tmp_path, "")
    assert result.returncode != 0
    assert "Op type not registered 'Lowbit" in result.stderr


def test_without_the_op_library_layers_fall_back_with_a_warning(tmp_path):
    """A missing op library (here: the override names no file) leaves the
    layers on the float emulation, with one warning that says why."""
    code = (
        "import warnings, numpy as np\n"
        "import lowbit_tf\n"
        "from lowbit_tf import layers\n"
        "layer = layers.QuantDense(3, input_quantizer='ste_sign', kernel_quantizer='ste_sign')\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    y = layer(np.ones((2, 40), np.float32))\n"
        "    y = layer(np.ones((2, 40), np.float32))\n"
        "texts = [str(w.message) for w in caught if 'op library' in str(w.message)]\n"
        "print(len(texts)); print(texts[0])\n"
    )
    env = {"PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin",
           "LOWBIT_TF_OPS_LIBRARY": str(tmp_path / "missing.so")}  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    count, message = result.stdout.splitlines()[:2]
    assert count == "1"
    assert "float emulation" in message and "missing.so" in message


def test_lowbit_tf_exports_ops_scope():
    assert lowbit_tf.ops_scope is lowbit_tf.context.ops_scope


def test_saved_model_of_larq_conv_layers_serves_with_the_ops(tmp_path):
    """QuantConv1D, QuantConv3D and the separable layers' depthwise halves are
    in the exported graph on the ops, and serve the model's numbers."""
    keras.utils.set_random_seed(4)
    sign = dict(input_quantizer="ste_sign")
    binary = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", **sign)
    separable = dict(depthwise_quantizer="ste_sign", depthwise_constraint="weight_clip", **sign)
    inputs = keras.Input((4, 6, 6, 3))
    h = layers.QuantConv3D(8, 3, padding="same", pad_values=1.0, **binary)(inputs)
    h = keras.layers.Reshape((6, 6, 32))(h)
    h = layers.QuantSeparableConv2D(8, 3, padding="same", **separable)(h)
    h = keras.layers.Reshape((36, 8))(h)
    h = layers.QuantConv1D(8, 3, strides=2, **binary)(h)
    h = layers.QuantSeparableConv1D(4, 3, depth_multiplier=2, **separable)(h)
    model = keras.Model(inputs, keras.layers.Flatten()(h))
    x = np.random.default_rng(1).normal(size=(3, 4, 6, 6, 3)).astype(np.float32)
    want = model.predict(x, verbose=0)
    path = tmp_path / "saved"
    _export(model, path, "export")
    served = _graph_op_types(path, "___call__")  # the serving function, not the gradients
    assert {"LowbitBconv2d", "LowbitBDepthwiseConv2d"} <= served
    assert not {"Conv3D", "DepthwiseConv2dNative"} & served
    result = _serve(path, x, tmp_path, "import lowbit_tf")
    assert result.returncode == 0, result.stderr[-3000:]
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)
