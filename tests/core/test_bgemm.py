"""LowbitBgemm on every kernel path of the native kernel table (LOWBIT_KERNEL,
forced in a fresh process each): small batches through the GEMV path into the
tiled one and random cases, through the TF op and the TFLite kernel, against
the NumPy reference bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from repo_paths import HELPERS

tf = pytest.importorskip("tensorflow")


from lowbit_tf._native import kernel_path_names  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]




# --------------------------------------------------------------------------
# Every kernel path, in a fresh process each (LOWBIT_KERNEL is read when an op
# is created); a path this CPU lacks falls back to a lesser one.
# --------------------------------------------------------------------------

PATHS = ["reference", *kernel_path_names()]  # the native kernel table


PATH_SCRIPT = """
import json, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import bgemm_cases as t
bad = [("tf small", c) for c in t.small_batch_mismatches(t.run_tf)]
bad += [("tflite small", c) for c in t.small_batch_mismatches(t.run_tflite, ks=(33,),
                                                               couts=(17, 300))]
for seed in range(24):
    case = t.random_case(np.random.default_rng(300 + seed))
    x, kernel, m, b = t.case_data(case)
    expected = t.reference(case, x, kernel, m, b).view(np.uint32)
    if not np.array_equal(t.run_tf(case, x, kernel, m, b).view(np.uint32), expected):
        bad.append(("tf", seed))
    if seed % 3 == 0 and not np.array_equal(
            t.run_tflite(case, x, kernel, m, b).view(np.uint32), expected):
        bad.append(("tflite", seed))
print("BAD " + json.dumps(bad))
"""


@pytest.mark.parametrize("path", PATHS)
def test_every_kernel_path_is_bit_exact(path):
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", PATH_SCRIPT, str(HELPERS)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("BAD ")]
    assert line and json.loads(line[-1][4:]) == [], proc.stdout[-2000:]

