"""Builds the lowbit-tf-runtime wheel from the lowbit-tf source tree.

The wheel holds exactly:
  lowbit_tf/__init__.py, lowbit_tf/lite.py, lowbit_tf/_native/__init__.py
      staged at build time from ../lowbit_tf (the same files lowbit-tf ships)
  lowbit_tf/_native/liblowbit_tflite.so
      the TFLite delegate + kernels, built by CMake from ../custom_ops

Environment:
  LOWBIT_CMAKE_TOOLCHAIN  a CMake toolchain file (absolute, or relative to the
                          repository root) for a cross build, e.g.
                          custom_ops/cmake/aarch64-linux-gnu.cmake
  LOWBIT_CMAKE_ARGS       more CMake arguments (split like a shell would)
  LOWBIT_WHEEL_PLATFORM   force the wheel's platform tag; by default it is
                          derived from the library: its ELF machine and the
                          newest glibc symbol version it needs, e.g.
                          manylinux_2_34_aarch64

Dependencies (Requires-Dist) are per wheel: numpy, and the TFLite runtime
that has wheels for the wheel's architecture (RUNTIME_REQUIREMENTS), without
an environment marker. A marker cannot choose: 32-bit Raspberry Pi OS on a
64-bit kernel (usual on a Pi 4/5) reports platform_machine "aarch64" to
its 32-bit Python, exactly as 64-bit Pi OS does, and no PEP 508 marker sees
the interpreter's word size. The wheel's platform tag already limits it to one
architecture (pip accepts the armv7l wheel only from a 32-bit Arm Python), so
the armv7l wheel can require tflite-runtime outright. The metadata is written
before the library is built, so the architecture is worked out beforehand
(target_arch) and checked against the built library.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shlex
import shutil
import struct
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.dist import Distribution

try:  # setuptools >= 70.1
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover - older setuptools
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
PACKAGE = REPO / "lowbit_tf"
# The only modules of lowbit_tf that the runtime ships: none of them imports
# TensorFlow (lowbit_tf/__init__.py imports the Keras side only where
# TensorFlow is importable).
MODULES = ("__init__.py", "lite.py", "_native/__init__.py")
# The wheel's own _variant.py: the explicit mark of the runtime-only install.
VARIANT = '"""lowbit-tf-runtime: lite.py and _native/ only."""\n\nRUNTIME_ONLY = True\n'
LIBRARY = "liblowbit_tflite.so"

# ELF e_machine -> wheel architecture.
_ELF_MACHINES = {3: "i686", 40: "armv7l", 62: "x86_64", 183: "aarch64"}

# Requires-Dist of the wheel for each architecture (see the module docstring).
BASE_REQUIREMENTS = ["numpy>=1.23"]
RUNTIME_REQUIREMENTS = {
    # ai-edge-litert has wheels for x86_64 and aarch64 only.
    "x86_64": ["ai-edge-litert>=2.3"],
    "aarch64": ["ai-edge-litert>=2.3"],
    # 32-bit Arm (Raspberry Pi OS 32-bit, whatever its kernel): tflite-runtime
    # 2.14 is the last release with armv7l wheels (CPython 3.9-3.11), and the
    # armv7 delegate is built for its TfLiteRegistration layout
    # (custom_ops/tflite/tflite_abi.h).
    "armv7l": ["tflite-runtime==2.14.0"],
}


def _version() -> str:
    text = (PACKAGE / "__init__.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"', text, re.M)
    if match is None:
        raise RuntimeError("no __version__ in lowbit_tf/__init__.py")
    return match.group(1)


def _check_tree() -> None:
    missing = [m for m in MODULES if not (PACKAGE / m).is_file()]
    if missing or not (REPO / "custom_ops" / "CMakeLists.txt").is_file():
        raise RuntimeError(
            "lowbit-tf-runtime is built from a lowbit-tf checkout (it needs ../lowbit_tf and "
            f"../custom_ops next to {HERE}); missing: {missing or ['custom_ops/CMakeLists.txt']}"
        )


def _toolchain() -> str | None:
    value = os.environ.get("LOWBIT_CMAKE_TOOLCHAIN", "").strip()
    if not value:
        return None
    path = Path(value)
    if not path.is_absolute():
        path = REPO / path
    if not path.is_file():
        raise RuntimeError(f"LOWBIT_CMAKE_TOOLCHAIN={value}: no such file")
    return str(path)


def _cmake_args() -> list[str]:
    args = ["-DCMAKE_BUILD_TYPE=Release", "-DLOWBIT_BUILD_TFLITE=ON"]
    toolchain = _toolchain()
    if toolchain:
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={toolchain}")
    # libstdc++ and libgcc are linked in (and kept hidden) so that the library
    # needs only glibc: it then loads on any distribution whose glibc is new
    # enough, whatever its compiler (Pi OS, Ubuntu, Debian...).
    args.append(
        "-DCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL"
    )
    args += shlex.split(os.environ.get("LOWBIT_CMAKE_ARGS", ""))
    return args


def build_library(build_root: Path) -> Path:
    """Configures and builds liblowbit_tflite.so; returns its path."""
    args = _cmake_args()
    key = hashlib.sha256("\0".join(args).encode()).hexdigest()[:12]
    build_dir = build_root / f"cmake-{key}"
    out_dir = build_dir / "out"
    cmake = shutil.which("cmake") or "cmake"
    subprocess.run(
        [cmake, "-S", str(REPO / "custom_ops"), "-B", str(build_dir),
         f"-DLOWBIT_OUTPUT_DIR={out_dir}", *args],
        check=True,
    )
    jobs = str(os.cpu_count() or 2)
    subprocess.run(
        [cmake, "--build", str(build_dir), "--target", "lowbit_tflite", "--parallel", jobs],
        check=True,
    )
    return out_dir / LIBRARY


def elf_arch(path: Path) -> str:
    header = path.read_bytes()[:20]
    if header[:4] != b"\x7fELF":
        raise RuntimeError(f"{path} is not an ELF file")
    order = "little" if header[5] == 1 else "big"
    machine = int.from_bytes(header[18:20], order)
    if machine not in _ELF_MACHINES:
        raise RuntimeError(f"{path}: unsupported ELF machine {machine}")
    return _ELF_MACHINES[machine]


def glibc_needed(path: Path) -> tuple[int, int]:
    """Newest GLIBC_x.y symbol version the library requires (readelf -V)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        raise RuntimeError("readelf (binutils) is needed to tag the wheel; "
                           "or set LOWBIT_WHEEL_PLATFORM")
    text = subprocess.run([readelf, "-V", "--wide", str(path)], check=True,
                          capture_output=True, text=True).stdout
    versions = {(int(a), int(b)) for a, b in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", text)}
    return max(versions, default=(2, 17))


def _normalize_arch(machine: str) -> str | None:
    machine = machine.strip().lower()
    if machine in ("x86_64", "amd64"):
        return "x86_64"
    if machine in ("aarch64", "arm64"):
        return "aarch64"
    if re.fullmatch(r"i[3-6]86|x86", machine):
        return "i686"
    if re.fullmatch(r"arm(v[78].*)?|armhf", machine):
        return "armv7l"
    return None


def _forced_arch(tag: str) -> str:
    """The architecture of a platform tag (manylinux_2_36_armv7l -> armv7l)."""
    match = re.fullmatch(r"(?:many|musl)?linux(?:_\d+_\d+|1|2010|2014)?_(\w+)", tag)
    return match.group(1) if match else tag


def target_arch() -> str | None:
    """The wheel architecture the library will be built for, known before the
    build: that of $LOWBIT_WHEEL_PLATFORM, else the CMAKE_SYSTEM_PROCESSOR of
    the toolchain file, else this Python's (a 32-bit Python on a 64-bit kernel
    counts as 32-bit: aarch64 -> armv7l, x86_64 -> i686). None: unknown (no
    TFLite runtime is required then)."""
    forced = os.environ.get("LOWBIT_WHEEL_PLATFORM", "").strip()
    if forced:
        return _forced_arch(forced)
    toolchain = _toolchain()
    if toolchain:
        match = re.search(r"set\s*\(\s*CMAKE_SYSTEM_PROCESSOR\s+\"?([\w.-]+)",
                          Path(toolchain).read_text())
        return _normalize_arch(match.group(1)) if match else None
    arch = _normalize_arch(platform.machine())
    if struct.calcsize("P") == 4:
        arch = {"x86_64": "i686", "aarch64": "armv7l"}.get(arch, arch)
    return arch


def requirements(arch: str | None) -> list[str]:
    """Requires-Dist of the wheel for `arch`."""
    return BASE_REQUIREMENTS + RUNTIME_REQUIREMENTS.get(arch or "", [])


def check_arch(path: Path, expected: str | None) -> None:
    """The built library must be for the architecture the metadata (written
    before the build) assumed, unless LOWBIT_WHEEL_PLATFORM decides it."""
    if os.environ.get("LOWBIT_WHEEL_PLATFORM", "").strip():
        return
    built = elf_arch(path)
    if requirements(built) != requirements(expected):
        raise RuntimeError(
            f"{path.name} was built for {built}, but the wheel's dependencies were chosen "
            f"for {expected or 'an unknown architecture'} (from the toolchain file or this "
            f"Python): set LOWBIT_WHEEL_PLATFORM (e.g. manylinux_2_36_{built}) to say which"
        )


def platform_tag(path: Path) -> str:
    forced = os.environ.get("LOWBIT_WHEEL_PLATFORM", "").strip()
    if forced:
        return forced
    arch = elf_arch(path)
    major, minor = glibc_needed(path)
    # manylinux_2_17 is the oldest tag pip knows for aarch64/armv7l.
    major, minor = max((major, minor), (2, 17))
    return f"manylinux_{major}_{minor}_{arch}"


class BuildRuntime(build_py):
    """Stages the runtime modules from ../lowbit_tf and builds the library."""

    def run(self) -> None:
        _check_tree()
        target = Path(self.build_lib) / "lowbit_tf"
        for module in MODULES:
            dest = target / module
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(PACKAGE / module, dest)
        (target / "_variant.py").write_text(VARIANT)
        library = build_library(HERE / "build")
        check_arch(library, TARGET_ARCH)
        shutil.copyfile(library, target / "_native" / LIBRARY)
        self.distribution.lowbit_platform = platform_tag(library)
        print(f"lowbit-tf-runtime: {LIBRARY} for {self.distribution.lowbit_platform}")

    # The package directories exist only in the build tree, so nothing may
    # look for them here.
    def get_source_files(self) -> list[str]:
        return []

    def find_all_modules(self) -> list[tuple[str, str, str]]:
        return []

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        target = Path(self.build_lib) / "lowbit_tf"
        return [str(target / m) for m in (*MODULES, "_variant.py", f"_native/{LIBRARY}")]


class PlatformWheel(bdist_wheel):
    """py3-none-<platform>: the library is no Python extension, but it is
    machine code for one platform."""

    def finalize_options(self) -> None:
        super().finalize_options()
        self.root_is_pure = False

    def get_tag(self) -> tuple[str, str, str]:
        plat = getattr(self.distribution, "lowbit_platform", None)
        if plat is None:
            raise RuntimeError("the library was not built; run bdist_wheel without --skip-build")
        return "py3", "none", plat


class RuntimeDistribution(Distribution):
    def has_ext_modules(self) -> bool:
        return True


TARGET_ARCH = target_arch()

setup(
    version=_version(),
    install_requires=requirements(TARGET_ARCH),
    # Staged by BuildRuntime into the build tree; they do not exist here.
    packages=["lowbit_tf", "lowbit_tf._native"],
    include_package_data=False,
    distclass=RuntimeDistribution,
    cmdclass={"build_py": BuildRuntime, "bdist_wheel": PlatformWheel},
    zip_safe=False,
)
