"""lowbit_converter: Keras model -> .tflite flatbuffer with lowbit custom ops.

    tflite_bytes = lowbit_converter.convert(model)      # or lowbit_tf.convert

The pipeline: lowering (lowering.py: binary layers -> custom TF ops with
bit-packed weights, BatchNorm/ReLU folded) -> TFLiteConverter with
allow_custom_ops -> our flatbuffer pass (flatbuffer_pass.py). Command line:
`lowbit-convert model.keras -o model.tflite` (cli.py).
"""

from lowbit_converter.convert import ConversionResult, convert, convert_with_report
from lowbit_converter.folding import ConversionError

__all__ = ["convert", "convert_with_report", "ConversionResult", "ConversionError"]
