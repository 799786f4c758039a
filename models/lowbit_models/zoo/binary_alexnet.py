"""BinaryAlexNet (Hubara et al. 2016, "Binarized Neural Networks"), larq-zoo's
``literature.BinaryAlexNet``: AlexNet's five convolutions and three fully
connected layers (as 1x1 convolutions), all binary but the first layer's input,
each followed by BatchNormalization without scale."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

_BINARY = dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False)


def _bn(x: Any, names: _build.KerasNames) -> Any:
    return keras.layers.BatchNormalization(scale=False, momentum=0.9,
                                           name=names("batch_normalization"))(x)


def _conv_block(x: Any, names: _build.KerasNames, filters: int, kernel_size: int,
                strides: int = 1, pool: bool = False, first: bool = False) -> Any:
    x = lb_layers.QuantConv2D(filters, kernel_size, strides=strides, padding="same",
                              input_quantizer=None if first else "ste_sign", **_BINARY,
                              name=names("quant_conv2d"))(x)
    if pool:
        x = keras.layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)
    return _bn(x, names)


def _dense_block(x: Any, names: _build.KerasNames, units: int) -> Any:
    x = lb_layers.QuantConv2D(units, 1, input_quantizer="ste_sign", **_BINARY,
                              name=names("quant_conv2d"))(x)
    return _bn(x, names)


def BinaryAlexNet(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds BinaryAlexNet with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    x = _conv_block(inputs, names, 64, 11, strides=4, pool=True, first=True)
    x = _conv_block(x, names, 192, 5, pool=True)
    x = _conv_block(x, names, 384, 3)
    x = _conv_block(x, names, 384, 3)
    x = _conv_block(x, names, 256, 3, pool=True)
    if include_top:
        height, width, channels = x.shape[1:]
        if height is None or width is None:
            raise ValueError("BinaryAlexNet's classifier needs a static input_shape")
        x = keras.layers.Reshape((1, 1, height * width * channels), name=names("reshape"))(x)
        x = _dense_block(x, names, 4096)
        x = _dense_block(x, names, 4096)
        x = _dense_block(x, names, num_classes)
        x = keras.layers.Flatten(name=names("flatten"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, "binary_alexnet", path)
