"""Whole-model QuickNet instruction counts on emulated Arm, in total and per op.

    python benchmarks/arm_quicknet_counts.py                          # aarch64 + armv7, this tree
    python benchmarks/arm_quicknet_counts.py --targets aarch64 --baseline-ref b67ef0d
    python benchmarks/arm_quicknet_counts.py --ipc-a72 1.2 --ipc-a76 1.8 --build-dir /tmp/qn
    python benchmarks/arm_quicknet_counts.py --targets aarch64 --int8   # + int8 + binary
    python benchmarks/arm_quicknet_counts.py --targets aarch64-a76 --int8   # Pi 5 (A76)

What it measures. QuickNet 224x224x3, batch 1 (`lowbit_models.quicknet()`,
random weights and BatchNorm statistics as in benchmarks/quicknet_benchmark.py)
is converted here (x86, TensorFlow) with `lowbit_converter.convert` and run on
an emulated Raspberry Pi by the TF-free runtime: `lowbit_tf.lite.Interpreter`
(lowbit delegate for the Lowbit* custom ops, the runtime's default XNNPACK
delegate / builtin kernels for the float ops), one thread
(`num_threads=1`), under qemu-user with an instruction-counting TCG plugin:

  aarch64  Python 3.11 + numpy + ai-edge-litert of the Debian bookworm arm64
           root that tests/arm/run_emulated.sh caches (~/.cache/lowbit-arm),
           qemu-aarch64 -cpu cortex-a72 (a Pi 4);
  aarch64-a76  the same root and library, qemu-aarch64 -cpu cortex-a76 (a
           Pi 5): this CPU has the dot-product and fp16 extensions, and
           XNNPACK picks its micro-kernels by them (int8 convs with SDOT);
           not in the default --targets;
  armv7    the armhf root: Debian numpy + tflite-runtime 2.14,
           qemu-arm -cpu cortex-a7 (32-bit Raspberry Pi OS; the same A32/NEON
           code runs on a Pi 4 with a 32-bit OS).

The roots are used read-only: the root's own python3.11 runs under the
*dynamic* qemu (qemu-user-static, which binfmt uses, cannot load plugins) with
-L <overlay>, where the overlay is a folder of links to the root's top-level
folders plus an Arm /proc/cpuinfo (tests/arm/cpuinfo-*) and the two sysfs CPU
lists, as run_emulated.sh bind-mounts them (XNNPACK's cpuinfo crashes on the
x86 ones). The runtime under test is staged outside the root, exactly as the
lowbit-tf-runtime wheel holds it (lowbit_tf/{__init__,lite,_native/__init__}.py,
_variant.py and liblowbit_tflite.so cross-built with runtime/setup.py's CMake
arguments) and put first on PYTHONPATH, so the root's installed wheel is not
used and not touched. Libraries that the root links absolutely (Debian's
alternatives: libblas.so.3 for the armhf numpy) are reached through a folder
of links on LD_LIBRARY_PATH. While it runs the emulated Python, the script
holds run_emulated.sh's lock ($LOWBIT_ARM_CACHE/lock), which that script holds
while it reinstalls the runtime wheel into the roots.

Method.
  * Total: the instructions of ONE inference, after a first (cold) one. The
    plugin (tests/arm/insn_marker_plugin.c) counts every executed guest
    instruction and also records the running count at markers: close() of a
    magic descriptor that the guest calls around each invoke(). A run with 2
    invocations gives count(after the 2nd) - count(after the 1st) - (cost of
    an empty marker pair): the N=2 minus N=1 difference taken within one
    process, where set-up, imports, interpreter creation and delegate
    preparation cancel exactly. The same difference taken between two
    processes (a run with 1 invocation, a run with 2) is printed as a
    cross-check ("2 runs subtracted"), but it is not exact: the set-up of the
    emulated Python + runtime (~0.5G insns on aarch64) varies by up to ~15M
    insns from run to run (seen with identical runs, PYTHONHASHSEED=0 and
    ASLR off alike), while one invocation varies by ~100 insns.
  * Per op: the converted model is cut into one-op models (each operator of
    the graph with its own tensors, its constant buffers and the same operator
    codes and options; its non-constant inputs become model inputs, filled
    with random values of their dtype). Ops whose type, options, tensor shapes
    and dtypes are all equal execute the same instructions (the kernels do not
    branch on values), so each distinct op is measured once and counted as
    many times as it occurs. All distinct one-op models run in one process: each
    is created, invoked once (warm-up) and then invoked once between two
    markers. A one-op model's count includes one interpreter invoke() from
    Python (the Python wrapper, Interpreter::Invoke, the delegate's kernel
    entry); that overhead is measured on a one-op model of the graph's first
    RELU (or ADD, MUL) with every tensor shrunk to 1 element, printed, and
    subtracted from the lowbit ops' sum (not from the per-op lines). "sum of
    ops" vs "total"
    shows how far the cut adds up (the rest: dispatch between ops in the
    whole graph, XNNPACK partitions that span several ops in the whole model
    but one op each when cut).
    Lines "op TYPE xN" add up each op type, lines "op TYPE INPUT->OUTPUT"
    give each distinct op (batch dropped) and how often it occurs.
    Op type names: TFLite builtin names (CONV_2D, ADD, ...) and the custom
    codes of our ops (LowbitBconv2d, ...). Which delegate executes a float
    op (XNNPACK or a builtin kernel) is the runtime's choice, as in the whole
    model.
  * Binary MACs: sum over the model's binary QuantConv2D / QuantDense layers of
    output positions x output channels x kernel taps x input channels.
  * Latency estimate (NOT a measurement):
        (lowbit-op insns / IPC + other insns / IPC_rest) / clock,
    IPC given by --ipc-a72 (Pi 4, Cortex-A72 at 1.5 GHz) and --ipc-a76 (Pi 5,
    Cortex-A76 at 2.4 GHz), IPC_rest by --ipc-a72-rest / --ipc-a76-rest
    (default: the same IPC). The defaults (1.0 and 1.5) are round
    assumptions, not measured; these "ESTIMATE <board> 1 thread latency"
    lines stay as they were, for comparison across runs.
    A second line per board, "ESTIMATE <board> 1 thr, llvm-mca IPC", takes
    the lowbit ops' IPC from llvm-mca instead (printed by default, skipped
    with --no-mca-ipc): the NEON binary conv's whole-chunk loop is taken from
    the bconv2d_neon.cc.o that this runtime's CMake build compiled and run
    through llvm-mca -mcpu=cortex-a72 / cortex-a76
    (bench_common.mca_inner_loop, as benchmarks/arm_instruction_counts.py
    prints it); IPC_rest stays the --ipc-*-rest (or --ipc-*) figure. That IPC
    is an UPPER BOUND for the lowbit ops (a steady-state loop with every load
    hitting L1; the run set-up, reductions, output transform, bit-packing and
    the other lowbit ops' code all run at a lower IPC), so that line is a
    lower bound on latency. LLVM 14 models Cortex-A72 and A76 with the same
    (Cortex-A57) model, so both boards get the same IPC there; the line names
    the model. The aarch64 count is used for both boards (qemu -cpu
    cortex-a72: the dot-product extension is absent, as on a real A72; on an
    A76 XNNPACK picks other micro-kernels: --targets aarch64-a76 counts
    them, for the Pi 5 estimates only). It is printed next to Larq
    Compute Engine's published QuickNet latency on a Pi 4 (45.0 ms, 1 thread;
    20.8 ms, 4 threads), which IS a measurement on real hardware: do not
    read the two as the same kind of number.
  * --baseline-ref REF: the same model is also run with the runtime built from
    REF (its custom_ops and lowbit_tf runtime modules exported with `git
    archive` into the build folder; no git worktree is registered), and the
    ratios this tree / REF are printed.

Output: a header line, then one line per figure:
    target  runtime  figure  value  unit  how
runtime is "HEAD=<sha>" for this tree (with "+dirty" when custom_ops or the
runtime modules differ from HEAD) and "ref=<sha>" for --baseline-ref.

Limits: instruction counts, not time: memory stalls, cache sizes and the real
cores' issue width are not modelled (hence the IPC assumption); qemu 7.2's
-cpu cortex-a72 has no dot-product/fp16 extensions, as a real A72 (its
cortex-a76 has both, aarch64-a76); the counts
are of one thread; random weights (the counts do not depend on values).

Needs: qemu-user (dynamic qemu-aarch64 / qemu-arm), gcc, cmake, the cross
compilers (g++-aarch64-linux-gnu, g++-arm-linux-gnueabihf), TensorFlow + Keras
here, and the roots made by `sudo tests/arm/run_emulated.sh` (cached in
$LOWBIT_ARM_CACHE, default ~/.cache/lowbit-arm). Time on 2 cores: a cross
build of the library takes a few minutes (kept with --build-dir; a rebuild
only compiles what changed), the conversion ~10 s, the 3 emulated runs of one
runtime and target 10-30 s in all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PLUGIN = REPO / "tests" / "arm" / "insn_marker_plugin.c"
CACHE = Path(os.environ.get("LOWBIT_ARM_CACHE", Path.home() / ".cache" / "lowbit-arm"))
INPUT_SHAPE = (224, 224, 3)
MARKER_BASE = 0x3C0F0000
#: Ops whose 1-element one-op model measures the cost of one invoke() around an op.
TINY_OPS = ("RELU", "ADD", "MUL")
#: The files of the lowbit-tf-runtime wheel (runtime/setup.py, MODULES).
RUNTIME_MODULES = ("lowbit_tf/__init__.py", "lowbit_tf/lite.py", "lowbit_tf/_native/__init__.py")
WHEEL_VARIANT = '"""lowbit-tf-runtime: lite.py and _native/ only."""\n\nRUNTIME_ONLY = True\n'
#: Larq Compute Engine's published QuickNet (224x224) latency on a Raspberry Pi 4.
LCE_PI4_MS = {1: 45.0, 4: 20.8}
BOARDS = (("Pi 4", "Cortex-A72", 1.5e9, "ipc_a72"), ("Pi 5", "Cortex-A76", 2.4e9, "ipc_a76"))
ARMV7_BOARDS = (("Pi 4 32-bit OS", "Cortex-A72", 1.5e9, "ipc_a72"),)
#: The llvm-mca CPU of each board (LLVM 14 models both with its Cortex-A57 model).
MCA_CPU = {"Pi 4": "cortex-a72", "Pi 5": "cortex-a76", "Pi 4 32-bit OS": "cortex-a72"}


@dataclass(frozen=True)
class Target:
    name: str
    arch: str           # aarch64 / armv7: the cross build (shared by targets of one arch)
    root: str           # folder under $LOWBIT_ARM_CACHE/roots
    toolchain: str      # custom_ops/cmake file
    qemu: str
    cpu: str
    cpuinfo: str        # tests/arm file
    close_nr: int       # the close system call's number
    boards: tuple       # the boards its counts estimate (BOARDS entries)


TARGETS = {
    "aarch64": Target("aarch64", "aarch64", "aarch64", "aarch64-linux-gnu.cmake",
                      "qemu-aarch64", "cortex-a72", "cpuinfo-aarch64", 57, BOARDS),
    # A Pi 5's core: qemu's cortex-a76 has the dot-product (SDOT/UDOT) and
    # fp16 extensions and reports them in AT_HWCAP, which XNNPACK reads to
    # pick its micro-kernels (its int8 convs then use SDOT); the same aarch64
    # library and root, another CPU.
    "aarch64-a76": Target("aarch64-a76", "aarch64", "aarch64", "aarch64-linux-gnu.cmake",
                          "qemu-aarch64", "cortex-a76", "cpuinfo-aarch64-a76", 57, BOARDS[1:]),
    "armv7": Target("armv7", "armv7", "armhf", "arm-linux-gnueabihf.cmake", "qemu-arm",
                    "cortex-a7", "cpuinfo-armhf", 6, ARMV7_BOARDS),
}


def log(message: str) -> None:
    print(f"[arm_quicknet_counts] {message}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, text=True, capture_output=True, **kwargs)
    if result.returncode != 0:
        sys.stderr.write(result.stdout[-4000:] + result.stderr[-4000:])
        raise SystemExit(f"failed ({result.returncode}): {' '.join(map(str, cmd))}")
    return result


# --------------------------------------------------------------------------
# Guest side: runs under qemu in the emulated root's Python (numpy + a TFLite
# runtime + the staged lowbit_tf runtime). Standard library + numpy only.
# --------------------------------------------------------------------------


def _marker(ident: int) -> None:
    """A system call the plugin recognises: close() of a descriptor that cannot exist."""
    try:
        os.close(MARKER_BASE + ident)
    except OSError:
        pass


def _random_inputs(interpreter, rng) -> None:
    import numpy as np

    for detail in interpreter.get_input_details():
        dtype = np.dtype(detail["dtype"])
        shape = tuple(detail["shape"])
        if dtype.kind == "f":
            value = rng.standard_normal(shape).astype(dtype)
        elif dtype == np.bool_:
            value = rng.integers(0, 2, shape).astype(dtype)
        else:
            info = np.iinfo(dtype)
            value = rng.integers(info.min, info.max, shape, dtype=dtype, endpoint=True)
        interpreter.set_tensor(detail["index"], value)


def guest_main(job_path: str) -> int:
    """Markers: 0/1 an empty pair; whole mode: 2+2i / 3+2i around invocation i;
    ops mode: 2+2k / 3+2k around the measured invocation of model k."""
    import numpy as np

    import lowbit_tf.lite as lite

    job = json.loads(Path(job_path).read_text())
    rng = np.random.default_rng(0)
    kernel = "unknown"
    try:
        import ctypes

        fn = ctypes.CDLL(str(lite.delegate_library_path())).lowbit_bconv2d_kernel_name
        fn.restype = ctypes.c_char_p
        kernel = fn().decode()
    except (OSError, AttributeError, ImportError):
        pass
    interpreters = []
    for path in job["models"]:
        interpreter = lite.Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        _random_inputs(interpreter, rng)
        interpreters.append(interpreter)
    runtime = interpreters[0].runtime_name if interpreters else "?"
    _marker(0)
    _marker(1)
    if job["mode"] == "whole":
        (interpreter,) = interpreters
        for i in range(job["invocations"]):
            _marker(2 + 2 * i)
            interpreter.invoke()
            _marker(3 + 2 * i)
    else:
        for k, interpreter in enumerate(interpreters):
            interpreter.invoke()  # warm-up: lazy allocation, first-call set-up
            _marker(2 + 2 * k)
            interpreter.invoke()
            _marker(3 + 2 * k)
    print(f"lowbit-guest: runtime={runtime} kernel={kernel}", flush=True)
    return 0


# --------------------------------------------------------------------------
# Host side.
# --------------------------------------------------------------------------


def convert_quicknet(out: Path, int8_out: Path | None = None) -> dict:
    """Converts QuickNet (random weights) to out (and, with int8_out, to int8
    + binary there: `int8=True`, calibrated on 8 random images as
    benchmarks/int8_benchmark.py does); returns its binary MAC count."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    sys.path[:0] = [str(REPO), str(REPO / "converter"), str(REPO / "models"),
                    str(REPO / "benchmarks")]
    import numpy as np
    from bench_common import random_images, randomise_batchnorm

    from lowbit_converter import convert_with_report
    from lowbit_models import quicknet
    from lowbit_tf import layers as lb_layers

    rng = np.random.default_rng(0)
    model = quicknet(input_shape=INPUT_SHAPE)
    randomise_batchnorm(model, rng)
    result = convert_with_report(model)
    out.write_bytes(result.tflite_model)
    if int8_out is not None:
        images = random_images(rng, 8, INPUT_SHAPE)
        int8_out.write_bytes(convert_with_report(
            model, int8=True, representative_dataset=lambda: ([x[None]] for x in images),
        ).tflite_model)
    macs, layers = 0, 0
    for layer in model.layers:
        if isinstance(layer, lb_layers.QuantConv2D):
            kernel = layer.kernel.shape  # (kh, kw, cin, cout)
            out_shape = layer.output.shape  # (batch, h, w, cout)
            macs += out_shape[1] * out_shape[2] * kernel[0] * kernel[1] * kernel[2] * kernel[3]
            layers += 1
        elif isinstance(layer, getattr(lb_layers, "QuantDense", ())):
            kernel = layer.kernel.shape
            macs += kernel[0] * kernel[1]
            layers += 1
    return {"binary_macs": int(macs), "binary_layers": layers,
            "lowered_layers": len(result.lowered_layers)}


