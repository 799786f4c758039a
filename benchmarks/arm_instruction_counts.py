"""Dynamic instruction counts of the core kernels on Arm (and x86), under qemu.

Emulated Arm code runs 100-500x slower than native, so seconds measured under
qemu mean nothing; the number of instructions a kernel executes does. This
script builds a small driver (tests/arm/kernel_driver.cc, statically linked
with the core) for aarch64, armv7 (hard float, NEON) and x86_64, runs it under
qemu-user with an instruction-counting plugin (tests/arm/insn_count_plugin.c)
and prints, per kernel and layer shape, the instructions of ONE call: the count
of a run with two calls minus that of a run with one, so setup cancels out.

    python benchmarks/arm_instruction_counts.py
    python benchmarks/arm_instruction_counts.py --targets aarch64 --shapes 14x14x128x128k3

Needs (Debian): g++-aarch64-linux-gnu, g++-arm-linux-gnueabihf (+ libc6-dev-*-cross),
qemu-user (the dynamic build: qemu-user-static cannot load plugins), gcc, cmake.
The columns: insns/call, insns per output value, and binary ops per
instruction (one binary MAC = XNOR + popcount-accumulate = 2 ops, the usual
BNN convention), which is what SIMD should raise.

On a real Pi, measure time instead: README.md, section "Raspberry Pi / Arm",
has an end-to-end timing command and a per-layer one (TFLite's benchmark_model
with --external_delegate_path and --enable_op_profiling).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DRIVER = REPO / "tests" / "arm" / "kernel_driver.cc"
PLUGIN = REPO / "tests" / "arm" / "insn_count_plugin.c"


@dataclass(frozen=True)
class Target:
    name: str
    toolchain: str | None  # custom_ops/cmake file, None = host
    cxx: str
    flags: tuple[str, ...]
    qemu: str
    cpu: str
    kernels: tuple[str, ...]


TARGETS = {
    "aarch64": Target("aarch64", "aarch64-linux-gnu.cmake", "aarch64-linux-gnu-g++", (),
                      "qemu-aarch64", "cortex-a72", ("reference", "portable", "neon")),
    "armv7": Target("armv7", "arm-linux-gnueabihf.cmake", "arm-linux-gnueabihf-g++",
                    ("-march=armv7-a", "-mfpu=neon-vfpv4", "-mfloat-abi=hard"),
                    "qemu-arm", "cortex-a7", ("reference", "portable", "neon")),
    # qemu 7.2's TCG has AVX2 but not AVX-512; the AVX-512 kernels are left out.
    "x86_64": Target("x86_64", None, "g++", (), "qemu-x86_64", "max",
                     ("reference", "portable", "x86_popcnt", "avx2")),
}

DEFAULT_SHAPES = ("28x28x64x64k3", "14x14x128x128k3", "7x7x256x256k3")
_SHAPE = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)k(\d+)$")


def parse_shape(text: str) -> tuple[int, int, int, int, int]:
    match = _SHAPE.match(text)
    if match is None:
        raise argparse.ArgumentTypeError(f"shape {text!r}: expected HxWxCINxCOUTkK")
    return tuple(int(g) for g in match.groups())  # type: ignore[return-value]


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"failed ({result.returncode}): {' '.join(cmd)}")
    return result


def build_plugin(build: Path) -> Path:
    out = build / "libinsn_count.so"
    run(["gcc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o", str(out), str(PLUGIN)])
    return out


def build_driver(target: Target, build: Path) -> Path:
    """Builds lowbit_core for the target with CMake, links the driver statically."""
    cmake_dir = build / f"cmake-{target.name}"
    args = ["cmake", "-S", str(REPO / "custom_ops"), "-B", str(cmake_dir),
            "-DCMAKE_BUILD_TYPE=Release", "-DLOWBIT_BUILD_TFLITE=OFF"]
    if target.toolchain:
        args.append(f"-DCMAKE_TOOLCHAIN_FILE={REPO / 'custom_ops' / 'cmake' / target.toolchain}")
    run(args)
    run(["cmake", "--build", str(cmake_dir), "--target", "lowbit_core",
         "--parallel", str(os.cpu_count() or 2)])
    (core,) = cmake_dir.rglob("liblowbit_core.a")
    out = build / f"kernel_driver-{target.name}"
    run([target.cxx, "-O2", "-std=c++17", "-static", *target.flags, f"-I{REPO}",
         str(DRIVER), str(core), "-pthread", "-o", str(out)])
    return out


def count(target: Target, plugin: Path, driver: Path, args: list[str], kernel: str,
          log: Path) -> tuple[int, str]:
    """(instructions, kernel name the driver reports) of one driver run."""
    env = dict(os.environ, LOWBIT_KERNEL=kernel)
    log.unlink(missing_ok=True)
    result = run([target.qemu, "-cpu", target.cpu, "-d", "plugin", "-D", str(log),
                  "-plugin", str(plugin), str(driver), *args], env=env)
    match = re.search(r"lowbit-insns: (\d+)", log.read_text())
    name = re.search(r"kernel=(\S+)", result.stdout)
    if match is None or name is None:
        raise RuntimeError(f"no count from {target.qemu}: {result.stdout} {result.stderr}")
    return int(match.group(1)), name.group(1)


def per_call(target: Target, plugin: Path, driver: Path, mode: str,
             shape: tuple[int, int, int, int, int], kernel: str, log: Path) -> tuple[int, str]:
    h, w, c, o, k = shape
    dims = [str(v) for v in (h, w, c, o, k)]
    one, name = count(target, plugin, driver, [mode, "1", *dims], kernel, log)
    two, _ = count(target, plugin, driver, [mode, "2", *dims], kernel, log)
    return two - one, name


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS),
                        default=["aarch64", "armv7", "x86_64"])
    parser.add_argument("--shapes", nargs="+", type=parse_shape,
                        default=[parse_shape(s) for s in DEFAULT_SHAPES],
                        help="HxWxCINxCOUTkK ('same' padding, stride 1)")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="keep the builds here (default: a temporary directory)")
    args = parser.parse_args(argv)

    missing = [tool for t in args.targets for tool in (TARGETS[t].qemu, TARGETS[t].cxx)
               if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {sorted(set(missing))} (apt install qemu-user "
              "g++-aarch64-linux-gnu g++-arm-linux-gnueabihf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        build = args.build_dir or Path(tmp)
        build.mkdir(parents=True, exist_ok=True)
        plugin = build_plugin(build)
        log = build / "qemu.log"
        print(f"{'target':8s} {'kernel':11s} {'layer HxWxCin->Cout kK':24s} "
              f"{'insns/call':>13s} {'insns/output':>13s} {'binops/insn':>12s}")
        for name in args.targets:
            target = TARGETS[name]
            driver = build_driver(target, build)
            for shape in args.shapes:
                h, w, c, o, k = shape
                label = f"{h}x{w}x{c}->{o} k{k}"
                insns, _ = per_call(target, plugin, driver, "bitpack", shape, "", log)
                print(f"{name:8s} {'bitpack':11s} {f'{h}x{w}x{c}':24s} {insns:13,d} "
                      f"{insns / (h * w * c):13.2f} {'':>12s}", flush=True)
                seen = set()
                for kernel in target.kernels:
                    insns, used = per_call(target, plugin, driver, "bconv2d", shape, kernel, log)
                    if used in seen or used != kernel:
                        continue  # not built for / not supported by this target
                    seen.add(used)
                    outputs = h * w * o
                    binops = 2 * h * w * o * k * k * c
                    print(f"{name:8s} {used:11s} {label:24s} {insns:13,d} "
                          f"{insns / outputs:13.1f} {binops / insns:12.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
