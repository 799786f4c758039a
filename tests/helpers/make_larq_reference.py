"""Makes tests/data/larq/: what real Larq computes, for the tests that hold our
layers and Larq-file loading to it (tests/keras/test_larq_layers.py,
tests/keras/test_larq_compat.py).

Larq needs Keras 2 (tf.keras of TensorFlow <= 2.15), so this script does not run
in the project's environment; it runs in a side one:

    python3.11 -m venv .larq-venv
    .larq-venv/bin/pip install "tensorflow-cpu==2.15.1" "larq==0.14.0" "larq-zoo==2.4.0" "numpy<2"
    .larq-venv/bin/python tests/helpers/make_larq_reference.py

and writes, all small enough to ship:

- ``layers.json`` + ``layers.npz``: for every case of LAYER_CASES, the Larq layer's
  class and arguments, an input, seeded weights (in the layer's weight order,
  with their Larq names), the output of ``layer(x, training=True)`` and the
  gradients of ``sum(y * r)`` (``r`` a fixed random tensor) with respect to the
  input and to every trainable weight;
- ``<model>.h5``: small Keras 2 models made of Larq layers (MODEL_CASES), saved
  with ``model.save`` (config and latent weights), and ``models.npz`` with an
  input and the model's output on it (inference mode).

Everything is seeded: running it again gives the same files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "data" / "larq"

SIGN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign",
        "kernel_constraint": "weight_clip"}

# (name, Larq layer class, arguments, input shape). Inputs are batch-first.
LAYER_CASES = [
    ("conv1d_same_pad1", "QuantConv1D",
     dict(filters=4, kernel_size=3, padding="same", pad_values=1.0, **SIGN), (2, 9, 5)),
    ("conv1d_dilation2_no_bias", "QuantConv1D",
     dict(filters=3, kernel_size=3, dilation_rate=2, padding="same",
          pad_values=1.0, use_bias=False, **SIGN), (2, 11, 4)),
    ("conv1d_causal", "QuantConv1D",
     dict(filters=4, kernel_size=3, padding="causal", input_quantizer="approx_sign",
          kernel_quantizer="ste_sign", kernel_constraint="weight_clip"), (2, 8, 3)),
    ("conv1d_valid_stride2_channels_first", "QuantConv1D",
     dict(filters=4, kernel_size=2, strides=2, data_format="channels_first", **SIGN),
     (2, 3, 9)),
    ("conv3d_same_pad1", "QuantConv3D",
     dict(filters=4, kernel_size=(3, 2, 3), strides=(1, 2, 1), padding="same",
          pad_values=1.0, **SIGN), (2, 5, 6, 4, 3)),
    ("conv3d_valid", "QuantConv3D",
     dict(filters=2, kernel_size=2, input_quantizer="ste_sign",
          kernel_quantizer="ste_sign"), (1, 4, 4, 4, 2)),
    ("conv2d_transpose_same_stride2", "QuantConv2DTranspose",
     dict(filters=4, kernel_size=3, strides=2, padding="same", **SIGN), (2, 5, 6, 3)),
    ("conv2d_transpose_valid_output_padding", "QuantConv2DTranspose",
     dict(filters=3, kernel_size=(3, 2), strides=(2, 3), output_padding=(1, 2),
          padding="valid", **SIGN), (1, 4, 3, 2)),
    ("conv3d_transpose_stride2", "QuantConv3DTranspose",
     dict(filters=2, kernel_size=2, strides=2, padding="same", **SIGN), (1, 3, 4, 3, 2)),
    ("separable_conv1d_same_pad1", "QuantSeparableConv1D",
     dict(filters=5, kernel_size=3, depth_multiplier=2, padding="same", pad_values=1.0,
          input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
          pointwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
          pointwise_constraint="weight_clip"), (2, 9, 4)),
    ("separable_conv2d_same_pad1_stride2", "QuantSeparableConv2D",
     dict(filters=4, kernel_size=3, strides=2, padding="same", pad_values=1.0,
          input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
          pointwise_quantizer="ste_sign", depthwise_constraint="weight_clip",
          pointwise_constraint="weight_clip"), (2, 7, 6, 3)),
    ("separable_conv2d_valid_dilation2_float_pointwise", "QuantSeparableConv2D",
     dict(filters=3, kernel_size=3, dilation_rate=2, input_quantizer="ste_sign",
          depthwise_quantizer="ste_sign", activation="relu"), (1, 8, 8, 2)),
    ("locally_connected1d_impl1", "QuantLocallyConnected1D",
     dict(filters=4, kernel_size=3, strides=2, **SIGN), (2, 9, 3)),
    ("locally_connected1d_impl2_same", "QuantLocallyConnected1D",
     dict(filters=3, kernel_size=3, padding="same", implementation=2, **SIGN), (2, 7, 2)),
    ("locally_connected2d_impl1", "QuantLocallyConnected2D",
     dict(filters=4, kernel_size=(3, 2), strides=(1, 2), **SIGN), (2, 6, 5, 3)),
    ("locally_connected2d_impl2_same", "QuantLocallyConnected2D",
     dict(filters=2, kernel_size=3, strides=2, padding="same", implementation=2, **SIGN),
     (1, 5, 6, 2)),
    ("locally_connected2d_impl1_channels_first", "QuantLocallyConnected2D",
     dict(filters=3, kernel_size=2, data_format="channels_first", **SIGN), (2, 2, 4, 5)),
    # The layers we had before, through the same check.
    ("conv2d_same_pad1", "QuantConv2D",
     dict(filters=4, kernel_size=3, padding="same", pad_values=1.0, **SIGN), (2, 6, 5, 3)),
    ("depthwise_conv2d_same_pad1", "QuantDepthwiseConv2D",
     dict(kernel_size=3, depth_multiplier=2, padding="same", pad_values=1.0,
          input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
          depthwise_constraint="weight_clip"), (2, 5, 6, 3)),
    ("dense", "QuantDense", dict(units=5, **SIGN), (3, 7)),
]


def seeded(shape, seed: int, scale: float) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-scale, scale, size=shape).astype(np.float32)


def layer_reference(tf, lq) -> None:
    arrays: dict[str, np.ndarray] = {}
    cases = []
    for index, (name, cls, kwargs, shape) in enumerate(LAYER_CASES):
        layer = getattr(lq.layers, cls)(**kwargs)
        x = tf.constant(np.random.default_rng(1000 + index).normal(0, 1.2, shape)
                        .astype(np.float32))
        layer.build(x.shape)
        names = []
        for k, w in enumerate(layer.weights):
            scale = 0.5 if "bias" in w.name else 1.5
            w.assign(seeded(w.shape, 100 * index + k, scale))
            names.append(w.name.split("/")[-1].split(":")[0])
            arrays[f"{name}/w{k}"] = w.numpy()
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(x)
            y = layer(x, training=True)
            r = tf.constant(np.random.default_rng(2000 + index).normal(size=y.shape)
                            .astype(np.float32))
            loss = tf.reduce_sum(y * r)
        arrays[f"{name}/x"] = x.numpy()
        arrays[f"{name}/r"] = r.numpy()
        arrays[f"{name}/y"] = y.numpy()
        arrays[f"{name}/dx"] = tape.gradient(loss, x).numpy()
        trainable = [k for k, w in enumerate(layer.weights) if w.trainable]
        grads = tape.gradient(loss, [layer.weights[k] for k in trainable])
        for k, g in zip(trainable, grads, strict=True):
            arrays[f"{name}/dw{k}"] = g.numpy()
        cases.append({"name": name, "class": cls, "kwargs": kwargs, "input_shape": shape,
                      "weights": names})
        print(f"{name}: {cls} -> {tuple(y.shape)}")
    np.savez_compressed(OUT / "layers.npz", **arrays)
    (OUT / "layers.json").write_text(json.dumps(cases, indent=1) + "\n")


def mnist_cnn(tf, lq):
    """Larq's documented first example (smaller)."""
    kwargs = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                  kernel_constraint="weight_clip")
    return tf.keras.Sequential([
        lq.layers.QuantConv2D(8, (3, 3), kernel_quantizer="ste_sign",
                              kernel_constraint="weight_clip", use_bias=False,
                              input_shape=(12, 12, 1)),
        tf.keras.layers.MaxPooling2D((2, 2)),
        tf.keras.layers.BatchNormalization(scale=False),
        lq.layers.QuantConv2D(8, (3, 3), use_bias=False, **kwargs),
        tf.keras.layers.BatchNormalization(scale=False),
        tf.keras.layers.Flatten(),
        lq.layers.QuantDense(10, use_bias=False, **kwargs),
        tf.keras.layers.BatchNormalization(scale=False),
        tf.keras.layers.Activation("softmax"),
    ], name="mnist_cnn")


