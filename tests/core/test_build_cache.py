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


def test_key_ignores_where_the_build_environment_put_tensorflow():
    """pip builds in a fresh temporary environment each time: two installs
    against the same TensorFlow must share the key (else the cache never hits),
    another TensorFlow version must not."""
    source = (REPO / "setup.py").read_text()
    namespace = {"__file__": str(REPO / "setup.py"), "__name__": "setup_for_test"}
    exec(compile(source[:source.rindex("\nsetup(")], "setup.py", "exec"), namespace)  # noqa: S102
    key = namespace["build_key"]

    def flags(root: str, version: str = "2.21.0") -> tuple[str, str, str]:
        packages = f"{root}/lib/python3.11/site-packages"
        return (f"-I{packages}/tensorflow/include -D_GLIBCXX_USE_CXX11_ABI=1",
                f"-L{packages}/tensorflow -l:libtensorflow_framework.so.2", version)

    targets = ["lowbit_tf_ops", "lowbit_tflite"]
    first = key(flags("/tmp/pip-build-env-abc/overlay"), targets)
    assert first == key(flags("/tmp/pip-build-env-xyz/overlay"), targets)
    assert first != key(flags("/tmp/pip-build-env-abc/overlay", "2.20.0"), targets)
