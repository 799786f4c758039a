"""The TFLite flatbuffer schema bindings, imported in one place.

ai-edge-litert (a dependency) ships the generated Python object API of the
TFLite schema; TensorFlow's copy is the fallback.
"""

try:
    from ai_edge_litert import schema_py_generated as schema
except ImportError:  # pragma: no cover - depends on the installed runtime
    from tensorflow.lite.python import schema_py_generated as schema

__all__ = ["schema"]
