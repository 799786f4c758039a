"""The one door from lowbit_tf to the packages built on it.

Dependencies run one way: lowbit_converter and lowbit_models import lowbit_tf,
never the reverse, except through the functions here, which import them
lazily (on call). So lowbit_tf's own modules (quantizers, layers, ops, lite)
load without them, and the TensorFlow-free runtime wheel, which ships neither,
never reaches them. `lowbit_tf.convert` is the public face; the summary's
size prediction and the demo use the rest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from lowbit_converter import ConversionResult
    from lowbit_tf._keras import keras

_F = TypeVar("_F", bound=Callable[..., Any])


def _forwards_to(name: str) -> Callable[[_F], _F]:
    """The function written out below (its signature and docstring, the
    converter's: tests/converter/test_facade.py keeps them equal) that calls
    `lowbit_converter.<name>`, imported then. Passes every argument on, so the
    converter answers Larq Compute Engine's options and unknown ones."""

    def decorate(spec: _F) -> _F:
        @functools.wraps(spec)
        def forward(*args: Any, **kwargs: Any) -> Any:
            import lowbit_converter

            return getattr(lowbit_converter, name)(*args, **kwargs)

        return forward  # type: ignore[return-value]

    return decorate


@_forwards_to("convert")
def convert(
    model: keras.Model,
    *,
    lowbit: bool = True,
    packed_chains: bool = True,
    float_fallback: bool = False,
    int8: bool = False,
    representative_dataset: Callable[[], Any] | None = None,
    inference_input_type: Any = None,
    inference_output_type: Any = None,
    int8_float_layers: Sequence[str] | str = (),
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
    with `lowbit_tf.lite.Interpreter`. A float kernel at least half zeros (a
    pruned one) is stored in TFLite's sparse encoding, restored by a DENSIFY
    op when the interpreter prepares (not with int8: its kernels stay dense).

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
      int8: post-training int8 (docs/int8.md): every float layer becomes
        TFLite's int8 builtins with per-channel weights, calibrated on
        `representative_dataset` run through our runtime (the binary layers'
        real output ranges included); LowbitBconv2d, LowbitBgemm and
        LowbitBDepthwiseConv2d read and write the int8 tensors directly (the
        other lowbit ops keep float tensors, with QUANTIZE / DEQUANTIZE
        around them).
      representative_dataset: with int8, a callable returning an iterable of
        samples, each a list of the model's inputs (TFLiteConverter's
        convention), a bare array or a dict of arrays. None with int8: the
        model's `lowbit_tf.layers.FakeQuantInt8` layers give the ranges
        (quantization-aware training; TFLiteConverter's own QAT path).
      inference_input_type, inference_output_type: float32 (the default, also
        None) or int8 (with int8=True): the model's inputs / outputs as int8
        codes, quantized with the parameters their tensors carry.
      int8_float_layers: with int8 and a representative_dataset, float layers
        to keep float32 (Keras layer names, or .tflite output tensor names),
        with QUANTIZE / DEQUANTIZE around them: a layer that loses too much
        accuracy in int8, or one that int8 makes slower (docs/int8.md: a stem
        conv on 3 input channels on x86 CPUs with AMX).

    The batch dimension stays dynamic: the interpreter's inputs have batch 1
    until resized with `resize_tensor_input`.

    Returns:
      The .tflite flatbuffer.

    Larq Compute Engine's other options (`experimental_default_int8_range`,
    `target`) are not supported: one that asks for what happens anyway (no
    default int8 range, target="arm") is accepted, any other raises a
    TypeError saying what to do instead.

    Raises:
      ConversionError: naming the layer that cannot be converted and why.
      TypeError: an LCE option asking for what is not supported.
      ValueError: int8 without a representative_dataset, an int8 input or
        output type without int8, a type other than float32 / int8.
    """


@_forwards_to("convert_with_report")
def convert_with_report(
    model: keras.Model,
    *,
    lowbit: bool = True,
    packed_chains: bool = True,
    float_fallback: bool = False,
    int8: bool = False,
    representative_dataset: Callable[[], Any] | None = None,
    inference_input_type: Any = None,
    inference_output_type: Any = None,
    int8_float_layers: Sequence[str] | str = (),
) -> ConversionResult:
    """Converts `model` to TFLite; see `convert`. Also returns what was lowered."""


def conversion_plan(model: Any) -> tuple[dict[str, Any], Any] | None:
    """(the converter's plans for `model`'s layers, by name; its producer and
    consumer graph), or None where the converter is not installed.

    Raises:
      ValueError: the converter cannot plan the model (ConversionError is one).
    """
    try:
        from lowbit_converter.graph import model_graph
        from lowbit_converter.lowering import plan_lowering
    except ImportError:
        return None
    return plan_lowering(model), model_graph(model)


def digits_example() -> tuple[Any, Any]:
    """(lowbit_models.binary_digits_cnn, lowbit_models.digits.training_batches):
    the demo's model and its training pipeline."""
    from lowbit_models import binary_digits_cnn
    from lowbit_models.digits import training_batches

    return binary_digits_cnn, training_batches
