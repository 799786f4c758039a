"""Smoke test of benchmarks/abc_sweep.py (ABC-Net's (M, N) speed question): it
runs, checks each converted layer against Keras, and writes its table and plot.
Speeds are not asserted (benchmarks print ratios; tests do not time)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "abc_sweep.py"


@pytest.mark.slow
def test_abc_sweep_runs_and_writes_table_and_plot(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--max-bases", "2", "--rounds", "1", "--sample-ms", "5",
         "--shape", "6x6x40-24", "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "abc_sweep.md").read_text()
    rows = re.findall(r"^\| (\d) \| (\d) \| (\d+) \|.*\| (\S+) \|$", table, re.MULTILINE)
    assert [(m, n) for m, n, _, _ in rows] == [("1", "1"), ("1", "2"), ("2", "1"), ("2", "2")]
    assert all(float(err) < 1e-5 for *_, err in rows)  # the op computes the layer
    assert table.count("faster up to M*N =") == 4
    assert (tmp_path / "abc_sweep.png").stat().st_size > 1000
