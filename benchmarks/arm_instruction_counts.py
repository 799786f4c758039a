"""Dynamic instruction counts of the core kernels on Arm (and x86), under qemu.

Emulated Arm code runs 100-500x slower than native, so seconds measured under
qemu mean nothing; the number of instructions a kernel executes does. This
script builds a small driver (tests/arm/kernel_driver.cc, statically linked
with the core) for aarch64, armv7 (hard float, NEON) and x86_64, runs it under
qemu-user with an instruction-counting plugin (tests/arm/insn_count_plugin.c)
and prints, per kernel and layer shape, the instructions of ONE call: the count
of a run with two calls minus that of a run with one, so setup cancels out
(filters are prepared once, outside the counted calls, as TFLite's Prepare
does).

    python benchmarks/arm_instruction_counts.py
    python benchmarks/arm_instruction_counts.py --targets aarch64 --shapes 14x14x128x128k3
    python benchmarks/arm_instruction_counts.py --shapes bgemm:1024x1024 dw:56x56x64k3

Shapes (--shapes, default DEFAULT_SHAPES: bconv2d_benchmark.py's four 3x3
layers, their 1x1 twins, binary dense 1024 and 4096 at batch 1, a binary
depthwise 3x3):
    HxWxCINxCOUTkK      binary conv, 'same' padding, stride 1
    bgemm:KxN           binary dense (lowbit::BGemm), 1 row; bgemm:ROWSxKxN
    dw:HxWxCkK          binary depthwise (lowbit::BDepthwiseConv2D), 'same', stride 1
Binary MACs: conv H*W*COUT*K*K*CIN (padded taps included), bgemm ROWS*K*N,
depthwise H*W*C*K*K.

Needs (Debian): g++-aarch64-linux-gnu, g++-arm-linux-gnueabihf (+ libc6-dev-*-cross),
qemu-user (the dynamic build: qemu-user-static cannot load plugins), gcc, cmake;
llvm (llvm-objdump, llvm-mca) for the inner-loop lines.
The columns: insns/call, insns per output value, binary ops per instruction
(one binary MAC = XNOR + popcount-accumulate = 2 ops, the usual BNN
convention) and binary MACs per instruction, which is what SIMD should raise.
The kernel column names the code that ran (the driver's code=): the forced
kernel path for conv, "<path>-gemv" where BGemm takes its GEMV entry, and for
the depthwise the path whose rows ran ("portable" on Arm: it has no NEON rows),
one line per distinct code.

llvm-mca lines (aarch64, armv7): the NEON binary conv's whole-chunk loop is
taken from the object file CMake built (bconv2d_neon.cc.o, disassembled with
llvm-objdump): the basic block that ends in a backward conditional branch to
its own start and holds 32 `cnt` (aarch64) / 8 `vcnt.8` (armv7) or a multiple
(chunks unrolled: the aarch64 word-pair loop takes 2 chunks a step), the one
with the fewest instructions per popcount when several do (compiler loops
around intrinsics carry more); its copies (template instances) are checked to
be identical modulo registers. It goes to llvm-mca with the branch aimed at a
label (-iterations=200), per CPU: instructions and cycles per block (Total
Cycles / iterations), IPC, binary MACs per cycle (128 per 128-bit popcount:
4,096 per aarch64 chunk, 1,024 per armv7 one). llvm-mca models a steady state
with every load hitting L1 and nothing outside the loop: an upper bound. LLVM
14 models Cortex-A72 and A76 with its Cortex-A57 model (the "model" column
says which) and has no A32/T32 model for Cortex-A7 or A53 (the line says so).
When the loop is not there, an "inner loop not found" line says so.

The "targets" block at the end checks the issue's figures (PASS/FAIL).

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

from bench_common import InnerLoopReport, mca_inner_loop

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

DEFAULT_SHAPES = (
    # benchmarks/bconv2d_benchmark.py's DEFAULT_SHAPES, 3x3, then their 1x1 twins
    "56x56x64x64k3", "28x28x128x128k3", "14x14x256x256k3", "7x7x512x512k3",
    "56x56x64x64k1", "28x28x128x128k1", "14x14x256x256k1", "7x7x512x512k1",
    "bgemm:1024x1024", "bgemm:4096x4096",  # binary dense, batch 1
    "dw:56x56x64k3",
)
_CONV = re.compile(r"^(\d+)x(\d+)x(\d+)x(\d+)k(\d+)$")
_BGEMM = re.compile(r"^bgemm:(?:(\d+)x)?(\d+)x(\d+)$")
_DEPTHWISE = re.compile(r"^dw:(\d+)x(\d+)x(\d+)k(\d+)$")
SHAPE_HELP = ("HxWxCINxCOUTkK (binary conv, 'same' padding, stride 1), bgemm:KxN or "
              "bgemm:ROWSxKxN (binary dense, 1 row by default), dw:HxWxCkK (binary depthwise)")
#: Binary MACs per instruction (whole call, NEON kernel) the issue asks for.
TARGET_MACS_PER_INSN = {"aarch64": ((128, 30.0), (0, 24.0)), "armv7": ((128, 20.0),)}
#: Binary MACs per cycle of the aarch64 inner loop on Cortex-A72 (llvm-mca).
TARGET_LOOP_MACS_PER_CYCLE = ("aarch64", "cortex-a72", 80.0)


@dataclass(frozen=True)
class Layer:
    """One measured shape. kind "conv": dims (H, W, CIN, COUT, K); "bgemm":
    (ROWS, K, N); "dw": (H, W, C, K)."""

    kind: str
    dims: tuple[int, ...]

    @property
    def mode(self) -> str:
        return {"conv": "bconv2d", "bgemm": "bgemm", "dw": "bdepthwise"}[self.kind]

    @property
    def label(self) -> str:
        if self.kind == "conv":
            h, w, c, o, k = self.dims
            return f"{h}x{w}x{c}->{o} k{k}"
        if self.kind == "bgemm":
            rows, k, n = self.dims
            return f"bgemm {rows}x{k}->{n}"
        h, w, c, k = self.dims
        return f"dw {h}x{w}x{c} k{k}"

    @property
    def macs(self) -> int:
        if self.kind == "conv":
            h, w, c, o, k = self.dims
            return h * w * o * k * k * c
        if self.kind == "bgemm":
            rows, k, n = self.dims
            return rows * k * n
        h, w, c, k = self.dims
        return h * w * c * k * k

    @property
    def outputs(self) -> int:
        if self.kind == "conv":
            h, w, _, o, _ = self.dims
            return h * w * o
        if self.kind == "bgemm":
            rows, _, n = self.dims
            return rows * n
        h, w, c, _ = self.dims
        return h * w * c


def parse_shape(text: str) -> Layer:
    for kind, pattern in (("conv", _CONV), ("bgemm", _BGEMM), ("dw", _DEPTHWISE)):
        match = pattern.match(text)
        if match:
            dims = tuple(int(g) if g is not None else 1 for g in match.groups())
            return Layer(kind, dims)
    raise argparse.ArgumentTypeError(f"shape {text!r}: expected {SHAPE_HELP}")


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


def build_driver(target: Target, build: Path) -> tuple[Path, Path]:
    """Builds lowbit_core for the target with CMake, links the driver statically.
    Returns (driver, CMake build folder)."""
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
    return out, cmake_dir


def count(target: Target, plugin: Path, driver: Path, args: list[str], kernel: str,
          log: Path) -> tuple[int, str, str]:
    """(instructions, kernel path, code that ran) of one driver run."""
    env = dict(os.environ, LOWBIT_KERNEL=kernel)
    log.unlink(missing_ok=True)
    result = run([target.qemu, "-cpu", target.cpu, "-d", "plugin", "-D", str(log),
                  "-plugin", str(plugin), str(driver), *args], env=env)
    match = re.search(r"lowbit-insns: (\d+)", log.read_text())
    name = re.search(r"kernel=(\S+) code=(\S+)", result.stdout)
    if match is None or name is None:
        raise RuntimeError(f"no count from {target.qemu}: {result.stdout} {result.stderr}")
    return int(match.group(1)), name.group(1), name.group(2)


def per_call(target: Target, plugin: Path, driver: Path, mode: str, dims: tuple[int, ...],
             kernel: str, log: Path) -> tuple[int, str, str]:
    """(instructions of one call, kernel path, code): 2 calls minus 1 call."""
    args = [str(v) for v in dims]
    one, name, code = count(target, plugin, driver, [mode, "1", *args], kernel, log)
    two, _, _ = count(target, plugin, driver, [mode, "2", *args], kernel, log)
    return two - one, name, code


def mca_lines(report: InnerLoopReport) -> list[str]:
    """The llvm-mca lines of one target (each starts with "llvm-mca")."""
    arch = report.arch
    if report.loop is None:
        return [f"llvm-mca {arch:8s} {report.error}"]
    loop = report.loop
    lines = [f"llvm-mca {arch:8s} loop: {loop.describe()}",
             f"llvm-mca {arch:8s} from {report.obj}; -mtriple={report.triple} "
             f"-iterations=200; upper bound: L1 hits, steady state, no work outside the loop",
             f"llvm-mca {'target':8s} {'cpu':11s} {'model':6s} {'insns/block':>11s} "
             f"{'cycles/block':>12s} {'IPC':>6s} {'MACs/block':>10s} {'MACs/cycle':>10s}"]
    for r in report.results:
        if not r.ok:
            lines.append(f"llvm-mca {arch:8s} {r.cpu:11s} {r.error}")
            continue
        note = "" if round(r.instructions) == loop.instructions else (
            f"  (llvm-mca read {r.instructions:g} of {loop.instructions} instructions)")
        lines.append(f"llvm-mca {arch:8s} {r.cpu:11s} {r.model:6s} {r.instructions:11.0f} "
                     f"{r.cycles:12.2f} {r.ipc:6.2f} {loop.macs:10,d} "
                     f"{r.macs_per_cycle:10.2f}{note}")
    return lines


def _verdict(value: float, target: float) -> str:
    return "PASS" if value >= target else "FAIL"


def target_lines(rows: list[tuple[str, str, Layer, int]],
                 reports: dict[str, InnerLoopReport]) -> list[str]:
    """The issue's targets, for what was measured: rows are (target, code,
    layer, insns/call)."""
    lines = []
    for name, code, layer, insns in rows:
        if code != "neon" or layer.kind != "conv" or layer.dims[4] != 3:
            continue
        cin = layer.dims[2]
        goal = next((g for low, g in TARGET_MACS_PER_INSN.get(name, ()) if cin >= low), None)
        if goal is None:
            continue
        value = layer.macs / insns
        lines.append(f"{name} neon 3x3 {layer.label[:-3]}, whole call: {value:.2f} binary "
                     f"MACs/insn  [target >= {goal:g}] {_verdict(value, goal)}")
    arch, cpu, goal = TARGET_LOOP_MACS_PER_CYCLE
    if arch in reports:
        report = reports[arch]
        result = report.result(cpu)
        if result is not None:
            lines.append(f"{arch} inner loop, llvm-mca {cpu} (model {result.model}): "
                         f"{result.macs_per_cycle:.2f} binary MACs/cycle  [target >= {goal:g}] "
                         f"{_verdict(result.macs_per_cycle, goal)}")
        else:
            why = report.error or next((r.error for r in report.results if r.cpu == cpu),
                                       f"{cpu} not run")
            lines.append(f"{arch} inner loop, llvm-mca {cpu}: not measured ({why})  "
                         f"[target >= {goal:g}] n/a")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS),
                        default=["aarch64", "armv7", "x86_64"],
                        help="the architectures to build for and count on (default: all three)")
    parser.add_argument("--shapes", nargs="+", type=parse_shape,
                        default=[parse_shape(s) for s in DEFAULT_SHAPES], help=SHAPE_HELP)
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="keep the builds here (default: a temporary directory)")
    args = parser.parse_args(argv)

    missing = [tool for t in args.targets for tool in (TARGETS[t].qemu, TARGETS[t].cxx)
               if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {sorted(set(missing))} (apt install qemu-user "
              "g++-aarch64-linux-gnu g++-arm-linux-gnueabihf)", file=sys.stderr)
        return 2
    rows: list[tuple[str, str, Layer, int]] = []
    reports: dict[str, InnerLoopReport] = {}
    with tempfile.TemporaryDirectory() as tmp:
        build = args.build_dir or Path(tmp)
        build.mkdir(parents=True, exist_ok=True)
        plugin = build_plugin(build)
        log = build / "qemu.log"
        print(f"{'target':8s} {'kernel':11s} {'layer HxWxCin->Cout kK':24s} "
              f"{'insns/call':>13s} {'insns/output':>13s} {'binops/insn':>12s} "
              f"{'MACs/insn':>10s}")
        for name in args.targets:
            target = TARGETS[name]
            driver, cmake_dir = build_driver(target, build)
            if name != "x86_64":
                reports[name] = mca_inner_loop(cmake_dir, name)
            packed = set()
            for layer in args.shapes:
                if layer.kind == "conv" and layer.dims[:3] not in packed:
                    packed.add(layer.dims[:3])
                    h, w, c = layer.dims[:3]
                    insns, _, _ = per_call(target, plugin, driver, "bitpack", layer.dims, "", log)
                    print(f"{name:8s} {'bitpack':11s} {f'{h}x{w}x{c}':24s} {insns:13,d} "
                          f"{insns / (h * w * c):13.2f} {'':>12s} {'':>10s}", flush=True)
                seen = set()
                for kernel in target.kernels:
                    insns, used, code = per_call(target, plugin, driver, layer.mode, layer.dims,
                                                 kernel, log)
                    if used != kernel or code in seen:
                        continue  # not built for / not supported by this target, or the same code
                    seen.add(code)
                    rows.append((name, code, layer, insns))
                    print(f"{name:8s} {code:11s} {layer.label:24s} {insns:13,d} "
                          f"{insns / layer.outputs:13.1f} {2 * layer.macs / insns:12.2f} "
                          f"{layer.macs / insns:10.2f}", flush=True)
    for name in args.targets:
        if name in reports:
            print()
            for line in mca_lines(reports[name]):
                print(line)
    lines = target_lines(rows, reports)
    if lines:
        print()
        print("Arm at the limit targets (instruction counts: one call under qemu; llvm-mca):")
        for line in lines:
            print("  " + line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
