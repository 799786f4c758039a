"""lowbit_converter: Keras model -> .tflite flatbuffer with lowbit custom ops.

    tflite_bytes = lowbit_converter.convert(model)      # or lowbit_tf.convert

The pipeline: lowering (lowering.py: binary layers -> custom TF ops with
bit-packed weights, BatchNorm/ReLU folded) -> TFLiteConverter with
allow_custom_ops -> our flatbuffer pass (flatbuffer_pass.py). Command line:
`lowbit-convert model.keras -o model.tflite` (cli.py).

Importing the package imports no TensorFlow (nor Keras): convert.py imports it
on call and ConversionError is loaded on first use, so the command line answers
--help and bad arguments at once.
"""

from __future__ import annotations

from typing import Any

from lowbit_converter.convert import ConversionResult, convert, convert_with_report

__all__ = ["convert", "convert_with_report", "ConversionResult", "ConversionError"]


def __getattr__(name: str) -> Any:
    if name == "ConversionError":  # folding.py imports Keras
        from lowbit_converter.folding import ConversionError

        return ConversionError
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
