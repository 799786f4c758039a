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

int8_stem is TFLite's own int8 model of a 3-channel 3x3 stride-2 conv (int8
in and out, no lowbit ops): its CONV_2D is what the delegate claims on a Pi 4
(the NEON kernel, core/int8_conv2d_neon.cc). Its expected codes come from
TFLite's reference kernels (BUILTIN_REF, the definition our kernels are
exact to), and manifest "int8_convs": 1 says how many CONV_2D nodes the
delegate must claim (Int8Conv2DHasFastPath(): every Arm CPU).

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


def int8_stem() -> tuple[bytes, np.ndarray, np.ndarray]:
    """(model, int8 input, expected int8 output): a Keras conv like QuickNet's
    stem (3 -> 16 channels, 3x3, stride 2, SAME, ReLU) on odd sizes (23x17:
    a partial step of pixels), int8 post-training quantized by TFLiteConverter."""
    import tensorflow as tf

    rng = np.random.default_rng(7)
    inputs = keras.Input((23, 17, 3))
    conv = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")
    model = keras.Model(inputs, conv(inputs))
    conv.set_weights([rng.standard_normal(conv.kernel.shape) * 0.3, rng.standard_normal(16)])
    data = (rng.standard_normal((16, 23, 17, 3)) * 2 + 0.5).astype(np.float32)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([d[None]] for d in data)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    content = converter.convert()
    x = rng.integers(-128, 128, (2, 23, 17, 3), dtype=np.int8)
    reference = tf.lite.Interpreter(
        model_content=content,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_REF)
    reference.resize_tensor_input(reference.get_input_details()[0]["index"], x.shape)
    reference.allocate_tensors()
    reference.set_tensor(reference.get_input_details()[0]["index"], x)
    reference.invoke()
    return content, x, reference.get_tensor(reference.get_output_details()[0]["index"])


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
    content, x, expected = int8_stem()
    (out / "int8_stem.tflite").write_bytes(content)
    np.save(out / "int8_stem.input.npy", x)
    np.save(out / "int8_stem.expected.npy", expected)
    manifest["int8_stem"] = {"exact": True, "lowered": 0, "int8_convs": 1,
                             "output_shape": list(expected.shape)}
    print(f"int8_stem: int8 CONV_2D, output {expected.shape}")
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
