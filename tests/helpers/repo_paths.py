"""Where things are, for the tests and the subprocesses they start.

pytest puts this directory (tests/helpers) on ``sys.path`` (pyproject.toml,
``pythonpath``), so tests import the helper modules by name. A subprocess does
not inherit that: give it ``helper_env()``, or insert ``HELPERS`` in the
script it runs.
"""

from __future__ import annotations

import os
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
