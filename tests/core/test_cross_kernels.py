"""Every binary-conv kernel path against the reference, natively and for Arm.

custom_ops/tests/bconv2d_check.cc sweeps random shapes through each kernel the
CPU can run (x86: portable, popcnt, AVX2, AVX-512; Arm: portable, NEON) and
compares bit for bit with the reference kernel. The Arm builds use Debian's
cross compilers and run under qemu-user (instruction-set emulation: this
checks correctness, not speed). Skipped where the tools are missing; .ci/run
installs them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TARGETS = {
    "native": (None, None, None),
    "aarch64": ("aarch64-linux-gnu", "qemu-aarch64-static", "cortex-a72"),
    "armv7": ("arm-linux-gnueabihf", "qemu-arm-static", "cortex-a7"),
}


@pytest.mark.parametrize("target", list(TARGETS))
def test_kernel_paths_are_bit_exact(target, tmp_path):
    triple, qemu, cpu = TARGETS[target]
    args = ["cmake", "-S", str(REPO / "custom_ops"), "-B", str(tmp_path),
            "-DLOWBIT_BUILD_CHECKS=ON", "-DLOWBIT_BUILD_TFLITE=OFF"]
    command = [str(tmp_path / "bconv2d_check"), "300"]
    env = dict(os.environ)
    if triple is not None:
        missing = [tool for tool in (f"{triple}-g++", qemu) if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)} (apt install g++-{triple} qemu-user-static)")
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'custom_ops' / 'cmake' / triple}.cmake")
        command = [qemu, "-L", f"/usr/{triple}", *command]
        env["QEMU_CPU"] = cpu
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(tmp_path), "--target", "bconv2d_check", "-j2"],
                   check=True, capture_output=True, timeout=600)
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK 300 cases" in result.stdout
    kernels = result.stdout.splitlines()[0]
    if target in ("aarch64", "armv7"):
        assert "neon" in kernels.split(), kernels
