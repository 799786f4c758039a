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
    lowbit_tf.math         sign (Larq's larq.math)
    lowbit_tf.lite         TFLite Interpreter with the lowbit kernels attached
    lowbit_tf.convert      Keras model -> .tflite bytes with lowbit custom ops

Dependencies run one way: the converter (lowbit_converter) and the models
(lowbit_models) build on lowbit_tf; lowbit_tf reaches them only through
`_facade.py`, lazily (`convert` is its public face).
"""

from __future__ import annotations

import importlib
from typing import Any

from lowbit_tf._variant import RUNTIME_ONLY

__version__ = "0.1.0"

_SUBMODULES = (
    "quantizers", "layers", "constraints", "optimizers", "metrics", "summary", "ops", "math",
    "lite",
)
# What the lowbit-tf-runtime wheel ships of them.
_RUNTIME_SUBMODULES = ("lite",)

__all__ = [*_SUBMODULES, "convert", "__version__"]


if RUNTIME_ONLY:

    def convert(model: Any, **kwargs: Any) -> bytes:
        """Not part of the runtime install (the full package converts)."""
        raise ImportError(_runtime_only("lowbit_tf.convert"))

else:
    # The converter's signature and docstring; imports lowbit_converter on call.
    from lowbit_tf._facade import convert


def _runtime_only(what: str) -> str:
    return (
        f"{what} is not part of lowbit-tf-runtime, the TensorFlow-free runtime install "
        "(it runs converted .tflite files with lowbit_tf.lite only). Install the full "
        "lowbit-tf package (with TensorFlow) for the Keras layers, the ops and the converter."
    )


# The lowbit-tf-runtime wheel (runtime/) ships only lite.py and _native/:
# it never imports TensorFlow, even where TensorFlow happens to be installed.
if not RUNTIME_ONLY:
    try:
        import tensorflow  # noqa: F401
    except ImportError:  # TensorFlow-free device with the full source tree
        pass
    else:
        from lowbit_tf import constraints, layers, quantizers  # noqa: F401


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        if RUNTIME_ONLY and name not in _RUNTIME_SUBMODULES:
            raise AttributeError(_runtime_only(f"lowbit_tf.{name}"))
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
