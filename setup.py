"""Builds the native libraries with CMake during `pip install`.

Two shared libraries come out of custom_ops/ (see custom_ops/CMakeLists.txt):
  lowbit_tf/_native/liblowbit_tf_ops.so  TensorFlow custom ops, built against the
                                          TensorFlow found in the build environment
  lowbit_tf/_native/liblowbit_tflite.so  TFLite delegate + kernels (no TensorFlow)
They are declared as setuptools extensions only so that regular and editable
installs put them in the right place; CMake does the compiling.

Build cache: pip builds in a fresh temporary folder every time (and, with build
isolation, in a fresh environment), so `pip install -e ".[test]"` after
`pip install -e .` would compile everything again (several minutes). The
libraries are therefore kept in a cache keyed by everything that goes into them
(every file under custom_ops/, this file, the TensorFlow version and its
compile and link flags, the C++ compiler and CC/CXX/CFLAGS/CXXFLAGS/LDFLAGS,
the machine): `$LOWBIT_BUILD_CACHE`, else `$XDG_CACHE_HOME/lowbit-tf/native`,
else `~/.cache/lowbit-tf/native`. A build with the same key copies the cached
libraries instead of compiling. LOWBIT_BUILD_CACHE=off turns the cache off.
"""

from __future__ import annotations

import hashlib
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class NativeLibrary(Extension):
    """A shared library built by the CMake target `target`."""

    def __init__(self, name: str, target: str) -> None:
        super().__init__(name, sources=[])
        self.target = target


def tensorflow_flags() -> tuple[str, str, str] | None:
    """(compile flags, link flags, version) of the importable TensorFlow, or None."""
    probe = (
        "import tensorflow as tf; "
        "print(' '.join(tf.sysconfig.get_compile_flags())); "
        "print(' '.join(tf.sysconfig.get_link_flags())); "
        "print(tf.__version__)"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env
    )
    if result.returncode != 0:
        return None
    cflags, lflags, version = result.stdout.strip().splitlines()[-3:]
    return cflags, lflags, version


def build_cache_root() -> Path | None:
    """The folder of the build cache, or None when LOWBIT_BUILD_CACHE=off."""
    configured = os.environ.get("LOWBIT_BUILD_CACHE", "")
    if configured.lower() in ("off", "0", "no", "false"):
        return None
    if configured:
        return Path(configured).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "lowbit-tf" / "native"


def compiler_identity() -> str:
    """The C++ compiler CMake will pick (CXX, else c++), as its --version says."""
    compiler = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "?"
    try:
        result = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                check=False)
        version = result.stdout.strip().splitlines()[:1]
    except OSError:
        version = []
    return f"{compiler} {' '.join(version)}"


def build_key(tf: tuple[str, str, str] | None, targets: list[str]) -> str:
    """Hash of everything that goes into the libraries (see the module docstring)."""
    digest = hashlib.sha256()
    for path in sorted((ROOT / "custom_ops").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    digest.update(Path(__file__).resolve().read_bytes())
    env = [f"{name}={os.environ.get(name, '')}"
           for name in ("CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS", "CMAKE_GENERATOR")]
    # The TF flags name TensorFlow's folder, which is a fresh temporary path in
    # each of pip's isolated build environments: keep only what follows
    # site-packages/, so that two installs against the same TensorFlow share
    # the key.
    tf_key = None if tf is None else tuple(re.sub(r"/\S*/site-packages/", "", part) for part in tf)
    parts = [repr(tf_key), " ".join(targets), compiler_identity(), platform.machine(),
             platform.system(), *env]
    digest.update("\0".join(parts).encode())
    return digest.hexdigest()[:24]


class BuildNative(build_ext):
    def get_ext_filename(self, fullname: str) -> str:
        # Plain `lib<name>.so`: these are not Python extension modules.
        *package, name = fullname.split(".")
        return os.path.join(*package, f"lib{name}.so")

    def build_extensions(self) -> None:
        build_dir = Path(self.build_temp).resolve() / "cmake"
        out_dir = build_dir / "out"
        args = [
            "cmake", "-S", str(ROOT / "custom_ops"), "-B", str(build_dir),
            "-DCMAKE_BUILD_TYPE=Release", f"-DLOWBIT_OUTPUT_DIR={out_dir}",
        ]
        wanted = [ext for ext in self.extensions if ext.target != "lowbit_tf_ops"]
        tf = tensorflow_flags()
        if tf is not None:
            cflags, lflags, version = tf
            args += [
                f"-DLOWBIT_TF_CFLAGS={cflags}",
                f"-DLOWBIT_TF_LFLAGS={lflags}",
                f"-DLOWBIT_TF_VERSION={version}",
            ]
            wanted = list(self.extensions)
            print(f"lowbit-tf: building TF ops against TensorFlow {version}")
        else:
            print("lowbit-tf: TensorFlow not importable at build time; skipping the TF op library")
        self.extensions = wanted
        names = [f"lib{ext.target}.so" for ext in wanted]
        cache_root = build_cache_root()
        cached = None
        if cache_root is not None:
            cached = cache_root / build_key(tf, [ext.target for ext in wanted])
            if all((cached / name).is_file() for name in names):
                print(f"lowbit-tf: reusing the native libraries built earlier from the same "
                      f"sources, TensorFlow and compiler ({cached}; LOWBIT_BUILD_CACHE=off "
                      "rebuilds)")
                self._install(wanted, cached)
                return
        subprocess.run(args, check=True)
        jobs = str(os.cpu_count() or 2)
        targets = [arg for ext in wanted for arg in ("--target", ext.target)]
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs, *targets],
                       check=True)
        self._install(wanted, out_dir)
        if cached is not None:
            self._store(cached, out_dir, names)

    def _install(self, wanted: list[NativeLibrary], source_dir: Path) -> None:
        for ext in wanted:
            dest = Path(self.get_ext_fullpath(ext.name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source_dir / f"lib{ext.target}.so", dest)

    @staticmethod
    def _store(cached: Path, out_dir: Path, names: list[str]) -> None:
        """Puts the built libraries into the cache (a whole folder at once, so that a
        concurrent or interrupted build never leaves half an entry); best effort."""
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=cached.parent))
            for name in names:
                shutil.copyfile(out_dir / name, staging / name)
            try:
                staging.rename(cached)
            except OSError:  # another build stored it first
                shutil.rmtree(staging, ignore_errors=True)
            print(f"lowbit-tf: native libraries cached in {cached}")
        except OSError as e:
            print(f"lowbit-tf: could not cache the native libraries ({e})")


setup(
    ext_modules=[
        NativeLibrary("lowbit_tf._native.lowbit_tf_ops", "lowbit_tf_ops"),
        NativeLibrary("lowbit_tf._native.lowbit_tflite", "lowbit_tflite"),
    ],
    cmdclass={"build_ext": BuildNative},
)