def _op_name(model, op) -> str:
    from tensorflow.lite.python import schema_py_generated as schema

    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        custom = code.customCode
        return custom.decode() if isinstance(custom, bytes) else str(custom)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    return names.get(builtin, f"builtin{builtin}")


def _options_key(value) -> object:
    """A hashable description of an options object of the flatbuffer object API."""
    if value is None or isinstance(value, (int, float, str, bytes, bool)):
        return value
    if hasattr(value, "tolist"):
        return tuple(value.tolist())
    if isinstance(value, (list, tuple)):
        return tuple(_options_key(v) for v in value)
    return tuple(sorted((k, _options_key(v)) for k, v in vars(value).items()))


def split_ops(model_path: Path, out_dir: Path) -> tuple[list[dict], list[dict]]:
    """Cuts the model into one-op models. Returns (ops in graph order, distinct
    one-op models written to out_dir: {path, name, signature, count})."""
    import copy

    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(model_path.read_bytes()))
    if len(model.subgraphs) != 1:
        raise SystemExit(f"{model_path}: {len(model.subgraphs)} subgraphs; one expected")
    graph = model.subgraphs[0]

    def const(tensor_index: int) -> bool:
        buffer = model.buffers[graph.tensors[tensor_index].buffer]
        return (buffer.data is not None and len(buffer.data) > 0) or bool(buffer.size)

    ops, distinct = [], {}
    out_dir.mkdir(parents=True, exist_ok=True)
    for k, op in enumerate(graph.operators):
        name = _op_name(model, op)
        inputs = [int(i) for i in (op.inputs if op.inputs is not None else []) if i >= 0]
        outputs = [int(i) for i in op.outputs]
        tensors = list(dict.fromkeys(inputs + outputs))
        signature = (name, _options_key(op.builtinOptions),
                     bytes(op.customOptions) if op.customOptions is not None else b"",
                     tuple((tuple(graph.tensors[t].shape.tolist()), graph.tensors[t].type,
                            const(t), t in inputs) for t in tensors))
        ops.append({"index": k, "name": name, "signature": signature})
        if signature in distinct:
            distinct[signature]["count"] += 1
            continue
        sub = copy.copy(model)
        sub.metadata = None
        sub.signatureDefs = None
        sub.buffers = [schema.BufferT()]
        new_tensors, remap = [], {}
        for t in tensors:
            tensor = copy.deepcopy(graph.tensors[t])
            if const(t):
                sub.buffers.append(model.buffers[tensor.buffer])
                tensor.buffer = len(sub.buffers) - 1
            else:
                tensor.buffer = 0
            remap[t] = len(new_tensors)
            new_tensors.append(tensor)
        new_op = copy.deepcopy(op)
        new_op.inputs = [remap[int(i)] if i >= 0 else -1 for i in op.inputs]
        new_op.outputs = [remap[int(i)] for i in op.outputs]
        if name in TINY_OPS and "tiny" not in distinct:
            # The same op on 1-element tensors: what one invoke() costs around an op.
            tiny = [copy.deepcopy(t) for t in new_tensors]
            for tensor in tiny:
                tensor.shape = [1] * len(tensor.shape)
                tensor.shapeSignature = None
            distinct["tiny"] = _write_one_op(sub, tiny, new_op, inputs, outputs, remap, const,
                                             out_dir / f"tiny_{name}.tflite")
            distinct["tiny"].update(name=f"tiny {name}", count=0, signature=None, first=-1)
        path = out_dir / f"op{k:03d}_{name}.tflite"
        _write_one_op(sub, new_tensors, new_op, inputs, outputs, remap, const, path)
        work = sum(_numel(graph.tensors[t].shape) for t in tensors)
        distinct[signature] = {"path": str(path), "name": name, "signature": signature,
                               "count": 1, "size": work, "first": k}
    tiny = distinct.pop("tiny", None)
    return ops, list(distinct.values()), tiny