def every_layer(tf, lq):
    """A functional model with every Larq layer and quantizer kind."""
    q = lq.quantizers
    inputs = tf.keras.Input((10, 10, 3))
    x = lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, input_quantizer="ste_sign",
                              kernel_quantizer=q.SteSign(clip_value=1.25,
                                                         metrics=["flip_ratio"]),
                              kernel_constraint=lq.constraints.WeightClip(1.25),
                              name="binary_conv")(inputs)
    x = tf.keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
    y = lq.layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0,
                                       input_quantizer="approx_sign",
                                       depthwise_quantizer=q.MagnitudeAwareSign(),
                                       depthwise_constraint="weight_clip")(x)
    x = tf.keras.layers.Add()([x, y])
    x = lq.layers.QuantSeparableConv2D(6, 3, strides=2, padding="same",
                                       input_quantizer=q.SwishSign(beta=5.0),
                                       depthwise_quantizer="ste_sign",
                                       pointwise_quantizer=q.NoOp(precision=1),
                                       depthwise_constraint="weight_clip",
                                       activation="relu")(x)
    x = lq.layers.QuantConv2DTranspose(4, 2, strides=2, input_quantizer=q.SteHeaviside(),
                                       kernel_quantizer=q.SteTern(threshold_value=0.1),
                                       kernel_constraint="weight_clip")(x)
    x = lq.layers.QuantConv2D(4, 3, strides=2, input_quantizer=q.DoReFa(k_bit=2),
                              kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
                              activation=lq.activations.hard_tanh)(x)
    x = lq.layers.QuantLocallyConnected2D(3, 2, input_quantizer="ste_sign",
                                          kernel_quantizer="ste_sign",
                                          kernel_constraint="weight_clip")(x)
    x = tf.keras.layers.Flatten()(x)
    outputs = lq.layers.QuantDense(5, input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                   kernel_constraint="weight_clip",
                                   activation="leaky_tanh")(x)
    return tf.keras.Model(inputs, outputs, name="every_layer")


