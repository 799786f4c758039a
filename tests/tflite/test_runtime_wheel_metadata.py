"""The lowbit-tf-runtime wheel's dependencies (runtime/setup.py) follow the
architecture it is built for, with no environment marker: the armv7l wheel
requires tflite-runtime 2.14 even where pip's platform_machine is "aarch64"
(32-bit Pi OS on a 64-bit kernel), the aarch64 and x86_64 wheels
ai-edge-litert. Checked on the metadata setuptools writes before building
(PEP 517 prepare_metadata_for_build_wheel, which builds no library)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUNTIME = REPO / "runtime"

LITERT = "ai-edge-litert>=2.3"
TFLITE_RUNTIME = "tflite-runtime==2.14.0"


def requires_dist(tmp_path: Path, env: dict[str, str], machine: str | None = None,
                  pointer_size: int | None = None) -> list[str]:
    """Requires-Dist of the wheel metadata prepared with `env`, optionally as
    a Python reporting platform.machine() == machine and that pointer size."""
    code = textwrap.dedent(
        """
        import platform, struct, sys
        machine, pointer_size, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        if machine:
            platform.machine = lambda: machine
        if pointer_size:
            calcsize = struct.calcsize
            struct.calcsize = lambda fmt: pointer_size if fmt == "P" else calcsize(fmt)
        from setuptools import build_meta
        name = build_meta.prepare_metadata_for_build_wheel(out)
        print(open(f"{out}/{name}/METADATA", encoding="utf-8").read())
        """
    )
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("LOWBIT_CMAKE_TOOLCHAIN", "LOWBIT_WHEEL_PLATFORM")}
    full_env.update(env)
    out = tmp_path / f"meta-{len(list(tmp_path.iterdir()))}"
    out.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code, machine or "", str(pointer_size or 0), str(out)],
        cwd=RUNTIME, env=full_env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return [line.split(":", 1)[1].strip() for line in result.stdout.splitlines()
            if line.startswith("Requires-Dist:")]


@pytest.mark.parametrize(
    ("toolchain", "runtime"),
    [
        ("custom_ops/cmake/aarch64-linux-gnu.cmake", LITERT),
        ("custom_ops/cmake/arm-linux-gnueabihf.cmake", TFLITE_RUNTIME),
    ],
)
def test_cross_built_wheel_requires_its_architectures_runtime(tmp_path, toolchain, runtime):
    deps = requires_dist(tmp_path, {"LOWBIT_CMAKE_TOOLCHAIN": toolchain})
    assert deps == ["numpy>=1.23", runtime]  # unconditional: the wheel's tag picks the machine


@pytest.mark.parametrize(
    ("machine", "pointer_size", "runtime"),
    [
        ("x86_64", 8, LITERT),
        ("aarch64", 8, LITERT),               # 64-bit Pi OS
        ("aarch64", 4, TFLITE_RUNTIME),       # 32-bit Pi OS on a 64-bit kernel
        ("armv7l", 4, TFLITE_RUNTIME),        # 32-bit Pi OS on a 32-bit kernel
        ("armv8l", 4, TFLITE_RUNTIME),        # the same under `linux32`
    ],
)
def test_native_wheel_follows_the_python_not_the_kernel(tmp_path, machine, pointer_size,
                                                        runtime):
    deps = requires_dist(tmp_path, {}, machine, pointer_size)
    assert deps == ["numpy>=1.23", runtime]


def test_forced_platform_tag_decides(tmp_path):
    deps = requires_dist(tmp_path, {"LOWBIT_WHEEL_PLATFORM": "manylinux_2_36_armv7l"},
                         "x86_64", 8)
    assert deps == ["numpy>=1.23", TFLITE_RUNTIME]
    deps = requires_dist(tmp_path, {"LOWBIT_WHEEL_PLATFORM": "linux_riscv64"})
    assert deps == ["numpy>=1.23"]  # no TFLite runtime wheels known there: the user picks one
