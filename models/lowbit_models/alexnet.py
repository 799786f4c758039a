"""AlexNet, float and low-bit, with stable layer names for weight loading.

The float model follows the common TF ports of Krizhevsky et al. 2012 / Caffe's
bvlc_alexnet (227x227x3 input):

    conv1  96 11x11 /4 VALID, ReLU -> norm1 (LRN) -> pool1 3x3 /2
    conv2 256 5x5 SAME, 2 groups, ReLU -> norm2 (LRN) -> pool2 3x3 /2
    conv3 384 3x3 SAME, ReLU
    conv4 384 3x3 SAME, 2 groups, ReLU
    conv5 256 3x3 SAME, 2 groups, ReLU -> pool5 3x3 /2 -> flatten (6*6*256)
    fc6 4096 ReLU -> drop6 -> fc7 4096 ReLU -> drop7 -> fc8 (classes)

The groups reproduce the two-GPU original: a grouped kernel has shape
[KH, KW, C_in / 2, C_out], the layout of the `bvlc_alexnet.npy` files too.
LRN uses depth_radius 2, bias 1, alpha 2e-5 (Caffe's 1e-4 / 5), beta 0.75.

Low-bit variants keep every layer name and weight shape of the float model,
so float weights load into them directly (see `lowbit_models.weights`):

    "binary_weights"  BinaryConnect: sign-binarised kernels, float activations
    "xnor"            XNOR-Net: binary kernels scaled per output channel by
                      mean|W| (magnitude_aware_sign), binary activations;
                      conv1 and fc8 stay float, and the binary layers have no
                      ReLU (the sign of a ReLU output would always be +1)
    "dorefa"          DoReFa W{k_w}-A{k_a} (default W1-A2); conv1, fc8 float
    "abc"             ABC-Net with M weight and N activation bases; conv1, fc8 float
"""

from __future__ import annotations

from typing import Any

from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

VARIANTS = ("float", "binary_weights", "xnor", "dorefa", "abc")
CONV_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5")
DENSE_LAYERS = ("fc6", "fc7", "fc8")
WEIGHT_LAYERS = CONV_LAYERS + DENSE_LAYERS

# (filters, kernel, strides, padding, groups) of each conv layer.
_CONVS = {
    "conv1": (96, 11, 4, "valid", 1),
    "conv2": (256, 5, 1, "same", 2),
    "conv3": (384, 3, 1, "same", 1),
    "conv4": (384, 3, 1, "same", 2),
    "conv5": (256, 3, 1, "same", 2),
}
_LRN = dict(depth_radius=2, bias=1.0, alpha=2e-5, beta=0.75)


@keras.saving.register_keras_serializable(package="lowbit_models")
class LocalResponseNormalization(keras.layers.Layer):
    """Across-channel LRN as `tf.nn.local_response_normalization` computes it:
    x / (bias + alpha * sum_{|j - c| <= depth_radius} x_j^2) ** beta."""

    def __init__(self, depth_radius: int = 2, bias: float = 1.0, alpha: float = 2e-5,
                 beta: float = 0.75, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.depth_radius, self.bias, self.alpha, self.beta = depth_radius, bias, alpha, beta

    def call(self, inputs: Any) -> Any:
        import tensorflow as tf

        return tf.nn.local_response_normalization(
            inputs, self.depth_radius, self.bias, self.alpha, self.beta)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "depth_radius": self.depth_radius, "bias": self.bias,
                "alpha": self.alpha, "beta": self.beta}


def _quantizers(variant: str, layer: str, options: dict[str, Any]) -> dict[str, Any] | None:
    """Keyword arguments of the quantized twin of `layer`, or None to keep it float."""
    quant = _variant_quantizers(variant, layer, options)
    if quant is not None and not options.get("quantize", True):
        # Same layer classes, identity quantizers: for parity checks of weight loading.
        quant = dict(quant, input_quantizer=None, kernel_quantizer=None)
    return quant