def sequences(tf, lq):
    """1D and 3D layers."""
    sign = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                kernel_constraint="weight_clip")
    inputs = tf.keras.Input((2, 3, 3, 2))
    x = lq.layers.QuantConv3D(4, 3, padding="same", pad_values=1.0, **sign)(inputs)
    x = lq.layers.QuantConv3DTranspose(2, 2, strides=(1, 2, 2), **sign)(x)
    x = tf.keras.layers.Reshape((-1, 2))(x)
    x = lq.layers.QuantConv1D(4, 3, padding="causal", **sign)(x)
    x = lq.layers.QuantSeparableConv1D(3, 3, padding="same", pad_values=1.0,
                                       input_quantizer="ste_sign",
                                       depthwise_quantizer="ste_sign",
                                       pointwise_quantizer="ste_sign",
                                       depthwise_constraint="weight_clip",
                                       pointwise_constraint="weight_clip")(x)
    x = tf.keras.layers.MaxPooling1D(4)(x)
    x = lq.layers.QuantLocallyConnected1D(2, 4, strides=3, implementation=2, **sign)(x)
    outputs = tf.keras.layers.GlobalAveragePooling1D()(x)
    return tf.keras.Model(inputs, outputs, name="sequences")


MODEL_CASES = [mnist_cnn, every_layer, sequences]


def set_seeded_weights(model, seed: int) -> None:
    """Every weight seeded; BatchNorm variances positive."""
    for k, w in enumerate(model.weights):
        value = seeded(w.shape, seed + k, 0.5 if "bias" in w.name or "beta" in w.name else 1.5)
        if "moving_variance" in w.name or "gamma" in w.name:
            value = 0.5 + np.abs(value)
        w.assign(value)


def model_reference(tf, lq) -> None:
    arrays = {}
    for index, make in enumerate(MODEL_CASES):
        model = make(tf, lq)
        set_seeded_weights(model, 10_000 * (index + 1))
        shape = (2, *model.input_shape[1:])
        x = np.random.default_rng(3000 + index).normal(0, 1.2, shape).astype(np.float32)
        arrays[f"{model.name}/x"] = x
        arrays[f"{model.name}/y"] = model(x, training=False).numpy()
        model.save(OUT / f"{model.name}.h5")
        print(f"{model.name}.h5: {len(model.layers)} layers -> {arrays[f'{model.name}/y'].shape}")
    np.savez_compressed(OUT / "models.npz", **arrays)


def main() -> int:
    import larq as lq
    import tensorflow as tf

    if not tf.__version__.startswith("2.15"):
        raise SystemExit(f"needs TensorFlow 2.15 with Keras 2 (found {tf.__version__}); "
                         "see the docstring")
    OUT.mkdir(parents=True, exist_ok=True)
    layer_reference(tf, lq)
    model_reference(tf, lq)
    return 0


if __name__ == "__main__":
    sys.exit(main())
