"""The packing pass of a bit-packed LowbitBconv2d output on the reference, the
portable and this machine's best kernel path (each in a fresh process).
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


pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]




# The packing pass is shared by every kernel (tests/core/test_kernels.py and
# tests/core/test_cross_kernels.py cover the kernels themselves): the reference,
# the portable and this machine's best path are enough here.
@pytest.mark.parametrize("path", ["reference", "portable", "auto"])
def test_every_kernel_path_packs_the_same_bits(path):
    """LOWBIT_KERNEL is read when an op kernel is created: each forced path in
    a fresh process, against the NumPy reference."""
    script = textwrap.dedent(f"""
        import json, sys
        sys.path.insert(0, {str(HELPERS)!r})
        import numpy as np
        import packed_chain_cases as t
        bad = []
        for seed in range(6):
            rng = np.random.default_rng(4000 + seed)
            case = t.random_case(rng)
            x, kernel, m, b = t.case_data(case, seed)
            got = t.run_tf(case, x, kernel, m, b, "bitpacked")
            if not np.array_equal(got, t.reference(case, x, kernel, m, b)):
                bad.append(seed)
        print(json.dumps(bad))
    """)
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []

