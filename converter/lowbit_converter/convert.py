"""The conversion entry points.

This module imports TensorFlow (and the lowerings) on call only, so that
`import lowbit_converter` and the command line (cli.py) stay light until a
model is converted, and sets TF_CPP_MIN_LOG_LEVEL first (lowbit_tf/_tf_logs.py).
"""

from __future__ import annotations

import contextlib
import functools
import io
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from lowbit_tf._tf_logs import filtered_native_stderr, quiet_tensorflow_logs

if TYPE_CHECKING:
    from lowbit_converter.flatbuffer_pass import PassReport
    from lowbit_tf._keras import keras

_F = TypeVar("_F", bound=Callable[..., Any])

# Larq Compute Engine's `convert_keras_model` options we do not take, and
# what to do instead (inference_input_type / inference_output_type are ours too).
_LCE_OPTIONS = {
    "experimental_default_int8_range": (
        "int8 tensors come from calibration: pass int8=True and a representative_dataset"
    ),
    "target": (
        "there is one .tflite for every CPU: lowbit_tf.lite picks the kernel "
        "(AVX-512, AVX2, NEON, portable) at run time; set LOWBIT_KERNEL to force one"
    ),
    "experimental_enable_bitpacked_activations": (
        "use packed_chains=True (the default) to keep activations bit-packed "
        "between binary layers"
    ),
}


def _harmless(option: str, value: Any) -> bool:
    """True for an LCE option whose value asks for what we do anyway."""
    if option == "experimental_default_int8_range":
        return value is None
    if option == "experimental_enable_bitpacked_activations":
        return value is True
    return option == "target" and value == "arm"  # LCE's default; ours runs there


