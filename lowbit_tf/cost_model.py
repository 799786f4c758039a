"""Latency estimates of a model on our runtime, per target, without the device.

A model's latency is estimated from its MACs by kind, as `lowbit_tf.summary`
counts them (binary, multi-bit, float), divided by a throughput per kind, plus
a fixed cost per layer that computes (the interpreter's dispatch, the output
transform's pass over the output):

    latency_ms = sum over layers of sum_k macs_k / rate_k  +  layers * per_layer_ms

With ``int8=True`` (the float parts as TFLite int8 builtins, docs/int8.md) the
float MACs run at the int8 rate.

A multi-bit MAC of k bits (ternary weights: 2, DoReFa k-bit) costs k binary
MACs (the multi-bit op is k binary convolutions, lowbit_tf docs/custom_ops.md);
ABC layers are already counted as M * N binary MACs by the summary.

Rates, and where they come from (each figure is an estimate, said so in every
report that uses it):

- ``x86``: measured on this machine on first use (`measure_x86_rates`): one
  binary 3x3 conv (28x28x128 -> 128) on our TFLite kernels, the same conv in
  float through XNNPACK and in int8 (TFLite's int8 builtin), 1 thread, median
  of a few runs each.
- ``aarch64`` (Raspberry Pi 4, Cortex-A72 at 1.5 GHz) and ``armv7`` (the same
  Pi with a 32-bit OS): from the instruction counts of
  benchmarks/arm_instruction_counts.py and arm_quicknet_counts.py under qemu
  (binary 3x3 convs 30-44 binary MACs per instruction on aarch64, 13-28 on
  armv7; XNNPACK's float convs about 2.3 float MACs per instruction on
  aarch64), at an assumed one instruction per cycle; int8 builtins at twice
  the float rate (an assumption: 16 int8 lanes per NEON register against 4
  floats, less the widening). No Pi timed them.
"""

from __future__ import annotations

import functools
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

__all__ = ["TARGETS", "TargetRates", "cpu_model", "estimate_latency_ms", "measure_x86_rates",
           "rates_for"]

TARGETS = ("x86", "aarch64", "armv7")


@dataclass(frozen=True)
class TargetRates:
    """Throughputs of one target: MACs per millisecond by kind, a cost per
    computing layer, and where the figures come from."""

    target: str
    binary_macs_per_ms: float
    float_macs_per_ms: float
    per_layer_ms: float
    source: str
    int8_macs_per_ms: float | None = None  # None: as float

    def mac_cost_ms(self, bits: int, macs: int, int8: bool = False) -> float:
        """Milliseconds for `macs` MACs of kind `bits` (1 binary, 2-8 multi-bit,
        more: float, or int8 when `int8`)."""
        if bits <= 8:
            return macs * bits / self.binary_macs_per_ms
        if int8 and self.int8_macs_per_ms:
            return macs / self.int8_macs_per_ms
        return macs / self.float_macs_per_ms


# Pi 4: 1.5e9 cycles per second at one instruction per cycle = 1.5e6 per ms.
_PI4_INSTRUCTIONS_PER_MS = 1.5e6
_ARM = {
    "aarch64": TargetRates(
        "aarch64", binary_macs_per_ms=30 * _PI4_INSTRUCTIONS_PER_MS,
        float_macs_per_ms=2.3 * _PI4_INSTRUCTIONS_PER_MS, per_layer_ms=0.02,
        int8_macs_per_ms=4.6 * _PI4_INSTRUCTIONS_PER_MS,
        source="estimate: qemu instruction counts (binary 30, float 2.3, int8 4.6 assumed "
               "MACs per instruction), Pi 4 Cortex-A72 at 1.5 GHz and 1 instruction per cycle"),
    "armv7": TargetRates(
        "armv7", binary_macs_per_ms=20 * _PI4_INSTRUCTIONS_PER_MS,
        float_macs_per_ms=1.5 * _PI4_INSTRUCTIONS_PER_MS, per_layer_ms=0.03,
        int8_macs_per_ms=3.0 * _PI4_INSTRUCTIONS_PER_MS,
        source="estimate: qemu instruction counts (binary 20, float 1.5, int8 3 assumed MACs "
               "per instruction), Pi 4 (32-bit OS) at 1.5 GHz and 1 instruction per cycle"),
}


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


def rates_for(target: str) -> TargetRates:
    """The rates of `target` ("x86": measured here once per process)."""
    if target == "x86":
        return measure_x86_rates()
    if target not in _ARM:
        raise ValueError(f"target must be one of {TARGETS}, got {target!r}")
    return _ARM[target]


@functools.cache
def measure_x86_rates(size: int = 28, channels: int = 128, runs: int = 5) -> TargetRates:
    """Binary and float conv throughput of our runtime on this CPU (1 thread):
    one 3x3 'same' conv of size x size x channels -> channels, binary on our
    kernels and float through XNNPACK; median of `runs` invocations each."""
    import numpy as np

    from lowbit_tf import layers, lite
    from lowbit_tf._facade import convert
    from lowbit_tf._keras import keras

    shape = (size, size, channels)
    macs = size * size * 9 * channels * channels
    x = np.random.default_rng(0).normal(size=(1, *shape)).astype(np.float32)
    per_ms = {}
    for kind, layer in (
        ("binary", layers.QuantConv2D(channels, 3, padding="same", use_bias=False,
                                      input_quantizer="ste_sign", kernel_quantizer="ste_sign",
                                      kernel_constraint="weight_clip")),
        ("float", keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)),
        ("int8", keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)),
    ):
        inputs = keras.Input(shape)
        model = keras.Model(inputs, layer(inputs))
        content = (convert(model, int8=True, representative_dataset=lambda: [[x]])
                   if kind == "int8" else convert(model))
        interpreter = lite.Interpreter(model_content=content, num_threads=1)
        interpreter.predict(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            interpreter.predict(x)
            times.append(time.perf_counter() - start)
        per_ms[kind] = macs / (statistics.median(times) * 1e3)
    return TargetRates(
        "x86", binary_macs_per_ms=per_ms["binary"], float_macs_per_ms=per_ms["float"],
        int8_macs_per_ms=per_ms["int8"], per_layer_ms=0.005,
        source=f"estimate: measured on this CPU ({cpu_model()}), 1 thread: binary 3x3 conv "
               f"{per_ms['binary'] / 1e6:.1f} G binary MACs/s, float {per_ms['float'] / 1e6:.1f} "
               f"G MACs/s (XNNPACK), int8 {per_ms['int8'] / 1e6:.1f} G MACs/s")


def estimate_latency_ms(summary: Any, rates: TargetRates, int8: bool = False) -> float:
    """The latency estimate of a model from its `lowbit_tf.summary` result;
    `int8`: converted with int8=True (its float MACs at the int8 rate)."""
    total = 0.0
    for row in summary.layers:
        if row.macs:
            total += rates.per_layer_ms + sum(rates.mac_cost_ms(bits, n, int8)
                                              for bits, n in row.macs.items())
    return total
