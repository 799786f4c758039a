"""Keeping TensorFlow's C++ log out of a conversion's output.

A conversion makes TensorFlow's C++ side log some thirty lines to stderr
(``failed call to cuInit: ... UNKNOWN ERROR (303)`` on a machine with CUDA
libraries but no GPU, the SavedModel loader's progress, "The following
operation(s) need TFLite custom op implementation(s)" for our own ops, which
the flatbuffer pass then checks), which read as failures. This module imports
nothing heavy, so the entry points can call it before TensorFlow loads:

  * `quiet_tensorflow_logs` sets ``TF_CPP_MIN_LOG_LEVEL`` unless the user set it
    (TensorFlow reads it once, when it loads: set later it does nothing);
  * `filtered_native_stderr` captures the process's stderr (file descriptor 2,
    where the C++ log goes whatever the level was at import) around the
    TFLite converter and passes on every line but TensorFlow's INFO and
    WARNING lines and the custom-op notice.

The converter's own warnings go through Python's `warnings` and `logging`, and
its errors are exceptions: neither is affected.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator

# INFO (I) and WARNING (W) lines of TensorFlow's C++ log (absl / glog format:
# "W0000 00:00:1712345678.123456   12345 file.cc:123] message"). Errors (E) and
# fatal errors (F) pass.
_NOISE_LINE = re.compile(r"^[IW]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w.\-/]+:\d+\] ")
# The lines that continue INFO lines: the custom-op notice (flatbuffer_export.cc)
# and the CPU-feature notice (cpu_feature_guard.cc); and the MLIR quantizer's
# settings line (lowbit_converter/int8.py).
_CONTINUATION = re.compile(
    r"^(Custom ops: |Details:$|\s+tf\.\w+\(|See instructions: https://www\.tensorflow\.org/lite/"
    r"|To enable the following instructions: .* rebuild TensorFlow with"
    r"|fully_quantize: \d+, inference_type: \d+, input_inference_type: )"
)
_ABSL_PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called"


def quiet_tensorflow_logs(level: str = "2") -> None:
    """Sets ``TF_CPP_MIN_LOG_LEVEL`` to `level` ("2" hides INFO and WARNING,
    "3" errors too) unless the user set it. Call it before the first
    ``import tensorflow``: later it changes nothing (`filtered_native_stderr`
    still works then)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", level)


def is_noise(line: str) -> bool:
    """True for a TensorFlow C++ INFO or WARNING log line, or a line of the
    custom-op notice, which `filtered_native_stderr` drops."""
    return bool(
        _NOISE_LINE.match(line) or _CONTINUATION.match(line) or line.startswith(_ABSL_PREAMBLE)
    )


@contextlib.contextmanager
def filtered_native_stderr() -> Iterator[None]:
    """Runs the block with file descriptor 2 sent to a temporary file, then
    writes what was written there, less the `is_noise` lines, to stderr.

    Does nothing where stderr has no file descriptor or the environment sets
    ``LOWBIT_TF_VERBOSE_TF_LOG=1`` (to see TensorFlow's full log)."""
    if os.environ.get("LOWBIT_TF_VERBOSE_TF_LOG") == "1":
        yield
        return
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    with tempfile.TemporaryFile(mode="w+b") as capture:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode(errors="replace")
            kept = [line for line in text.splitlines(keepends=True) if not is_noise(line)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()
