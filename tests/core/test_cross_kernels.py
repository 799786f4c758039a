"""Every binary-conv kernel path against the reference, natively and for Arm;
the int8 conv's NEON kernel for Arm.

custom_ops/tests/bconv2d_check.cc sweeps random shapes through each kernel the
CPU can run (x86: portable, popcnt, AVX2, AVX-512; Arm: portable, NEON) and
compares bit for bit with the reference kernel. custom_ops/tests/
int8_conv2d_check.cc does the same for the int8 conv over few input channels
(Arm: its NEON kernel and portable loop against a naive loop nest; natively:
tests/core/test_int8_conv2d_check.py), on a Cortex-A72 / A7 (no dot product)
and, on aarch64, a Cortex-A76 (dot product: the SDOT variant too). The Arm builds
use Debian's cross compilers and run under qemu-user (instruction-set
emulation: this checks correctness, not speed). Skipped where the tools are
missing; .ci/run installs them.
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


@pytest.fixture(scope="module", params=list(TARGETS))
def checkers(request, tmp_path_factory):
    """(target, build folder) with both checkers built for the target (one core build)."""
    target = request.param
    triple, qemu, _ = TARGETS[target]
    build = tmp_path_factory.mktemp(f"checks-{target}")
    args = ["cmake", "-S", str(REPO / "custom_ops"), "-B", str(build),
            "-DLOWBIT_BUILD_CHECKS=ON", "-DLOWBIT_BUILD_TFLITE=OFF"]
    if triple is not None:
        missing = [tool for tool in (f"{triple}-g++", qemu) if shutil.which(tool) is None]
        if missing:
            pytest.skip(f"needs {', '.join(missing)} (apt install g++-{triple} qemu-user-static)")
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'custom_ops' / 'cmake' / triple}.cmake")
    checks = ["bconv2d_check"] if triple is None else ["bconv2d_check", "int8_conv2d_check"]
    subprocess.run(args, check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(build), "--target", *checks, "-j2"],
                   check=True, capture_output=True, timeout=600)
    return target, build


def _run(target, build, checker, cases, cpu=None):
    triple, qemu, default_cpu = TARGETS[target]
    command = [str(build / checker), str(cases)]
    env = dict(os.environ)
    if triple is not None:
        command = [qemu, "-L", f"/usr/{triple}", *command]
        env["QEMU_CPU"] = cpu or default_cpu
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return result.stdout


def test_kernel_paths_are_bit_exact(checkers):
    target, build = checkers
    out = _run(target, build, "bconv2d_check", 300)
    assert "OK 300 cases" in out
    kernels = out.splitlines()[0]
    if target in ("aarch64", "armv7"):
        assert "neon" in kernels.split(), kernels


# Per Arm CPU: the int8 conv's paths checked there (SDOT: the dot product).
INT8_CPUS = [("aarch64", "cortex-a72", ["neon"]),
             ("aarch64", "cortex-a76", ["neon", "neon_sdot"]),
             ("armv7", "cortex-a7", ["neon"])]


@pytest.mark.parametrize("checkers, cpu, paths", INT8_CPUS, indirect=["checkers"])
def test_int8_conv_neon_is_bit_exact(checkers, cpu, paths):
    target, build = checkers
    out = _run(target, build, "int8_conv2d_check", 150, cpu=cpu)
    assert "OK 150 cases, 320 sweep cases" in out, out[-2000:]
    lines = out.splitlines()
    assert lines[0].split() == ["paths:", "portable", *paths], lines[0]
    assert lines[1] == "fast path: yes", lines[1]  # the delegate takes int8 convs
