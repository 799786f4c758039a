"""benchmarks/bconv2d_benchmark.py's issue-19 target lines: which core-kernel
rows get one, the share of the peak they print, the dense rows' memory-bound
ceiling and the shells' time over the core kernel, on made-up timings."""

from __future__ import annotations

import bconv2d_benchmark as bench


def _core(layer: str, ms: float, read_ms: float | None = None, batch: int = 1) -> dict:
    return {"layer": layer, "batch": batch, "threads": 1, "samples_ms": [ms, ms, ms],
            "read_ms": None if read_ms is None else [read_ms]}


def _shell(layer: str, tf_ms: float, lite_ms: float) -> dict:
    samples = {key: [1.0] for key in bench.VARIANTS}
    samples[bench.TF_PACKED] = [tf_ms]
    samples[bench.LITE_LOWBIT] = [lite_ms]
    return {"layer": layer, "batch": 1, "threads": 1, "samples_ms": samples}


def test_target_rows_share_of_peak_and_shell_overhead():
    peak = 1e12  # binary MACs per second
    # 1x1 28x28x128->128: 12.845 M MACs; at 0.0257 ms that is 50.0% of 1e12/s.
    core = [
        _core("conv1_28x28x128-128", 0.025690112),
        _core("conv3_56x56x64-64", 0.2),               # 115.6 M MACs: 57.8%
        _core("conv3_28x28x128-128", 0.2),             # 3x3 of 128 channels: no target
        _core("conv1_56x56x64-64", 0.05),              # 1x1 of 64 channels: no target
        _core("dense_1024-1024", 0.002, read_ms=0.001),  # 52.4%, ceiling 104.9%
        _core("conv1_28x28x128-128", 0.03, batch=8),   # batch 8: no target line
    ]
    results = [_shell("conv1_28x28x128-128", tf_ms=0.0514, lite_ms=0.0283)]
    lines = bench.kernel_share_lines(results, {1: peak}, core)
    assert lines == [
        "core kernel 3x3 56x56x64->64, N=1, 1 thr: 57.8% of peak  [target >= 75%]",
        "core kernel 1x1 28x28x128->128, N=1, 1 thr: 50.0% of peak  [target >= 50%]",
        "    shells over the core kernel: TF op packed +100%, TFLite kernel +10%  "
        "[target <= +15%]",
        "core kernel bgemm 1024->1024, N=1, 1 thr: 52.4% of peak  [target >= 50%] "
        "(memory-bound ceiling 104.9%)",
    ]


def test_no_lines_without_a_peak():
    core = [_core("conv1_28x28x128-128", 0.03)]
    assert bench.kernel_share_lines([], {}, core) == []


def test_shell_lines_take_the_core_kernel_timed_in_the_same_rounds():
    # The core table says 0.0257 ms, the core kernel timed beside the shells
    # 0.0286 ms: the shells are compared with the latter (a side-by-side
    # ratio), the share of the peak still comes from the table.
    core = [_core("conv1_28x28x128-128", 0.025690112)]
    shell = _shell("conv1_28x28x128-128", tf_ms=0.0572, lite_ms=0.0315)
    shell["samples_ms"][bench.CORE_IN_ROUNDS] = [0.0286, 0.0286, 0.0286]
    lines = bench.kernel_share_lines([shell], {1: 1e12}, core)
    assert lines == [
        "core kernel 1x1 28x28x128->128, N=1, 1 thr: 50.0% of peak  [target >= 50%]",
        "    shells over the core kernel: TF op packed +100%, TFLite kernel +10%  "
        "[target <= +15%]",
    ]
