"""Runs the converted models on the (emulated) Arm device and compares outputs.

    python3 check_models.py MODEL_DIR [--kernels default,reference,portable]
                                      [--expect-default-kernel neon]

Runs inside the Arm root made by run_emulated.sh, with only numpy, a TFLite
runtime (ai-edge-litert or tflite-runtime) and lowbit-tf-runtime installed.
MODEL_DIR is what make_models.py wrote on the x86 host. Each model runs once
per kernel choice (LOWBIT_KERNEL, read when the delegate library is loaded, so
each choice runs in a child process): by default the automatic choice, the
reference and every path of the kernel table built into this (Arm) library.
Outputs of models marked "exact" must equal the x86 outputs bit for bit; the
others (float builtins run by XNNPACK) within 1e-5. Each interpreter's
kernel_path (what the library says its lowbit ops run) must be the one the
choice asks for: the first runnable path of the kernel table by default
(--expect-default-kernel names it: "neon" on a Pi), else the forced path or
the next runnable one down the table. A model whose manifest names
"int8_convs" (int8 CONV_2D nodes over few input channels) must have them
claimed by the lowbit delegate (its NEON int8 conv, or the SDOT variant where
the CPU has the dot product: every Arm CPU): counted as DELEGATE nodes of an
interpreter without the runtime's default delegates. Exits non-zero on any
mismatch.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

RTOL = ATOL = 1e-5


def run_one(model_dir: Path) -> int:
    """Child: run every model with the kernel chosen by LOWBIT_KERNEL."""
    import numpy as np

    import lowbit_tf.lite as lite

    if "tensorflow" in sys.modules:
        print("FAIL: importing lowbit_tf.lite imported TensorFlow")
        return 1
    kernel = os.environ.get("LOWBIT_KERNEL") or "default"
    rows = lite.kernel_paths()
    names = [p.name for p in rows]
    start = names.index(kernel) if kernel in names else 0
    path = next(p.name for p in rows[start:] if p.runnable)  # what should run
    manifest = json.loads((model_dir / "manifest.json").read_text())
    failures = 0
    for name, info in manifest.items():
        x = np.load(model_dir / f"{name}.input.npy")
        expected = np.load(model_dir / f"{name}.expected.npy")
        for threads in (1, 4):  # 4: a Pi's cores (capped at the host's under qemu)
            interpreter = lite.Interpreter(model_path=model_dir / f"{name}.tflite",
                                           num_threads=threads)
            got = interpreter.predict(x)
            if got.shape != expected.shape or got.dtype != expected.dtype:
                ok = False
                detail = f"got {got.dtype}{got.shape}, want {expected.dtype}{expected.shape}"
            elif info["exact"]:  # bits (floats: a NaN equals itself, -0 is not 0)
                bits = np.dtype(f"u{got.dtype.itemsize}")
                diff = np.flatnonzero(got.view(bits) != expected.view(bits))
                ok = diff.size == 0
                detail = "bit-identical" if ok else (
                    f"{diff.size} of {got.size} values differ, first at flat index {diff[0]}: "
                    f"{got.flat[diff[0]]!r} vs {expected.flat[diff[0]]!r}")
            else:
                err = float(np.max(np.abs(got - expected) / (ATOL + RTOL * np.abs(expected))))
                ok = bool(np.allclose(got, expected, rtol=RTOL, atol=ATOL))
                detail = (f"max |diff| {float(np.max(np.abs(got - expected))):.3g} "
                          f"({err:.3g} of the tolerance)")
            if interpreter.kernel_path != path:
                ok = False
                detail += f"; ran kernel path {interpreter.kernel_path!r}, expected {path!r}"
            if "int8_convs" in info:
                want = info["int8_convs"]
                claimed = _delegated_nodes(lite, interpreter, model_dir / f"{name}.tflite")
                detail += f"; {claimed} int8 conv(s) claimed by the delegate"
                if claimed != want:
                    ok = False
                    detail += f", expected {want}"
            failures += not ok
            print(f"{'ok  ' if ok else 'FAIL'} {name:14s} kernel={kernel:9s} threads={threads} "
                  f"path={interpreter.kernel_path} runtime={interpreter.runtime_name}: {detail}",
                  flush=True)
    return 1 if failures else 0


def _delegated_nodes(lite, interpreter, path: Path) -> int:
    """DELEGATE nodes of the model with only the lowbit delegate attached (the
    runtime module: that of `interpreter`)."""
    runtime = interpreter._module
    interpreter = lite.Interpreter(
        model_path=path, num_threads=1,
        experimental_op_resolver_type=runtime.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interpreter.allocate_tensors()
    return sum(op["op_name"] == "DELEGATE" for op in interpreter._get_ops_details())


def _hwcaps() -> str:
    """AT_HWCAP / AT_HWCAP2 as the (emulated) CPU reports them."""
    try:
        import ctypes

        libc = ctypes.CDLL(None)
        libc.getauxval.restype = ctypes.c_ulong
        return f"hwcap={libc.getauxval(16):#x} hwcap2={libc.getauxval(26):#x}"
    except (OSError, AttributeError):
        return "hwcap=?"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--kernels", default=None,
                        help="comma-separated LOWBIT_KERNEL values (default: default, "
                        "reference and the paths of the library's kernel table)")
    parser.add_argument("--expect-default-kernel", default=None, metavar="NAME",
                        help="fail unless lowbit_tf.lite.kernel_path() is NAME without "
                        "LOWBIT_KERNEL (the path that runs by default on this CPU)")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_one(args.model_dir)

    import numpy

    import lowbit_tf.lite as lite

    print(f"machine {platform.machine()}, Python {platform.python_version()}, "
          f"numpy {numpy.__version__}, QEMU_CPU={os.environ.get('QEMU_CPU', '-')}, {_hwcaps()}",
          flush=True)
    os.environ.pop("LOWBIT_KERNEL", None)
    default = lite.kernel_path()
    runnable = [p.name for p in lite.kernel_paths() if p.runnable]
    print(f"kernel path {default} by default (lowbit_tf.lite.kernel_path(); runnable here: "
          f"{', '.join(runnable)})", flush=True)
    status = 0
    if args.expect_default_kernel and default != args.expect_default_kernel:
        print(f"FAIL default kernel path is {default!r}, expected {args.expect_default_kernel!r}",
              flush=True)
        status = 1
    if args.kernels is None:
        from lowbit_tf._native import kernel_path_names

        args.kernels = ",".join(["default", "reference", *kernel_path_names()])
    for kernel in args.kernels.split(","):
        env = dict(os.environ)
        env.pop("LOWBIT_KERNEL", None)
        if kernel != "default":
            env["LOWBIT_KERNEL"] = kernel
        status |= subprocess.run(
            [sys.executable, __file__, str(args.model_dir), "--child"], env=env
        ).returncode
    print("ALL OK" if status == 0 else "MISMATCH", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
