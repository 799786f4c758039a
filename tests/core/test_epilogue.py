"""LowbitBconv2d's fused epilogue on every kernel path (LOWBIT_KERNEL, each in a
fresh process), against the NumPy reference bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from repo_paths import HELPERS

tf = pytest.importorskip("tensorflow")

from lowbit_tf._native import kernel_path_names  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated")




@pytest.mark.parametrize("path", ["reference", *kernel_path_names()])
def test_every_kernel_path(path):
    """LOWBIT_KERNEL is read when an op kernel is created: each forced path in
    a fresh process (a path this CPU lacks falls back to a lesser one)."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import numpy as np
        import epilogue_cases as t
        bad = []
        for seed in range(9):
            kind = t.KINDS[seed % 3]
            case = t.random_case(np.random.default_rng(700 + seed), kind)
            data = t.case_data(case, seed)
            if not np.array_equal(t.run_tf(case, data), t.reference(case, data)):
                bad.append(seed)
        print(json.dumps(bad))
    """)
    env = dict(os.environ, LOWBIT_KERNEL=path)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                            text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []

