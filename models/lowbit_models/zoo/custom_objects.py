"""The objects larq-zoo's architectures define beside Larq's: two kernel
quantizers, an activation, an initializer, and the channel operations that
larq-zoo writes as Lambda layers (here small serializable layers, so the
models save and load without `safe_mode=False`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_tf import math as lb_math
from lowbit_tf import quantizers
from lowbit_tf._keras import keras

_PACKAGE = "lowbit_models"


@quantizers.register_quantizer("xnor_weight_scale", package=_PACKAGE)
class XnorWeightScale(quantizers.Quantizer):
    r"""XNOR-Net's kernel quantizer (larq-zoo's ``xnor_weight_scale``).

    .. math::

        w_c = \operatorname{clip}(W, -1, 1)_{\dots, c}, \qquad
        q(W)_{\dots, c} = \operatorname{mean}_{\dots}|w_c| \cdot \operatorname{sign}(w_c)

    The mean runs over every axis but the last (the output channels). Unlike
    :class:`lowbit_tf.quantizers.MagnitudeAwareSign` the kernel is clipped
    before the scale is taken, and the gradient also flows through the scale.
    """

    precision = 1

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        clipped = tf.clip_by_value(inputs, -1.0, 1.0)
        axes = list(range(inputs.shape.rank - 1))
        scale = tf.reduce_mean(tf.abs(clipped), axis=axes, keepdims=True)
        return scale * quantizers.ste_sign(clipped)


@quantizers.register_quantizer("magnitude_aware_sign_unclipped", package=_PACKAGE)
class MagnitudeAwareSignUnclipped(quantizers.Quantizer):
    r"""DoReFa-Net's binary kernel (larq-zoo's ``magnitude_aware_sign_unclipped``):
    :math:`q(W) = \operatorname{mean}|W| \operatorname{sign}(W)` with one scale
    for the whole kernel, and the identity as gradient (no clipping)."""

    precision = 1

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        scale = tf.stop_gradient(tf.reduce_mean(tf.abs(inputs)))

        @tf.custom_gradient
        def scaled_sign(x: tf.Tensor) -> Any:
            return lb_math.sign(x) * scale, lambda dy: dy

        return scaled_sign(inputs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def clip_by_value_activation(x: Any) -> Any:
    """DoReFa-Net's activation before its last dense layer: clip to [0, 1]."""
    return keras.ops.clip(x, 0.0, 1.0)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def blurpool_initializer(shape: tuple[int, ...], dtype: Any = None) -> Any:
    """Depthwise kernel of anti-aliased pooling (Zhang 2019), QuickNet's fixed
    transition filter: the normalised outer product of a binomial row
    ([1, 1], [1, 2, 1] or [1, 4, 6, 4, 1]) for every channel."""
    rows = {2: [1, 1], 3: [1, 2, 1], 5: [1, 4, 6, 4, 1]}
    size, channels = shape[0], shape[2]
    if size not in rows:
        raise ValueError(f"blurpool_initializer: kernel size must be 2, 3 or 5, got {size}")
    kernel = np.outer(rows[size], rows[size]).astype(np.float64)
    kernel = np.repeat((kernel / kernel.sum())[:, :, None], channels, axis=-1)
    return keras.ops.convert_to_tensor(np.reshape(kernel, shape), dtype=dtype or "float32")


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelSplit(keras.layers.Layer):
    """Splits the last axis into `groups` equal parts (MeliusNet's grouped stem)."""

    def __init__(self, groups: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.groups = groups

    def call(self, inputs: Any) -> list[Any]:
        return keras.ops.split(inputs, self.groups, axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> list[tuple]:
        channels = input_shape[-1]
        if channels is None or channels % self.groups:
            raise ValueError(
                f"{self.name}: {channels} channels do not split into {self.groups} groups")
        return [(*input_shape[:-1], channels // self.groups)] * self.groups

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "groups": self.groups}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class AddToLastChannels(keras.layers.Layer):
    """``x + pad(w)``: adds `w` to the last ``w.channels`` channels of `x`
    (MeliusNet's improvement block, which refines the newest features)."""

    def call(self, inputs: list[Any]) -> Any:
        x, w = inputs
        extra = x.shape[-1] - w.shape[-1]
        return keras.ops.concatenate([x[..., :extra], x[..., extra:] + w], axis=-1)

    def compute_output_shape(self, input_shape: list[tuple]) -> tuple:
        return input_shape[0]
