"""The native code under AddressSanitizer, UndefinedBehaviorSanitizer and
ThreadSanitizer (custom_ops/CMakeLists.txt: -DLOWBIT_SANITIZE=...).

Two builds of the core, the TFLite delegate and the checkers, at -O1 -g, are
cached in ~/.cache/lowbit-sanitize ($LOWBIT_SANITIZE_CACHE), one directory per
build keyed by a hash of custom_ops/ (core, tflite, tests, CMakeLists.txt) and
the compiler version, so a warm rerun only runs them:

  asan  -fsanitize=address,undefined -fno-sanitize-recover=undefined
        * bconv2d_check, bdepthwise_check: every kernel path this CPU has
          (they force each one with LOWBIT_KERNEL themselves), 1 and 2 threads;
        * int8_conv2d_check: the int8 conv's VNNI kernel (where the CPU has
          it; its NEON kernel on Arm) and portable loop, 1 and 2 threads;
        * thread_check (the thread pool stress);
        * small Keras models with every lowbit op (binary conv + BN + ReLU with
          a packed output through LowbitBMaxPool2d into a second binary conv,
          binary depthwise, ABC multi-bit conv and dense, binary dense,
          Fastfood), converted with lowbit_tf.convert and run by the real
          ai_edge_litert interpreter with the ASan-built delegate in a Python
          subprocess (tests/helpers/sanitizer_worker.py): every LOWBIT_KERNEL path
          ("reference" and those the checker lists), delegate threads 1, 2 and
          4, several batch sizes and image sizes (one interpreter resized
          through all of them), inputs with infinities, NaN and subnormals,
          and malformed inputs (wrong channels, wrong rank) that must raise
          ModelError naming the lowbit op. The outputs must equal, bit for bit,
          those of the normal build (lowbit_tf/_native/liblowbit_tflite.so)
          run by the same script.
  tsan  -fsanitize=thread
        * thread_check: the thread pool run hard (custom_ops/tests/thread_check.cc);
        * one delegate shared by five interpreters, each created and run by its
          own Python thread, while another thread creates and destroys
          interpreters on the same delegate; every output must equal the one
          computed serially beforehand.

Any sanitizer report fails the test, with the report in the message.

How the Python processes run. The sanitizer runtime must be the first library
of the process, so the subprocess starts with LD_PRELOAD: for ASan the libasan
and libstdc++ the delegate links (ldd); libstdc++ is needed because the
Python executable does not link it, and ASan's __cxa_throw interceptor then
finds no real __cxa_throw and aborts ("CHECK failed ... real___cxa_throw")
the first time the runtime throws (a malformed input). ASAN_OPTIONS keeps
detect_leaks=1, with PYTHONMALLOC=malloc so that Python objects live on the
ASan heap where LeakSanitizer can see pointers held by them. Python's own
allocations still left at exit (a few kB of objects it never frees) are
reported, so leak reports are filtered: a leak counts only when its
allocation stack has a frame in a lowbit library or in custom_ops/. The worker
drops every interpreter and delegate before it exits, so nothing of ours is
legitimately alive then. UBSAN_OPTIONS=print_stacktrace=1 (UBSan errors abort:
-fno-sanitize-recover). The worker imports no TensorFlow (lowbit_tf/lite.py
is loaded on its own), only numpy and ai_edge_litert.

Why real interpreters for ThreadSanitizer, and what that covers. TSan in an
uninstrumented Python (LD_PRELOAD=libtsan) gives no false positives here:
only instrumented code (the delegate and the core) records memory accesses,
and the runtime's and Python's locks are pthread calls that TSan intercepts.
ai_edge_litert releases the GIL inside invoke(); the worker checks it (a
Python loop in another thread advances while invoke() runs) and the test
fails if not, since without it nothing would run concurrently. The GIL itself
is a pthread mutex that TSan sees, so it orders everything done between two
GIL handovers: races are found between delegate work of invocations that
really overlap in time (the worker records that up to five did), not between
invocations that merely could have. thread_check, a plain C++ program, has no
such limit for the pool. A canary library with deliberate defects
(custom_ops/tests/sanitizer_canary.cc) checks that a heap overflow, a signed
overflow, a leak and a data race inside a library loaded into Python each
produce a report that these tests would fail on.

Skipped only where the compiler cannot link a sanitizer (no runtime); a
failing build fails. The TF op library under ASan is a manual recipe
(docs/testing.md).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from repo_paths import HELPERS, REPO

CUSTOM_OPS = REPO / "custom_ops"
WORKER = HELPERS / "sanitizer_worker.py"
CACHE = Path(os.environ.get("LOWBIT_SANITIZE_CACHE",
                            Path.home() / ".cache" / "lowbit-sanitize"))
CXX = os.environ.get("CXX", "c++")
KEEP_BUILDS = 3  # per sanitizer; older ones are removed

# name: (-fsanitize= list, CMake targets, runtime library to preload into Python)
BUILDS = {
    "asan": ("address,undefined",
             ["lowbit_tflite", "bconv2d_check", "bdepthwise_check", "int8_conv2d_check",
              "thread_check", "sanitizer_canary"],
             "libasan"),
    "tsan": ("thread", ["lowbit_tflite", "thread_check", "sanitizer_canary"], "libtsan"),
}

ASAN_ENV = {
    "ASAN_OPTIONS": "detect_leaks=1:halt_on_error=1:abort_on_error=0",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
TSAN_ENV = {"TSAN_OPTIONS": "halt_on_error=0:second_deadlock_stack=1"}

_REPORT = re.compile(r"(ERROR|WARNING): (Address|Leak|Thread|UndefinedBehavior)Sanitizer"
                     r"|Sanitizer: CHECK failed|: runtime error: ")
# A frame of ours in a stack: our source files (debug info) or our libraries.
# Not just "lowbit": the checkout (and CI's .ci-venv with numpy in it) may
# live under a directory of that name.
_OURS = ("/custom_ops/", "liblowbit_", "libsanitizer_canary")


def sanitizer_reports(text: str, foreign_leaks_ok: bool = False) -> str:
    """The sanitizer reports in a process's output, '' if none.

    With foreign_leaks_ok, LeakSanitizer's leak records whose allocation stack
    has no frame of ours (Python's own allocations alive at exit) are dropped,
    and its report counts only if records of ours remain.
    """
    found = []
    leak_report = re.search(r"ERROR: LeakSanitizer.*?(SUMMARY: AddressSanitizer: [^\n]*|\Z)",
                            text, re.DOTALL)
    if foreign_leaks_ok and leak_report:
        text = text[:leak_report.start()] + text[leak_report.end():]
        records = re.split(r"\n\s*\n", leak_report.group(0))
        ours = [r for r in records if "leak of" in r and any(k in r for k in _OURS)]
        if ours:
            found.append("LeakSanitizer, allocations by lowbit code:\n" + "\n\n".join(ours))
    if _REPORT.search(text):
        found.append(text)
    return "\n".join(found)


def _tail(text: str, limit: int = 30000) -> str:
    return text if len(text) <= limit else "...\n" + text[-limit:]


# --------------------------------------------------------------------------
# Builds


def _probe(sanitize: str, scratch: Path) -> str | None:
    """None if CXX links a program with -fsanitize=<sanitize>, else why not."""
    source = scratch / "probe.cc"
    source.write_text("int main() { return 0; }\n")
    try:
        result = subprocess.run([CXX, f"-fsanitize={sanitize}", str(source), "-o",
                                 str(scratch / f"probe-{sanitize.replace(',', '-')}")],
                                capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        return f"no C++ compiler ({CXX})"
    if result.returncode != 0:
        return f"{CXX} cannot link -fsanitize={sanitize}: {result.stderr.strip()[-500:]}"
    return None


def _source_key(sanitize: str, targets: list[str]) -> str:
    digest = hashlib.sha256()
    for part in ("core", "tflite", "tests"):
        for path in sorted((CUSTOM_OPS / part).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(CUSTOM_OPS)).encode() + b"\0")
                digest.update(path.read_bytes())
    digest.update((CUSTOM_OPS / "CMakeLists.txt").read_bytes())
    version = subprocess.run([CXX, "--version"], capture_output=True, text=True).stdout
    digest.update(f"{version}\0{sanitize}\0{targets}".encode())
    return digest.hexdigest()[:16]


def _prune(name: str, keep: Path) -> None:
    builds = [d for d in CACHE.glob(f"{name}-*") if d.is_dir() and d != keep]
    builds.sort(key=lambda d: d.stat().st_mtime, reverse=True)
    for old in builds[KEEP_BUILDS - 1:]:
        shutil.rmtree(old, ignore_errors=True)


def build(name: str, tmp_path_factory) -> Path:
    """The cached build directory of BUILDS[name], built if missing."""
    sanitize, targets, _ = BUILDS[name]
    reason = _probe(sanitize, tmp_path_factory.mktemp(f"probe-{name}"))
    if reason is not None:
        pytest.skip(f"toolchain lacks the {name} runtime: {reason}")
    CACHE.mkdir(parents=True, exist_ok=True)
    build_dir = CACHE / f"{name}-{_source_key(sanitize, targets)}"
    stamp = build_dir / "lowbit-sanitize.ok"
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another pytest building the same
        if stamp.is_file():
            os.utime(build_dir)
            return build_dir
        shutil.rmtree(build_dir, ignore_errors=True)  # an interrupted build
        started = time.monotonic()
        steps = [
            ["cmake", "-S", str(CUSTOM_OPS), "-B", str(build_dir),
             f"-DLOWBIT_SANITIZE={sanitize}", "-DLOWBIT_BUILD_CHECKS=ON",
             f"-DCMAKE_CXX_COMPILER={shutil.which(CXX) or CXX}"],
            ["cmake", "--build", str(build_dir), "--parallel", str(os.cpu_count() or 2),
             "--target", *targets],
        ]
        for step in steps:
            result = subprocess.run(step, capture_output=True, text=True, timeout=1200)
            if result.returncode != 0:
                pytest.fail(f"{name} build failed: {' '.join(step)}\n"
                            f"{_tail(result.stdout + result.stderr, 8000)}")
        stamp.write_text(f"built in {time.monotonic() - started:.0f} s\n")
        _prune(name, build_dir)
    return build_dir


def preload(build_dir: Path, runtime: str) -> str:
    """LD_PRELOAD for a Python that loads this build's delegate: the sanitizer
    runtime it links, then the libstdc++ it links (see the module docstring)."""
    ldd = subprocess.run(["ldd", str(build_dir / "liblowbit_tflite.so")],
                         capture_output=True, text=True, check=True).stdout
    libs = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.MULTILINE))
    runtime_path = next((p for n, p in libs.items() if n.startswith(runtime + ".so")), None)
    if runtime_path is None:
        pytest.skip(f"the {runtime} build does not link {runtime} dynamically:\n{ldd}")
    stdcxx = next((p for n, p in libs.items() if n.startswith("libstdc++.so")), None)
    return " ".join(p for p in (runtime_path, stdcxx) if p)


@pytest.fixture(scope="module")
def asan_build(tmp_path_factory) -> Path:
    return build("asan", tmp_path_factory)


@pytest.fixture(scope="module")
def tsan_build(tmp_path_factory) -> Path:
    return build("tsan", tmp_path_factory)


# The sanitizer runtime cannot lay out its shadow memory in this address
# space: GCC 12's TSan (and ASan) on kernels with more mmap randomisation
# (vm.mmap_rnd_bits = 32). Such a run is repeated without ASLR.
_LAYOUT_FAILURE = ("unexpected memory mapping", "Shadow memory range interleaves")


def run(command: list[str], env: dict[str, str] | None = None,
        timeout: int = 600) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items()
                if k not in ("LD_PRELOAD", "LOWBIT_KERNEL", "LOWBIT_TFLITE_LIBRARY")
                and not k.endswith("SAN_OPTIONS")}
    full_env.update(env or {})
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                            env=full_env, cwd=REPO)
    if any(m in result.stderr for m in _LAYOUT_FAILURE) and shutil.which("setarch"):
        result = subprocess.run(["setarch", os.uname().machine, "-R", *command],
                                capture_output=True, text=True, timeout=timeout,
                                env=full_env, cwd=REPO)
    return result


def run_worker(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return run([sys.executable, str(WORKER), *args], env=env)


def python_env(build_dir: Path, name: str) -> dict[str, str]:
    """Environment of a Python subprocess that loads `name`'s delegate."""
    env = dict(ASAN_ENV if name == "asan" else TSAN_ENV)
    env["LD_PRELOAD"] = preload(build_dir, BUILDS[name][2])
    env["LOWBIT_TFLITE_LIBRARY"] = str(build_dir / "liblowbit_tflite.so")
    if name == "asan":
        env["PYTHONMALLOC"] = "malloc"
    return env


def assert_clean_worker(result: subprocess.CompletedProcess, what: str) -> None:
    """The worker finished (its last line), and no report of ours was made.
    A non-zero exit is accepted only when LeakSanitizer reported Python's
    own leftovers (sanitizer_reports drops those)."""
    output = result.stdout + result.stderr
    reports = sanitizer_reports(output, foreign_leaks_ok=True)
    assert not reports, f"{what}: sanitizer report\n{_tail(reports)}"
    assert "WORKER-DONE" in result.stdout, f"{what}: exit {result.returncode}\n{_tail(output)}"
    assert result.returncode == 0 or "ERROR: LeakSanitizer" in output, (
        f"{what}: exit {result.returncode}\n{_tail(output)}")


# --------------------------------------------------------------------------
# ASan + UBSan


@pytest.fixture(scope="module")
def checker_results(asan_build) -> dict[str, subprocess.CompletedProcess]:
    env = dict(ASAN_ENV)
    return {name: run([str(asan_build / name), "400"], env=env)
            for name in ("bconv2d_check", "bdepthwise_check", "int8_conv2d_check",
                         "thread_check")}


@pytest.mark.parametrize("checker", ["bconv2d_check", "bdepthwise_check", "int8_conv2d_check",
                                     "thread_check"])
def test_native_checks_under_asan_ubsan(checker, checker_results):
    result = checker_results[checker]
    output = result.stdout + result.stderr
    reports = sanitizer_reports(output)
    assert not reports, f"{checker}: sanitizer report\n{_tail(reports)}"
    assert result.returncode == 0, _tail(output)
    assert "OK 400" in result.stdout, _tail(output)
    if checker == "bconv2d_check":
        kernels = result.stdout.splitlines()[0].split()[1:]
        assert "portable" in kernels, result.stdout


def _models(directory: Path) -> None:
    """The worker's models (sanitizer_worker.CASES), converted by lowbit_tf.convert."""
    import numpy as np
    from keras_helpers import randomize_batch_norms

    import lowbit_tf
    from lowbit_tf import layers, quantizers
    from lowbit_tf._keras import keras

    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    depthwise = dict(input_quantizer="ste_sign", depthwise_quantizer="ste_sign")

    def net():
        inputs = keras.Input((None, None, 3))
        h = layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, use_bias=False,
                               name="b1", **binary)(inputs)
        h = keras.layers.BatchNormalization(name="b1_bn")(h)
        h = keras.layers.ReLU(name="b1_relu")(h)
        h = keras.layers.MaxPooling2D(2, name="pool")(h)
        h = layers.QuantConv2D(35, 3, padding="same", pad_values=0.0, name="b2", **binary)(h)
        h = keras.layers.BatchNormalization(name="b2_bn")(h)
        h = layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, depth_multiplier=2,
                                        name="dw", **depthwise)(h)
        h = keras.layers.BatchNormalization(name="dw_bn")(h)
        h = layers.ABCConv2D(12, 3, padding="same", num_weight_bases=2,
                             num_activation_bases=2, name="abc")(h)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        h = layers.QuantDense(33, name="dense", **binary)(h)
        h = keras.layers.BatchNormalization(name="dense_bn")(h)
        h = layers.FastfoodDense(24, activation="relu", seed=1, name="ff")(h)
        return keras.Model(inputs, keras.layers.Dense(10, name="head")(h))

    def head():
        inputs = keras.Input((20,))
        h = layers.QuantDense(33, name="dense", **binary)(inputs)
        h = keras.layers.BatchNormalization(name="dense_bn")(h)
        h = layers.FastfoodDense(40, activation="relu", seed=1, name="ff1")(h)
        h = layers.FastfoodDense(12, block_size=64, use_bias=False, seed=2, name="ff2")(h)
        return keras.Model(inputs, keras.layers.Dense(5, name="out")(h))

    def dw():
        inputs = keras.Input((None, None, 6))
        h = layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, depth_multiplier=2,
                                        name="dw1", **depthwise)(inputs)
        h = keras.layers.BatchNormalization(name="dw1_bn")(h)
        h = layers.QuantDepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=3,
                                        name="dw2", **depthwise)(h)
        return keras.Model(inputs, keras.layers.BatchNormalization(name="dw2_bn")(h))

    def abc():
        inputs = keras.Input((None, None, 5))
        h = layers.ABCConv2D(8, 3, strides=2, padding="same", num_weight_bases=3,
                             num_activation_bases=2, name="abc1")(inputs)
        h = keras.layers.GlobalAveragePooling2D(name="gap")(h)
        return keras.Model(inputs, layers.ABCDense(7, num_weight_bases=2,
                                                   num_activation_bases=3, name="abc2")(h))

    def chain():
        # binary conv -> "sign" multi-bit conv (2-bit weights) -> binary conv:
        # packed words in and out of the multi-bit op.
        inputs = keras.Input((None, None, 5))
        h = layers.QuantConv2D(40, 3, padding="same", name="b1", **binary)(inputs)
        h = keras.layers.BatchNormalization(name="b1_bn")(h)
        h = layers.QuantConv2D(33, 3, padding="same", pad_values=1.0, name="mb",
                               input_quantizer="ste_sign",
                               kernel_quantizer=quantizers.DoReFa(2, "weights"))(h)
        h = keras.layers.BatchNormalization(name="mb_bn")(h)
        h = layers.QuantConv2D(8, 3, strides=2, padding="same", name="b2", **binary)(h)
        return keras.Model(inputs, keras.layers.BatchNormalization(name="b2_bn")(h))

    def int8():
        # float conv (int8) -> DoReFa multi-bit conv reading and writing int8 ->
        # float conv (int8) -> Fastfood reading and writing int8 -> float conv
        # (int8): the multi-bit and Fastfood ops' int8 paths.
        inputs = keras.Input((None, None, 4))
        h = keras.layers.Conv2D(36, 1, name="stem")(inputs)
        h = layers.QuantConv2D(20, 3, padding="same", name="mb",
                               input_quantizer=quantizers.DoReFa(2, "activations"),
                               kernel_quantizer=quantizers.DoReFa(2, "weights"))(h)
        h = keras.layers.Conv2D(6, 1, name="tail")(h)
        h = layers.FastfoodDense(12, activation="relu", seed=3, name="ff")(h)
        return keras.Model(inputs, keras.layers.Conv2D(5, 1, name="out")(h))

    for make in (net, head, dw, abc, chain):
        model = make()
        randomize_batch_norms(model)
        (directory / f"{make.__name__}.tflite").write_bytes(lowbit_tf.convert(model))
    samples = np.random.default_rng(0).uniform(-1, 2, (8, 1, 9, 11, 4)).astype(np.float32)
    (directory / "int8.tflite").write_bytes(lowbit_tf.convert(
        int8(), int8=True, representative_dataset=lambda: ([x] for x in samples)))


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("sanitizer-models")
    _models(directory)
    return directory


