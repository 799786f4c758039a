"""Bi-Real Net 18 (Liu et al. 2018), larq-zoo's ``literature.BiRealNet``: a
ResNet-18 whose every binary 3x3 convolution has its own shortcut; approx_sign
activations, magnitude-aware sign kernels; a float 1x1 convolution after 2x2
average pooling where the width doubles."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras


def _bn(x: Any, names: _build.KerasNames) -> Any:
    return keras.layers.BatchNormalization(momentum=0.8, name=names("batch_normalization"))(x)


def _residual_block(x: Any, names: _build.KerasNames, out_filters: int) -> Any:
    in_filters = x.shape[-1]
    shortcut = x
    if in_filters != out_filters:
        shortcut = keras.layers.AveragePooling2D(2, strides=2, padding="same",
                                                 name=names("average_pooling2d"))(shortcut)
        shortcut = keras.layers.Conv2D(out_filters, 1, kernel_initializer="glorot_normal",
                                       use_bias=False, name=names("conv2d"))(shortcut)
        shortcut = _bn(shortcut, names)
    x = lb_layers.QuantConv2D(
        out_filters, 3, strides=1 if out_filters == in_filters else 2, padding="same",
        input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign",
        kernel_initializer="glorot_normal", kernel_constraint="weight_clip", use_bias=False,
        name=names("quant_conv2d"))(x)
    x = _bn(x, names)
    return keras.layers.Add(name=names("add"))([x, shortcut])


def BiRealNet(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds Bi-Real Net 18 with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    filters = 64
    x = keras.layers.Conv2D(filters, 7, strides=2, kernel_initializer="glorot_normal",
                            padding="same", use_bias=False, name=names("conv2d"))(inputs)
    x = _bn(x, names)
    x = keras.layers.MaxPooling2D(3, strides=2, padding="same", name=names("max_pooling2d"))(x)
    for _ in range(4):
        x = _residual_block(x, names, filters)
    for _ in range(3):
        filters *= 2
        for _ in range(4):
            x = _residual_block(x, names, filters)
    if include_top:
        x = _build.global_pool(x, names)
        x = keras.layers.Dense(num_classes, name=names("dense"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, "birealnet18", path)
