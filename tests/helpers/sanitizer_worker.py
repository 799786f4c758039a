"""Subprocess side of tests/core/test_sanitizers.py: runs converted lowbit models
through the ai_edge_litert interpreter with a given build of the lowbit
delegate, in a Python that may have a sanitizer runtime preloaded.

It imports no TensorFlow (a TF under LD_PRELOAD=libasan would be slow and
noisy): `lowbit_tf/lite.py` is loaded as a standalone module, bypassing
`lowbit_tf/__init__.py` (which imports TensorFlow where it is installed), and
finds the delegate library through $LOWBIT_TFLITE_LIBRARY.

    python tests/helpers/sanitizer_worker.py outputs MODEL_DIR RESULT.pkl KERNELS THREADS
        every model of MODEL_DIR (<name>.tflite, see CASES) on every input shape,
        under each LOWBIT_KERNEL path (comma-separated) and delegate thread
        count (comma-separated); malformed inputs too. Writes a pickle of
        {"<model>/<kernel>/t<threads>/<good|bad|either><i>:<shape>":
         output array, or "raised <Type>: <message>"}.
    python tests/helpers/sanitizer_worker.py threads MODEL_DIR RESULT.json
        one delegate shared by several interpreters, each driven by its own
        Python thread (ai_edge_litert releases the GIL in invoke); writes what
        happened as JSON (mismatches, peak concurrency, GIL check).
    python tests/helpers/sanitizer_worker.py canary LIBSANITIZER_CANARY.so DEFECT
        calls one deliberate defect (heap_overflow, signed_overflow, leak, race)
        of custom_ops/tests/sanitizer_canary.cc.

Every interpreter and delegate is dropped and garbage-collected before the
script ends, so that whatever the leak checker still finds allocated by the
delegate was leaked by it, not kept alive by Python objects alive at exit.
The last line printed is WORKER-DONE.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import pickle
import sys
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]

# Per model: (input shapes that must run, malformed shapes that must raise,
# shapes whose outcome (either) is only compared between the two builds).
# The last good shape is large enough that the kernels split their work over
# the delegate's pool; the others are small and odd (tails, 1x1, tiny pools).
CASES: dict[str, tuple[list[tuple[int, ...]], list[tuple[int, ...]], list[tuple[int, ...]]]] = {
    # bconv (float in, packed out) -> bmaxpool -> bconv -> bdepthwise -> multibit
    # -> MEAN -> bgemm -> fastfood -> FULLY_CONNECTED: two partitions.
    "net": (
        [(1, 16, 16, 3), (2, 9, 13, 3), (3, 4, 6, 3), (1, 2, 3, 3), (2, 31, 7, 3),
         (2, 40, 44, 3)],
        [(1, 16, 16, 4), (16, 16, 3), (1, 16, 16, 1)],
        [(0, 8, 8, 3), (1, 1, 1, 3), (1, 16, 16, 3, 1)],
    ),
    # bgemm -> fastfood (block 64) -> fastfood (block 32) -> FULLY_CONNECTED
    "head": (
        [(1, 20), (5, 20), (17, 20), (300, 20)],
        [(3, 21), (3, 19), (3,)],
        [(0, 20), (2, 4, 20)],
    ),
    # bdepthwise (packed out) -> bdepthwise (float out)
    "dw": (
        [(1, 8, 8, 6), (2, 5, 11, 6), (1, 1, 1, 6), (2, 40, 36, 6)],
        [(1, 8, 8, 5), (8, 8, 6)],
        [(0, 4, 4, 6)],
    ),
    # multibit conv (ABC, stride 2) -> MEAN -> multibit dense (ABC)
    "abc": (
        [(1, 8, 8, 5), (3, 7, 9, 5), (2, 30, 34, 5)],
        [(1, 8, 8, 6), (8, 5)],
        [(0, 4, 4, 5)],
    ),
    # bconv (packed out) -> multibit "sign" (packed in and out) -> bconv
    "chain": (
        [(1, 8, 8, 5), (2, 5, 11, 5), (1, 1, 1, 5), (2, 30, 34, 5)],
        [(1, 8, 8, 6), (8, 8, 5)],
        [(0, 4, 4, 5)],
    ),
    # CONV_2D (int8) -> multibit DoReFa (int8 in and out) -> CONV_2D (int8) ->
    # Fastfood (int8 in and out) -> CONV_2D (int8);
    # no malformed shapes: the builtins before the lowbit op reject them.
    "int8": (
        [(1, 9, 11, 4), (2, 5, 7, 4), (1, 1, 1, 4), (2, 30, 34, 4)],
        [],
        [(0, 4, 4, 4)],
    ),
}

DONE = "WORKER-DONE"


def load_lite():
    """lowbit_tf/lite.py as a standalone module (no lowbit_tf package import)."""
    spec = importlib.util.spec_from_file_location("lowbit_lite_standalone",
                                                  REPO / "lowbit_tf" / "lite.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


SPECIALS = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-40, -1e-40], np.float32)


def input_for(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Normal values with exact zeros (sign +1) sprinkled in; for odd seeds also
    infinities, NaN and subnormals (the bit-packers' edge cases)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    x[rng.random(shape) < 0.05] = 0.0
    if seed % 2:
        where = rng.random(shape) < 0.05
        x[where] = rng.choice(SPECIALS, int(where.sum()))
    return x


def shape_name(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape)) or "scalar"


def run_unchecked(interpreter):
    """predict without its check of the input against the model's signature:
    resize, allocate, set, invoke through the runtime's own API, so that
    malformed shapes reach the native kernels' checks (which must reject
    them with a ModelError, and do so cleanly under the sanitizers)."""

    def run(x: np.ndarray) -> np.ndarray:
        (detail,) = interpreter.get_input_details()
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
        interpreter.allocate_tensors()
        interpreter.set_tensor(detail["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(interpreter.get_output_details()[0]["index"])

    return run


def outputs_command(model_dir: Path, result: Path, kernels: list[str], threads: list[int]):
    lite = load_lite()
    results: dict[str, object] = {}
    for name, (good, bad, either) in CASES.items():
        content = (model_dir / f"{name}.tflite").read_bytes()
        for kernel in kernels:
            # Read when an op is created (every lowbit op, bit-packing and
            # depthwise included): the interpreters made below see it.
            os.environ["LOWBIT_KERNEL"] = kernel
            for num_threads in threads:
                interpreter = lite.Interpreter(model_content=content, num_threads=num_threads,
                                               runtime="ai_edge_litert")
                # One interpreter through every shape (resizes and re-prepares),
                # malformed ones in between: it must recover for the next one.
                kinds = ["good"] * len(good) + ["bad"] * len(bad) + ["either"] * len(either)
                for i, (kind, shape) in enumerate(zip(kinds + ["good"], good + bad + either
                                                      + good[:1], strict=True)):
                    key = f"{name}/{kernel}/t{num_threads}/{kind}{i}:{shape_name(shape)}"
                    x = input_for(shape, seed=i)
                    try:
                        run = interpreter.predict if kind == "good" else run_unchecked(interpreter)
                        results[key] = np.array(run(x), copy=True)
                    except Exception as e:  # noqa: BLE001 - recorded and compared
                        results[key] = f"raised {type(e).__name__}: {e}"
                del interpreter
                gc.collect()
    os.environ.pop("LOWBIT_KERNEL", None)
    result.write_bytes(pickle.dumps(results))


# --------------------------------------------------------------------------
# One delegate, several interpreters, several threads


def _gil_released_in_invoke(interpreter, x: np.ndarray) -> dict:
    """Whether the runtime's invoke() releases the GIL: a pure-Python loop in
    another thread counts while this thread is inside invoke(). Were the GIL
    held, the loop could only run between calls (the interpreter drops the
    GIL at bytecode boundaries, not inside a C call), so the count read just
    before and just after each call would stay the same."""
    interpreter.predict(x)  # allocated and warm
    stop = threading.Event()
    counter = [0]

    def spin() -> None:
        while not stop.is_set():
            counter[0] += 1

    thread = threading.Thread(target=spin)
    thread.start()
    time.sleep(0.01)
    inside, seconds = [], []
    for _ in range(9):
        before, start = counter[0], time.perf_counter()
        interpreter.invoke()
        seconds.append(time.perf_counter() - start)
        inside.append(counter[0] - before)
    stop.set()
    thread.join()
    median = sorted(inside)[len(inside) // 2]
    return {"loop_steps_inside_invoke": inside, "invoke_seconds": seconds,
            "released": median > 0}


def threads_command(model_dir: Path, result: Path) -> None:
    lite = load_lite()
    models = {name: (model_dir / f"{name}.tflite").read_bytes() for name in CASES}
    # The one delegate of every interpreter here; cleared (destroyed) at the end.
    shared = [lite.load_delegate(num_threads=2, runtime="ai_edge_litert")]

    def interpreter_for(name: str, num_threads: int):
        return lite.Interpreter(model_content=models[name], num_threads=num_threads,
                                runtime="ai_edge_litert", use_lowbit_delegate=False,
                                experimental_delegates=shared)

    # (model, shapes it cycles through, interpreter threads) per worker thread.
    # Large enough that the kernels split their work into several chunks
    # (ParallelChunks), so that the shared pool is really used.
    jobs = [("net", [(2, 40, 40, 3), (1, 33, 47, 3)], 1),
            ("net", [(1, 48, 48, 3)], 2),
            ("head", [(300, 20), (77, 20)], 1),
            ("dw", [(2, 40, 40, 6)], 2),
            ("abc", [(2, 30, 30, 5), (1, 24, 40, 5)], 1)]
    inputs = {(j, s): input_for(s, seed=10 * j + k)
              for j, (_, shapes, _) in enumerate(jobs) for k, s in enumerate(shapes)}
    # Expected outputs, one interpreter at a time on this thread.
    expected = {}
    for j, (name, shapes, num_threads) in enumerate(jobs):
        interpreter = interpreter_for(name, num_threads)
        for s in shapes:
            expected[j, s] = interpreter.predict(inputs[j, s]).copy()
        del interpreter

    report: dict[str, object] = {"mismatches": [], "errors": []}
    big = interpreter_for("net", 1)
    report["gil"] = _gil_released_in_invoke(big, input_for((2, 32, 32, 3), seed=99))
    del big

    lock = threading.Lock()
    active = [0]
    report["peak_concurrent_invokes"] = 0
    rounds = 6
    start = threading.Barrier(len(jobs) + 1)

    def run_job(j: int) -> None:
        name, shapes, num_threads = jobs[j]
        try:
            start.wait()
            # Created (delegate Prepare) on this thread, while others invoke.
            interpreter = interpreter_for(name, num_threads)
            for r in range(rounds):
                s = shapes[r % len(shapes)]
                details = interpreter.get_input_details()[0]
                if tuple(details["shape"]) != s:
                    interpreter.resize_tensor_input(details["index"], s)
                    interpreter.allocate_tensors()
                interpreter.set_tensor(details["index"], inputs[j, s])
                with lock:
                    active[0] += 1
                    report["peak_concurrent_invokes"] = max(report["peak_concurrent_invokes"],
                                                            active[0])
                interpreter.invoke()
                with lock:
                    active[0] -= 1
                got = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
                if got.tobytes() != expected[j, s].tobytes():
                    report["mismatches"].append(f"job {j} ({name} {s}) round {r}")
            del interpreter
        except Exception as e:  # noqa: BLE001 - reported to the test
            report["errors"].append(f"job {j}: {type(e).__name__}: {e}")

    def churn() -> None:
        # Interpreters created, run once and destroyed on the shared delegate
        # (DelegatePrepare, partition init/free) while the others invoke.
        try:
            start.wait()
            for k in range(4):
                interpreter = interpreter_for("head", 1 + k % 2)
                interpreter.predict(input_for((3, 20), seed=k))
                del interpreter
        except Exception as e:  # noqa: BLE001 - reported to the test
            report["errors"].append(f"churn: {type(e).__name__}: {e}")

    threads = [threading.Thread(target=run_job, args=(j,)) for j in range(len(jobs))]
    threads.append(threading.Thread(target=churn))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    shared.clear()
    gc.collect()
    result.write_text(json.dumps(report, indent=1))


def canary_command(library: Path, defect: str) -> None:
    """Calls one deliberate defect of libsanitizer_canary.so through ctypes
    (which releases the GIL, as the runtime's invoke does)."""
    import ctypes

    lib = ctypes.CDLL(str(library))
    if defect == "heap_overflow":
        lib.lowbit_canary_heap_overflow(4)
    elif defect == "signed_overflow":
        lib.lowbit_canary_signed_overflow(1)
    elif defect == "leak":
        lib.lowbit_canary_leak(100)
    elif defect == "race":
        threads = [threading.Thread(target=lib.lowbit_canary_race, args=(2_000_000,))
                   for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    else:
        raise SystemExit(f"unknown defect {defect!r}")


def main(argv: list[str]) -> int:
    command, model_dir, result = argv[0], Path(argv[1]), Path(argv[2])
    if command == "canary":
        canary_command(model_dir, argv[2])
    elif command == "outputs":
        outputs_command(model_dir, result, argv[3].split(","), [int(t) for t in argv[4].split(",")])
    elif command == "threads":
        threads_command(model_dir, result)
    else:
        raise SystemExit(f"unknown command {command!r}")
    gc.collect()
    print(DONE, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
