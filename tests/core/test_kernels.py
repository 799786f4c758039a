"""Every binary-conv kernel path, bit for bit against the NumPy reference.

LOWBIT_KERNEL is read when an op kernel is created, so each forced path runs
in a fresh subprocess over the same sweep of random shapes, chosen to hit the
tails of the SIMD kernels: input channels around the 32-bit word and vector
widths, output channels that are not a multiple of a channel block (16 or
32), pixel counts that are not a multiple of a tile, borders with both pad
values, strides and dilations. A path this CPU lacks falls back to a lesser
one (see SelectBConv2DKernel), so the test passes on any x86 CPU.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from repo_paths import HELPERS

from lowbit_tf._native import kernel_path_names

# Every path of the native kernel table built here (the reference aside).
PATHS = kernel_path_names()
CHANNELS = [1, 31, 32, 33, 64, 65, 130, 256, 512]
# Not multiples of the 16- or 32-channel blocks (and a few that are).
OUT_CHANNELS = [1, 3, 8, 15, 17, 31, 32, 33, 47, 50, 64, 70]


def make_cases(count: int = 90, seed: int = 7) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases = []
    while len(cases) < count:
        i = len(cases)
        cin = CHANNELS[i % len(CHANNELS)]  # every channel count, in turn
        kh, kw = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        if rng.random() < 0.6:
            kh, kw = 3, 3
        dh, dw = int(rng.integers(1, 3)), int(rng.integers(1, 3))
        padding = "SAME" if rng.random() < 0.6 else "VALID"
        # Small spatial sizes for the wide channel counts keep NumPy quick.
        max_h = 6 if cin >= 256 else 9
        case = dict(
            batch=int(rng.integers(1, 3)),
            height=int(rng.integers(1, max_h + 1)),
            width=int(rng.integers(1, 21)),
            cin=cin,
            cout=int(rng.choice(OUT_CHANNELS)),
            kernel=[kh, kw],
            strides=[int(rng.integers(1, 3)), int(rng.integers(1, 3))],
            dilations=[dh, dw],
            padding=padding,
            pad_value=int(rng.integers(0, 2)),
            activation=["relu", None][int(rng.integers(0, 2))],
            packed_input=bool(rng.random() < 0.5),
            seed=int(rng.integers(0, 2**31 - 1)),
        )
        if padding == "VALID" and (
            case["height"] < (kh - 1) * dh + 1 or case["width"] < (kw - 1) * dw + 1
        ):
            continue
        cases.append(case)
    return cases


SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    sys.path.insert(0, sys.argv[1])
    from reference import bconv2d_np, bitpack_np
    from lowbit_tf import ops

    failures = []
    for case in json.loads(sys.stdin.read()):
        rng = np.random.default_rng(case["seed"])
        shape = (case["batch"], case["height"], case["width"], case["cin"])
        x = rng.standard_normal(shape).astype(np.float32)
        k = rng.standard_normal((*case["kernel"], case["cin"], case["cout"])).astype(np.float32)
        m = rng.uniform(-2, 2, case["cout"]).astype(np.float32)
        b = rng.uniform(-3, 3, case["cout"]).astype(np.float32)
        inputs = x
        if case["packed_input"]:
            # Packed input with garbage in the padding bits of the last word:
            # every kernel must ignore them.
            inputs = bitpack_np(x).view(np.uint32)
            if case["cin"] % 32:
                garbage = rng.integers(0, 2**32, inputs.shape[:-1], dtype=np.uint64)
                pad_bits = np.uint64((2**32 - 1) ^ ((1 << (case["cin"] % 32)) - 1))
                inputs[..., -1] |= (garbage & pad_bits).astype(np.uint32)
            inputs = inputs.view(np.int32)
        got = ops.bconv2d(inputs, ops.pack_filter(k), m, b, kernel_size=case["kernel"],
                          channels_in=case["cin"], strides=case["strides"],
                          dilations=case["dilations"], padding=case["padding"],
                          pad_value=case["pad_value"], activation=case["activation"]).numpy()
        want = bconv2d_np(x, k, m, b, case["strides"], case["dilations"], case["padding"],
                          case["pad_value"], case["activation"])
        if got.shape != want.shape or not np.array_equal(got.view(np.uint32),
                                                         want.view(np.uint32)):
            failures.append(case)
    print("FAILURES " + json.dumps(failures))
""")


def run_path(path: str, cases: list[dict]) -> list[dict]:
    env = dict(os.environ, LOWBIT_KERNEL=path, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(HELPERS)], input=json.dumps(cases), env=env,
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    line = [ln for ln in result.stdout.splitlines() if ln.startswith("FAILURES ")]
    assert line, result.stdout[-3000:] + result.stderr[-3000:]
    return json.loads(line[-1][len("FAILURES "):])


def test_cases_cover_the_tails():
    cases = make_cases()
    assert {c["cin"] for c in cases} == set(CHANNELS)
    assert {c["width"] for c in cases} >= {1, 20}
    assert {tuple(c["strides"]) for c in cases} >= {(1, 1), (2, 2)}
    assert any(c["dilations"] != [1, 1] for c in cases)
    assert {(c["padding"], c["pad_value"]) for c in cases} == {
        (p, v) for p in ("SAME", "VALID") for v in (0, 1)}
    assert any(c["cout"] % 16 for c in cases) and any(c["cout"] > 32 for c in cases)


@pytest.mark.parametrize("path", PATHS)
def test_kernel_path_is_bit_exact(path):
    failures = run_path(path, make_cases())
    assert not failures, f"{len(failures)} mismatching cases on {path}, e.g. {failures[:3]}"


def test_unknown_kernel_name_falls_back_to_automatic_choice():
    assert not run_path("no_such_kernel", make_cases(count=6, seed=3))


def test_kernel_table_drives_selection_and_fallback(monkeypatch):
    """The native kernel table: unique names ending in the reference; forcing
    a row with LOWBIT_KERNEL gives that row where this CPU runs it, else the
    next row down that it runs; an unknown or no name, the first it runs."""
    import ctypes

    from lowbit_tf._native import kernel_paths, tflite_library_path

    lib = ctypes.CDLL(str(tflite_library_path()))
    chosen = lib.lowbit_bconv2d_kernel_name
    chosen.restype = ctypes.c_char_p
    rows = kernel_paths()
    names = [p.name for p in rows]
    assert len(set(names)) == len(names) and names[-1] == "reference"
    assert all(p.built for p in rows if p.runnable)
    for i, row in enumerate(rows):
        monkeypatch.setenv("LOWBIT_KERNEL", row.name)
        assert chosen().decode() == next(p.name for p in rows[i:] if p.runnable)
    first = next(p.name for p in rows if p.runnable)
    monkeypatch.setenv("LOWBIT_KERNEL", "no_such_kernel")
    assert chosen().decode() == first
    monkeypatch.delenv("LOWBIT_KERNEL")
    assert chosen().decode() == first


def test_shipped_tflite_library_has_no_benchmark_code():
    """The kernel timing entry points live in liblowbit_bench (built on request
    by the benchmarks), not in the shipped TFLite library."""
    import ctypes

    from lowbit_tf._native import tflite_library_path

    lib = ctypes.CDLL(str(tflite_library_path()))
    assert hasattr(lib, "lowbit_kernel_table")
    for name in ("lowbit_kernel_bench_bgemm", "lowbit_kernel_bench_bconv2d",
                 "lowbit_kernel_bench_bdepthwise", "lowbit_kernel_bench_read",
                 "lowbit_kernel_bench_write"):
        assert not hasattr(lib, name), name
