"""Real-to-Binary Net (Martinez et al. 2020), larq-zoo's
``literature.RealToBinaryNet`` (its BNN stage): a ResNet-18 layout whose every
binary 3x3 convolution (sign inputs and kernels) is rescaled per channel by a
squeeze-and-excitation gate computed from the real-valued input (global pool ->
dense / 8 ReLU -> dense sigmoid), then PReLU and a shortcut. larq-zoo names
every layer here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

_MODEL = "r2b_bnn"
_MOMENTUM = 0.99
_SCALING_REDUCTION = 8


def _bn(x: Any, name: str) -> Any:
    return keras.layers.BatchNormalization(momentum=_MOMENTUM, name=name)(x)


def _shortcut(x: Any, name: str, out_channels: int) -> Any:
    if x.shape[-1] == out_channels:
        return x
    x = keras.layers.AveragePooling2D(2, strides=2, padding="same",
                                      name=f"{name}_shortcut_pool")(x)
    x = keras.layers.Conv2D(out_channels, 1, kernel_initializer="glorot_normal",
                            use_bias=False, name=f"{name}_shortcut_conv2d")(x)
    return _bn(x, f"{name}_shortcut_batch_norm")


def _scale(conv_input: Any, conv_output: Any, names: _build.KerasNames, name: str) -> Any:
    """The data-dependent gate of section 4.3, from the binary conv's real input."""
    out_filters = conv_output.shape[-1]
    z = _build.global_pool(conv_input, names, name=f"{name}_scaling_pool")
    z = keras.layers.Dense(conv_input.shape[-1] // _SCALING_REDUCTION, activation="relu",
                           kernel_initializer="he_normal", use_bias=False,
                           name=f"{name}_scaling_dense_reduce")(z)
    z = keras.layers.Dense(out_filters, activation="sigmoid", kernel_initializer="he_normal",
                           use_bias=False, name=f"{name}_scaling_dense_expand")(z)
    z = keras.layers.Reshape((1, 1, out_filters), name=f"{name}_scaling_reshape")(z)
    return keras.layers.Multiply(name=f"{name}_scaling_multiplication")([conv_output, z])


def _half_block(x: Any, names: _build.KerasNames, downsample: bool, name: str) -> Any:
    out_channels = x.shape[-1] * (2 if downsample else 1)
    shortcut = _shortcut(x, name, out_channels)
    conv_input = _bn(x, f"{name}_batch_norm")
    y = lb_layers.QuantConv2D(
        out_channels, 3, strides=2 if downsample else 1, padding="same",
        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip", kernel_initializer="glorot_normal", use_bias=False,
        name=f"{name}_conv2d")(conv_input)
    y = _scale(conv_input, y, names, name)
    y = keras.layers.PReLU(shared_axes=[1, 2], name=f"{name}_prelu")(y)
    return keras.layers.Add(name=f"{name}_skip_add")([y, shortcut])


def RealToBinaryNet(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds the Real-to-Binary Net (BNN) with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    stem = f"{_MODEL}_block_1"
    x = keras.layers.Conv2D(64, 7, strides=2, kernel_initializer="glorot_normal",
                            padding="same", use_bias=False, name=f"{stem}_conv2d")(inputs)
    x = _bn(x, f"{stem}_batch_norm")
    x = keras.layers.PReLU(shared_axes=[1, 2], name=f"{stem}_prelu")(x)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=f"{stem}_pool")(x)
    for block in range(2, 10):
        name = f"{_MODEL}_block_{block}"
        x = _half_block(x, names, downsample=block % 2 == 0 and block > 3, name=f"{name}a")
        x = _half_block(x, names, downsample=False, name=f"{name}b")
        x = keras.layers.Identity(name=f"{name}_out")(x)
    if include_top:
        head = f"{_MODEL}_block_10"
        x = _build.global_pool(x, names, name=f"{head}_global_pool")
        x = keras.layers.Dense(num_classes, name=f"{head}_logits")(x)
        x = keras.layers.Softmax(dtype="float32", name=f"{head}_probs")(x)
    return _build.finish(inputs, x, _MODEL, path)