def _write_one_op(model, tensors, op, inputs, outputs, remap, const, path: Path) -> dict:
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    sg = schema.SubGraphT()
    sg.tensors = tensors
    sg.operators = [op]
    sg.inputs = [remap[t] for t in dict.fromkeys(inputs) if not const(t)]
    sg.outputs = [remap[t] for t in outputs]
    sg.name = path.stem
    model.subgraphs = [sg]
    path.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    return {"path": str(path)}


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 1)
    return n


def build_plugin(build: Path) -> Path:
    out = build / "libinsn_marker.so"
    run(["gcc", "-O2", "-shared", "-fPIC", "-fvisibility=hidden", "-o", str(out), str(PLUGIN)])
    return out


def git(*args: str) -> str:
    return run(["git", "-C", str(REPO), *args]).stdout.strip()


def source_for(ref: str | None, build: Path) -> tuple[Path, str]:
    """(source tree, label): this tree for None, else REF exported with git archive."""
    if ref is None:
        sha = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--", "custom_ops", *RUNTIME_MODULES)
        return REPO, f"HEAD={sha}{'+dirty' if dirty else ''}"
    sha = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    src = build / f"src-{sha[:12]}"
    if not (src / "custom_ops" / "CMakeLists.txt").is_file():
        src.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "-C", str(REPO), "archive", sha, "custom_ops",
                                  *RUNTIME_MODULES], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(src)], input=archive, check=True)
    return src, f"ref={sha[:7]}"


