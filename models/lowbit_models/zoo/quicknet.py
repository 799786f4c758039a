"""QuickNetSmall / QuickNet / QuickNetLarge (Bannink et al. 2021), larq-zoo's
``sota.QuickNet*``, with larq-zoo's layer names and weight layout.

    stem        3x3/2 conv (filters/4) -> BN -> ReLU -> depthwise 3x3/2 -> BN
                (no scale, no center) -> 1x1 conv -> BN                (float)
    residual    x + BN(ReLU(binary 3x3 conv(x)))    SteSign(1.25), +1 padding
    transition  (where the width changes) ReLU -> 2x2/1 max pool -> fixed
                blur-pool depthwise 3x3/2 -> float 1x1 conv -> BN
    head        ReLU -> global average pool -> dense

`lowbit_models.quicknet` is this project's own QuickNet-like network, which
differs (learned transitions, other names); use these to load larq-zoo files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_models.zoo.custom_objects import blurpool_initializer
from lowbit_tf import constraints, quantizers
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

#: (blocks per section, filters per section) of each variant.
QUICKNET_ZOO_CONFIGS = {
    "quicknet_small": ((4, 4, 4, 4), (32, 64, 256, 512)),
    "quicknet": ((4, 4, 4, 4), (64, 128, 256, 512)),
    "quicknet_large": ((6, 8, 12, 6), (64, 128, 256, 512)),
}


def _bn(x: Any, names: _build.KerasNames, **kwargs: Any) -> Any:
    return keras.layers.BatchNormalization(name=names("batch_normalization"), **kwargs)(x)


def _stem(x: Any, names: _build.KerasNames, filters: int) -> Any:
    x = lb_layers.QuantConv2D(filters // 4, 3, strides=2, padding="same",
                              kernel_initializer="he_normal", use_bias=False,
                              name=names("quant_conv2d"))(x)
    x = keras.layers.Activation("relu", name=names("activation"))(_bn(x, names))
    x = lb_layers.QuantDepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                       name=names("quant_depthwise_conv2d"))(x)
    x = _bn(x, names, scale=False, center=False)
    x = lb_layers.QuantConv2D(filters, 1, kernel_initializer="he_normal", use_bias=False,
                              name=names("quant_conv2d"))(x)
    return _bn(x, names)


def _residual_block(x: Any, names: _build.KerasNames) -> Any:
    y = lb_layers.QuantConv2D(
        x.shape[-1], 3, activation="relu", padding="same", pad_values=1.0, use_bias=False,
        input_quantizer=quantizers.SteSign(clip_value=1.25),
        kernel_quantizer=quantizers.SteSign(clip_value=1.25),
        kernel_constraint=constraints.WeightClip(clip_value=1.25),
        kernel_initializer="glorot_normal", name=names("quant_conv2d"))(x)
    y = _bn(y, names, momentum=0.9, epsilon=1e-5)
    # larq-zoo writes `x + residual`, which Keras 2 turns into this layer.
    return keras.layers.Add(name=names("tf.__operators__.add"))([y, x])


def _transition(x: Any, names: _build.KerasNames, filters: int) -> Any:
    x = keras.layers.Activation("relu", name=names("activation"))(x)
    x = keras.layers.MaxPooling2D(2, strides=1, name=names("max_pooling2d"))(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                     depthwise_initializer=blurpool_initializer,
                                     trainable=False, name=names("depthwise_conv2d"))(x)
    x = lb_layers.QuantConv2D(filters, 1, kernel_initializer="glorot_normal", use_bias=False,
                              name=names("quant_conv2d"))(x)
    return _bn(x, names, momentum=0.9, epsilon=1e-5)


def _quicknet(variant: str, input_shape: Sequence[int | None] | None, input_tensor: Any,
              weights: str | Path | None, include_top: bool,
              num_classes: int) -> keras.Model:
    blocks, filters = QUICKNET_ZOO_CONFIGS[variant]
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    x = _stem(inputs, names, filters[0])
    for section_blocks, section_filters in zip(blocks, filters, strict=True):
        if x.shape[-1] != section_filters:
            x = _transition(x, names, section_filters)
        for _ in range(section_blocks):
            x = _residual_block(x, names)
    if include_top:
        x = keras.layers.Activation("relu", name=names("activation"))(x)
        x = _build.global_pool(x, names)
        x = lb_layers.QuantDense(num_classes, kernel_initializer="glorot_normal",
                                 name=names("quant_dense"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, variant, path)


_DOC = """Builds {title} with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """


def QuickNetSmall(*, input_shape: Sequence[int | None] | None = None,
                  input_tensor: Any = None, weights: str | Path | None = None,
                  include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _quicknet("quicknet_small", input_shape, input_tensor, weights, include_top,
                     num_classes)


def QuickNet(*, input_shape: Sequence[int | None] | None = None,
             input_tensor: Any = None, weights: str | Path | None = None,
             include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _quicknet("quicknet", input_shape, input_tensor, weights, include_top, num_classes)


def QuickNetLarge(*, input_shape: Sequence[int | None] | None = None,
                  input_tensor: Any = None, weights: str | Path | None = None,
                  include_top: bool = True, num_classes: int = 1000) -> keras.Model:
    return _quicknet("quicknet_large", input_shape, input_tensor, weights, include_top,
                     num_classes)


QuickNetSmall.__doc__ = _DOC.format(title="QuickNetSmall")
QuickNet.__doc__ = _DOC.format(title="QuickNet")
QuickNetLarge.__doc__ = _DOC.format(title="QuickNetLarge")
