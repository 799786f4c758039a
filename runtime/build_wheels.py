"""Builds lowbit-tf-runtime wheels for Arm (and this machine) from this tree.

    python runtime/build_wheels.py                      # aarch64 + armv7l -> dist/
    python runtime/build_wheels.py aarch64 -o /tmp/w    # one target
    python runtime/build_wheels.py native               # this machine

Cross builds use Debian's cross compilers through the CMake toolchain files in
custom_ops/cmake (apt install g++-aarch64-linux-gnu g++-arm-linux-gnueabihf).
Prints the path of each wheel built, one per line, last.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

RUNTIME = Path(__file__).resolve().parent
REPO = RUNTIME.parent

#: target -> toolchain file (relative to the repository root); None = native.
TARGETS = {
    "aarch64": "custom_ops/cmake/aarch64-linux-gnu.cmake",
    "armv7l": "custom_ops/cmake/arm-linux-gnueabihf.cmake",
    "native": None,
}


def build(target: str, out_dir: Path, isolation: bool = True) -> Path:
    """Builds one wheel into out_dir and returns its path."""
    env = dict(os.environ)
    env.pop("LOWBIT_CMAKE_TOOLCHAIN", None)
    toolchain = TARGETS[target]
    if toolchain is not None:
        env["LOWBIT_CMAKE_TOOLCHAIN"] = str(REPO / toolchain)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", tmp, str(RUNTIME)]
        if not isolation:
            cmd.insert(4, "--no-build-isolation")
        subprocess.run(cmd, check=True, env=env, stdout=sys.stderr)
        (wheel,) = Path(tmp).glob("*.whl")
        dest = out_dir / wheel.name
        wheel.replace(dest)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("targets", nargs="*", metavar="TARGET",
                        help=f"one of {', '.join(TARGETS)}; default: aarch64 armv7l")
    parser.add_argument("-o", "--output-dir", type=Path, default=REPO / "dist")
    parser.add_argument("--no-build-isolation", action="store_true",
                        help="use this environment's setuptools/wheel/cmake")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target(s) {unknown}; choose from {list(TARGETS)}")
    wheels = [build(t, args.output_dir, not args.no_build_isolation)
              for t in (args.targets or ["aarch64", "armv7l"])]
    for wheel in wheels:
        print(wheel)
    return 0


if __name__ == "__main__":
    sys.exit(main())
