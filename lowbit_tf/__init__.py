"""lowbit_tf: binary and low-bit neural networks for TensorFlow / Keras 3.

`import lowbit_tf` imports no TensorFlow: the submodules load when first used
(`lowbit_tf.layers`, `from lowbit_tf import layers`), and `lowbit_tf.lite`, the
TFLite runtime, never needs TensorFlow. The Keras classes (quantizers, layers,
constraints) are registered with Keras as soon as Keras is imported, before or
after lowbit_tf, so `keras.models.load_model` finds them. On a device without
TensorFlow only `lowbit_tf.lite` is usable.

    lowbit_tf.quantizers   quantizers with custom gradients (ste_sign, ...)
    lowbit_tf.layers       Keras layers (QuantConv2D, ...)
    lowbit_tf.constraints  weight constraints (WeightClip)
    lowbit_tf.optimizers   Bop, CaseOptimizer
    lowbit_tf.metrics      flip ratio
    lowbit_tf.summary      per-layer bits, memory, MACs and predicted .tflite size;
                           the module is callable: lowbit_tf.summary(model)
    lowbit_tf.ops          Python face of the custom TF ops (bitpack, bconv2d, bgemm)
    lowbit_tf.math         sign, heaviside (Larq's larq.math)
    lowbit_tf.activations  hard_tanh, leaky_tanh
    lowbit_tf.callbacks    HyperparameterScheduler
    lowbit_tf.context      quantized_scope, metrics_scope (Larq's larq.context)
    lowbit_tf.models       summary under Larq's name (larq.models.summary)
    lowbit_tf.compat       load_larq_model: a Larq .h5 model as lowbit_tf layers
    lowbit_tf.compress     constraint-driven compression (accuracy drop, size or
                           latency in, per-layer precisions out); callable:
                           lowbit_tf.compress(model, train, val, max_accuracy_drop=...)
    lowbit_tf.cost_model   latency estimates per target (x86, aarch64, armv7)
    lowbit_tf.lite         TFLite Interpreter with the lowbit kernels attached
    lowbit_tf.convert      Keras model -> .tflite bytes with lowbit custom ops
    lowbit_tf.ops_scope    quantized layers built inside it use the custom TF ops
                           (True, the default) or the float emulation (False)

Dependencies run one way: the converter (lowbit_converter) and the models
(lowbit_models) build on lowbit_tf; lowbit_tf reaches them only through
`_facade.py`, lazily (`convert` is its public face).
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.util
import sys
from typing import Any

from lowbit_tf._variant import RUNTIME_ONLY

__version__ = "0.1.0"

_SUBMODULES = (
    "quantizers", "layers", "constraints", "optimizers", "metrics", "summary", "ops", "math",
    "lite", "activations", "callbacks", "compat", "context", "models", "compress", "cost_model",
)
# What the lowbit-tf-runtime wheel ships of them.
_RUNTIME_SUBMODULES = ("lite",)

__all__ = [*_SUBMODULES, "convert", "ops_scope", "__version__"]


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


# Registering the Keras classes. `import lowbit_tf.lite` (which runs this
# file) must not import TensorFlow, so the TF-dependent submodules load when
# first used (`lowbit_tf.layers`, `from lowbit_tf import layers`, ...), and
# their Keras classes are registered as soon as Keras itself is loaded: now if
# it already is, else right after its import (a one-shot import hook), so that
# `import lowbit_tf` then `keras.models.load_model(...)` finds them.
# The lowbit-tf-runtime wheel (runtime/) ships only lite.py and _native/: it
# never imports TensorFlow, even where TensorFlow happens to be installed.
_KERAS_MODULES = ("activations", "constraints", "layers", "quantizers")


def _register_with_keras() -> None:
    try:
        for name in _KERAS_MODULES:
            importlib.import_module(f"{__name__}.{name}")
    except ImportError:  # Keras without TensorFlow (another backend): nothing to register
        return
    except Exception as error:  # noqa: BLE001 - must not break the import of Keras
        import warnings

        warnings.warn(f"lowbit_tf could not register its Keras classes: {error!r}",
                      RuntimeWarning, stacklevel=2)
        return
    # The custom ops too, so that `import lowbit_tf` is all tf.saved_model.load
    # needs to load a SavedModel that uses them (TensorFlow has no other way to
    # find an op library). A missing or mismatched library is reported when an
    # op is first wanted (lowbit_tf._native.tf_ops_problem).
    from lowbit_tf._native import tf_ops_problem

    tf_ops_problem()


def _initializing(name: str) -> bool:
    spec = getattr(sys.modules.get(name), "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Registers the lowbit classes once `keras` is imported, and no import of
    keras or tensorflow is under way (`import tensorflow` imports keras while
    it is half made; the lowbit modules need both whole)."""

    WATCHED = ("keras", "tensorflow")

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in self.WATCHED:
            return None
        # The other finders find the module (this one steps aside meanwhile).
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            sys.meta_path.insert(0, self)
        if spec is not None and spec.loader is not None:
            spec.loader = _ThenRegister(spec.loader, self)
        return spec

    def imported(self, name: str) -> None:
        if sys.modules.get("keras") is None or any(
                _initializing(other) for other in self.WATCHED if other != name):
            return
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        _register_with_keras()


class _ThenRegister(importlib.abc.Loader):
    def __init__(self, loader: Any, finder: _AfterKerasImport) -> None:
        self.loader, self.finder = loader, finder

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        self.finder.imported(module.__name__)


if not RUNTIME_ONLY:
    if sys.modules.get("keras") is not None:
        _register_with_keras()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def __getattr__(name: str) -> Any:
    if name == "ops_scope" and not RUNTIME_ONLY:
        # lowbit_tf/context.py (no TensorFlow); not in the runtime wheel.
        return importlib.import_module(f"{__name__}.context").ops_scope
    if name in _SUBMODULES:
        if RUNTIME_ONLY and name not in _RUNTIME_SUBMODULES:
            raise AttributeError(_runtime_only(f"lowbit_tf.{name}"))
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
