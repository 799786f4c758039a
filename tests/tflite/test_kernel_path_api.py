"""The user-facing view of the kernel paths: lowbit_tf.lite.kernel_path(),
kernel_paths() and Interpreter.kernel_path report what the native code
selects (custom_ops/core/kernel_table.h), with and without LOWBIT_KERNEL, and
work without TensorFlow (the lowbit-tf-runtime install)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lowbit_tf import _native, lite

REPO = Path(__file__).resolve().parents[2]


def _runnable() -> list[str]:
    return [p.name for p in lite.kernel_paths() if p.runnable]


def _model_bytes() -> bytes:
    from tflite_models import Case  # a one-op LowbitBconv2d model, built without TF

    return Case(c=33, cout=4).model()


def test_kernel_paths_lists_the_library_table():
    rows = lite.kernel_paths()
    assert rows == _native.kernel_paths()
    assert all(isinstance(p, lite.KernelPath) for p in rows)
    names = [p.name for p in rows]
    assert len(set(names)) == len(names)
    assert {"portable", "reference"} <= set(names) and names[-1] == "reference"
    assert all(p.built for p in rows if p.runnable)
    assert next(p for p in rows if p.name == "portable").runnable  # runs anywhere
    assert lite.kernel_paths(lite.delegate_library_path()) == rows


def test_default_kernel_path_is_the_best_runnable_row(monkeypatch):
    monkeypatch.delenv(lite.KERNEL_ENV, raising=False)
    name = lite.kernel_path()
    assert name in _runnable()
    assert name == _runnable()[0]  # the table is best first
    assert name != "reference"     # the automatic choice never goes past portable


def test_forced_kernel_path_falls_back_down_the_table(monkeypatch):
    rows = lite.kernel_paths()
    for i, row in enumerate(rows):
        monkeypatch.setenv(lite.KERNEL_ENV, row.name)
        expected = next(p.name for p in rows[i:] if p.runnable)
        assert lite.kernel_path() == expected, row


def test_unknown_kernel_name_warns_and_falls_back_to_automatic_choice(monkeypatch):
    monkeypatch.delenv(lite.KERNEL_ENV, raising=False)
    automatic = lite.kernel_path()
    monkeypatch.setenv(lite.KERNEL_ENV, "no_such_kernel_api_test")
    with pytest.warns(RuntimeWarning, match="names no kernel path"):
        assert lite.kernel_path() == automatic


def test_interpreter_reports_its_kernel_path(monkeypatch):
    content = _model_bytes()
    monkeypatch.delenv(lite.KERNEL_ENV, raising=False)
    assert lite.Interpreter(content).kernel_path == lite.kernel_path()
    monkeypatch.setenv(lite.KERNEL_ENV, "reference")
    interpreter = lite.Interpreter(content)
    assert interpreter.kernel_path == "reference"
    monkeypatch.delenv(lite.KERNEL_ENV)
    assert interpreter.kernel_path == "reference"  # chosen when it was made
    assert lite.Interpreter(content, use_lowbit_delegate=False).kernel_path is None


@pytest.mark.parametrize("forced", ["portable", None])
def test_kernel_path_without_tensorflow(tmp_path, forced):
    """In a process without TensorFlow (the runtime wheel's situation),
    LOWBIT_KERNEL=portable makes both the function and an interpreter report
    "portable"; unset, they report the best runnable path."""
    model = tmp_path / "model.tflite"
    model.write_bytes(_model_bytes())
    code = textwrap.dedent(
        """
        import sys
        sys.modules["tensorflow"] = None  # `import tensorflow` now raises ImportError
        sys.modules["keras"] = None
        sys.path.insert(0, sys.argv[1])
        import lowbit_tf.lite as lite
        print(lite.kernel_path())
        print(lite.Interpreter(sys.argv[2]).kernel_path)
        """
    )
    env = dict(os.environ)
    env.pop(lite.KERNEL_ENV, None)
    if forced:
        env[lite.KERNEL_ENV] = forced
    result = subprocess.run([sys.executable, "-c", code, str(REPO), str(model)],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = forced or _runnable()[0]
    assert result.stdout.split() == [expected, expected]
