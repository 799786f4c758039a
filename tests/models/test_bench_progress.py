"""benchmarks/bench_common.py's progress lines: a worker's progress reaches the
parent's stderr as it is printed, its stdout keeps only the results, and
--quiet silences them."""

from __future__ import annotations

import sys

import bench_common
import pytest

WORKER = (
    "import bench_common as b; b.worker_progress('row 1/2 measured'); print('@@R@@{\"x\": 1}'); "
    "b.worker_progress('row 2/2 measured'); import sys; sys.stderr.write('noise')"
)


@pytest.fixture
def worker_command():
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {bench_common.__file__!r}"
            f".rsplit('/', 1)[0]); {WORKER}"]


def test_worker_progress_goes_to_stderr_and_results_stay_on_stdout(worker_command, capsys):
    bench_common.set_quiet(False)
    assert bench_common.run_marked_json(worker_command, "@@R@@", "worker") == {"x": 1}
    err = capsys.readouterr().err
    assert "] row 1/2 measured" in err and "] row 2/2 measured" in err
    code, out, stderr = bench_common.run_worker_output(worker_command)
    assert code == 0 and out == '@@R@@{"x": 1}\n' and stderr == "noise"


def test_quiet_silences_progress(worker_command, capsys):
    bench_common.set_quiet(True)
    try:
        bench_common.progress("parent line")
        assert bench_common.run_marked_json(worker_command, "@@R@@", "worker") == {"x": 1}
    finally:
        bench_common.set_quiet(False)
    assert capsys.readouterr().err == ""
