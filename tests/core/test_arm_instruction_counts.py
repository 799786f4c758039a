"""benchmarks/arm_instruction_counts.py: shape parsing, the inner-loop finder
on hand-written disassembly, the target lines, and (when the cross tools are
installed) one tiny end-to-end run for aarch64 with its llvm-mca lines.

The end-to-end run builds lowbit_core for aarch64 into build/arm-counts-test
(or $LOWBIT_ARM_COUNTS_BUILD): a few minutes the first time, seconds after
(CMake rebuilds only what changed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import arm_instruction_counts as aic
import bench_common
import pytest

REPO = Path(__file__).resolve().parents[2]


def test_parse_shapes_and_macs():
    conv = aic.parse_shape("56x56x64x64k3")
    assert (conv.kind, conv.mode, conv.label) == ("conv", "bconv2d", "56x56x64->64 k3")
    assert conv.macs == 56 * 56 * 64 * 3 * 3 * 64 and conv.outputs == 56 * 56 * 64
    dense = aic.parse_shape("bgemm:1024x4096")
    assert dense.dims == (1, 1024, 4096) and dense.macs == 1024 * 4096
    assert dense.label == "bgemm 1x1024->4096" and dense.mode == "bgemm"
    assert aic.parse_shape("bgemm:8x256x512").dims == (8, 256, 512)
    dw = aic.parse_shape("dw:56x56x64k3")
    assert dw.macs == 56 * 56 * 64 * 9 and dw.mode == "bdepthwise"
    with pytest.raises(Exception, match="expected"):
        aic.parse_shape("56x56x64")
    defaults = [aic.parse_shape(s) for s in aic.DEFAULT_SHAPES]
    assert [s.kind for s in defaults].count("conv") == 8


def _block(base: int, regs: tuple[str, str], cnts: int, extra: int = 0) -> list[str]:
    """objdump lines of a loop at base with `cnts` cnt instructions."""
    a, b = regs
    body = [f"ldr\tq0, [{a}], #16", f"ldr\tq1, [{b}], #16"]
    body += ["nop"] * extra
    for i in range(cnts):
        body += [f"eor\tv{2 + i % 8}.16b, v0.16b, v1.16b", f"cnt\tv{2 + i % 8}.16b, v2.16b"]
    body += ["subs\tx8, x8, #1"]
    lines = [f"{base + 4 * i:8x}:      \t{text}" for i, text in enumerate(body)]
    end = base + 4 * len(body)
    lines.append(f"{end:8x}:      \tb.ne\t0x{base:x} <f(int) (.constprop.0)+0x{base:x}> "
                 "// comment")
    return lines


def _objdump(*blocks: list[str]) -> str:
    out = ["", "Disassembly of section .text:", ""]
    for i, block in enumerate(blocks):
        out += [f"{0:016x} <void ns::(anonymous namespace)::Run<ns::Neon, {i}>(int)>:"]
        out += block + [""]
    return "\n".join(out)


def test_find_inner_loop_picks_the_smallest_and_compares_copies():
    text = _objdump(_block(0x100, ("x9", "x10"), 32), _block(0x200, ("x11", "x12"), 32),
                    _block(0x300, ("x9", "x10"), 32, extra=5), _block(0x400, ("x9", "x10"), 8))
    loop = bench_common.find_inner_loop(text, "aarch64")
    assert loop is not None
    assert loop.instructions == 2 + 64 + 2 and loop.cnts == 32 and loop.macs == 4096
    assert (loop.copies, loop.identical, loop.larger) == (2, True, 1)
    assert loop.start == 0x100
    asm = loop.assembly()
    assert asm.startswith(".Lloop:\n") and asm.rstrip().endswith("b.ne\t.Lloop")
    assert "0x" not in asm and "//" not in asm
    assert "Run<Neon, 0>" in loop.describe()
    # A copy with other instructions is reported as different.
    other = _block(0x200, ("x11", "x12"), 32)
    other[0] = other[0].replace("ldr", "ldur")
    loop = bench_common.find_inner_loop(_objdump(_block(0x100, ("x9", "x10"), 32), other),
                                        "aarch64")
    assert loop is not None and not loop.identical and "DIFFERENT" in loop.describe()


def test_find_inner_loop_needs_a_basic_block():
    block = _block(0x100, ("x9", "x10"), 32)
    block.insert(3, f"{0x10c:8x}:      \tb.eq\t0x400 <f+0x400>")  # a branch inside
    assert bench_common.find_inner_loop(_objdump(block), "aarch64") is None
    assert bench_common.find_inner_loop(_objdump(_block(0x100, ("x9", "x10"), 31)),
                                        "aarch64") is None
    assert bench_common.find_inner_loop("", "armv7") is None


def test_missing_object_reports_instead_of_raising(tmp_path):
    report = bench_common.mca_inner_loop(tmp_path, "aarch64")
    assert report.loop is None and "no bconv2d_neon.cc.o" in report.error
    assert aic.mca_lines(report)[0].startswith("llvm-mca aarch64")


def test_target_lines():
    rows = [("aarch64", "neon", aic.parse_shape("14x14x256x256k3"), 14 * 14 * 256 * 9 * 256 // 31),
            ("aarch64", "neon", aic.parse_shape("56x56x64x64k3"), 56 * 56 * 64 * 9 * 64 // 20),
            ("aarch64", "portable", aic.parse_shape("14x14x256x256k3"), 10**9),
            ("aarch64", "neon", aic.parse_shape("14x14x256x256k1"), 10**6),
            ("armv7", "neon", aic.parse_shape("28x28x128x128k3"), 28 * 28 * 128 * 9 * 128 // 21)]
    lines = aic.target_lines(rows, {})
    assert len(lines) == 3
    assert "[target >= 30] PASS" in lines[0] and "14x14x256->256" in lines[0]
    assert "[target >= 24] FAIL" in lines[1]
    assert lines[2].startswith("armv7") and "[target >= 20] PASS" in lines[2]
    mca = bench_common.InnerLoopReport("aarch64", "x.o", None, (), error="inner loop not found")
    line = aic.target_lines([], {"aarch64": mca})[0]
    assert "not measured (inner loop not found)" in line and line.endswith("n/a")


TOOLS = ("qemu-aarch64", "aarch64-linux-gnu-g++", "cmake", "gcc")


@pytest.mark.skipif(any(shutil.which(t) is None for t in TOOLS)
                    or bench_common.first_tool("llvm-mca", "llvm-mca-14") is None
                    or bench_common.first_tool("llvm-objdump", "llvm-objdump-14") is None,
                    reason="needs qemu-user, the aarch64 cross compiler, cmake, gcc and LLVM")
def test_end_to_end_aarch64_tiny_shape():
    build = Path(os.environ.get("LOWBIT_ARM_COUNTS_BUILD", REPO / "build" / "arm-counts-test"))
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "arm_instruction_counts.py"),
         "--targets", "aarch64", "--shapes", "4x4x64x64k3", "--build-dir", str(build)],
        capture_output=True, text=True, timeout=900, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    header = out.splitlines()[0]
    assert header.split()[-1] == "MACs/insn" and "binops/insn" in header
    neon = next(line for line in out.splitlines() if line.startswith("aarch64  neon "))
    assert float(neon.split()[-1]) > 1
    cnts = re.search(r", (\d+) cnt, ", out)  # one whole chunk (32) or several unrolled
    assert ("llvm-mca aarch64  loop: " in out and cnts and int(cnts.group(1)) % 32 == 0
            and "llvm-mca aarch64  cortex-a72 " in out) or "inner loop not found" in out
    assert "Arm at the limit targets" in out
