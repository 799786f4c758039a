"""MeliusNet22 (Bethge et al. 2020), larq-zoo's ``literature.MeliusNet22``:
a grouped-convolution stem, then blocks of a dense block (64 new binary
features, concatenated) and an improvement block (a binary 3x3 convolution
added to those newest 64 features); BatchNorm -> max pooling -> ReLU -> float
1x1 convolution between sections. larq-zoo names every layer here."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_models.zoo import _build
from lowbit_models.zoo.custom_objects import AddToLastChannels, ChannelSplit
from lowbit_tf import constraints, quantizers
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

#: (blocks, width of the transition after the section, None for none) per section.
_SECTIONS = ((4, 160), (5, 224), (4, 256), (4, None))
_FEATURES = 64  # features a dense block adds and an improvement block refines


def _norm(x: Any, name: str) -> Any:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)(x)


def _relu(x: Any, name: str) -> Any:
    return keras.layers.Activation("relu", name=name)(x)


def _pool(x: Any, name: str) -> Any:
    return keras.layers.MaxPooling2D(2, strides=2, padding="same", name=name)(x)


def _conv(x: Any, filters: int, kernel_size: int, name: str, **kwargs: Any) -> Any:
    return keras.layers.Conv2D(filters, kernel_size, use_bias=False,
                               kernel_initializer="glorot_normal", name=name, **kwargs)(x)


def _binary_conv(x: Any, name: str) -> Any:
    return lb_layers.QuantConv2D(
        _FEATURES, 3, padding="same", use_bias=False,
        input_quantizer=quantizers.SteSign(1.3), kernel_quantizer=quantizers.SteSign(1.3),
        kernel_constraint=constraints.WeightClip(1.3), kernel_initializer="glorot_normal",
        name=name)(x)


def _group_conv(x: Any, filters: int, groups: int, name: str) -> Any:
    # One convolution per group, as larq-zoo has it (its weights are per group).
    splits = ChannelSplit(groups, name=f"{name}_split")(x)
    outputs = [_conv(split, filters // groups, 3, f"{name}_conv{i}", padding="same")
               for i, split in enumerate(splits)]
    return keras.layers.Concatenate(name=f"{name}_concat")(outputs)


def _stem(x: Any, name: str) -> Any:
    x = _conv(x, 32, 3, f"{name}_s0_conv", strides=2, padding="same")
    x = _relu(_norm(x, f"{name}_s0_bn"), f"{name}_s0_relu")
    x = _group_conv(x, 32, 4, f"{name}_s1_groupconv")
    x = _relu(_norm(x, f"{name}_s1_bn"), f"{name}_s1_relu")
    x = _group_conv(x, 64, 8, f"{name}_s2_groupconv")
    x = _relu(_norm(x, f"{name}_s2_bn"), f"{name}_s2_relu")
    return _pool(x, f"{name}_pool")


def _block(x: Any, name: str) -> Any:
    dense = f"{name}_dense"
    w = _binary_conv(_norm(x, f"{dense}_bn"), f"{dense}_binconv")
    x = keras.layers.Concatenate(name=f"{dense}_concat")([x, w])
    improve = f"{name}_improve"
    w = _binary_conv(_norm(x, f"{improve}_bn"), f"{improve}_binconv")
    return AddToLastChannels(name=f"{improve}_merge")([x, w])


def _transition(x: Any, filters: int, name: str) -> Any:
    x = _pool(_norm(x, f"{name}_bn"), f"{name}_maxpool")
    return _conv(_relu(x, f"{name}_relu"), filters, 1, f"{name}_pw")


def MeliusNet22(
    *,
    input_shape: Sequence[int | None] | None = None,
    input_tensor: Any = None,
    weights: str | Path | None = None,
    include_top: bool = True,
    num_classes: int = 1000,
) -> keras.Model:
    """Builds MeliusNet22 with larq-zoo's layer names.

    Arguments:
      input_shape: (height, width, 3); default (224, 224, 3).
      input_tensor: a Keras tensor to use as input instead.
      weights: None (initializers), or the path of a larq-zoo .h5 weights file.
      include_top: whether to add the classifier.
      num_classes: classes of the classifier.
    """
    names, inputs, path = _build.start(input_shape, input_tensor, weights, include_top,
                                       num_classes)
    x = _stem(inputs, "stem")
    for section, (blocks, transition) in enumerate(_SECTIONS):
        for block in range(blocks):
            x = _block(x, f"section_{section}_block_{block}")
        if transition:
            x = _transition(x, transition, f"section_{section}_transition")
    x = _relu(_norm(x, "head_bn"), "head_relu")
    if include_top:
        x = _build.global_pool(x, names, name="head_globalpool")
        x = keras.layers.Dense(num_classes, kernel_initializer="glorot_normal",
                               name="head_dense")(x)
        x = _build.softmax(x, names, name="head_softmax")
    return _build.finish(inputs, x, "meliusnet22", path)
