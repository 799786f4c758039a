"""custom_ops/tests/int8_conv2d_check.cc: the int8 conv's core
(core/int8_conv2d.h) alone: its AVX-512 VNNI kernel (where this CPU has it;
its NEON kernel: tests/core/test_cross_kernels.py)
and its portable loop against a naive C++ loop nest on random shapes and edge
values, and its MultiplyByQuantizedMultiplier against TFLite's definition
written out literally. The TFLite end of it: tests/tflite/test_int8_conv2d.py.
"""

from __future__ import annotations

import subprocess

from repo_paths import REPO


def test_kernel_and_portable_loop_match_naive_loop(tmp_path):
    subprocess.run(["cmake", "-S", str(REPO / "custom_ops"), "-B", str(tmp_path),
                    "-DLOWBIT_BUILD_CHECKS=ON", "-DLOWBIT_BUILD_TFLITE=OFF",
                    "-DCMAKE_BUILD_TYPE=Release"], check=True, capture_output=True, timeout=300)
    subprocess.run(["cmake", "--build", str(tmp_path), "--target", "int8_conv2d_check", "-j2"],
                   check=True, capture_output=True, timeout=900)
    result = subprocess.run([str(tmp_path / "int8_conv2d_check"), "400"], capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert "OK 400 cases, 320 sweep cases" in result.stdout