def _variant_quantizers(variant: str, layer: str, options: dict[str, Any]) -> dict[str, Any] | None:
    if variant == "float":
        return None
    if variant == "binary_weights":
        return dict(kernel_quantizer="ste_sign", kernel_constraint="weight_clip")
    if layer in ("conv1", "fc8"):  # first and last layers stay in higher precision
        return None
    if variant == "xnor":
        return dict(input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign",
                    kernel_constraint="weight_clip")
    if variant == "dorefa":
        from lowbit_tf import quantizers

        return dict(
            input_quantizer=quantizers.DoReFa(k_bit=options.get("activation_bits", 2),
                                              mode="activations"),
            kernel_quantizer=quantizers.DoReFa(k_bit=options.get("weight_bits", 1),
                                               mode="weights"),
        )
    raise AssertionError(variant)


def _activation(variant: str, name: str, activation: str | None,
                options: dict[str, Any]) -> str | None:
    binary_activations = (variant == "xnor" and name not in ("conv1", "fc8")
                          and options.get("quantize", True))
    return None if binary_activations else activation


def _conv(variant: str, name: str, options: dict[str, Any]) -> keras.layers.Layer:
    filters, kernel, strides, padding, groups = _CONVS[name]
    common = dict(strides=strides, padding=padding, groups=groups,
                  activation=_activation(variant, name, "relu", options), name=name)
    if variant == "abc" and name != "conv1":
        if not options.get("quantize", True):
            raise ValueError("the abc variant has no unquantized form (quantize=False)")
        return lb_layers.ABCConv2D(filters, kernel, num_weight_bases=options.get("M", 3),
                                   num_activation_bases=options.get("N", 3), **common)
    quant = _quantizers(variant, name, options)
    if quant is None:
        return keras.layers.Conv2D(filters, kernel, **common)
    return lb_layers.QuantConv2D(filters, kernel, **common, **quant)


def _dense(variant: str, name: str, units: int, activation: str | None,
           options: dict[str, Any]) -> keras.layers.Layer:
    activation = _activation(variant, name, activation, options)
    if variant == "abc" and name != "fc8":
        if not options.get("quantize", True):
            raise ValueError("the abc variant has no unquantized form (quantize=False)")
        return lb_layers.ABCDense(units, num_weight_bases=options.get("M", 3),
                                  num_activation_bases=options.get("N", 3),
                                  activation=activation, name=name)
    quant = _quantizers(variant, name, options)
    if quant is None:
        return keras.layers.Dense(units, activation=activation, name=name)
    return lb_layers.QuantDense(units, activation=activation, name=name, **quant)


def alexnet(
    variant: str = "float",
    num_classes: int = 1000,
    input_shape: tuple[int, int, int] = (227, 227, 3),
    dropout: float = 0.5,
    **options: Any,
) -> keras.Model:
    """Builds AlexNet.

    Arguments:
      variant: one of VARIANTS.
      num_classes: units of fc8.
      input_shape: HWC; 227x227x3 gives the classic 6x6x256 pool5.
      dropout: rate of drop6 and drop7.
      **options: `weight_bits`, `activation_bits` (dorefa), `M`, `N` (abc);
        `quantize=False` builds the same layer classes with identity
        quantizers (equal to the float model; for checking weight loading).

    Returns:
      A functional Keras model named "alexnet_<variant>" whose weighted layers
      are named conv1..conv5, fc6..fc8.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    inputs = keras.Input(input_shape, name="image")
    h = _conv(variant, "conv1", options)(inputs)
    h = LocalResponseNormalization(**_LRN, name="norm1")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool1")(h)
    h = _conv(variant, "conv2", options)(h)
    h = LocalResponseNormalization(**_LRN, name="norm2")(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool2")(h)
    for name in ("conv3", "conv4", "conv5"):
        h = _conv(variant, name, options)(h)
    h = keras.layers.MaxPooling2D(3, 2, name="pool5")(h)
    h = keras.layers.Flatten(name="flatten")(h)
    h = _dense(variant, "fc6", 4096, "relu", options)(h)
    h = keras.layers.Dropout(dropout, name="drop6")(h)
    h = _dense(variant, "fc7", 4096, "relu", options)(h)
    h = keras.layers.Dropout(dropout, name="drop7")(h)
    outputs = _dense(variant, "fc8", num_classes, None, options)(h)
    return keras.Model(inputs, outputs, name=f"alexnet_{variant}")
