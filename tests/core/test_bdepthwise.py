"""LowbitBDepthwiseConv2d's core: every read-out path (LOWBIT_KERNEL, each in a
fresh process) against the NumPy reference, and custom_ops/tests/bdepthwise_check.cc
(the core alone against a naive C++ loop) natively and cross-compiled for Arm
under qemu-user.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from repo_paths import HELPERS, REPO

from lowbit_tf._native import kernel_path_names

pytestmark = [
    pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated"),
    pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning"),
]




# The read-out of the counts and the transform differ per path (portable byte
# tables; AVX2, which the AVX-512 paths use too; NEON on Arm): each forced in a fresh
# process (LOWBIT_KERNEL is read when the op runs), against the reference.
@pytest.mark.parametrize("path", [*kernel_path_names("bdepthwise"), "auto"])
def test_every_kernel_path_matches_reference(path):
    script = f"""
import json, sys
sys.path.insert(0, {str(HELPERS)!r})
import numpy as np
import bdepthwise_cases as t
from reference import bitpack_np
bad = []
for seed in range(12):
    case = t.random_case(np.random.default_rng(300 + seed))
    x, kernel, m, b = t.case_data(case, seed, tricky=seed % 2 == 1)
    expected = t.reference(case, x, kernel, m, b)
    output_type = "bitpacked" if seed % 2 else "float"
    if output_type == "bitpacked":
        expected = bitpack_np(expected)
    if not np.array_equal(t.run_tf(case, x, kernel, m, b, output_type), expected):
        bad.append(seed)
print(json.dumps(bad))
"""
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


CROSS_TARGETS = {
    "native": (None, None, None),
    "aarch64": ("aarch64-linux-gnu", "qemu-aarch64-static", "cortex-a72"),
    "armv7": ("arm-linux-gnueabihf", "qemu-arm-static", "cortex-a7"),
}


@pytest.mark.parametrize("target", list(CROSS_TARGETS))
def test_native_check_natively_and_for_arm(target, tmp_path):
    """custom_ops/tests/bdepthwise_check.cc: the core alone against a naive C++
    loop, every read-out path, natively and cross-compiled for Arm under
    qemu-user (as tests/core/test_cross_kernels.py does for the binary conv)."""
    import shutil

    triple, qemu, cpu = CROSS_TARGETS[target]
    configure = ["cmake", "-S", str(REPO / "custom_ops"), "-B", str(tmp_path),
                 "-DLOWBIT_BUILD_CHECKS=ON", "-DLOWBIT_BUILD_TFLITE=OFF"]
    command = [str(tmp_path / "bdepthwise_check"), "300"]
    env = dict(os.environ)
    if triple is not None:
        missing = [tool for tool in (f"{triple}-g++", qemu) if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)} (apt install g++-{triple} qemu-user-static)")
        configure.append(
            f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'custom_ops' / 'cmake' / triple}.cmake")
        command = [qemu, "-L", f"/usr/{triple}", *command]
        env["QEMU_CPU"] = cpu
    subprocess.run(configure, check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(tmp_path), "--target", "bdepthwise_check", "-j2"],
                   check=True, capture_output=True, timeout=900)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK 300 cases" in result.stdout
    if triple is not None:  # the NEON read-out is among the paths checked
        assert "neon" in result.stdout.splitlines()[0].split()[1:], result.stdout[:200]

