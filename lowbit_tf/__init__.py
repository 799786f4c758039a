"""lowbit_tf: binary and low-bit neural networks for TensorFlow / Keras 3.

Where TensorFlow is installed, `import lowbit_tf` imports the Keras side
(quantizers, layers, constraints), which registers its classes with Keras, so
`keras.models.load_model` finds them. On a device without TensorFlow only the
TFLite runtime, `lowbit_tf.lite`, is usable, and nothing here needs TensorFlow.

    lowbit_tf.quantizers   quantizers with custom gradients (ste_sign, ...)
    lowbit_tf.layers       Keras layers (QuantConv2D, ...)
    lowbit_tf.constraints  weight constraints (WeightClip)
    lowbit_tf.optimizers   Bop, CaseOptimizer
    lowbit_tf.metrics      flip ratio
    lowbit_tf.summary      per-layer bits, memory, MACs and predicted .tflite size;
                           the module is callable: lowbit_tf.summary(model)
    lowbit_tf.ops          Python face of the custom TF ops (bitpack, bconv2d, bgemm)
    lowbit_tf.lite         TFLite Interpreter with the lowbit kernels attached
    lowbit_tf.convert      Keras model -> .tflite bytes with lowbit custom ops
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = (
    "quantizers", "layers", "constraints", "optimizers", "metrics", "summary", "ops", "lite",
)

__all__ = [*_SUBMODULES, "convert", "__version__"]


def convert(model: Any, **kwargs: Any) -> bytes:
    """Converts a Keras model to a .tflite flatbuffer with lowbit custom ops.

    See `lowbit_converter.convert` for the arguments.
    """
    from lowbit_converter import convert as _convert

    return _convert(model, **kwargs)


# The lowbit-tf-runtime wheel (runtime/) ships only lite.py and _native/:
# it never imports TensorFlow, even where TensorFlow happens to be installed.
if (Path(__file__).resolve().parent / "layers.py").is_file():
    try:
        import tensorflow  # noqa: F401
    except ImportError:  # TensorFlow-free device with the full source tree
        pass
    else:
        from lowbit_tf import constraints, layers, quantizers  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
