"""QuickNet: a modern binary ImageNet network (Bannink et al. 2021, the Larq zoo's
QuickNet family), built from lowbit_tf layers.

Structure (layer names are stable; `s` = section, `b` = block):

    stem      Conv2D 3x3/2 (filters/4) -> BN -> ReLU -> DepthwiseConv2D 3x3/2
              -> BN -> Conv2D 1x1 (filters) -> BN                      (float)
    sections  per section s, `blocks[s]` binary residual blocks
                  y = BN(ReLU(QuantConv2D 3x3(x)))   sign inputs and kernels,
                  x = x + y                          +1 padding, no bias
              and between sections a float transition block
                  ReLU -> MaxPool 2x2/2 -> DepthwiseConv2D 3x3 -> BN
                  -> Conv2D 1x1 (next filters) -> BN
    head      ReLU -> GlobalAveragePooling -> Dense(num_classes)

The binary convolutions carry nearly all the MACs; the converter lowers each
QuantConv2D (with its ReLU fused) to one LowbitBconv2d op.
"""

from __future__ import annotations

from collections.abc import Sequence

from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

#: (filters per section, blocks per section) of the QuickNet family.
QUICKNET_CONFIGS = {
    "quicknet": ((64, 128, 256, 512), (4, 4, 4, 4)),
    "quicknet_large": ((64, 128, 256, 512), (6, 8, 12, 6)),
    "quicknet_xl": ((64, 128, 256, 512), (8, 12, 16, 8)),
}


def _bn(name: str) -> keras.layers.BatchNormalization:
    return keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _binary_block(x, filters: int, name: str):
    y = lb_layers.QuantConv2D(
        filters, 3, padding="same", pad_values=1.0, use_bias=False,
        input_quantizer="ste_sign", kernel_quantizer="ste_sign",
        kernel_constraint="weight_clip", kernel_initializer="glorot_normal",
        name=f"{name}_bconv",
    )(x)
    y = keras.layers.ReLU(name=f"{name}_relu")(y)
    y = _bn(f"{name}_bn")(y)
    return keras.layers.Add(name=f"{name}_add")([x, y])


def _transition(x, filters: int, name: str):
    x = keras.layers.ReLU(name=f"{name}_relu")(x)
    x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = keras.layers.DepthwiseConv2D(3, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = _bn(f"{name}_dw_bn")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, kernel_initializer="he_normal",
                            name=f"{name}_pw")(x)
    return _bn(f"{name}_pw_bn")(x)


def quicknet(
    variant: str = "quicknet",
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (224, 224, 3),
    section_filters: Sequence[int] | None = None,
    section_blocks: Sequence[int] | None = None,
) -> keras.Model:
    """Builds a QuickNet (random weights).

    Arguments:
      variant: a key of QUICKNET_CONFIGS.
      num_classes: units of the dense head.
      input_shape: HWC; sides should be multiples of 32.
      section_filters, section_blocks: override the variant's configuration
        (e.g. a small network for tests).
    """
    if variant not in QUICKNET_CONFIGS:
        raise ValueError(f"variant must be one of {tuple(QUICKNET_CONFIGS)}, got {variant!r}")
    filters, blocks = QUICKNET_CONFIGS[variant]
    filters = tuple(section_filters or filters)
    blocks = tuple(section_blocks or blocks)
    if len(filters) != len(blocks) or not filters:
        raise ValueError(
            f"section_filters {filters} and section_blocks {blocks} must be non-empty and "
            "of equal length"
        )
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(filters[0] // 4, 3, strides=2, padding="same", use_bias=False,
                            kernel_initializer="he_normal", name="stem_conv")(inputs)
    x = _bn("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    x = keras.layers.DepthwiseConv2D(3, strides=2, padding="same", use_bias=False,
                                     name="stem_dw")(x)
    x = _bn("stem_dw_bn")(x)
    x = keras.layers.Conv2D(filters[0], 1, use_bias=False, kernel_initializer="he_normal",
                            name="stem_pw")(x)
    x = _bn("stem_pw_bn")(x)
    for s, (section_width, count) in enumerate(zip(filters, blocks, strict=True)):
        if s > 0:
            x = _transition(x, section_width, f"transition{s}")
        for b in range(count):
            x = _binary_block(x, section_width, f"s{s}_b{b}")
    x = keras.layers.ReLU(name="head_relu")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    outputs = keras.layers.Dense(num_classes, name="logits")(x)
    return keras.Model(inputs, outputs, name=variant)
