"""Where things are, for the tests and the subprocesses they start.

pytest puts this directory (tests/helpers) on ``sys.path`` (pyproject.toml,
``pythonpath``), so tests import the helper modules by name. A subprocess does
not inherit that: give it ``helper_env()``, or insert ``HELPERS`` in the
script it runs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

HELPERS = Path(__file__).resolve().parent
TESTS = HELPERS.parent
REPO = TESTS.parent


def helper_env(**overrides: str) -> dict[str, str]:
    """``os.environ`` plus ``overrides``, with tests/helpers first on PYTHONPATH,
    for a subprocess that imports the helper modules (a test file run by path)."""
    env = dict(os.environ, **overrides)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HELPERS), env.get("PYTHONPATH", "")) if p)
    return env


def run_bad_case_worker(script: str | Path, *args: str, timeout: float = 600) -> dict:
    """Runs a test file's own worker, ``python SCRIPT --bad-cases ARGS``, in a
    fresh process (a crash there cannot take pytest down) with ``helper_env()``
    and TensorFlow's log off. The worker prints one JSON object per case,
    ``{"name": ...}``, flushed, and ``{"name": "__done__"}`` last. Returns the
    objects by name, plus ``__returncode__`` and ``__stderr__`` (its last 3000
    characters)."""
    proc = subprocess.run([sys.executable, str(script), "--bad-cases", *args],
                          capture_output=True, text=True, timeout=timeout,
                          env=helper_env(TF_CPP_MIN_LOG_LEVEL="3"))
    results = {}
    for line in proc.stdout.splitlines():
        if line.startswith("{"):
            entry = json.loads(line)
            results[entry["name"]] = entry
    results["__returncode__"] = proc.returncode
    results["__stderr__"] = proc.stderr[-3000:]
    return results
