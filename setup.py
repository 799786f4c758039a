"""Builds the native libraries with CMake during `pip install`.

Two shared libraries come out of custom_ops/ (see custom_ops/CMakeLists.txt):
  lowbit_tf/_native/liblowbit_tf_ops.so  TensorFlow custom ops, built against the
                                          TensorFlow found in the build environment
  lowbit_tf/_native/liblowbit_tflite.so  TFLite delegate + kernels (no TensorFlow)
They are declared as setuptools extensions only so that regular and editable
installs put them in the right place; CMake does the compiling.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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
        subprocess.run(args, check=True)
        jobs = str(os.cpu_count() or 2)
        targets = [arg for ext in wanted for arg in ("--target", ext.target)]
        subprocess.run(["cmake", "--build", str(build_dir), "--parallel", jobs, *targets],
                       check=True)
        self.extensions = wanted
        for ext in wanted:
            dest = Path(self.get_ext_fullpath(ext.name))
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out_dir / f"lib{ext.target}.so", dest)


setup(
    ext_modules=[
        NativeLibrary("lowbit_tf._native.lowbit_tf_ops", "lowbit_tf_ops"),
        NativeLibrary("lowbit_tf._native.lowbit_tflite", "lowbit_tflite"),
    ],
    cmdclass={"build_ext": BuildNative},
)
