"""The one door from lowbit_tf to the packages built on it.

Dependencies run one way: lowbit_converter and lowbit_models import lowbit_tf,
never the reverse, except through the functions here, which import them
lazily (on call). So lowbit_tf's own modules (quantizers, layers, ops, lite)
load without them, and the TensorFlow-free runtime wheel, which ships neither,
never reaches them. `lowbit_tf.convert` is the public face; the summary's
size prediction and the demo use the rest.
"""

from __future__ import annotations

from typing import Any


def convert(model: Any, **kwargs: Any) -> bytes:
    """`lowbit_converter.convert`."""
    from lowbit_converter import convert as _convert

    return _convert(model, **kwargs)


def convert_with_report(model: Any, **kwargs: Any) -> Any:
    """`lowbit_converter.convert_with_report`: the flatbuffer and what was lowered."""
    from lowbit_converter import convert_with_report as _convert_with_report

    return _convert_with_report(model, **kwargs)


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