def _op_names(tflite: bytes) -> set[str]:
    from lowbit_converter.tflite_schema import schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    return {code.customCode.decode() for code in model.operatorCodes if code.customCode}


def test_models_have_every_lowbit_op(model_dir):
    ops = set().union(*(_op_names(p.read_bytes()) for p in model_dir.glob("*.tflite")))
    assert ops == {"LowbitBconv2d", "LowbitBMaxPool2d", "LowbitBDepthwiseConv2d",
                   "LowbitMultibitConv2d", "LowbitBgemm", "LowbitFastfood"}, ops


def test_models_have_the_multibit_io_paths(model_dir):
    """The "chain" model's multi-bit op reads and writes packed words, the
    "int8" model's multi-bit and Fastfood ops read and write int8."""
    from lowbit_converter.tflite_schema import schema

    for name, code, dtype in (("chain", b"LowbitMultibitConv2d", schema.TensorType.INT32),
                              ("int8", b"LowbitMultibitConv2d", schema.TensorType.INT8),
                              ("int8", b"LowbitFastfood", schema.TensorType.INT8)):
        model = schema.ModelT.InitFromPackedBuf(bytearray((model_dir / f"{name}.tflite")
                                                          .read_bytes()), 0)
        sub = model.subgraphs[0]
        (op,) = [op for op in sub.operators
                 if model.operatorCodes[op.opcodeIndex].customCode == code]
        assert sub.tensors[op.inputs[0]].type == dtype, (name, code)
        assert sub.tensors[op.outputs[0]].type == dtype, (name, code)


