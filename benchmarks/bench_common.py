"""Helpers shared by the benchmark scripts (imported as a sibling module: the
scripts run as `python benchmarks/<name>.py`, which puts this folder first on
sys.path)."""

from __future__ import annotations

import contextlib
import io
import os
import platform
import resource
from collections.abc import Callable, Iterable
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or what platform knows)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def active_kernel() -> str:
    """The bconv2d kernel path the native library picks in this process."""
    import ctypes

    try:
        from lowbit_tf._native import tflite_library_path

        fn = ctypes.CDLL(str(tflite_library_path())).lowbit_bconv2d_kernel_name
    except (OSError, AttributeError, ImportError):
        return "unknown"
    fn.restype = ctypes.c_char_p
    return fn().decode()


def busy_cpu_seconds() -> float | None:
    """CPU seconds spent busy by the whole machine so far (from /proc/stat)."""
    try:
        with open("/proc/stat", encoding="utf-8") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    # user nice system idle iowait irq softirq steal ...
    ticks = [int(v) for v in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """CPU seconds used by this process's finished children (the workers)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def int8_tflite(model: Any, representative: Callable[[], Iterable[Any]]) -> bytes:
    """Full-integer post-training quantisation of a Keras model (int8 input and
    output); `representative` yields calibration input batches."""
    import tensorflow as tf

    def dataset():
        for batch in representative():
            yield [batch]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = dataset
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return converter.convert()
