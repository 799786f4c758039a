"""DoReFa-Net (Zhou et al. 2016), larq-zoo's ``literature.DoReFaNet``: an
AlexNet with a float first convolution, then 2-bit DoReFa activations and binary
kernels scaled by their mean magnitude (one scale per layer), BatchNorm without
scale after every quantized layer."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_models.zoo.custom_objects import MagnitudeAwareSignUnclipped, clip_by_value_activation
from lowbit_tf import layers as lb_layers
from lowbit_tf import quantizers
from lowbit_tf._keras import keras

_ACTIVATION_BITS = 2


def _quantized(activations_k_bit: int) -> dict[str, Any]:
    return dict(input_quantizer=quantizers.DoReFa(k_bit=activations_k_bit, mode="activations"),
                kernel_quantizer=MagnitudeAwareSignUnclipped(), use_bias=False)


def _bn(x: Any, names: _build.KerasNames) -> Any:
    return keras.layers.BatchNormalization(scale=False, momentum=0.9, epsilon=1e-4,
                                           name=names("batch_normalization"))(x)


def _conv_block(x: Any, names: _build.KerasNames, filters: int, kernel_size: int,
                pool_padding: str | None = None) -> Any:
    x = lb_layers.QuantConv2D(filters, kernel_size, padding="same",
                              **_quantized(_ACTIVATION_BITS), name=names("quant_conv2d"))(x)
    x = _bn(x, names)
    if pool_padding is not None:
        x = keras.layers.MaxPooling2D(3, strides=2, padding=pool_padding,
                                      name=names("max_pooling2d"))(x)
    return x


def DoReFaNet(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds DoReFa-Net (W1-A2) with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    x = keras.layers.Conv2D(96, 12, strides=4, padding="valid", use_bias=True,
                            name=names("conv2d"))(inputs)
    x = _conv_block(x, names, 256, 5, pool_padding="same")
    x = _conv_block(x, names, 384, 3, pool_padding="same")
    x = _conv_block(x, names, 384, 3)
    x = _conv_block(x, names, 256, 3, pool_padding="valid")
    if include_top:
        x = keras.layers.Flatten(name=names("flatten"))(x)
        for _ in range(2):
            x = lb_layers.QuantDense(4096, **_quantized(_ACTIVATION_BITS),
                                     name=names("quant_dense"))(x)
            x = _bn(x, names)
        x = keras.layers.Activation(clip_by_value_activation, name=names("activation"))(x)
        x = keras.layers.Dense(num_classes, use_bias=True, name=names("dense"))(x)
        x = _build.softmax(x, names)
    return _build.finish(inputs, x, "dorefanet", path)