def test_converted_models_under_asan_ubsan(asan_build, checker_results, model_dir, tmp_path):
    from sanitizer_worker import CASES

    from lowbit_tf._native import tflite_library_path

    kernels = ["reference", *checker_results["bconv2d_check"].stdout.splitlines()[0].split()[1:]]
    args = [",".join(kernels), "1,2,4"]
    normal = run_worker("outputs", str(model_dir), str(tmp_path / "normal.pkl"), *args,
                        env={"LOWBIT_TFLITE_LIBRARY": str(tflite_library_path())})
    assert normal.returncode == 0 and "WORKER-DONE" in normal.stdout, _tail(
        normal.stdout + normal.stderr)
    checked = run_worker("outputs", str(model_dir), str(tmp_path / "asan.pkl"), *args,
                         env=python_env(asan_build, "asan"))
    assert_clean_worker(checked, "converted models under ASan/UBSan")

    expected = pickle.loads((tmp_path / "normal.pkl").read_bytes())
    got = pickle.loads((tmp_path / "asan.pkl").read_bytes())
    assert got.keys() == expected.keys()
    runs = len(kernels) * 3
    assert len(got) == runs * sum(len(g) + len(b) + len(e) + 1 for g, b, e in CASES.values())
    for key, want in expected.items():
        kind = key.split("/")[3].split(":")[0].rstrip("0123456789")
        have = got[key]
        if kind == "bad":
            assert isinstance(want, str) and want.startswith("raised ModelError"), (key, want)
            assert "lowbit delegate" in want, (key, want)
        elif kind == "good":
            assert not isinstance(want, str), (key, want)
        if isinstance(want, str):
            assert have == want, key
        else:
            assert not isinstance(have, str), (key, have)
            assert have.dtype == want.dtype and have.shape == want.shape, key
            assert have.tobytes() == want.tobytes(), (key, have, want)