def file_tag(label: str) -> str:
    """A runtime label ("HEAD=abc1234+dirty") as a part of a file name."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", label)


def runtime_tag(src: Path, label: str) -> str:
    # This tree builds in one folder whatever HEAD is (CMake rebuilds what changed).
    return "tree" if src == REPO else file_tag(label)


def runtime_cmake_dir(src: Path, label: str, target: Target, build: Path) -> Path:
    """The CMake folder stage_runtime builds src's library in (its lowbit_core
    objects, bconv2d_neon.cc.o among them, are there)."""
    return build / f"cmake-{runtime_tag(src, label)}-{target.arch}"


def mca_ipc(src: Path, label: str, target: Target, build: Path) -> dict:
    """{cpu: MCAResult} of llvm-mca on the NEON conv's inner loop as built for
    this runtime (bench_common.mca_inner_loop), plus "error" when there is none."""
    if str(REPO / "benchmarks") not in sys.path:
        sys.path.insert(0, str(REPO / "benchmarks"))
    from bench_common import mca_inner_loop

    cpus = tuple(dict.fromkeys(MCA_CPU[board] for board, *_ in target.boards))
    report = mca_inner_loop(runtime_cmake_dir(src, label, target, build), target.arch, cpus)
    found = {r.cpu: r for r in report.results}
    found["error"] = report.error
    if report.loop is not None:
        found["loop"] = f"{report.loop.instructions}-insn loop, {report.loop.macs} MACs"
    return found


def stage_runtime(src: Path, label: str, target: Target, build: Path, jobs: int) -> Path:
    """Cross-builds liblowbit_tflite.so from src and stages the runtime wheel's
    files under build/stage-...; returns the folder to put on PYTHONPATH."""
    tag = runtime_tag(src, label)
    cmake_dir = runtime_cmake_dir(src, label, target, build)
    toolchain = src / "custom_ops" / "cmake" / target.toolchain
    if not toolchain.is_file():
        toolchain = REPO / "custom_ops" / "cmake" / target.toolchain
    # runtime/setup.py's arguments (the wheel's library).
    args = ["cmake", "-S", str(src / "custom_ops"), "-B", str(cmake_dir),
            "-DCMAKE_BUILD_TYPE=Release", "-DLOWBIT_BUILD_TFLITE=ON",
            f"-DCMAKE_TOOLCHAIN_FILE={toolchain}",
            "-DCMAKE_SHARED_LINKER_FLAGS=-static-libstdc++ -static-libgcc -Wl,--exclude-libs,ALL",
            f"-DLOWBIT_OUTPUT_DIR={cmake_dir / 'out'}"]
    log(f"building liblowbit_tflite.so for {target.arch} from {label} ({cmake_dir})")
    run(args)
    run(["cmake", "--build", str(cmake_dir), "--target", "lowbit_tflite", "--parallel", str(jobs)])
    stage = build / f"stage-{tag}-{target.arch}"
    shutil.rmtree(stage, ignore_errors=True)
    for module in RUNTIME_MODULES:
        (stage / module).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / module, stage / module)
    (stage / "lowbit_tf" / "_variant.py").write_text(WHEEL_VARIANT)
    shutil.copyfile(cmake_dir / "out" / "liblowbit_tflite.so",
                    stage / "lowbit_tf" / "_native" / "liblowbit_tflite.so")
    return stage


@contextlib.contextmanager
def cache_lock():
    """tests/arm/run_emulated.sh's lock ($LOWBIT_ARM_CACHE/lock, flock): it
    reinstalls the runtime wheel into the roots (and may restore them) while it
    holds it, so the roots are only read while this process holds it."""
    import fcntl

    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / "lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"waiting for {CACHE / 'lock'} (tests/arm/run_emulated.sh running?)")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def overlay_root(target: Target, build: Path) -> Path:
    """-L folder: links to the emulated root's top-level entries, plus an Arm
    /proc/cpuinfo and sysfs CPU lists (the root is not modified)."""
    root = CACHE / "roots" / target.root
    if not (root / "usr" / "bin" / "python3.11").exists():
        raise SystemExit(f"no emulated root at {root}: run `sudo tests/arm/run_emulated.sh "
                         f"{target.root}` once to make it (cached afterwards)")
    overlay = build / f"overlay-{target.name}"
    shutil.rmtree(overlay, ignore_errors=True)
    overlay.mkdir(parents=True)
    for entry in root.iterdir():
        # The host's /tmp, /dev (and /proc but cpuinfo) stay visible: the
        # build folder may be in /tmp, and the root's /dev is an empty mount point.
        if entry.name not in ("proc", "sys", "tmp", "dev"):
            (overlay / entry.name).symlink_to(entry)
    (overlay / "proc").mkdir()
    shutil.copyfile(REPO / "tests" / "arm" / target.cpuinfo, overlay / "proc" / "cpuinfo")
    cpus = overlay / "sys" / "devices" / "system" / "cpu"
    cpus.mkdir(parents=True)
    for name in ("possible", "present"):
        (cpus / name).write_text("0-3\n")
    return overlay


def _in_root(root: Path, path: Path, hops: int = 40) -> Path:
    """path (absolute inside the root) with its symbolic links resolved inside the root."""
    current = root
    parts = list(path.parts[1:])
    while parts and hops:
        current = current / parts.pop(0)
        if current.is_symlink():
            hops -= 1
            target = Path(os.readlink(current))
            base = root if target.is_absolute() else current.parent.relative_to(root)
            rest = [*(target.parts[1:] if target.is_absolute() else
                      [*base.parts, *target.parts]), *parts]
            current, parts = root, rest
    return current


def root_library_links(target: Target, build: Path) -> Path:
    """A folder for LD_LIBRARY_PATH with links to the root's libraries that are
    absolute symbolic links (Debian's alternatives, e.g. libblas.so.3 ->
    /etc/alternatives/...): under -L they would resolve on the host."""
    root = CACHE / "roots" / target.root
    links = build / f"overlay-{target.name}-libs"
    shutil.rmtree(links, ignore_errors=True)
    links.mkdir(parents=True)
    for lib_dir in (root / "usr" / "lib").iterdir():
        if not lib_dir.is_dir() or lib_dir.is_symlink():
            continue
        for entry in lib_dir.glob("*.so*"):
            if entry.is_symlink() and os.readlink(entry).startswith("/"):
                real = _in_root(root, Path("/") / entry.relative_to(root))
                if real.is_file():
                    (links / entry.name).symlink_to(real)
    return links


def site_packages(target: Target) -> Path:
    (path,) = (CACHE / "roots" / target.root / "opt" / "lowbit" / "venv" / "lib").glob(
        "python3*/site-packages")
    return path


def emulate(target: Target, overlay: Path, plugin: Path, stage: Path, job: dict,
            build: Path, name: str) -> tuple[int, dict[int, int], str]:
    libs = build / f"overlay-{target.name}-libs"
    """Runs guest_main under qemu with the plugin: (total insns, {marker: count}, guest line)."""
    job_path = build / f"job-{name}.json"
    job_path.write_text(json.dumps(job))
    plugin_log = build / f"plugin-{name}.log"
    plugin_log.unlink(missing_ok=True)
    env = {
        "PATH": "/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
        "PYTHONPATH": f"{stage}:{site_packages(target)}",
        "PYTHONDONTWRITEBYTECODE": "1", "TF_CPP_MIN_LOG_LEVEL": "2", "LD_LIBRARY_PATH": str(libs),
        "LOWBIT_TFLITE_LIBRARY": str(stage / "lowbit_tf" / "_native" / "liblowbit_tflite.so"),
    }
    cmd = [target.qemu, "-L", str(overlay), "-cpu", target.cpu,
           "-plugin", f"{plugin},close={target.close_nr}", "-d", "plugin", "-D", str(plugin_log),
           str(overlay / "usr" / "bin" / "python3.11"), str(Path(__file__).resolve()),
           "--guest", str(job_path)]
    result = run(cmd, env=env)
    text = plugin_log.read_text()
    total = re.search(r"lowbit-insns: (\d+)", text)
    guest = re.search(r"lowbit-guest: (.*)", result.stdout)
    if total is None or guest is None:
        raise SystemExit(f"no count from {' '.join(cmd)}:\n{result.stdout}\n{result.stderr}")
    markers = {}
    for ident, value in re.findall(r"lowbit-marker: (\d+) (\d+)", text):
        markers.setdefault(int(ident), int(value))
    return int(total.group(1)), markers, guest.group(1)


def measure(target: Target, overlay: Path, plugin: Path, stage: Path, model: Path,
            distinct: list[dict], tiny: dict | None, build: Path, tag: str) -> dict:
    res = {}
    totals = []
    for n in (1, 2):
        log(f"{target.name} {tag}: whole model, {n} invocation(s)")
        total, markers, guest = emulate(target, overlay, plugin, stage,
                                        {"mode": "whole", "models": [str(model)], "invocations": n},
                                        build, f"{tag}-{target.name}-whole{n}")
        totals.append(total)
        if n == 2:
            empty = markers[1] - markers[0]
            # After 2 invocations minus after 1, in one process (the empty
            # pair's cost removes that of marker 4's call).
            res["total"] = markers[5] - markers[3] - empty
            res["cold"] = markers[3] - markers[2] - empty
            res["guest"] = guest
    res["two_runs"] = totals[1] - totals[0]
    log(f"{target.name} {tag}: {len(distinct)} distinct one-op models")
    models = ([tiny] if tiny else []) + distinct
    _, markers, _ = emulate(target, overlay, plugin, stage,
                            {"mode": "ops", "models": [d["path"] for d in models]},
                            build, f"{tag}-{target.name}-ops")
    empty = markers[1] - markers[0]
    counts = [markers[3 + 2 * k] - markers[2 + 2 * k] - empty for k in range(len(models))]
    res["invoke_overhead"] = counts.pop(0) if tiny else None
    res["ops"] = counts
    return res


def _shapes(signature) -> str:
    """'56x56x64->56x56x64' from a one-op model's signature (batch dropped)."""
    tensors = signature[3]
    first_in = next((shape for shape, _, const, is_in in tensors if is_in and not const), ())
    out = next((shape for shape, _, const, is_in in reversed(tensors) if not is_in), ())
    return "->".join("x".join(map(str, shape[1:] if len(shape) > 1 else shape))
                     for shape in (first_in, out))


