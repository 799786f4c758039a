"""The conversion entry points."""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import tensorflow as tf

from lowbit_converter.flatbuffer_pass import PassReport, run_pass
from lowbit_converter.lowering import lower_model
from lowbit_tf._keras import keras


@dataclass
class ConversionResult:
    """The converted flatbuffer and what went into it."""

    tflite_model: bytes
    lowered_layers: list[str]
    report: PassReport


def convert_with_report(
    model: keras.Model,
    *,
    lowbit: bool = True,
    packed_chains: bool = True,
    float_fallback: bool = False,
) -> ConversionResult:
    """Converts `model` to TFLite; see `convert`. Also returns what was lowered."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"convert expects a keras.Model, got {type(model).__name__}")
    lowered, plans = (
        lower_model(model, packed_chains=packed_chains, float_fallback=float_fallback)
        if lowbit
        else (model, {})
    )
    # The Keras path freezes the variables of the layers kept in float.
    converter = tf.lite.TFLiteConverter.from_keras_model(lowered)
    converter.allow_custom_ops = True
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    # Keras's export step prints the temporary SavedModel's signature; that is
    # noise for our callers.
    with contextlib.redirect_stdout(io.StringIO()):
        converted = converter.convert()
    flatbuffer, report = run_pass(converted)
    return ConversionResult(flatbuffer, sorted(plans), report)


def convert(
    model: keras.Model,
    *,
    lowbit: bool = True,
    packed_chains: bool = True,
    float_fallback: bool = False,
) -> bytes:
    """Converts a Keras model to a .tflite flatbuffer.

    Each binary `QuantConv2D` (sign-binarised inputs and kernel), with a
    BatchNormalization and ReLU that follow it folded in, becomes one
    `LowbitBconv2d` custom op with bit-packed weights, each binary `QuantDense`
    one `LowbitBgemm`; each multi-bit layer (`ABCConv2D`, `ABCDense`, and
    `QuantConv2D` / `QuantDense` with sign or DoReFa activations and k-bit,
    ternary or binary kernels) one `LowbitMultibitConv2d` with bit-packed
    weight planes; each `FastfoodDense` one `LowbitFastfood`. Everything else
    becomes TFLite builtins (a quantized layer with float inputs, i.e. no input
    quantizer, runs as a float conv with its quantized kernel). Run the result
    with `lowbit_tf.lite.Interpreter`.

    Args:
      model: a built Sequential or functional Keras model. Sequential and
        functional models used as its layers are lowered too (their lowered
        layers are reported as "<model>/<layer>"); a subclassed model used as
        a layer that holds lowbit layers raises ConversionError unless
        float_fallback.
      lowbit: False converts the model as it is (float ops only), e.g. to
        compare sizes and speed with the float twin.
      packed_chains: a binary conv whose output (after folded BatchNorm/ReLU)
        goes only into another binary layer, possibly through a MaxPooling2D,
        emits bit-packed signs (LowbitBconv2d output_type="bitpacked"), the
        pool runs on them (LowbitBMaxPool2d) and the next layer reads them: no
        float tensor in between. False keeps every intermediate tensor float.
      float_fallback: a quantized layer no custom op can run (say, an input
        quantizer other than sign or DoReFa) is kept as float TFLite ops
        instead of raising ConversionError.

    The batch dimension stays dynamic: the interpreter's inputs have batch 1
    until resized with `resize_tensor_input`.

    Returns:
      The .tflite flatbuffer.

    Raises:
      ConversionError: naming the layer that cannot be converted and why.
    """
    return convert_with_report(
        model, lowbit=lowbit, packed_chains=packed_chains, float_fallback=float_fallback
    ).tflite_model
