"""Every bitpack packer and every binary-conv kernel path (LOWBIT_KERNEL, each in
a fresh process), through the TF ops, against the NumPy reference bit for bit.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from repo_paths import HELPERS

from lowbit_tf._native import kernel_path_names

PACKER_SCRIPT = """
import sys
sys.path.insert(0, {helpers!r})
import numpy as np
from lowbit_tf import ops
from reference import bitpack_np
edge = np.array([0.0, -0.0, -1e-38, 1e-38, np.nan, -np.inf, np.inf, -5.0, -1.2e-38, -np.nan,
                 -2.0**-126, 2.0**-126, -3e38, np.float32(-1.1754942e-38)], np.float32)
rng = np.random.default_rng(5)
for channels in (32, 64, 70, 97):
    x = rng.permutation(np.resize(edge, 3 * 5 * channels)).reshape(3, 5, channels)
    x = x.astype(np.float32)
    assert np.array_equal(ops.bitpack(x).numpy(), bitpack_np(x)), channels
    y = rng.standard_normal((4, channels)).astype(np.float32)
    assert np.array_equal(ops.bitpack(y).numpy(), bitpack_np(y)), channels
print("PACKER OK")
"""


@pytest.mark.parametrize("path", kernel_path_names("bitpack"))
def test_every_packer_handles_edge_values(path):
    """The SIMD packers (whole words; the packer follows LOWBIT_KERNEL) on
    zeros, NaNs, infinities, subnormals and the smallest normals."""
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", PACKER_SCRIPT.format(helpers=str(HELPERS))],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "PACKER OK" in result.stdout


KERNEL_PATH_SCRIPT = textwrap.dedent("""
    import sys
    import numpy as np
    sys.path.insert(0, {helpers!r})
    from reference import bconv2d_np
    from lowbit_tf import ops
    rng = np.random.default_rng(0)
    for i in range(40):
        n, h, w = rng.integers(1, 3), rng.integers(3, 12), rng.integers(3, 12)
        cin = int(rng.choice([1, 31, 33, 64, 65, 130]))
        cout = int(rng.integers(1, 20))
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        s = (int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        d = (int(rng.integers(1, 3)), 1)
        pad, pv = ("SAME", "VALID")[i % 2], int(rng.integers(0, 2))
        if pad == "VALID" and (h < (kh - 1) * d[0] + 1 or w < kw):
            continue
        x = rng.standard_normal((n, h, w, cin)).astype(np.float32)
        k = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
        m = rng.uniform(-1, 1, cout).astype(np.float32)
        b = rng.uniform(-1, 1, cout).astype(np.float32)
        got = ops.bconv2d(x, ops.pack_filter(k), m, b, kernel_size=(kh, kw), strides=s,
                          dilations=d, padding=pad, pad_value=pv, activation="relu").numpy()
        want = bconv2d_np(x, k, m, b, s, d, pad, pv, "relu")
        assert np.array_equal(got, want), (i, n, h, w, cin, cout, kh, kw, s, d, pad, pv)
    print("KERNEL PATH OK")
""")


@pytest.mark.parametrize("path", ["reference", *kernel_path_names()])
def test_every_kernel_path_matches_numpy(path):
    """LOWBIT_KERNEL forces each kernel; each runs in a fresh process."""
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run([sys.executable, "-c", KERNEL_PATH_SCRIPT.format(helpers=str(HELPERS))],
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "KERNEL PATH OK" in result.stdout