def refusing_lce_options(function: _F) -> _F:
    """`function`, which also takes Larq Compute Engine's converter options:
    one that asks for what we do anyway (say, inference_input_type=tf.float32)
    is dropped, any other raises a TypeError that says what to use instead.
    The signature shown (inspect.signature, help) stays `function`'s."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        refused = []
        for option in [k for k in kwargs if k in _LCE_OPTIONS]:
            value = kwargs.pop(option)
            if not _harmless(option, value):
                refused.append(f"{option}={value!r}: {_LCE_OPTIONS[option]}")
        if refused:
            raise TypeError(
                f"{function.__name__}() does not support (yet) Larq Compute Engine's "
                "converter option(s): " + "; ".join(refused) + ". Its own options are lowbit, "
                "packed_chains, float_fallback, int8, representative_dataset, "
                "inference_input_type and inference_output_type."
            )
        return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


@dataclass
class ConversionResult:
    """The converted flatbuffer and what went into it."""

    tflite_model: bytes
    lowered_layers: list[str]
    report: PassReport
    # int8=True: how many int8 tensors the lowbit ops read or write directly.
    int8_fused_tensors: int = 0


@refusing_lce_options
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
    from lowbit_converter import int8 as int8_pass

    int8_inputs, int8_outputs = int8_pass.check_int8_io_types(
        inference_input_type, inference_output_type, int8)
    if representative_dataset is not None and not int8:
        raise ValueError("representative_dataset is only used with int8=True")
    float_layers = _float_layer_names(int8_float_layers, int8, representative_dataset)
    quiet_tensorflow_logs()
    import tensorflow as tf

    from lowbit_converter.flatbuffer_pass import run_pass
    from lowbit_converter.lowering import lower_model
    from lowbit_tf._keras import keras

    if not isinstance(model, keras.Model):
        raise TypeError(f"convert expects a keras.Model, got {type(model).__name__}")
    if any(type(layer).__module__.startswith("tensorflow_model_optimization.")
           for layer in model.layers):
        # TFMOT's QAT and pruning wrappers (tf-keras mode): the plain model
        # they wrap, the QAT ranges kept as FakeQuantInt8 layers.
        from lowbit_tf import tfmot

        model = tfmot.strip(model)
    # Quantization-aware: the ranges come from the model's FakeQuantInt8 layers.
    aware = int8 and representative_dataset is None
    if aware and not _has_fake_quant(model):
        raise ValueError(
            "int8=True needs a representative_dataset to calibrate the int8 ranges, or a "
            "model trained with lowbit_tf.layers.FakeQuantInt8 layers (quantization-aware)")
    lowered, plans = (
        lower_model(model, packed_chains=packed_chains, float_fallback=float_fallback)
        if lowbit
        else (model, {})
    )
    # The Keras path freezes the variables of the layers kept in float.
    converter = tf.lite.TFLiteConverter.from_keras_model(lowered)
    converter.allow_custom_ops = True
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if not int8 and _has_sparse_kernel(lowered):
        # Pruned kernels stored sparse (TFLite's sparsity encoding; a
        # DENSIFY op restores each once, when the interpreter prepares).
        converter.optimizations = [tf.lite.Optimize.EXPERIMENTAL_SPARSITY]
    if aware:  # TFLiteConverter's quantization-aware path: the fake-quant ranges
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.inference_input_type = tf.int8 if int8_inputs else tf.float32
        converter.inference_output_type = tf.int8 if int8_outputs else tf.float32
    # Keras's export step prints the temporary SavedModel's signature, and
    # TensorFlow's C++ side logs the SavedModel's loading and a notice that our
    # ops are custom ops (which run_pass checks): noise for our callers.
    with (contextlib.redirect_stdout(io.StringIO()), filtered_native_stderr(),
          _float_emulation(lowered), warnings.catch_warnings()):
        # The quantization-aware path warns when the model's float input has
        # no fake-quant range of its own; the QUANTIZE after it gets one anyway.
        warnings.filterwarnings("ignore", "Statistics for quantized inputs were expected")
        converted = converter.convert()
    flatbuffer, report = run_pass(converted)
    fused = 0
    if int8:
        quantized = flatbuffer
        if not aware:
            calibrated = int8_pass.calibrate(flatbuffer, representative_dataset)
            float_nodes = int8_pass.float_layer_nodes(
                calibrated, float_layers, (layer.name for layer in _layers(lowered)),
                [_output_layer_name(t) for t in lowered.outputs])
            with filtered_native_stderr():
                quantized = int8_pass.quantize(calibrated, int8_inputs=int8_inputs,
                                               int8_outputs=int8_outputs,
                                               float_nodes=float_nodes)
        flatbuffer, fused = int8_pass.fuse_int8_io(quantized)
        flatbuffer, report = run_pass(flatbuffer)  # checks the result, notes the runtime again
    return ConversionResult(flatbuffer, sorted(plans), report, fused)


def _float_layer_names(names: Sequence[str] | str, int8: bool,
                       representative_dataset: Any) -> list[str]:
    """`int8_float_layers` checked: a name or a sequence of names, only for
    post-training int8 (in quantization-aware training, the layers left
    without FakeQuantInt8 are the float ones)."""
    names = [names] if isinstance(names, str) else list(names or ())
    if not names:
        return names
    if not int8 or representative_dataset is None:
        raise ValueError(
            "int8_float_layers is for post-training int8 (int8=True with a "
            f"representative_dataset), got it with int8={int8!r}"
            + ("" if not int8 else " and no representative_dataset (quantization-aware: "
               "leave FakeQuantInt8 out around the layers to keep float)"))
    bad = [n for n in names if not isinstance(n, str) or not n]
    if bad:
        raise TypeError(f"int8_float_layers must hold layer names (non-empty str), got {bad[0]!r}")
    return names


# The share of exact zeros from which a float kernel counts as pruned.
SPARSE_KERNEL_ZEROS = 0.5


def _has_sparse_kernel(model: Any) -> bool:
    """Whether a layer of `model` holds a float kernel at least
    SPARSE_KERNEL_ZEROS zeros (pruned, say by TFMOT's prune_low_magnitude)."""
    import numpy as np

    for layer in _layers(model):
        for name in ("kernel", "depthwise_kernel", "pointwise_kernel"):
            kernel = getattr(layer, name, None)
            if kernel is None or not hasattr(kernel, "numpy"):
                continue
            values = np.asarray(kernel.numpy())
            if values.size and np.mean(values == 0) >= SPARSE_KERNEL_ZEROS:
                return True
    return False


def _output_layer_name(tensor: Any) -> str:
    """The name of the layer whose output `tensor` (a model output) is; the
    history's `operation` in Keras 3, its `layer` in tf-keras."""
    history = tensor._keras_history
    return (getattr(history, "operation", None) or history.layer).name


def _layers(model: Any) -> Any:
    """`model` and every layer in it, nested models' included."""
    yield model
    for child in getattr(model, "layers", ()):
        yield from _layers(child)


def _has_fake_quant(model: keras.Model) -> bool:
    from lowbit_tf.layers import FakeQuantInt8

    return any(isinstance(layer, FakeQuantInt8) for layer in _layers(model))


@contextlib.contextmanager
def _float_emulation(model: keras.Model) -> Any:
    """The lowbit layers the conversion keeps (all of them with lowbit=False)
    traced as float ops: their `use_ops` is False meanwhile. Lowbit ops come
    only from the lowered layers, which the flatbuffer pass knows; a layer on
    the ops would bring a float-filter op and its packed-kernel cache instead."""
    from lowbit_tf.layers import OpsSwitchMixin

    kept = [layer for layer in _layers(model) if isinstance(layer, OpsSwitchMixin)]
    before = [layer.use_ops for layer in kept]
    for layer in kept:
        layer.use_ops = False
    try:
        yield
    finally:
        for layer, use_ops in zip(kept, before, strict=True):
            layer.use_ops = use_ops


@refusing_lce_options
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
    return convert_with_report(
        model, lowbit=lowbit, packed_chains=packed_chains, float_fallback=float_fallback,
        int8=int8, representative_dataset=representative_dataset,
        inference_input_type=inference_input_type, inference_output_type=inference_output_type,
        int8_float_layers=int8_float_layers,
    ).tflite_model
