"""The README's main job runs end to end (short training)."""

from __future__ import annotations

import re
import subprocess
import sys


def test_demo_runs_and_reports(tmp_path):
    # 10 epochs (~3 s of training): after 3 the batch norms' moving statistics
    # (momentum 0.99, 22 steps an epoch) still lag, and test accuracy swings
    # with the batch order (0.45 to 0.82 over seeds 0-2).
    proc = subprocess.run(
        [sys.executable, "-m", "lowbit_tf.demo", "--epochs", "10", "--latency-runs", "20",
         "--output-dir", str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    keras_acc, tflite_acc = map(float, re.search(r"Keras ([\d.]+)\s+TFLite \S+ \S+ ([\d.]+)",
                                                 out).groups())
    assert keras_acc == tflite_acc and keras_acc > 0.5
    ratio = float(re.search(r"packed \d+ B \(([\d.]+)x smaller\)", out).group(1))
    assert ratio >= 25
    for name in ("digits.keras", "digits_lowbit.tflite", "digits_float.tflite"):
        assert (tmp_path / name).stat().st_size > 0
