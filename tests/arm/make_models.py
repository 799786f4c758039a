"""Makes the models and expected outputs for the emulated Arm check (host side).

    python tests/arm/make_models.py OUT_DIR

Needs TensorFlow and lowbit-tf (converter, TF ops) on this x86 machine. For
each model NAME it writes into OUT_DIR:
  NAME.tflite          converted with lowbit_converter (LowbitBconv2d custom ops)
  NAME.input.npy       a float32 input batch
  NAME.expected.npy    the output of lowbit_tf.lite.Interpreter on this machine
and manifest.json: {name: {"exact": bool, "custom_ops": n}}. "exact" models
contain only lowbit ops (their outputs must match bit for bit on Arm);
the others mix in float TFLite builtins run by XNNPACK, whose summation order
may differ per ISA, and are compared with a tolerance.

The expected outputs are computed with the delegate library named by
$LOWBIT_TFLITE_LIBRARY (run_emulated.sh points it at an x86 build of the same
sources as the Arm wheels), else the installed one.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

import lowbit_converter  # noqa: E402
from lowbit_models.digits import binary_digits_cnn  # noqa: E402
from lowbit_tf import constraints, layers  # noqa: E402
from lowbit_tf._keras import keras  # noqa: E402
from lowbit_tf.lite import Interpreter  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "helpers"))  # tests/helpers
from keras_helpers import randomize_batch_norms  # noqa: E402

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
              kernel_constraint=constraints.WeightClip(1.0))



def binary_stack() -> keras.Model:
    """Only lowbit ops: channel counts off the 32-bit word, both paddings,
    stride, dilation, a folded BatchNorm and ReLU."""
    inputs = keras.Input((11, 10, 40), name="x")
    x = layers.QuantConv2D(48, 3, padding="same", pad_values=1.0, use_bias=False,
                           name="b1", **BINARY)(inputs)
    x = keras.layers.BatchNormalization(name="b1_bn")(x)
    x = layers.QuantConv2D(33, (3, 2), strides=2, padding="same", pad_values=0.0,
                           name="b2", **BINARY)(x)
    x = keras.layers.BatchNormalization(name="b2_bn")(x)
    x = keras.layers.ReLU(name="b2_relu")(x)
    x = layers.QuantConv2D(70, 2, dilation_rate=2, padding="valid", name="b3", **BINARY)(x)
    return keras.Model(inputs, x, name="binary_stack")


def digits_cnn() -> keras.Model:
    """The demo's network: float stem, binary blocks, max-pool, dense."""
    return binary_digits_cnn()


MODELS = {
    # name: (constructor, input shape with batch, exact)
    "binary_stack": (binary_stack, (2, 11, 10, 40), True),
    "digits_cnn": (digits_cnn, (4, 8, 8, 1), False),
}


def main(out_dir: str) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(1234)
    manifest = {}
    for index, (name, (build, shape, exact)) in enumerate(MODELS.items()):
        model = build()
        randomize_batch_norms(model, seed=index)
        result = lowbit_converter.convert_with_report(model)
        if not result.lowered_layers:
            raise SystemExit(f"{name}: nothing was lowered to lowbit ops")
        rng = np.random.default_rng(100 + index)
        x = rng.standard_normal(shape).astype(np.float32)
        expected = Interpreter(model_content=result.tflite_model, num_threads=1).predict(x)
        (out / f"{name}.tflite").write_bytes(result.tflite_model)
        np.save(out / f"{name}.input.npy", x)
        np.save(out / f"{name}.expected.npy", expected)
        manifest[name] = {"exact": exact, "lowered": result.lowered_layers,
                          "output_shape": list(expected.shape)}
        print(f"{name}: lowered {result.lowered_layers}, output {expected.shape}")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