@pytest.mark.parametrize("defect", ["heap_overflow", "signed_overflow", "leak"])
def test_asan_ubsan_reports_from_python_are_caught(defect, asan_build):
    result = run_worker("canary", str(asan_build / "libsanitizer_canary.so"), defect,
                        env=python_env(asan_build, "asan"))
    output = result.stdout + result.stderr
    assert "sanitizer_canary.cc" in sanitizer_reports(output, foreign_leaks_ok=True), _tail(
        output)


# --------------------------------------------------------------------------
# TSan


def test_thread_pool_under_tsan(tsan_build):
    result = run([str(tsan_build / "thread_check"), "1000"], env=TSAN_ENV)
    output = result.stdout + result.stderr
    reports = sanitizer_reports(output)
    assert not reports, f"thread_check: sanitizer report\n{_tail(reports)}"
    assert result.returncode == 0 and "OK 1000 rounds" in result.stdout, _tail(output)


def test_shared_delegate_under_tsan(tsan_build, model_dir, tmp_path):
    result = run_worker("threads", str(model_dir), str(tmp_path / "threads.json"),
                        env=python_env(tsan_build, "tsan"))
    assert_clean_worker(result, "one delegate, several interpreters and threads, under TSan")
    report = json.loads((tmp_path / "threads.json").read_text())
    assert report["errors"] == [] and report["mismatches"] == [], report
    assert report["gil"]["released"], f"invoke() holds the GIL: nothing ran concurrently {report}"
    assert report["peak_concurrent_invokes"] >= 2, report


def test_tsan_reports_from_python_are_caught(tsan_build):
    result = run_worker("canary", str(tsan_build / "libsanitizer_canary.so"), "race",
                        env=python_env(tsan_build, "tsan"))
    output = result.stdout + result.stderr
    assert "data race" in sanitizer_reports(output), _tail(output)
