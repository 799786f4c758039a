"""BinaryDenseNet 28/37/45 and 37-dilated (Bethge et al. 2019), larq-zoo's
``literature.BinaryDenseNet28/37/37Dilated/45``: dense blocks that each concatenate 64 new
binary features (BatchNorm -> SteSign(1.3) 3x3 convolution); between sections
BatchNorm -> 2x2 max pooling -> ReLU -> float 1x1 convolution that reduces the
width. The dilated variant skips the pooling before its dilated sections.
Inputs smaller than 50 pixels get a CIFAR stem (one 3x3 convolution)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lowbit_models.zoo import _build
from lowbit_tf import constraints, quantizers
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

_GROWTH_RATE = 64
_INITIAL_FILTERS = 64


class _Config(NamedTuple):
    name: str
    layers: tuple[int, ...]  # dense blocks per section
    reduction: tuple[float, ...]  # width reduction of each transition
    dilation_rate: tuple[int, ...] = (1, 1, 1, 1)  # of each section's convolutions


_CONFIGS = {
    28: _Config("binary_densenet28", (6, 6, 6, 5), (2.7, 2.7, 2.2)),
    37: _Config("binary_densenet37", (6, 8, 12, 6), (3.3, 3.3, 4.0)),
    45: _Config("binary_densenet45", (6, 12, 14, 8), (2.7, 3.3, 4.0)),
    "37_dilated": _Config("binary_densenet37_dilated", (6, 8, 12, 6), (3.3, 3.3, 4.0),
                          (1, 1, 2, 4)),
}


def _bn(x: Any, names: _build.KerasNames) -> Any:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                           name=names("batch_normalization"))(x)


def _dense_block(x: Any, names: _build.KerasNames, dilation_rate: int) -> Any:
    y = _bn(x, names)
    y = lb_layers.QuantConv2D(
        _GROWTH_RATE, 3, padding="same", dilation_rate=dilation_rate,
        input_quantizer=quantizers.SteSign(clip_value=1.3),
        kernel_quantizer=quantizers.SteSign(clip_value=1.3),
        kernel_constraint=constraints.WeightClip(clip_value=1.3),
        kernel_initializer="glorot_normal", use_bias=False, name=names("quant_conv2d"))(y)
    return keras.layers.Concatenate(name=names("concatenate"))([x, y])


def _transition_filters(channels: int, reduction: float) -> int:
    # larq-zoo's rounding: floor-divide by the (float) reduction, then round to
    # a multiple of 32.
    return round(channels // reduction / 32) * 32


def _binary_densenet(depth: int | str, input_shape: Sequence[int | None] | None, input_tensor: Any,
                     weights: str | Path | None, include_top: bool,
                     num_classes: int) -> keras.Model:
    config = _CONFIGS[depth]
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    height = inputs.shape[1]
    if height is not None and height < 50:
        x = keras.layers.Conv2D(_INITIAL_FILTERS, 3, padding="same",
                                kernel_initializer="he_normal", use_bias=False,
                                name=names("conv2d"))(inputs)
    else:
        x = keras.layers.Conv2D(_INITIAL_FILTERS, 7, strides=2, padding="same",
                                kernel_initializer="he_normal", use_bias=False,
                                name=names("conv2d"))(inputs)
        x = _bn(x, names)
        x = keras.layers.Activation("relu", name=names("activation"))(x)
        x = keras.layers.MaxPooling2D(3, strides=2, padding="same",
                                      name=names("max_pooling2d"))(x)
    for section, blocks in enumerate(config.layers):
        for _ in range(blocks):
            x = _dense_block(x, names, config.dilation_rate[section])
        if section < len(config.layers) - 1:
            x = _bn(x, names)
            if config.dilation_rate[section + 1] == 1:
                x = keras.layers.MaxPooling2D(2, strides=2, name=names("max_pooling2d"))(x)
            x = keras.layers.Activation("relu", name=names("activation"))(x)
            x = keras.layers.Conv2D(
                _transition_filters(x.shape[-1], config.reduction[section]), 1,
                kernel_initializer="he_normal", use_bias=False, name=names("conv2d"))(x)
    x = _bn(x, names)
    x = keras.layers.Activation("relu", name=names("activation"))(x)
    if include_top:
        x = _build.global_pool(x, names)
        x = keras.layers.Dense(num_classes, kernel_initializer="he_normal",
                               name=names("dense"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, config.name, path)


_DOC = """Builds BinaryDenseNet{depth} with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """


def BinaryDenseNet28(*, input_shape: Sequence[int | None] | None = None,
                     input_tensor: Any = None, weights: str | Path | None = None,
                     include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _binary_densenet(28, input_shape, input_tensor, weights, include_top, num_classes)


def BinaryDenseNet37(*, input_shape: Sequence[int | None] | None = None,
                     input_tensor: Any = None, weights: str | Path | None = None,
                     include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _binary_densenet(37, input_shape, input_tensor, weights, include_top, num_classes)


def BinaryDenseNet37Dilated(*, input_shape: Sequence[int | None] | None = None,
                            input_tensor: Any = None, weights: str | Path | None = None,
                            include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _binary_densenet("37_dilated", input_shape, input_tensor, weights, include_top,
                            num_classes)


def BinaryDenseNet45(*, input_shape: Sequence[int | None] | None = None,
                     input_tensor: Any = None, weights: str | Path | None = None,
                     include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _binary_densenet(45, input_shape, input_tensor, weights, include_top, num_classes)


BinaryDenseNet28.__doc__ = _DOC.format(depth=28)
BinaryDenseNet37.__doc__ = _DOC.format(depth=37)
BinaryDenseNet37Dilated.__doc__ = _DOC.format(depth="37Dilated")
BinaryDenseNet45.__doc__ = _DOC.format(depth=45)
