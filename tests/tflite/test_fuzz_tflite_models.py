"""A fixed-seed fuzz campaign over converted .tflite models (issue 13).

tests/helpers/fuzz_tflite_models.py mutates small models made by the real converter
(custom op options, tensor shapes and dtypes, constant buffers, operator
indices, run-time input shapes and values) and runs every mutant in a worker
process: each must raise a Python exception or give a correct result (equal
to the original model for neutral mutations, equal to the TF op for one-op
models, declared output shapes), never crash or hang. This test runs a fixed
number of mutants of one seed (about 30 s, plus about 10 s to convert the seed
models); run it longer by hand:

    python tests/helpers/fuzz_tflite_models.py --seconds 600 --seed 7 --save-failures DIR
"""

from __future__ import annotations

from pathlib import Path

import fuzz_tflite_models as fuzz
import pytest

TESTS = Path(__file__).resolve().parent

pytest.importorskip("tensorflow")  # the seed models are converted, the TF op is the reference

SEED = 20261124
COUNT = 3000


@pytest.mark.slow
def test_fuzzed_converted_models_never_crash_and_stay_correct(tmp_path, capsys):
    stats = fuzz.run_campaign(
        SEED,
        count=COUNT,
        seconds=150,  # a safety net on a very slow machine; normally COUNT ends it
        save_failures=tmp_path / "failures",
        timeout=30,
        log=print,
        # The TF shell computes in IEEE mode like TFLite (custom_ops/tf/tf_executor.h),
        # so a flush-to-zero difference is a failure here too.
        strict_ftz=True,
    )
    summary = stats.summary()
    print(summary)  # the full table: shown with the failure, or with -s / -rP
    with capsys.disabled():  # counts per kind and exception kinds in every run
        print("\n" + stats.brief())
    assert not stats.failures, summary

    # Not vacuous: the campaign ran, and its mutants were both accepted and rejected.
    assert stats.ran == COUNT, summary
    assert stats.accepted >= COUNT // 5 and stats.rejected >= COUNT // 5, summary
    assert set(stats.kinds) == set(fuzz._KIND_NAMES), summary
    for kind, counts in stats.kinds.items():
        assert counts["ran"] >= 5, (kind, summary)
    # Accepted mutants of every kind family, so the result checks had work.
    for family in ("options.", "tensor.", "buffer.", "runtime."):
        accepted = sum(c["accepted"] for k, c in stats.kinds.items() if k.startswith(family))
        assert accepted >= 20, (family, summary)
    # The result oracles ran: the TF op for every custom op, the original
    # model for neutral mutations, batch rows, re-invocations, declared shapes.
    for name in fuzz.OP_NAMES:
        assert stats.checks[f"differential:{name}"] >= 20, (name, summary)
    assert stats.checks["differential:LowbitBconv2d"] >= 100, summary
    for check in ("equals_original", "batch_rows", "reinvoke", "declared_shapes"):
        assert stats.checks[check] >= 20, (check, summary)
    # Rejections came from each stage of the runtime, as Python exceptions.
    stages = {key.split(":")[0] for key in stats.exceptions}
    assert {"load", "allocate"} <= stages, summary
    assert stats.worker_starts == 1, summary  # no crash restarted the worker


def test_mutants_are_reproducible():
    """Mutant i of a seed is a function of (seed, i): `--seed s --only i`
    rebuilds the very model that failed."""
    seeds = fuzz.seed_set(fuzz.build_seed_models(log=lambda _: None))
    for index in (0, 1, 17, 123):
        a = fuzz.make_mutant(seeds, SEED, index)
        b = fuzz.make_mutant(seeds, SEED, index)
        assert (a.model, a.kind, a.detail, a.plan) == (b.model, b.kind, b.detail, b.plan)
    assert fuzz.make_mutant(seeds, SEED, 1).model != fuzz.make_mutant(seeds, SEED + 1, 1).model


@pytest.mark.parametrize("what", ["crash", "hang"])
def test_the_harness_catches_crashes_and_hangs(tmp_path, what):
    """A worker killed by a signal mid-mutant is a "crash", one that does not
    answer in time a "hang"; either is stopped (the campaign starts a fresh one)."""
    seeds = fuzz.seed_set(fuzz.build_seed_models(log=lambda _: None))
    env = dict(fuzz._worker_env(None, None), LOWBIT_FUZZ_NO_TF="1")  # starts faster
    worker = fuzz.Worker(env, tmp_path, None)
    try:
        mutant = fuzz.make_mutant(seeds, SEED, 0)
        result, problem, _ = fuzz.run_one(worker, mutant, timeout=60)
        assert problem is None, result
        mutant.plan[f"{what}_for_test"] = True  # SIGSEGV, or sleep for an hour
        result, problem, stderr = fuzz.run_one(worker, mutant, timeout=60 if what == "crash" else 2)
        assert problem == what, result
        assert worker.proc.poll() is not None
        if what == "crash":
            assert "SIGSEGV" in result["failures"][0], result
            assert "Fatal Python error" in stderr  # faulthandler's report, for the triage
    finally:
        worker.stop()