def fmt_line(target: str, runtime: str, figure: str, value: str, unit: str, how: str) -> str:
    return f"{target:8s} {runtime:18s} {figure:44s} {value:>16s} {unit:10s} {how}".rstrip()


def report(target: Target, label: str, res: dict, distinct: list[dict], info: dict,
           args: argparse.Namespace, base: dict | None, base_label: str | None,
           mca: dict | None = None) -> None:
    def line(figure, value, unit, how=""):
        print(fmt_line(target.name, label, figure, value, unit, how), flush=True)

    total = res["total"]
    guest = dict(item.split("=", 1) for item in res["guest"].split())
    line("runtime", guest.get("runtime", "?"), "",
         f"lowbit kernel path {guest.get('kernel', '?')}; qemu -cpu {target.cpu}; 1 thread")
    line("insns/inference total", f"{total:,d}", "insns",
         "count after 2 invocations - after 1, markers in one process")
    line("insns/inference, 1st (cold) invocation", f"{res['cold']:,d}", "insns",
         "between markers, same process")
    line("insns/inference, 2 runs subtracted", f"{res['two_runs']:,d}", "insns",
         "count(run, 2 invocations) - count(run, 1); cross-check only: set-up varies "
         "by millions of insns run to run")
    line("binary MACs", f"{info['binary_macs']:,d}", "MACs",
         f"{info['binary_layers']} binary layers")
    line("binary MACs / insn (whole model)", f"{info['binary_macs'] / total:.2f}", "MACs/insn")
    by_type: dict[str, list[int]] = {}
    for d, insns in zip(distinct, res["ops"], strict=True):
        entry = by_type.setdefault(d["name"], [0, 0])
        entry[0] += d["count"]
        entry[1] += d["count"] * insns
    ops_sum = sum(v[1] for v in by_type.values())
    for name, (count, insns) in sorted(by_type.items(), key=lambda kv: -kv[1][1]):
        how = f"{insns / total:6.1%} of total"
        if base is not None and name in base.get("by_type", {}):
            old = base["by_type"][name]
            how += f"; {base_label}: {old:,d} (x{insns / old:.3f})"
        line(f"op {name} x{count}", f"{insns:,d}", "insns", how)
    res["by_op"] = {}
    for d, insns in zip(distinct, res["ops"], strict=True):
        key = f"{d['name']} {_shapes(d['signature'])}"
        res["by_op"][key] = insns
        how = f"each; x{d['count']} = {d['count'] * insns / total:6.1%} of total"
        if base is not None and key in base.get("by_op", {}):
            how += f"; {base_label}: {base['by_op'][key]:,d} (x{insns / base['by_op'][key]:.3f})"
        line(f"op {key}", f"{insns:,d}", "insns", how)
    line("sum of ops", f"{ops_sum:,d}", "insns",
         f"{ops_sum / total:6.1%} of total; one-op models, each incl. one invoke()")
    line("total - sum of ops", f"{total - ops_sum:,d}", "insns",
         "in-graph dispatch, partitions; less the one-op models' invoke() each")
    overhead = res["invoke_overhead"] or 0
    n_ops = sum(v[0] for v in by_type.values())
    if res["invoke_overhead"] is not None:
        line("invoke() overhead per one-op model", f"{overhead:,d}", "insns",
             f"1-element one-op model; {n_ops} x this = {n_ops * overhead / total:.2%} of total")
    lowbit = sum(v[1] - v[0] * overhead for name, v in by_type.items() if name.startswith("Lowbit"))
    res["lowbit"] = lowbit
    line("lowbit ops (Lowbit*)", f"{lowbit:,d}", "insns",
         f"{lowbit / total:6.1%} of total; sum of their one-op counts less invoke() overhead")
    line("rest (float builtins, interpreter)", f"{total - lowbit:,d}", "insns",
         f"{(total - lowbit) / total:6.1%} of total; total - lowbit ops")
    if base is not None:
        line(f"ratio lowbit ops / {base_label}", f"{lowbit / base['lowbit']:.3f}", "x",
             f"{lowbit:,d} / {base['lowbit']:,d}")
    res["by_type"] = {name: v[1] for name, v in by_type.items()}
    if base is not None:
        line(f"ratio total / {base_label}", f"{total / base['total']:.3f}", "x",
             f"{total:,d} / {base['total']:,d}")
    for board, core, clock, ipc_arg in target.boards:
        ipc = getattr(args, ipc_arg)
        ipc_rest = getattr(args, f"{ipc_arg}_rest") or ipc
        cycles = lowbit / ipc + (total - lowbit) / ipc_rest
        opt = f"--{ipc_arg.replace('_', '-')}"
        line(f"ESTIMATE {board} 1 thread latency", f"{cycles / clock * 1e3:.1f}", "ms",
             f"(lowbit {lowbit / 1e6:.1f}M insns / {ipc:g} IPC + rest {(total - lowbit) / 1e6:.1f}M"
             f" / {ipc_rest:g} IPC) / {clock / 1e9:g} GHz {core}; IPCs assumed ({opt}, "
             f"{opt}-rest), not measured")
        if mca is None:
            continue
        cpu = MCA_CPU[board]
        result = mca.get(cpu)
        if result is None or not result.ok:
            why = result.error if result is not None else mca.get("error") or f"{cpu} not run"
            line(f"ESTIMATE {board} 1 thr, llvm-mca IPC", "n/a", "ms",
                 f"no llvm-mca IPC: {why}")
            continue
        cycles = lowbit / result.ipc + (total - lowbit) / ipc_rest
        line(f"ESTIMATE {board} 1 thr, llvm-mca IPC", f"{cycles / clock * 1e3:.1f}", "ms",
             f"LOWER BOUND on latency: lowbit {lowbit / 1e6:.1f}M insns / {result.ipc:g} IPC "
             f"(llvm-mca -mcpu={cpu}, model {result.model}, NEON conv inner loop "
             f"[{mca.get('loop', '')}] only: an upper bound on the ops' IPC, no cache misses, "
             f"no work outside the loop) + rest / {ipc_rest:g} IPC ({opt}-rest) as above")
    line("LCE published Pi 4 QuickNet 1 thread", f"{LCE_PI4_MS[1]:.1f}", "ms",
         "Larq Compute Engine, measured on a Pi 4 (not by this script)")
    line("LCE published Pi 4 QuickNet 4 threads", f"{LCE_PI4_MS[4]:.1f}", "ms",
         "Larq Compute Engine, measured on a Pi 4 (not by this script)")


