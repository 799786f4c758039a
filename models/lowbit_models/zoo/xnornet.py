"""XNOR-Net (Rastegari et al. 2016), larq-zoo's ``literature.XNORNet``: an
AlexNet whose convolutions after the first are binary (sign inputs, kernels
scaled per output channel by :class:`XnorWeightScale`), BatchNorm without scale
before each binary layer, and L2(5e-7) on every kernel.

Its 6x6 "valid" convolution (the first fully connected layer) needs a 6x6 map
after three poolings: inputs of at least 217x217 pixels."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_models.zoo.custom_objects import XnorWeightScale
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

_L2 = 5e-7


def _bn(x: Any, names: _build.KerasNames, epsilon: float = 1e-4) -> Any:
    return keras.layers.BatchNormalization(momentum=0.9, scale=False, epsilon=epsilon,
                                           name=names("batch_normalization"))(x)


def _binary_conv(x: Any, names: _build.KerasNames, filters: int, kernel_size: int,
                 padding: str = "same") -> Any:
    return lb_layers.QuantConv2D(
        filters, kernel_size, padding=padding, input_quantizer="ste_sign",
        kernel_quantizer=XnorWeightScale(), kernel_constraint="weight_clip", use_bias=False,
        kernel_regularizer=keras.regularizers.L2(_L2), name=names("quant_conv2d"))(x)


def _pool(x: Any, names: _build.KerasNames) -> Any:
    return keras.layers.MaxPooling2D(3, strides=2, name=names("max_pooling2d"))(x)


def XNORNet(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds XNOR-Net with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3), at least 217x217; default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    x = keras.layers.Conv2D(96, 11, strides=4, padding="same", use_bias=False,
                            kernel_regularizer=keras.regularizers.L2(_L2),
                            name=names("conv2d"))(inputs)
    x = _bn(x, names, epsilon=1e-5)
    x = keras.layers.Activation("relu", name=names("activation"))(x)
    x = _bn(_pool(x, names), names)
    x = _bn(_pool(_binary_conv(x, names, 256, 5), names), names)
    x = _bn(_binary_conv(x, names, 384, 3), names)
    x = _bn(_binary_conv(x, names, 384, 3), names)
    x = _bn(_pool(_binary_conv(x, names, 256, 3), names), names)
    height, width = x.shape[1:3]
    if height is not None and (height < 6 or width < 6):
        raise ValueError(
            f"XNORNet needs inputs of at least 217x217 pixels, got input_shape "
            f"{tuple(inputs.shape[1:])}")
    x = _bn(_binary_conv(x, names, 4096, 6, padding="valid"), names)
    if include_top:
        x = _bn(_binary_conv(x, names, 4096, 1, padding="valid"), names, epsilon=1e-3)
        x = keras.layers.Activation("relu", name=names("activation"))(x)
        x = keras.layers.Flatten(name=names("flatten"))(x)
        x = keras.layers.Dense(num_classes, use_bias=False,
                               kernel_regularizer=keras.regularizers.L2(_L2),
                               name=names("dense"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, "xnornet", path)
