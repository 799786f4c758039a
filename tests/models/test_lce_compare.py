"""benchmarks/lce_compare.py without Larq Compute Engine: the report it prints
from measured rows (its timing needs LCE, which CI does not install), and the
clear error when LCE is missing."""

from __future__ import annotations

import lce_compare
import pytest


def conv_row(layer: str, lce_ms: float, indirect_ms: float, ours_ms: float) -> dict:
    return {
        "layer": layer, "batch": 1, "threads": 1, "iterations": {},
        "samples_ms": {
            lce_compare.LCE_DEFAULT: [lce_ms, lce_ms * 1.1],
            lce_compare.LCE_INDIRECT: [indirect_ms, indirect_ms * 1.1],
            lce_compare.LOWBIT_IO: [ours_ms, ours_ms * 1.1],
            lce_compare.LOWBIT_INVOKE: [ours_ms * 0.9, ours_ms],
        },
        "checks": {"lce_default_vs_lowbit_relative": 0.0,
                   "lce_indirect_bgemm_vs_lowbit_relative": 2e-7},
    }


def test_conv_report_and_target_line(capsys):
    rows = [conv_row("conv3_14x14x256-256", 8.0, 1.4, 0.14),
            conv_row("conv3_56x56x64-64", 9.0, 2.0, 0.3)]
    lce_compare.print_table(rows, "0.16.0")
    out = capsys.readouterr().out
    assert "Larq Compute Engine 0.16.0" in out
    assert out.count(" yes") == 2  # both rows agree
    # The target uses the faster LCE configuration (indirect BGEMM here).
    line = lce_compare.target_line(rows)
    assert "indirect bgemm" in line
    expected = (1.4 + 1.54) / 2 / ((0.14 + 0.154) / 2)
    assert f"{expected:.2f}x" in line and "[target >= 12x]" in line
    assert lce_compare.target_line(rows[1:]) is None  # no 14x14x256 row


def test_conv_report_flags_disagreement(capsys):
    row = conv_row("conv3_14x14x256-256", 8.0, 1.4, 0.14)
    row["checks"]["lce_default_vs_lowbit_relative"] = 0.5
    lce_compare.print_table([row], "0.16.0")
    assert " NO" in capsys.readouterr().out


def test_quicknet_report_and_target_line(capsys):
    samples = {lce_compare.LCE_DEFAULT: [130.0], lce_compare.LCE_INDIRECT: [27.0],
               lce_compare.LCE_INDIRECT_XNNPACK: [26.0], lce_compare.LOWBIT_IO: [3.25],
               lce_compare.LOWBIT_INVOKE: [3.2]}
    checks = {}
    for key in samples:
        if key != lce_compare.LOWBIT_INVOKE:
            checks[f"{key}_vs_keras_relative"] = 3e-7 if key == lce_compare.LOWBIT_IO else 0.05
            checks[f"{key}_same_top1"] = True
    rows = [{"threads": 1, "iterations": {}, "samples_ms": samples, "checks": checks}]
    lce_compare.print_quicknet(rows, "0.16.0")
    out = capsys.readouterr().out
    assert "LCE indirect bgemm + XNNPACK" in out and "3.00e-07" in out
    assert "8.00x" in lce_compare.quicknet_target_line(rows)


def test_missing_lce_is_a_clear_error(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SystemExit, match="larq_compute_engine is not importable"):
        lce_compare._lce_interpreter_class()
