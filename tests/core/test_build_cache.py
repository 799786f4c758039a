"""setup.py's build cache: a second build from the same sources (the README's
`pip install -e ".[test]"` after `pip install -e .`) copies the libraries the
first one built instead of running CMake again. CMake is replaced by a stand-in
that records its calls and "builds" by copying the installed libraries."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NATIVE = REPO / "lowbit_tf" / "_native"

FAKE_CMAKE = """#!/bin/sh
echo "$*" >> "{log}"
if [ "$1" = "--build" ]; then mkdir -p "$2/out"; cp "{native}"/lib*.so "$2/out/"; fi
"""


@pytest.mark.slow
def test_second_build_reuses_the_cached_libraries(tmp_path):
    libraries = sorted(p.name for p in NATIVE.glob("lib*.so"))
    if not libraries:
        pytest.skip("no native libraries built in lowbit_tf/_native")
    bin_dir, log = tmp_path / "bin", tmp_path / "cmake_calls.log"
    bin_dir.mkdir()
    fake = bin_dir / "cmake"
    fake.write_text(FAKE_CMAKE.format(log=log, native=NATIVE))
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
           "LOWBIT_BUILD_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}

    def build(n: int) -> str:
        proc = subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext",
             "--build-lib", str(tmp_path / f"lib{n}"), "--build-temp", str(tmp_path / f"temp{n}")],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
        )
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        built = tmp_path / f"lib{n}" / "lowbit_tf" / "_native"
        assert sorted(p.name for p in built.glob("lib*.so")) == libraries
        return proc.stdout

    first = build(1)
    assert "native libraries cached in" in first
    calls = log.read_text().splitlines()
    assert any(c.startswith("--build ") for c in calls)
    second = build(2)
    assert "reusing the native libraries" in second
    assert log.read_text().splitlines() == calls  # CMake did not run again
    env["LOWBIT_BUILD_CACHE"] = "off"
    build(3)
    assert len(log.read_text().splitlines()) == 2 * len(calls)  # off: CMake runs