def main(argv: list[str] | None = None) -> int:
    if argv is None and len(sys.argv) == 3 and sys.argv[1] == "--guest":
        return guest_main(sys.argv[2])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", nargs="+", choices=sorted(TARGETS),
                        default=["aarch64", "armv7"],
                        help="the emulated Pi userlands to count on (default: both)")
    parser.add_argument("--baseline-ref", metavar="GIT_REF", default=None,
                        help="also count the runtime built from this commit (e.g. b67ef0d) "
                             "and print the ratios")
    parser.add_argument("--build-dir", type=Path, default=None,
                        help="keep builds, models and logs here (default: a temporary folder)")
    parser.add_argument("--ipc-a72", type=float, default=1.0,
                        help="instructions per cycle of the lowbit ops' code on a Cortex-A72 "
                             "(Pi 4 estimate; llvm-mca's IPC = 1 / its cycles per instruction). "
                             "Default 1.0, a round assumption")
    parser.add_argument("--ipc-a72-rest", type=float, default=None,
                        help="the same for all other instructions (float builtins/XNNPACK, "
                             "interpreter); default: --ipc-a72")
    parser.add_argument("--ipc-a76", type=float, default=1.5,
                        help="as --ipc-a72, Cortex-A76 (Pi 5 estimate). Default 1.5")
    parser.add_argument("--ipc-a76-rest", type=float, default=None,
                        help="as --ipc-a72-rest, Cortex-A76; default: --ipc-a76")
    parser.add_argument("--no-mca-ipc", dest="mca_ipc", action="store_false",
                        help="skip the second estimate per board, whose lowbit-ops IPC is "
                             "llvm-mca's for the NEON conv's inner loop as built (default: "
                             "printed when llvm-objdump and llvm-mca are found; an upper bound "
                             "on IPC, so that estimate is a lower bound on latency)")
    parser.add_argument("--jobs", type=int, default=2, help="parallel compile jobs (default 2)")
    parser.add_argument("--int8", action="store_true",
                        help="also count QuickNet converted with int8=True (int8 + binary, "
                             "docs/int8.md) on this tree's runtime, its ratios against this "
                             "tree's float + binary")
    args = parser.parse_args(argv)

    missing = [tool for t in args.targets for tool in (TARGETS[t].qemu, "cmake", "gcc")
               if shutil.which(tool) is None]
    if missing:
        print(f"missing tools: {sorted(set(missing))} (apt install qemu-user cmake gcc "
              "g++-aarch64-linux-gnu g++-arm-linux-gnueabihf)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        build = (args.build_dir or Path(tmp)).resolve()
        build.mkdir(parents=True, exist_ok=True)
        plugin = build_plugin(build)
        model = build / "quicknet.tflite"
        log("converting QuickNet 224 (random weights)")
        int8_model = build / "quicknet_int8.tflite" if args.int8 else None
        info = convert_quicknet(model, int8_model)
        ops, distinct, tiny = split_ops(model, build / "ops")
        log(f"{len(ops)} ops, {len(distinct)} distinct")
        if int8_model is not None:
            _, int8_distinct, _ = split_ops(int8_model, build / "ops_int8")
        sources = [source_for(None, build)]
        if args.baseline_ref:
            sources.append(source_for(args.baseline_ref, build))
        qemu_version = run([TARGETS[args.targets[0]].qemu, "--version"]).stdout.split()[2]
        print(f"# QuickNet {'x'.join(map(str, INPUT_SHAPE))} batch 1, random weights, "
              f"{len(ops)} ops ({info['lowered_layers']} lowered to lowbit ops); instructions "
              f"counted under qemu-user {qemu_version}; per op: one-op models; "
              "estimates assume an IPC")
        print(fmt_line("target", "runtime", "figure", "value", "unit", "how"), flush=True)
        for name in args.targets:
            target = TARGETS[name]
            stages = [(label, stage_runtime(src, label, target, build, args.jobs))
                      for src, label in sources]
            mcas = {label: mca_ipc(src, label, target, build) if args.mca_ipc else None
                    for src, label in sources}
            results = []
            with cache_lock():
                overlay = overlay_root(target, build)
                root_library_links(target, build)
                for label, stage in stages:
                    results.append((label, measure(target, overlay, plugin, stage, model,
                                                   distinct, tiny, build, file_tag(label))))
                if int8_model is not None:  # this tree's runtime, the int8 + binary model
                    label, stage = stages[0]
                    int8_res = measure(target, overlay, plugin, stage, int8_model,
                                       int8_distinct, tiny, build, file_tag(label) + "-int8")
            # The baseline first, so that this tree's lines can quote it.
            base = base_label = None
            for label, res in reversed(results):
                report(target, label, res, distinct, info, args, base, base_label, mcas[label])
                base, base_label = res, label
            if int8_model is not None:  # quoting this tree's float + binary figures
                report(target, f"{base_label} int8", int8_res, int8_distinct, info, args, base,
                       base_label, mcas[base_label])
    return 0


if __name__ == "__main__":
    sys.exit(main())
