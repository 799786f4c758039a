"""BinaryResNetE18 (Bethge et al. 2019, "Back to Simplicity"), larq-zoo's
``literature.BinaryResNetE18``: ResNet-18 with one binary 3x3 convolution per
shortcut (twice the blocks, half the convolutions each), SteSign(1.25) inputs and
kernels; average pooling + float 1x1 convolution where the width doubles. Inputs
smaller than 50 pixels get a CIFAR stem (one 3x3 convolution)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_tf import constraints, quantizers
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

#: Blocks and widths of the ResNet-18 sections.
_SECTIONS = ((2, 64), (2, 128), (2, 256), (2, 512))


def _bn(x: Any, names: _build.KerasNames) -> Any:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                           name=names("batch_normalization"))(x)


def _residual_block(x: Any, names: _build.KerasNames, filters: int, strides: int) -> Any:
    residual = x
    if x.shape[-1] != filters:
        residual = keras.layers.AveragePooling2D(2, strides=2,
                                                 name=names("average_pooling2d"))(x)
        residual = keras.layers.Conv2D(filters, 1, use_bias=False,
                                       kernel_initializer="glorot_normal",
                                       name=names("conv2d"))(residual)
        residual = _bn(residual, names)
    x = lb_layers.QuantConv2D(
        filters, 3, strides=strides, padding="same",
        input_quantizer=quantizers.SteSign(clip_value=1.25),
        kernel_quantizer=quantizers.SteSign(clip_value=1.25),
        kernel_constraint=constraints.WeightClip(clip_value=1.25),
        kernel_initializer="glorot_normal", use_bias=False, name=names("quant_conv2d"))(x)
    x = _bn(x, names)
    return keras.layers.Add(name=names("add"))([x, residual])


def BinaryResNetE18(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds BinaryResNetE18 with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    height = inputs.shape[1]
    if height is not None and height < 50:
        x = keras.layers.Conv2D(64, 3, padding="same", kernel_initializer="he_normal",
                                use_bias=False, name=names("conv2d"))(inputs)
    else:
        x = keras.layers.Conv2D(64, 7, strides=2, padding="same",
                                kernel_initializer="he_normal", use_bias=False,
                                name=names("conv2d"))(inputs)
        x = _bn(x, names)
        x = keras.layers.Activation("relu", name=names("activation"))(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                      name=names("max_pooling2d"))(x)
        x = _bn(x, names)
    for section, (blocks, filters) in enumerate(_SECTIONS):
        for block in range(2 * blocks):
            x = _residual_block(x, names, filters,
                                strides=2 if section > 0 and block == 0 else 1)
    x = keras.layers.Activation("relu", name=names("activation"))(x)
    if include_top:
        x = _build.global_pool(x, names)
        x = keras.layers.Dense(num_classes, kernel_initializer="glorot_normal",
                               name=names("dense"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, "binary_resnet_e_18", path)
