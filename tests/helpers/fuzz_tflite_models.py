#!/usr/bin/env python
"""Fuzzing of converted .tflite models with the lowbit custom ops (issue 13).

Starts from small real models made by the real converter (`lowbit_tf.convert`
of Keras models built from `lowbit_tf.layers`), mutates them, runs each mutant
in a child process and checks the outcome. Every custom op appears:
LowbitBconv2d (float in / bit-packed out, packed in / float out, a fused
`affine_add` epilogue with a run-time residual, dilation, strides),
LowbitBMaxPool2d between two packed convs, LowbitBgemm (packed chain, rank-3
input), LowbitBDepthwiseConv2d, LowbitMultibitConv2d (ABC and DoReFa) and
LowbitFastfood. Each seed model is used whole, and each of its custom ops is
also cut out into a one-op model (same options, constants and tensor shapes;
its run-time inputs become the model inputs).

Usage::

    # the CI test runs a short fixed-seed campaign: tests/tflite/test_fuzz_tflite_models.py
    python tests/helpers/fuzz_tflite_models.py --seconds 600 --seed 7 --save-failures DIR
    python tests/helpers/fuzz_tflite_models.py --seed 7 --only 1234      # one mutant, isolated
    python tests/helpers/fuzz_tflite_models.py --replay DIR/<case>.json  # in-process, no isolation
    python tests/helpers/fuzz_tflite_models.py --seed 7 --list 20        # describe mutants, no run

    # under AddressSanitizer + UBSan (a build of the delegate alone, anywhere):
    cmake -S custom_ops -B /tmp/asan -DLOWBIT_SANITIZE=address,undefined
    cmake --build /tmp/asan --target lowbit_tflite
    python tests/helpers/fuzz_tflite_models.py --library /tmp/asan/liblowbit_tflite.so --seconds 600

Other options: `--count N` (stop after N mutants), `--kernel NAME` (sets
LOWBIT_KERNEL in the worker: reference, portable, avx2, ...), `--library
PATH` (a liblowbit_tflite.so to test instead of the installed one; for a
sanitizer build the worker starts with its runtime and libstdc++ in
LD_PRELOAD and imports no TensorFlow, so the differential check is skipped),
`--timeout S` (per mutant; 20 s, 120 s for the slow reference kernel),
`--strict-ftz` (see the oracle), `--memory-limit-gb` (the worker's address
space, default 16). Nice it on a shared machine (`nice -n 10`); one worker
uses about one core. Mutant `i` of seed `s` depends only on `(s, i)` and the
seed models, so `--seed s --only i` reproduces it. The seed models are
converted once (a subprocess) and cached under the system temp directory,
keyed by a hash of the converter and `lowbit_tf` sources and of this file.

Mutation kinds (`kind` in the report; `KINDS` below):

- `options.*`: the custom op's FlexBuffer options: drop a key, change a value's
  type, interesting int values (0, -1, 2^31, 2^63 - 1, off by one, ...),
  swapped strings (padding, activation, output_type, epilogue,
  activation_mode, lower case, empty, long), garbage bytes, truncated or
  byte-flipped buffers, a root that is not a map, no options, another options
  format, an absent optional key with another value than its default
  (output_type "bitpacked" with an INT32 output: bit-packed variants the
  converter does not emit, such as a bit-packed depthwise conv); and neutral
  ones: unknown keys added, optional keys written with their default, the
  same values re-encoded with other FlexBuffer widths or indirect/unsigned
  ints, bytes put before the buffer (FlexBuffers are read from the end).
- `tensor.*`: shape, rank, dtype, shape_signature, is_variable and
  quantization parameters of a custom op's input or output tensor.
- `buffer.*`: constant inputs' buffers truncated, extended, detached (the
  tensor becomes a run-time one), pointed out of range or at another constant,
  contents changed (NaN, inf, -0, subnormal, huge values, random words,
  permutation entries out of range or repeated).
- `operator.*`: the op's input and output indices (-1 optional, negative, out
  of range, another tensor, its own output, a constant as output), inputs and
  outputs added or dropped, the custom code swapped for another lowbit op's or
  an unknown one, the opcode index out of range.
- `runtime.*`: the interpreter's input shapes (batch 0 and others, odd and
  large spatial or feature sizes, another rank), NaN/inf/-0/subnormal/huge or
  DoReFa grid inputs, several threads, invoking again after other inputs and
  after a resize.
- `model.bytes`: random bytes of the whole flatbuffer; `combo`: two or three
  of the model mutations above together.

The oracle. Each mutant must either raise a Python exception (at load,
resize, allocate_tensors, set_tensor or invoke) or give a correct result; a
crash (the worker dies on a signal), a hang (no answer within `--timeout`) or
a sanitizer report in the worker's stderr is always a failure. Where
correctness can be judged:

- neutral mutations (unknown option keys, default-valued optional keys,
  re-encoded options, a larger constant buffer, bytes before the options,
  another declared output shape, quantization parameters on float tensors,
  more threads): when the mutant is accepted its outputs must equal the
  original model's on the same inputs bit for bit; the first three of them
  (and more threads) must also be accepted, as the contract says
  (docs/custom_ops.md: readers ignore unknown keys, optional keys default);
- one-op models, whatever the mutation (options, shapes, dtypes, buffers,
  indices, input shapes and values): when TFLite accepts the mutant, the same
  op runs through the TF op of `lowbit_tf.ops` (`load_tf_ops()`) with the
  options, constants and inputs that the mutant gives the TFLite kernel; both
  must agree exactly (shape, dtype, bits), and the accepted options must be
  ones the contract allows (no required key missing, no value of the wrong
  type or out of range, no input missing or extra). TensorFlow runs its
  kernels with subnormals flushed to zero (FTZ/DAZ), TFLite does not; the TF
  shell therefore computes in IEEE mode (custom_ops/tf/tf_executor.h,
  IeeeSubnormals), and the CI test passes `--strict-ftz`, so any difference
  fails. Without `--strict-ftz` a difference that rerunning the TFLite model
  with FTZ/DAZ set explains exactly is only counted (`known differences`),
  which is how the fuzzer found the mode difference before it was fixed;
- batch resizes (whole and one-op models): row i of the output equals the
  output for row i alone; invoking again (other inputs, a resize and back)
  equals fresh interpreters;
- output shapes equal the shapes declared in the model (batch dimension
  following a batch resize) whenever the mutation cannot change them.

Whole models are otherwise judged by the neutral, batch, re-invocation and
shape checks only (their float builtins are not ours to compare).

A failure is saved (`--save-failures DIR`, by default a temp dir) as
`<case>.tflite` (+ `<case>.original.tflite`) and `<case>.json` (mutation, run
plan, outcome, worker stderr, reproduction commands); the report prints the
mutation and how to rerun it.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import math
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers

REPO = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve()

OP_NAMES = (
    "LowbitBconv2d",
    "LowbitBgemm",
    "LowbitBDepthwiseConv2d",
    "LowbitBMaxPool2d",
    "LowbitMultibitConv2d",
    "LowbitFastfood",
)

TT = schema.TensorType
_NP_TYPES = {
    TT.FLOAT32: np.float32,
    TT.FLOAT16: np.float16,
    TT.FLOAT64: np.float64,
    TT.INT32: np.int32,
    TT.INT64: np.int64,
    TT.INT16: np.int16,
    TT.INT8: np.int8,
    TT.UINT8: np.uint8,
    TT.UINT16: np.uint16,
    TT.UINT32: np.uint32,
    TT.UINT64: np.uint64,
    TT.BOOL: np.bool_,
}
_TYPE_NAMES = {v: k for k, v in vars(TT).items() if not k.startswith("_")}

# Input elements a run-time resize may ask for (4 MiB of float32: large
# dimensions, and the reference kernel still well within the timeout).
MAX_RESIZE_ELEMENTS = 1 << 20
# Elements of a non-constant tensor a shape mutation may declare, unless the
# shape cannot be allocated at all (then it is an overflow test).
MAX_DECLARED_ELEMENTS = 1 << 22


def _load_specs():
    """converter/lowbit_converter/custom_op_specs.py, loaded by path so that
    the parent process never imports the converter package (TensorFlow)."""
    path = REPO / "converter" / "lowbit_converter" / "custom_op_specs.py"
    spec = importlib.util.spec_from_file_location("_lowbit_fuzz_custom_op_specs", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module.CUSTOM_OPS


CUSTOM_OPS = _load_specs()


# ==========================================================================
# Seed models: small Keras models through the real converter
# ==========================================================================


def _seed_keras_models() -> dict:
    """name -> built Keras model (runs in the builder subprocess)."""
    from keras_helpers import randomize_batch_norms  # tests/, beside this file

    from lowbit_tf import layers, quantizers
    from lowbit_tf._keras import keras

    binary = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")
    models = {}
    keras.utils.set_random_seed(13)

    # Packed chain: bconv (float in, bit-packed out) -> LowbitBMaxPool2d ->
    # bconv (packed in, float out, ReLU) -> float head.
    models["chain"] = keras.Sequential([
        keras.Input((9, 10, 5)),
        layers.QuantConv2D(40, 3, padding="same", pad_values=1.0, use_bias=False, **binary),
        keras.layers.BatchNormalization(),
        keras.layers.MaxPooling2D(2),
        layers.QuantConv2D(35, 3, padding="same", **binary),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        keras.layers.Flatten(),
        keras.layers.Dense(10),
    ])
    # QuickNet's block: conv -> ReLU -> BatchNorm -> Add(shortcut), one op
    # with epilogue "affine_add" and the residual as a run-time input.
    inputs = keras.Input((6, 6, 16))
    h = layers.QuantConv2D(16, 3, padding="same", pad_values=1.0, use_bias=False, **binary)(inputs)
    h = keras.layers.ReLU()(h)
    h = keras.layers.BatchNormalization()(h)
    models["residual"] = keras.Model(inputs, keras.layers.Add()([h, inputs]))
    # VALID with dilation and channel tails, then a strided conv on packed bits.
    models["conv_valid"] = keras.Sequential([
        keras.Input((8, 9, 70)),
        layers.QuantConv2D(33, (3, 2), padding="valid", dilation_rate=(2, 1), **binary),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(9, 2, strides=(2, 1), padding="same", **binary),
    ])
    # Dense on rows of a rank-3 input: bgemm bit-packed out, then packed in.
    models["dense"] = keras.Sequential([
        keras.Input((3, 37)),
        layers.QuantDense(33, **binary),
        keras.layers.BatchNormalization(),
        layers.QuantDense(10, activation="relu", **binary),
    ])
    models["depthwise"] = keras.Sequential([
        keras.Input((7, 7, 6)),
        layers.QuantDepthwiseConv2D(3, padding="same", pad_values=1.0, depth_multiplier=2,
                                    input_quantizer="ste_sign", depthwise_quantizer="ste_sign"),
        keras.layers.BatchNormalization(),
        keras.layers.ReLU(),
        layers.QuantDepthwiseConv2D(2, strides=2, input_quantizer="ste_sign",
                                    depthwise_quantizer="ste_sign"),
    ])
    dorefa = dict(input_quantizer=quantizers.DoReFa(2, "activations"),
                  kernel_quantizer=quantizers.DoReFa(2, "weights"))
    models["multibit"] = keras.Sequential([
        keras.Input((8, 8, 6)),
        layers.ABCConv2D(8, 3, padding="same", num_weight_bases=2, num_activation_bases=2),
        keras.layers.BatchNormalization(),
        layers.QuantConv2D(6, 3, strides=2, padding="same", **dorefa),
    ])
    models["fastfood"] = keras.Sequential([
        keras.Input((12,)),
        layers.FastfoodDense(24, activation="relu", seed=1),
        layers.FastfoodDense(10, use_bias=False, block_size=32, seed=2),
    ])

    rng = np.random.default_rng(13)
    for model in models.values():
        randomize_batch_norms(model, rng, signed_gamma=True)
    return models


def _build_seeds_main(directory: str) -> None:
    """`--build-seeds DIR`: converts the seed models into DIR/<name>.tflite."""
    import warnings

    warnings.filterwarnings("ignore")
    import lowbit_tf

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    for name, model in _seed_keras_models().items():
        (out / f"{name}.tflite").write_bytes(lowbit_tf.convert(model))
    print("built", len(list(out.glob("*.tflite"))), "seed models")


def _sources_hash() -> str:
    h = hashlib.sha256()
    files = sorted((REPO / "converter" / "lowbit_converter").glob("*.py"))
    files += sorted((REPO / "lowbit_tf").glob("*.py")) + [THIS]
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def seed_cache_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"lowbit-fuzz-seeds-{_sources_hash()}"


def build_seed_models(cache: Path | None = None, log: Callable[[str], None] = print) -> dict:
    """name -> .tflite bytes of the converted seed models, converted in a
    subprocess unless the cache directory already holds them."""
    cache = cache or seed_cache_dir()
    names = list(_SEED_NAMES)
    if not all((cache / f"{n}.tflite").is_file() for n in names):
        staging = Path(tempfile.mkdtemp(prefix="lowbit-fuzz-build-"))
        start = time.monotonic()
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run(
            [sys.executable, str(THIS), "--build-seeds", str(staging)],
            capture_output=True, text=True, timeout=600, env=env,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"building the seed models failed:\n{proc.stderr[-4000:]}")
        cache.mkdir(parents=True, exist_ok=True)
        for n in names:  # each file renamed into place whole
            os.replace(staging / f"{n}.tflite", cache / f"{n}.tflite")
        log(f"seed models converted in {time.monotonic() - start:.1f} s into {cache}")
    return {n: (cache / f"{n}.tflite").read_bytes() for n in names}


_SEED_NAMES = ("chain", "residual", "conv_valid", "dense", "depthwise", "multibit", "fastfood")


# ==========================================================================
# Flatbuffer helpers
# ==========================================================================


def parse_model(data: bytes) -> Any:
    return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)


def pack_model(model: Any) -> bytes:
    builder = flatbuffers.Builder(4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def op_name(model: Any, op: Any) -> str:
    codes = model.operatorCodes or []
    if not 0 <= op.opcodeIndex < len(codes):
        return "?"
    code = codes[op.opcodeIndex]
    if max(code.builtinCode, code.deprecatedBuiltinCode) != schema.BuiltinOperator.CUSTOM:
        return f"builtin{code.builtinCode}"
    # the runtime reads the custom code as a C string
    return (code.customCode or b"").split(b"\0")[0].decode("utf-8", "replace")


def options_bytes(op: Any) -> bytes:
    return b"" if op.customOptions is None else bytes(bytearray(op.customOptions))


def set_options(op: Any, data: bytes | None) -> None:
    op.customOptions = None if data is None else np.frombuffer(data, np.uint8).copy()


def buffer_data(model: Any, tensor: Any) -> np.ndarray | None:
    if not 0 < tensor.buffer < len(model.buffers):
        return None
    data = model.buffers[tensor.buffer].data
    return None if data is None or len(data) == 0 else np.asarray(data, np.uint8)


def _ints(values: Any) -> list[int]:
    return [] if values is None else [int(v) for v in values]


def extract_op(model: Any, op_index: int) -> bytes:
    """A one-op model: the op, its constants and tensors; its other inputs
    become the model's inputs, its outputs the model's outputs."""
    sub = model.subgraphs[0]
    op = sub.operators[op_index]
    new = schema.ModelT()
    new.version = 3
    new.description = b"lowbit fuzz: one op of a converted model"
    new.buffers = [schema.BufferT()]
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = op_name(model, op).encode()
    code.version = 1
    new.operatorCodes = [code]
    tensors, remap, graph_inputs = [], {}, []

    def add(index: int) -> int:
        if index < 0:
            return index
        if index not in remap:
            src = sub.tensors[index]
            t = schema.TensorT()
            t.shape = _ints(src.shape)
            t.shapeSignature = None if src.shapeSignature is None else _ints(src.shapeSignature)
            t.type = src.type
            t.name = src.name
            data = buffer_data(model, src)
            if data is not None:
                buf = schema.BufferT()
                buf.data = data.copy()
                new.buffers.append(buf)
                t.buffer = len(new.buffers) - 1
            tensors.append(t)
            remap[index] = len(tensors) - 1
        return remap[index]

    new_op = schema.OperatorT()
    new_op.opcodeIndex = 0
    new_op.inputs = [add(i) for i in _ints(op.inputs)]
    new_op.outputs = [add(i) for i in _ints(op.outputs)]
    new_op.customOptions = None if op.customOptions is None else np.asarray(
        op.customOptions, np.uint8).copy()
    new_op.customOptionsFormat = op.customOptionsFormat
    for i in new_op.inputs:
        # run-time inputs become model inputs; an empty tensor without data
        # (LowbitMultibitConv2d's shifts [0]) stays what it is in the model
        if (i >= 0 and tensors[i].buffer == 0 and i not in graph_inputs
                and _elements(tensors[i].shape) > 0):
            graph_inputs.append(i)
    graph = schema.SubGraphT()
    graph.tensors = tensors
    graph.operators = [new_op]
    graph.inputs = graph_inputs
    graph.outputs = list(new_op.outputs)
    graph.name = b"main"
    new.subgraphs = [graph]
    return pack_model(new)


@dataclass
class SeedModel:
    """One starting model, whole ("chain") or one op of it ("chain/1:LowbitBMaxPool2d")."""

    name: str
    data: bytes
    single: bool
    custom_ops: list[tuple[int, str]]
    input_shapes: list[list[int]]
    input_signatures: list[list[int] | None]
    output_shapes: list[list[int]]
    output_signatures: list[list[int] | None]


def describe_seed(name: str, data: bytes, single: bool) -> SeedModel:
    model = parse_model(data)
    sub = model.subgraphs[0]
    ops = [(i, op_name(model, op)) for i, op in enumerate(sub.operators)]

    def sig(t):
        return None if t.shapeSignature is None else _ints(t.shapeSignature)

    return SeedModel(
        name=name,
        data=data,
        single=single,
        custom_ops=[(i, n) for i, n in ops if n in OP_NAMES],
        input_shapes=[_ints(sub.tensors[i].shape) for i in _ints(sub.inputs)],
        input_signatures=[sig(sub.tensors[i]) for i in _ints(sub.inputs)],
        output_shapes=[_ints(sub.tensors[i].shape) for i in _ints(sub.outputs)],
        output_signatures=[sig(sub.tensors[i]) for i in _ints(sub.outputs)],
    )


def seed_set(converted: dict) -> list[SeedModel]:
    """The whole converted models, then one one-op model per custom op."""
    seeds = [describe_seed(n, data, False) for n, data in converted.items()]
    for whole in list(seeds):
        model = parse_model(whole.data)
        for index, name in whole.custom_ops:
            seeds.append(
                describe_seed(f"{whole.name}/{index}:{name}", extract_op(model, index), True)
            )
    return seeds


# ==========================================================================
# FlexBuffer options: decoding and typed re-encoding
# ==========================================================================


def decode_options(data: bytes) -> dict | None:
    try:
        value = flexbuffers.Loads(data)
    except Exception:  # noqa: BLE001 - the reader raises assorted errors on bad bytes
        return None
    return value if isinstance(value, dict) else None


def _put(b: flexbuffers.Builder, key: str | None, how: str, value: Any) -> None:
    """Adds one value to the builder (with `key` inside a map)."""
    args = () if key is None else (key,)
    if how.startswith("int"):
        b.Int(*args, value, int(how[3:] or 0))
    elif how.startswith("uint"):
        b.UInt(*args, value, int(how[4:] or 0))
    elif how.startswith("iint"):
        b.IndirectInt(*args, value, int(how[4:] or 0))
    elif how.startswith("iuint"):
        b.IndirectUInt(*args, value, int(how[5:] or 0))
    elif how.startswith("float"):
        b.Float(*args, value, int(how[5:] or 0))
    elif how == "bool":
        b.Bool(*args, value)
    elif how == "str":
        b.String(*args, value)
    elif how == "blob":
        b.Blob(*args, value)
    elif how == "null":
        b.Null(key)
    elif how == "any_vector":
        with b.Vector(key):
            for v in value:
                _put(b, None, _how(v), v)
    elif how == "any_map":
        with b.Map(key):
            for k, v in value.items():
                _put(b, k, _how(v), v)
    elif how == "vector":
        with b.Vector(key):
            for v in value:
                b.Int(v)
    elif how == "map":
        with b.Map(key):
            for k, v in value.items():
                b.Int(k, v)
    else:
        raise ValueError(how)


def encode_options(entries: list[tuple[str, str, Any]]) -> bytes:
    """A FlexBuffer map from (key, encoding, value) entries."""
    b = flexbuffers.Builder()
    with b.Map():
        for key, how, value in entries:
            _put(b, key, how, value)
    return bytes(b.Finish())


def encode_root(how: str, value: Any) -> bytes:
    b = flexbuffers.Builder()
    _put(b, None, how, value)
    return bytes(b.Finish())


def _how(value: Any) -> str:
    """The plain encoding of a decoded FlexBuffer value."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int" if value < (1 << 63) else "uint"
    return {float: "float8", str: "str", bytes: "blob", list: "any_vector",
            dict: "any_map"}.get(type(value), "null")


def plain_entries(options: dict) -> list[tuple[str, str, Any]]:
    return [(k, _how(v), v) for k, v in options.items()]


# ==========================================================================
# Mutants
# ==========================================================================


@dataclass
class Mutant:
    index: int
    seed: str
    kind: str
    detail: dict
    model: bytes
    original: bytes
    plan: dict
    # "neutral": must be accepted and equal the original; "neutral_if_accepted":
    # equal the original when accepted; "any": no result oracle beyond the
    # differential one and the shape check.
    oracle: str = "any"
    differential: bool = False

    def header(self) -> dict:
        return {
            "index": self.index,
            "seed": self.seed,
            "kind": self.kind,
            "oracle": self.oracle,
            "differential": self.differential,
            "plan": self.plan,
        }

    def describe(self) -> str:
        return (f"#{self.index} {self.kind} on {self.seed}: {json.dumps(self.detail)} "
                f"(oracle {self.oracle}{', differential' if self.differential else ''}; "
                f"plan {json.dumps(self.plan)})")


class Skip(Exception):
    """The drawn mutation does not apply to this model/op; draw another."""


@dataclass
class Ctx:
    """What a mutation function works on."""

    seed: SeedModel
    model: Any
    op_index: int
    rng: np.random.Generator
    plan: dict
    oracle: str = "any"
    shapes_kept: bool = False  # the mutation cannot change the outputs' shapes
    structural: bool = True  # the mutant is a well-formed flatbuffer (differential ok)

    @property
    def sub(self) -> Any:
        return self.model.subgraphs[0]

    @property
    def op(self) -> Any:
        return self.sub.operators[self.op_index]

    @property
    def name(self) -> str:
        return op_name(self.model, self.op)

    def choice(self, seq: Any) -> Any:
        seq = list(seq)
        if not seq:
            raise Skip("nothing to choose from")
        return seq[int(self.rng.integers(len(seq)))]

    def options(self) -> dict:
        options = decode_options(options_bytes(self.op))
        if options is None:
            raise Skip("options do not decode")
        return options


INTERESTING_INTS = [
    0, 1, 2, 3, -1, -2, 5, 31, 32, 33, 63, 64, 65, 255, 256, 1 << 15, 1 << 16, (1 << 24) - 1,
    1 << 24, (1 << 24) + 1, 1 << 30, (1 << 31) - 1, 1 << 31, (1 << 32) - 1, 1 << 32, 1 << 40,
    1 << 62, (1 << 63) - 1, -(1 << 31), -(1 << 63),
]
STRINGS = [
    "SAME", "VALID", "NONE", "RELU", "float", "bitpacked", "none", "affine", "add",
    "affine_add", "sign", "abc", "dorefa", "same", "valid", "relu", "FLOAT", "Bitpacked", "",
    " ", "RELU6", "TANH", "EXPLICIT", "x" * 1000, "SAME\x00VALID", "VALID ", "\u00e9t\u00e9",
]
FLOAT_SPECIALS = np.array(
    [np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -1e-45, 1e-40, 3e38, -3e38, 1.0, -1.0, 0.5],
    np.float32,
)
INT_SPECIALS = np.array([0, -1, 1, 2**31 - 1, -(2**31), 31, 32, 33, 64, 1 << 24, -7], np.int64)


def _interesting_int(ctx: Ctx, current: int | None) -> int:
    values = list(INTERESTING_INTS)
    if isinstance(current, int) and not isinstance(current, bool):
        values += [current - 1, current + 1, current * 2, current * 32, -current]
    return int(ctx.choice(values))


# --- options --------------------------------------------------------------


def m_options_drop_key(ctx: Ctx) -> dict:
    options = ctx.options()
    key = ctx.choice(sorted(options))
    del options[key]
    set_options(ctx.op, encode_options(plain_entries(options)))
    return {"op": ctx.name, "dropped": key}


def m_options_int_value(ctx: Ctx) -> dict:
    options = ctx.options()
    key = ctx.choice(sorted(k for k, v in options.items() if isinstance(v, int)))
    old = options[key]
    entries = [e for e in plain_entries(options) if e[0] != key]
    if ctx.rng.random() < 0.1:
        value, how = int(ctx.choice([(1 << 64) - 1, 1 << 63, (1 << 63) + 1])), "uint"
    else:
        value, how = _interesting_int(ctx, old), "int"
    set_options(ctx.op, encode_options([*entries, (key, how, value)]))
    return {"op": ctx.name, "key": key, "old": old, "new": value, "encoding": how}


def m_options_string_value(ctx: Ctx) -> dict:
    options = ctx.options()
    key = ctx.choice(sorted(k for k, v in options.items() if isinstance(v, str)))
    old = options[key]
    value = str(ctx.choice([*STRINGS, old.lower(), old.upper(), old + old, old[:-1]]))
    if value == old:
        raise Skip("same string")
    options[key] = value
    set_options(ctx.op, encode_options(plain_entries(options)))
    return {"op": ctx.name, "key": key, "old": old, "new": value[:60]}


def m_options_type_change(ctx: Ctx) -> dict:
    options = ctx.options()
    key = ctx.choice(sorted(options))
    old = options[key]
    if isinstance(old, str):
        choices = [("int", 1), ("int", 0), ("float8", 0.0), ("bool", True), ("vector", [1, 2]),
                   ("null", None), ("blob", old.encode()), ("map", {"a": 1}), ("uint", 2)]
    else:
        choices = [("str", str(old)), ("float8", float(old)), ("float4", 1.5),
                   ("float8", math.nan), ("float8", 1e300), ("bool", bool(old % 2)),
                   ("bool", True), ("vector", [old]), ("map", {"v": 1}), ("null", None),
                   ("blob", b"\x01\x02\x03"), ("iint8", old), ("float8", -0.0)]
    how, value = ctx.choice(choices)
    entries = [e for e in plain_entries(options) if e[0] != key] + [(key, how, value)]
    set_options(ctx.op, encode_options(entries))
    shown = value.decode("latin-1") if isinstance(value, bytes) else value
    return {"op": ctx.name, "key": key, "old": old, "new": repr(shown), "encoding": how}


def m_options_garbage(ctx: Ctx) -> dict:
    n = int(ctx.rng.integers(0, 160))
    data = ctx.rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    if n >= 2 and ctx.rng.random() < 0.5:  # a plausible root: map type, a byte width
        data = data[:-2] + bytes([(9 << 2) | int(ctx.rng.integers(0, 4)),
                                  1 << int(ctx.rng.integers(0, 4))])
    set_options(ctx.op, data)
    return {"op": ctx.name, "garbage": data.hex()}


def m_options_truncate(ctx: Ctx) -> dict:
    data = options_bytes(ctx.op)
    k = int(ctx.rng.integers(0, max(len(data), 1)))
    end = bool(ctx.rng.random() < 0.5)
    set_options(ctx.op, data[:k] if end else data[k:])
    return {"op": ctx.name, "kept": f"[:{k}]" if end else f"[{k}:]", "of": len(data)}


def m_options_byte_flip(ctx: Ctx) -> dict:
    data = bytearray(options_bytes(ctx.op))
    if not data:
        raise Skip("no options")
    flips = []
    for _ in range(int(ctx.rng.integers(1, 5))):
        pos = int(ctx.rng.integers(len(data)))
        data[pos] = int(ctx.rng.integers(0, 256))
        flips.append([pos, data[pos]])
    set_options(ctx.op, bytes(data))
    return {"op": ctx.name, "flips": flips}


def m_options_not_a_map(ctx: Ctx) -> dict:
    how, value = ctx.choice([("vector", [1, 2, 3]), ("int", 7), ("str", "SAME"),
                             ("null", None), ("blob", b"LowbitBconv2d"), ("float8", 1.0),
                             ("bool", False)])
    set_options(ctx.op, encode_root(how, value))
    return {"op": ctx.name, "root": how}


def m_options_empty(ctx: Ctx) -> dict:
    none = bool(ctx.rng.random() < 0.5)
    set_options(ctx.op, None if none else b"")
    return {"op": ctx.name, "options": "absent" if none else "empty"}


def m_options_format(ctx: Ctx) -> dict:
    ctx.oracle, ctx.shapes_kept = "neutral_if_accepted", True  # the same FlexBuffer bytes
    value = int(ctx.choice([1, 2, 127, -1]))
    ctx.op.customOptionsFormat = value
    return {"op": ctx.name, "custom_options_format": value}


UNKNOWN_KEYS = ["T", "Tout", "extra", "device", "zz_future", "a", "num_epilogue_inputs",
                "depth_multiplier", "channels", "units", "filter_h", "activation_bits",
                "epilogue2", "Padding", "OUTPUT_TYPE"]


def m_options_unknown_key(ctx: Ctx) -> dict:
    ctx.oracle, ctx.shapes_kept = "neutral", True
    options = ctx.options()
    known = set(CUSTOM_OPS[ctx.name].options) if ctx.name in CUSTOM_OPS else set()
    entries = plain_entries(options)
    added = []
    for _ in range(int(ctx.rng.integers(1, 4))):
        key = ctx.choice([k for k in UNKNOWN_KEYS if k not in known and k not in options
                          and k not in [a[0] for a in added]])
        how, value = ctx.choice([("int", 1), ("str", "x"), ("vector", [1, 2]), ("float8", 2.5),
                                 ("bool", True), ("null", None), ("int", -(1 << 63)),
                                 ("str", "bitpacked"), ("map", {"k": 3}), ("blob", b"\0\1")])
        added.append((key, how, value))
    set_options(ctx.op, encode_options(entries + added))
    return {"op": ctx.name, "added": [[k, h] for k, h, _ in added]}


def m_options_default_key(ctx: Ctx) -> dict:
    ctx.oracle, ctx.shapes_kept = "neutral", True
    options = ctx.options()
    spec = CUSTOM_OPS.get(ctx.name)
    if spec is None:
        raise Skip("not a lowbit op")
    missing = [k for k, o in spec.options.items() if o.default is not None and k not in options]
    key = ctx.choice(missing)
    options[key] = spec.options[key].default
    set_options(ctx.op, encode_options(plain_entries(options)))
    return {"op": ctx.name, "added": [key, options[key]]}


def m_options_add_key(ctx: Ctx) -> dict:
    """An optional key the op lacks, with a value other than its default:
    output_type "bitpacked" (the output tensor then INT32 with packed words,
    so that the op stays valid: a bit-packed depthwise conv, which the
    converter does not emit), or an epilogue (whose inputs are missing)."""
    options = ctx.options()
    spec = CUSTOM_OPS.get(ctx.name)
    if spec is None:
        raise Skip("not a lowbit op")
    key, value = ctx.choice([(k, c) for k, o in spec.options.items()
                             if o.default is not None and k not in options
                             for c in o.choices if c != o.default])
    options[key] = value
    set_options(ctx.op, encode_options(plain_entries(options)))
    detail = {"op": ctx.name, "added": [key, value]}
    if (key, value) == ("output_type", "bitpacked") and ctx.rng.random() < 0.8:
        for index in _ints(ctx.op.outputs):
            t = ctx.sub.tensors[index]
            t.type = TT.INT32
            shape = _ints(t.shape)
            if shape:
                t.shape = [*shape[:-1], -(-shape[-1] // 32)]
                if t.shapeSignature is not None:
                    t.shapeSignature = [*_ints(t.shapeSignature)[:-1], t.shape[-1]]
        detail["output"] = "INT32, packed words"
    return detail


def m_options_reencode(ctx: Ctx) -> dict:
    ctx.oracle, ctx.shapes_kept = "neutral", True
    options = ctx.options()
    entries, used = [], {}
    for key, value in options.items():
        if not isinstance(value, int) or isinstance(value, bool) or value >= (1 << 63):
            entries.append((key, _how(value), value))
            continue
        widths = [w for w in (1, 2, 4, 8) if -(1 << (8 * w - 1)) <= value < (1 << (8 * w - 1))]
        hows = [f"int{w}" for w in widths] + [f"iint{w}" for w in widths]
        if value >= 0:
            hows += [f"uint{w}" for w in (1, 2, 4, 8) if value < (1 << (8 * w))]
            hows += [f"iuint{w}" for w in (1, 2, 4, 8) if value < (1 << (8 * w))]
        how = ctx.choice(hows)
        entries.append((key, how, value))
        used[key] = how
    set_options(ctx.op, encode_options(entries))
    return {"op": ctx.name, "encodings": used}


def m_options_prefix(ctx: Ctx) -> dict:
    ctx.oracle, ctx.shapes_kept = "neutral_if_accepted", True
    data = options_bytes(ctx.op)
    n = int(ctx.rng.integers(1, 40))
    prefix = ctx.rng.integers(0, 256, n, dtype=np.uint8).tobytes()
    set_options(ctx.op, prefix + data)
    return {"op": ctx.name, "prefix": prefix.hex()}


# --- tensors --------------------------------------------------------------


def _operand(ctx: Ctx, outputs: bool | None = None) -> tuple[str, int, int]:
    """(role, position, tensor index) of one of the op's tensors."""
    choices, n = [], len(ctx.sub.tensors)
    if outputs is not True:
        choices += [("input", j, t) for j, t in enumerate(_ints(ctx.op.inputs)) if 0 <= t < n]
    if outputs is not False:
        choices += [("output", j, t) for j, t in enumerate(_ints(ctx.op.outputs)) if 0 <= t < n]
    return ctx.choice(choices)


def _elements(shape: list[int]) -> int:
    n = 1
    for d in shape:
        n *= max(int(d), 0)
    return n


def _is_constant(ctx: Ctx, index: int) -> bool:
    return 0 <= index < len(ctx.sub.tensors) and buffer_data(
        ctx.model, ctx.sub.tensors[index]) is not None


def _check_declared(ctx: Ctx, index: int, shape: list[int]) -> None:
    """Keeps declared shapes of run-time tensors within memory sense: small, or
    too large to allocate at all."""
    if _is_constant(ctx, index):
        return
    n = _elements(shape) * 8
    if MAX_DECLARED_ELEMENTS * 8 < n < (1 << 44):
        raise Skip(f"declared shape {shape} would allocate {n} bytes")


def _set_shape(ctx: Ctx, index: int, shape: list[int], signature: bool) -> None:
    _check_declared(ctx, index, shape)
    t = ctx.sub.tensors[index]
    old = None if t.shapeSignature is None else _ints(t.shapeSignature)
    t.shape = shape
    if old is not None and (signature or len(old) != len(shape)):
        # the signature follows the new shape, a dynamic batch staying dynamic
        t.shapeSignature = [-1 if i == 0 and old and old[0] == -1 else d
                            for i, d in enumerate(shape)]


def m_tensor_shape(ctx: Ctx) -> dict:
    role, pos, index = _operand(ctx)
    t = ctx.sub.tensors[index]
    shape = _ints(t.shape)
    if not shape:
        raise Skip("scalar")
    axis = int(ctx.rng.integers(len(shape)))
    old = shape[axis]
    shape[axis] = int(ctx.choice([0, 1, old - 1, old + 1, 2 * old, -1, -5, 3, 33,
                                  (1 << 31) - 1, 1 << 20, 1 << 30]))
    _set_shape(ctx, index, shape, bool(ctx.rng.random() < 0.5))
    if role == "output":
        ctx.oracle = "neutral_if_accepted"  # kernels set their outputs' shapes
    return {"op": ctx.name, "tensor": [role, pos], "axis": axis, "old": old, "new": shape[axis]}


def m_tensor_rank(ctx: Ctx) -> dict:
    role, pos, index = _operand(ctx)
    shape = _ints(ctx.sub.tensors[index].shape)
    how = ctx.choice(["lead1", "trail1", "drop_first", "drop_last", "scalar", "rank6",
                      "lead2"])
    new = {
        "lead1": [1, *shape],
        "lead2": [2, *shape],
        "trail1": [*shape, 1],
        "drop_first": shape[1:],
        "drop_last": shape[:-1],
        "scalar": [],
        "rank6": [1] * max(6 - len(shape), 1) + shape,
    }[how]
    _set_shape(ctx, index, new, bool(ctx.rng.random() < 0.5))
    if role == "output":
        ctx.oracle = "neutral_if_accepted"
    return {"op": ctx.name, "tensor": [role, pos], "old": shape, "new": new}


DTYPES = [TT.FLOAT32, TT.INT32, TT.INT8, TT.UINT8, TT.INT64, TT.FLOAT16, TT.BOOL, TT.INT16,
          TT.FLOAT64, TT.UINT32, TT.STRING, TT.COMPLEX64]


def m_tensor_dtype(ctx: Ctx) -> dict:
    role, pos, index = _operand(ctx)
    t = ctx.sub.tensors[index]
    old = t.type
    t.type = ctx.choice([d for d in DTYPES if d != old])
    return {"op": ctx.name, "tensor": [role, pos], "old": _TYPE_NAMES.get(old, old),
            "new": _TYPE_NAMES.get(t.type, t.type)}


def m_tensor_signature(ctx: Ctx) -> dict:
    role, pos, index = _operand(ctx)
    t = ctx.sub.tensors[index]
    shape = _ints(t.shape)
    how = ctx.choice(["drop", "all_dynamic", "wrong_rank", "static"])
    t.shapeSignature = {
        "drop": None,
        "all_dynamic": [-1] * len(shape),
        "wrong_rank": [-1, *shape],
        "static": shape,
    }[how]
    if role == "output":
        ctx.oracle = "neutral_if_accepted"
    return {"op": ctx.name, "tensor": [role, pos], "signature": how}


def m_tensor_variable(ctx: Ctx) -> dict:
    role, pos, index = _operand(ctx)
    ctx.sub.tensors[index].isVariable = True
    return {"op": ctx.name, "tensor": [role, pos], "is_variable": True}


def m_tensor_quantization(ctx: Ctx) -> dict:
    role, pos, index = _operand(ctx)
    t = ctx.sub.tensors[index]
    q = schema.QuantizationParametersT()
    n = int(ctx.choice([1, 2, 3]))
    q.scale = [float(ctx.choice([0.5, 1e-3, 0.0, -1.0, math.inf]))] * n
    q.zeroPoint = [int(ctx.choice([0, 3, -128]))] * n
    q.quantizedDimension = int(ctx.choice([0, 1, 7]))
    t.quantization = q
    if t.type == TT.FLOAT32 or t.type == TT.INT32:
        ctx.oracle, ctx.shapes_kept = "neutral_if_accepted", True
    return {"op": ctx.name, "tensor": [role, pos], "scales": n,
            "quantized_dimension": q.quantizedDimension}


# --- constant buffers -----------------------------------------------------


def _constant_input(ctx: Ctx) -> tuple[int, int, Any]:
    choices = [(j, t) for j, t in enumerate(_ints(ctx.op.inputs))
               if t >= 0 and _is_constant(ctx, t)]
    j, t = ctx.choice(choices)
    return j, t, ctx.sub.tensors[t]


def _new_buffer(ctx: Ctx, tensor: Any, data: np.ndarray) -> None:
    """Gives `tensor` a buffer of its own holding `data` (bytes)."""
    buf = schema.BufferT()
    buf.data = np.asarray(data, np.uint8).copy()
    ctx.model.buffers.append(buf)
    tensor.buffer = len(ctx.model.buffers) - 1


def m_buffer_truncate(ctx: Ctx) -> dict:
    j, _, t = _constant_input(ctx)
    data = buffer_data(ctx.model, t)
    n = len(data)
    keep = int(ctx.choice([0, 1, n // 2, n - 1, n - 4, max(n - 32, 0)]))
    keep = min(max(keep, 0), n - 1)
    if keep == 0:
        ctx.model.buffers.append(schema.BufferT())  # no data: a run-time tensor
        t.buffer = len(ctx.model.buffers) - 1
    else:
        _new_buffer(ctx, t, data[:keep])
    return {"op": ctx.name, "input": j, "bytes": [n, keep]}


def m_buffer_extend(ctx: Ctx) -> dict:
    ctx.oracle, ctx.shapes_kept = "neutral_if_accepted", True
    j, _, t = _constant_input(ctx)
    data = buffer_data(ctx.model, t)
    extra = ctx.rng.integers(0, 256, int(ctx.choice([1, 3, 4, 64, 1000])), dtype=np.uint8)
    _new_buffer(ctx, t, np.concatenate([data, extra]))
    return {"op": ctx.name, "input": j, "extra_bytes": len(extra)}


def m_buffer_contents(ctx: Ctx) -> dict:
    ctx.shapes_kept = True
    j, _, t = _constant_input(ctx)
    data = buffer_data(ctx.model, t).copy()
    how = ctx.choice(["random_bytes", "specials", "zeros", "ones_bits"])
    if how == "random_bytes":
        data[:] = ctx.rng.integers(0, 256, len(data), dtype=np.uint8)
    elif how == "zeros":
        data[:] = 0
    elif how == "ones_bits":
        data[:] = 255
    elif t.type == TT.FLOAT32 and len(data) >= 4:
        values = data[: len(data) // 4 * 4].view(np.float32)
        hits = ctx.rng.random(len(values)) < ctx.choice([0.05, 0.3, 1.0])
        values[hits] = ctx.rng.choice(FLOAT_SPECIALS, int(hits.sum()))
    elif len(data) >= 4:
        values = data[: len(data) // 4 * 4].view(np.int32)
        hits = ctx.rng.random(len(values)) < ctx.choice([0.05, 0.3, 1.0])
        specials = np.concatenate([INT_SPECIALS, [len(values), len(values) - 1]])
        values[hits] = ctx.rng.choice(specials, int(hits.sum())).astype(np.int32)
    else:
        how = "random_bytes"
        data[:] = ctx.rng.integers(0, 256, len(data), dtype=np.uint8)
    _new_buffer(ctx, t, data)
    return {"op": ctx.name, "input": j, "contents": how, "dtype": _TYPE_NAMES.get(t.type)}


def m_buffer_detach(ctx: Ctx) -> dict:
    j, _, t = _constant_input(ctx)
    t.buffer = 0
    return {"op": ctx.name, "input": j, "buffer": 0}


def m_buffer_bad_index(ctx: Ctx) -> dict:
    j, _, t = _constant_input(ctx)
    n = len(ctx.model.buffers)
    t.buffer = int(ctx.choice([n, n + 1, n + 1000, (1 << 31) - 1, (1 << 32) - 1]))
    return {"op": ctx.name, "input": j, "buffer": t.buffer, "buffers": n}


def m_buffer_share(ctx: Ctx) -> dict:
    j, _, t = _constant_input(ctx)
    others = sorted({u.buffer for u in ctx.sub.tensors
                     if buffer_data(ctx.model, u) is not None and u.buffer != t.buffer})
    old = t.buffer
    t.buffer = int(ctx.choice(others))
    return {"op": ctx.name, "input": j, "buffer": [old, t.buffer]}


# --- operator indices, codes ----------------------------------------------


def _other_tensor(ctx: Ctx) -> tuple[str, int]:
    n = len(ctx.sub.tensors)
    op = ctx.op
    ins, outs = _ints(op.inputs), _ints(op.outputs)
    constants = [i for i in range(n) if _is_constant(ctx, i)]
    choices = [("optional", -1), ("negative", -2), ("negative", -100), ("out_of_range", n),
               ("out_of_range", n + 7), ("out_of_range", (1 << 31) - 1),
               ("random", int(ctx.rng.integers(n)))]
    if outs and outs[0] >= 0:
        choices.append(("own_output", outs[0]))
    if ins and ins[0] >= 0:
        choices.append(("own_input", ins[0]))
    if constants:
        choices.append(("constant", ctx.choice(constants)))
    choices += [("graph_input", i) for i in _ints(ctx.sub.inputs)]
    return ctx.choice(choices)


def m_operator_input(ctx: Ctx) -> dict:
    ins = _ints(ctx.op.inputs)
    j = int(ctx.rng.integers(len(ins)))
    what, new = _other_tensor(ctx)
    if new == ins[j]:
        raise Skip("same index")
    old = ins[j]
    ins[j] = new
    ctx.op.inputs = ins
    return {"op": ctx.name, "input": j, "old": old, "new": new, "what": what}


def m_operator_drop_input(ctx: Ctx) -> dict:
    ins = _ints(ctx.op.inputs)
    j = int(ctx.rng.integers(len(ins)))
    del ins[j]
    ctx.op.inputs = ins
    return {"op": ctx.name, "dropped_input": j, "left": len(ins)}


def m_operator_extra_input(ctx: Ctx) -> dict:
    what, new = _other_tensor(ctx)
    ctx.op.inputs = [*_ints(ctx.op.inputs), new]
    return {"op": ctx.name, "appended": new, "what": what}


def m_operator_output(ctx: Ctx) -> dict:
    outs = _ints(ctx.op.outputs)
    what, new = _other_tensor(ctx)
    if new == outs[0]:
        raise Skip("same index")
    old = outs[0]
    ctx.op.outputs = [new, *outs[1:]]
    return {"op": ctx.name, "old": old, "new": new, "what": what}


def m_operator_extra_output(ctx: Ctx) -> dict:
    if ctx.rng.random() < 0.5:
        t = schema.TensorT()
        t.shape = [1]
        t.type = TT.FLOAT32
        t.name = b"fuzz_extra_output"
        ctx.sub.tensors.append(t)
        new, what = len(ctx.sub.tensors) - 1, "new_tensor"
        if ctx.rng.random() < 0.5:
            ctx.sub.outputs = [*_ints(ctx.sub.outputs), new]
            what += "_graph_output"
    else:
        what, new = _other_tensor(ctx)
    ctx.op.outputs = [*_ints(ctx.op.outputs), new]
    return {"op": ctx.name, "appended_output": new, "what": what}


def m_operator_drop_output(ctx: Ctx) -> dict:
    ctx.op.outputs = []
    return {"op": ctx.name, "outputs": []}


def m_operator_custom_code(ctx: Ctx) -> dict:
    old = ctx.name
    new = str(ctx.choice([n for n in OP_NAMES if n != old]
                         + ["LowbitBconv2D", "Lowbit", "", old + "\x00", old + "\x00x",
                            "lowbitbgemm", old + "2", old[:-1]]))
    if new.split("\x00")[0] == old:
        # the runtime reads the code as a C string: the same op
        ctx.oracle, ctx.shapes_kept = "neutral_if_accepted", True
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
    code.customCode = new.encode()
    code.version = 1
    ctx.model.operatorCodes.append(code)
    ctx.op.opcodeIndex = len(ctx.model.operatorCodes) - 1
    return {"op": old, "custom_code": new}


def m_operator_opcode_index(ctx: Ctx) -> dict:
    n, name = len(ctx.model.operatorCodes), ctx.name
    ctx.op.opcodeIndex = int(ctx.choice([n, n + 5, (1 << 31) - 1]))
    return {"op": name, "opcode_index": ctx.op.opcodeIndex, "codes": n}


# --- run-time plans (the model itself unchanged) ---------------------------


def m_runtime_batch(ctx: Ctx) -> dict:
    ctx.shapes_kept = True
    ctx.oracle = "batch_rows"
    batch = int(ctx.choice([0, 2, 3, 5, 8, 33]))
    resize = []
    for shape in ctx.seed.input_shapes:
        if not shape:
            raise Skip("scalar input")
        resize.append([batch, *shape[1:]])
    ctx.plan["resize"] = resize
    ctx.plan["batch"] = batch
    return {"batch": batch}


def _odd_shape(ctx: Ctx, shape: list[int]) -> list[int]:
    how = ctx.choice(["dim", "dim", "two_dims", "rank", "large", "zero"])
    new = list(shape)
    if how in ("dim", "two_dims", "zero") and new:
        for _ in range(2 if how == "two_dims" else 1):
            axis = int(ctx.rng.integers(len(new)))
            new[axis] = 0 if how == "zero" else int(ctx.choice(
                [1, 2, 3, new[axis] - 1, new[axis] + 1, 2 * new[axis] + 1, 31, 33, 64, 100]))
    elif how == "rank":
        new = ctx.choice([[1, *new], [2, 1, *new], new[1:], [*new, 1], new[:-1]])
    else:  # large: one axis as long as the element budget allows
        if not new:
            return [MAX_RESIZE_ELEMENTS]
        axis = int(ctx.rng.integers(len(new)))
        rest = max(_elements(new) // max(new[axis], 1), 1)
        new[axis] = max(MAX_RESIZE_ELEMENTS // rest - int(ctx.rng.integers(0, 3)), 1)
    new = [max(int(d), 0) for d in new]
    if _elements(new) > MAX_RESIZE_ELEMENTS:
        raise Skip("too large")
    return new


def m_runtime_resize(ctx: Ctx) -> dict:
    resize = [_odd_shape(ctx, s) for s in ctx.seed.input_shapes]
    if len(resize) > 1 and ctx.rng.random() < 0.7:
        resize[1:] = [None] * (len(resize) - 1)  # often only one input changes
    if resize == ctx.seed.input_shapes:
        raise Skip("no change")
    ctx.plan["resize"] = resize
    return {"resize": resize}


def m_runtime_values(ctx: Ctx) -> dict:
    ctx.shapes_kept = True
    ctx.plan["values"] = ctx.choice(["special", "huge", "grid", "special"])
    return {"values": ctx.plan["values"]}


def m_runtime_threads(ctx: Ctx) -> dict:
    ctx.shapes_kept = True
    ctx.oracle = "neutral"
    ctx.plan["threads"] = int(ctx.choice([2, 3, 4, 8]))
    if ctx.rng.random() < 0.5:
        ctx.plan["resize"] = [[int(ctx.choice([2, 4, 9])), *s[1:]] for s in ctx.seed.input_shapes]
        ctx.plan["batch"] = ctx.plan["resize"][0][0]
    return {"threads": ctx.plan["threads"], "batch": ctx.plan.get("batch", 1)}


def m_runtime_reinvoke(ctx: Ctx) -> dict:
    ctx.shapes_kept = True
    ctx.oracle = "reinvoke"
    batch = int(ctx.choice([2, 3, 4]))
    ctx.plan["reinvoke_batch"] = batch
    return {"reinvoke": ["x1", "x2", f"resize batch {batch}", "x3", "resize batch 1", "x1"]}


# --- whole-model bytes and combinations -------------------------------------


def _model_bytes(mutant_bytes: bytes, rng: np.random.Generator) -> tuple[bytes, dict]:
    data = bytearray(mutant_bytes)
    flips = []
    for _ in range(int(rng.integers(1, 9))):
        pos = int(rng.integers(8, len(data)))  # keep the root offset and identifier
        data[pos] = int(rng.integers(0, 256))
        flips.append([pos, data[pos]])
    return bytes(data), {"flips": flips}


KINDS: list[tuple[str, float, Callable[[Ctx], dict]]] = [
    ("options.drop_key", 3, m_options_drop_key),
    ("options.int_value", 7, m_options_int_value),
    ("options.string_value", 4, m_options_string_value),
    ("options.type_change", 4, m_options_type_change),
    ("options.garbage", 2, m_options_garbage),
    ("options.truncate", 2, m_options_truncate),
    ("options.byte_flip", 3, m_options_byte_flip),
    ("options.not_a_map", 1, m_options_not_a_map),
    ("options.empty", 1, m_options_empty),
    ("options.format", 1, m_options_format),
    ("options.unknown_key", 2, m_options_unknown_key),
    ("options.default_key", 1, m_options_default_key),
    ("options.add_key", 2, m_options_add_key),
    ("options.reencode", 2, m_options_reencode),
    ("options.prefix", 1, m_options_prefix),
    ("tensor.shape", 4, m_tensor_shape),
    ("tensor.rank", 2, m_tensor_rank),
    ("tensor.dtype", 3, m_tensor_dtype),
    ("tensor.signature", 1, m_tensor_signature),
    ("tensor.variable", 0.5, m_tensor_variable),
    ("tensor.quantization", 1, m_tensor_quantization),
    ("buffer.truncate", 2, m_buffer_truncate),
    ("buffer.extend", 2, m_buffer_extend),
    ("buffer.contents", 4, m_buffer_contents),
    ("buffer.detach", 1, m_buffer_detach),
    ("buffer.bad_index", 1, m_buffer_bad_index),
    ("buffer.share", 1, m_buffer_share),
    ("operator.input", 3, m_operator_input),
    ("operator.drop_input", 1, m_operator_drop_input),
    ("operator.extra_input", 1, m_operator_extra_input),
    ("operator.output", 2, m_operator_output),
    ("operator.extra_output", 1, m_operator_extra_output),
    ("operator.drop_output", 0.5, m_operator_drop_output),
    ("operator.custom_code", 2, m_operator_custom_code),
    ("operator.opcode_index", 0.5, m_operator_opcode_index),
    ("runtime.batch", 3, m_runtime_batch),
    ("runtime.resize", 4, m_runtime_resize),
    ("runtime.values", 3, m_runtime_values),
    ("runtime.threads", 2, m_runtime_threads),
    ("runtime.reinvoke", 2, m_runtime_reinvoke),
    ("model.bytes", 1, None),
    ("combo", 3, None),
]
_KIND_NAMES = [k for k, _, _ in KINDS]
_KIND_P = np.array([w for _, w, _ in KINDS], float) / sum(w for _, w, _ in KINDS)
_MODEL_KINDS = [(k, f) for k, _, f in KINDS
                if f is not None and not k.startswith("runtime.")]


def _expected_shapes(seed: SeedModel, plan: dict) -> list[list[int]] | None:
    """The outputs' declared shapes, the batch dimension following a batch resize."""
    batch = plan.get("batch")
    shapes = []
    for shape, sig in zip(seed.output_shapes, seed.output_signatures, strict=True):
        shape = list(shape)
        if batch is not None:
            if not shape or sig is None or sig[0] != -1:
                return None
            shape[0] = batch
        shapes.append(shape)
    return shapes


# A mutation that does not apply to the drawn model (Skip), or an earlier part
# of a combination left something the next part or the encoders cannot take.
_NOT_APPLICABLE = (Skip, TypeError, OverflowError, IndexError, ValueError, struct.error)


def make_mutant(seeds: list[SeedModel], campaign_seed: int, index: int) -> Mutant:
    """Mutant `index` of a campaign: a function of (campaign_seed, index) and the seeds."""
    rng = np.random.default_rng([campaign_seed, index])
    for _attempt in range(100):
        seed = seeds[int(rng.integers(len(seeds)))]
        kind = _KIND_NAMES[int(rng.choice(len(KINDS), p=_KIND_P))]
        plan = {"threads": int(rng.choice([1, 1, 2, 3])), "values": "normal",
                "input_seed": int(rng.integers(1 << 31)), "resize": None}
        if not seed.custom_ops:
            continue
        model = parse_model(seed.data)
        op_index = seed.custom_ops[int(rng.integers(len(seed.custom_ops)))][0]
        ctx = Ctx(seed, model, op_index, rng, plan)
        try:
            if kind == "model.bytes":
                data, detail = _model_bytes(seed.data, rng)
                ctx.structural = False
            elif kind == "combo":
                parts = []
                for _ in range(int(rng.integers(2, 4))):
                    sub_kind, fn = _MODEL_KINDS[int(rng.integers(len(_MODEL_KINDS)))]
                    if sub_kind == "operator.drop_output" or not ctx.op.outputs:
                        continue
                    try:
                        parts.append([sub_kind, fn(ctx)])
                    except _NOT_APPLICABLE:
                        continue
                if len(parts) < 2:
                    continue
                ctx.oracle, ctx.shapes_kept = "any", False
                data, detail = pack_model(model), {"parts": parts}
            else:
                fn = dict((k, f) for k, _, f in KINDS)[kind]
                detail = fn(ctx)
                data = pack_model(model)
        except _NOT_APPLICABLE:
            continue  # not applicable here, or values the schema cannot hold
        if kind.startswith("runtime."):
            data = seed.data
        if ctx.shapes_kept:
            plan["expect_shapes"] = _expected_shapes(seed, plan)
        return Mutant(
            index=index,
            seed=seed.name,
            kind=kind,
            detail=detail,
            model=data,
            original=seed.data,
            plan=plan,
            oracle=ctx.oracle,
            differential=seed.single and ctx.structural,
        )
    raise RuntimeError(f"no applicable mutation for mutant {index}")


# ==========================================================================
# The worker: runs mutants, checks them (child process)
# ==========================================================================


class Rejected(Exception):
    """The runtime raised: the mutant was rejected at `stage`."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage}: {type(error).__name__}: {error}")
        self.stage = stage
        self.error = error


_progress: Callable[[str], None] = lambda stage: None  # noqa: E731 - set by the worker
_LITE: Any = None


def lite_module() -> Any:
    """`lowbit_tf.lite`; with LOWBIT_FUZZ_NO_TF=1 (a sanitizer build under
    LD_PRELOAD, where TensorFlow would be slow and noisy) lite.py loaded on its
    own, without the lowbit_tf package (which imports TensorFlow)."""
    global _LITE
    if _LITE is None:
        if os.environ.get("LOWBIT_FUZZ_NO_TF") == "1":
            spec = importlib.util.spec_from_file_location("_lowbit_fuzz_lite",
                                                          REPO / "lowbit_tf" / "lite.py")
            _LITE = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(_LITE)
        else:
            from lowbit_tf import lite

            _LITE = lite
    return _LITE


def random_array(shape: list[int], dtype: Any, rng: np.random.Generator, mode: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    shape = [int(d) for d in shape]
    n = _elements(shape)
    if n > 4 * MAX_RESIZE_ELEMENTS:
        raise ValueError(f"will not feed an input of {n} elements")
    if dtype == np.float32:
        if mode == "special":
            x = rng.standard_normal(n).astype(np.float32)
            hits = rng.random(n) < 0.5
            x[hits] = rng.choice(FLOAT_SPECIALS, int(hits.sum()))
        elif mode == "huge":
            x = (rng.choice([-1.0, 1.0], n) * 10.0 ** rng.uniform(20, 38, n)).astype(np.float32)
        elif mode == "grid":  # DoReFa's rounding ties and clip edges
            grid = np.array([0, 1 / 6, 1 / 3, 0.5, 2 / 3, 5 / 6, 1, -0.0, 1.5, -0.5], np.float32)
            x = rng.choice(grid, n).astype(np.float32)
        else:
            x = rng.standard_normal(n).astype(np.float32)
            x[rng.random(n) < 0.05] = 0.0
            x[rng.random(n) < 0.02] = -0.0
        return x.reshape(shape)
    if dtype == np.int32:
        return rng.integers(-(1 << 31), 1 << 31, n, dtype=np.int64).astype(np.int32).reshape(shape)
    if dtype.kind in "iub":
        raw = rng.integers(0, 256, n * dtype.itemsize, dtype=np.uint8)
        return (raw.view(dtype) if dtype.kind != "b" else raw.astype(bool)).reshape(shape)
    if dtype.kind in "fc":
        return rng.standard_normal(n).astype(dtype).reshape(shape)
    raise ValueError(f"cannot feed an input of dtype {dtype}")


def run_tflite(model: bytes, threads: int, resize: list | None, inputs: list | None = None,
               input_seed: int = 0, values: str = "normal"):
    """Loads, resizes, allocates, feeds and invokes; returns (inputs, outputs).
    Raises Rejected(stage, error) when the runtime raises."""
    stage = "load"
    try:
        _progress(stage)
        it = lite_module().Interpreter(model_content=model, num_threads=threads)
        details = it.get_input_details()
        if resize:
            stage = "resize"
            _progress(stage)
            for detail, shape in zip(details, resize, strict=False):
                if shape is not None:
                    it.resize_tensor_input(detail["index"], shape)
        stage = "allocate"
        _progress(stage)
        it.allocate_tensors()
        stage = "set_tensor"
        details = it.get_input_details()
        if inputs is None:
            rng = np.random.default_rng(input_seed)
            inputs = [random_array(d["shape"], d["dtype"], rng, values) for d in details]
        _progress(stage)
        for detail, array in zip(details, inputs, strict=True):
            it.set_tensor(detail["index"], array)
        stage = "invoke"
        _progress(stage)
        it.invoke()
        stage = "get_tensor"
        outputs = [it.get_tensor(d["index"]) for d in it.get_output_details()]
    except Exception as error:  # noqa: BLE001 - any exception is a rejection
        raise Rejected(stage, error) from error
    return inputs, outputs, it


def same(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape, dtype and bits (NaN payloads aside)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind == "f":
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        if not np.array_equal(nan_a, nan_b):
            return False
        view = {2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize]
        return np.array_equal(a.view(view)[~nan_a], b.view(view)[~nan_b])
    return np.array_equal(a, b)


def _diff(a: Any, b: Any) -> str:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return f"shape/dtype {a.shape} {a.dtype} vs {b.shape} {b.dtype}"
    bad = ~((a == b) | ((a != a) & (b != b))) if a.dtype.kind == "f" else a != b
    where = np.argwhere(bad)[:3].tolist() if a.ndim else []
    first = tuple(where[0]) if where else ()
    return (f"{int(bad.sum())} of {a.size} elements differ, first at {first}: "
            f"{a[first]!r} vs {b[first]!r}" if where else "differ in sign bits or NaN")


# --- the TF op for the differential check ---------------------------------

_TF_OPS = {
    "LowbitBconv2d": "lowbit_bconv2d",
    "LowbitBgemm": "lowbit_bgemm",
    "LowbitBDepthwiseConv2d": "lowbit_b_depthwise_conv2d",
    "LowbitBMaxPool2d": "lowbit_b_max_pool2d",
    "LowbitMultibitConv2d": "lowbit_multibit_conv2d",
    "LowbitFastfood": "lowbit_fastfood",
}


class Unjudged(Exception):
    """The differential check does not apply to this mutant."""


def contract_violations(name: str, options: dict, inputs: list[int]) -> list[str]:
    """What an accepted op breaks of docs/custom_ops.md (options, input count)."""
    spec = CUSTOM_OPS[name]
    problems = []
    normalised = {}
    for key, option in spec.options.items():
        if key not in options:
            if option.default is None:
                problems.append(f"required option {key!r} missing")
            normalised[key] = option.default
            continue
        value = options[key]
        if not isinstance(value, option.type) or isinstance(value, bool):
            problems.append(f"option {key!r} = {value!r} is not {option.type.__name__}")
            continue
        if option.choices is not None and value not in option.choices:
            problems.append(f"option {key!r} = {value!r} not in {option.choices}")
        if option.minimum is not None and value < option.minimum:
            problems.append(f"option {key!r} = {value!r} < {option.minimum}")
        normalised[key] = value
    if not problems:
        try:
            expected = len(spec.input_constness(normalised))
        except KeyError:
            expected = None
        if expected is not None and len(inputs) != expected:
            problems.append(f"{len(inputs)} inputs accepted, the contract says {expected}")
    if any(i < 0 for i in inputs):
        problems.append(f"an omitted (-1) input accepted: {inputs}")
    return problems


def tf_reference(model_bytes: bytes, inputs: list[np.ndarray]) -> tuple[str, np.ndarray, list]:
    """Runs the one-op model's op through the TF op, with the options,
    constants and inputs the TFLite kernel got. Returns (op name, output,
    contract violations); raises Unjudged where that is not defined."""
    model = parse_model(model_bytes)
    sub = model.subgraphs[0]
    if len(sub.operators) != 1:
        raise Unjudged("not one operator")
    op = sub.operators[0]
    name = op_name(model, op)
    if name not in _TF_OPS:
        raise Unjudged(f"custom code {name!r}")
    outs, graph_outs = _ints(op.outputs), _ints(sub.outputs)
    if len(outs) != 1 or outs != graph_outs[:1] or len(graph_outs) != 1:
        raise Unjudged("the op's output is not the model's output")
    options = decode_options(options_bytes(op))
    if options is None:
        raise Unjudged("options do not decode as a FlexBuffer map")
    ins = _ints(op.inputs)
    violations = contract_violations(name, options, ins)
    fed = dict(zip(_ints(sub.inputs), inputs, strict=False))
    values = []
    for i in ins:
        if i < 0 or i >= len(sub.tensors):
            raise Unjudged(f"input index {i}")
        t = sub.tensors[i]
        if i in fed:
            values.append(fed[i])
            continue
        data = buffer_data(model, t)
        dtype = _NP_TYPES.get(t.type)
        shape = _ints(t.shape)
        if data is None and dtype is not None and shape and _elements(shape) == 0:
            values.append(np.zeros(shape, dtype))  # an empty tensor needs no data
            continue
        if data is None:
            raise Unjudged(f"input {i} is neither a model input nor a constant")
        if dtype is None:
            raise Unjudged(f"constant of type {_TYPE_NAMES.get(t.type, t.type)}")
        need = _elements(shape) * np.dtype(dtype).itemsize
        if any(d < 0 for d in shape) or len(data) < need:
            violations.append(f"constant input {i} has {len(data)} bytes, its shape {shape} "
                              f"needs {need}")
            raise Unjudged("short constant")
        values.append(data[:need].view(dtype).reshape(shape))
    import tensorflow as tf

    from lowbit_tf._native import load_tf_ops

    fn = getattr(load_tf_ops(), _TF_OPS[name])
    attrs = {k: options[k] for k in CUSTOM_OPS[name].options if k in options}
    if name in ("LowbitBconv2d", "LowbitBgemm", "LowbitBDepthwiseConv2d",
                "LowbitMultibitConv2d"):
        attrs["Tout"] = tf.int32 if options.get("output_type") == "bitpacked" else tf.float32
    tensors = [tf.constant(v) for v in values]
    if name == "LowbitBconv2d":
        tensors = [*tensors[:4], tensors[4:]]
    _progress("tf_reference")
    result = fn(*tensors, **attrs)
    return name, result.numpy(), violations


# --- one mutant -----------------------------------------------------------


def execute(header: dict, model: bytes, original: bytes) -> dict:
    """Runs one mutant and applies the oracle. Returns a JSON-able result:
    outcome "accepted" / "rejected", the stage and exception of a rejection,
    the checks made and the failures found."""
    plan = header["plan"]
    oracle = header["oracle"]
    if plan.get("crash_for_test"):  # tests/tflite/test_fuzz_tflite_models.py checks the harness
        os.kill(os.getpid(), signal.SIGSEGV)
    if plan.get("hang_for_test"):
        time.sleep(3600)
    result: dict[str, Any] = {"outcome": "accepted", "checks": [], "failures": []}
    fail = result["failures"].append
    check = result["checks"].append
    threads, resize = plan["threads"], plan.get("resize")
    try:
        if oracle == "reinvoke":
            _reinvoke(model, plan, check, fail)
            return result
        inputs, outputs, interpreter = run_tflite(model, threads, resize, None,
                                                  plan["input_seed"], plan["values"])
    except Rejected as rejected:
        result.update(outcome="rejected", stage=rejected.stage,
                      error=type(rejected.error).__name__, message=str(rejected.error)[-400:])
        if oracle == "neutral":
            try:
                run_tflite(original, 1, resize, None, plan["input_seed"], plan["values"])
            except Rejected:
                pass  # the original rejects this plan too
            else:
                fail(f"neutral mutation rejected at {rejected.stage}: {rejected.error}")
        return result

    expect = plan.get("expect_shapes")
    if expect is not None:
        check("declared_shapes")
        got = [list(o.shape) for o in outputs]
        if got != expect:
            fail(f"output shapes {got}, the model declares {expect}")

    if oracle in ("neutral", "neutral_if_accepted"):
        check("equals_original")
        try:
            _, reference, _ = run_tflite(original, 1, resize, inputs)
        except Rejected as rejected:
            fail(f"the mutant runs but the original rejects the same inputs: {rejected}")
        else:
            _compare_all(outputs, reference, "mutant vs original", fail)
    elif oracle == "batch_rows" and plan.get("batch"):
        check("batch_rows")
        batch = plan["batch"]
        rows = sorted({0, batch - 1, int(np.random.default_rng(batch).integers(batch))})
        for r in rows:
            try:
                _, reference, _ = run_tflite(original, 1, None, [x[r:r + 1] for x in inputs])
            except Rejected as rejected:
                fail(f"batch {batch} runs, row {r} alone is rejected: {rejected}")
                continue
            _compare_all([o[r:r + 1] for o in outputs], reference, f"batch row {r}", fail)

    if header["differential"] and os.environ.get("LOWBIT_FUZZ_NO_TF") == "1":
        result["unjudged"] = "no TensorFlow in this worker"
    elif header["differential"]:
        try:
            name, expected, violations = tf_reference(model, inputs)
        except Unjudged as why:
            result["unjudged"] = str(why)
        except Exception as error:  # noqa: BLE001
            fail(f"TFLite accepted it, the TF op raises {type(error).__name__}: "
                 f"{str(error)[-300:]}")
        else:
            check(f"differential:{name}")
            for v in violations:
                fail(f"accepted against the contract: {v}")
            if len(outputs) != 1:
                fail(f"{len(outputs)} outputs")
            elif not same(outputs[0], expected):
                message = f"TFLite {name} != TF op: {_diff(outputs[0], expected)}"
                if not plan.get("strict_ftz") and ftz_explains(model, inputs, outputs[0],
                                                               expected):
                    result["known"] = f"ftz:{name}"
                    result["known_message"] = message
                else:
                    fail(message)
    del interpreter
    return result


FLT_MIN = float(np.finfo(np.float32).tiny)


def flush_subnormals(x: np.ndarray) -> np.ndarray:
    """float32 subnormals replaced by zeros of their sign (FTZ/DAZ)."""
    x = np.asarray(x)
    if x.dtype != np.float32:
        return x
    with np.errstate(invalid="ignore"):
        return np.where((x != 0) & (np.abs(x) < FLT_MIN), np.copysign(np.float32(0), x), x)


_MXCSR: Any = None


def _mxcsr() -> Any:
    """(get, set) of this thread's x86-64 MXCSR register, from two tiny
    functions of machine code (stmxcsr / ldmxcsr through the red zone) in an
    executable page; None elsewhere or where such a page is refused."""
    global _MXCSR
    if _MXCSR is None:
        _MXCSR = False
        import ctypes
        import mmap
        import platform

        if platform.machine().lower() in ("x86_64", "amd64"):
            code = bytes.fromhex(
                "0fae5c24fc" "8b4424fc" "c3"  # stmxcsr [rsp-4]; mov eax, [rsp-4]; ret
                "897c24fc" "0fae5424fc" "c3"  # mov [rsp-4], edi; ldmxcsr [rsp-4]; ret
            )
            try:
                page = mmap.mmap(-1, mmap.PAGESIZE,
                                 prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
            except (OSError, AttributeError):
                return None
            page.write(code)
            address = ctypes.addressof(ctypes.c_char.from_buffer(page))
            get = ctypes.CFUNCTYPE(ctypes.c_uint32)(address)
            put = ctypes.CFUNCTYPE(None, ctypes.c_uint32)(address + 10)
            _MXCSR = (get, put, page)
    return _MXCSR or None


def ftz_explains(model: bytes, inputs: list, got: np.ndarray, expected: np.ndarray) -> bool:
    """Whether TensorFlow's flushing of subnormals explains a difference
    between the TFLite kernel (`got`) and the TF op (`expected`): TensorFlow
    runs its kernels with FTZ and DAZ set, TFLite does not. On x86-64 the
    one-op model runs again, one thread, with FTZ and DAZ set in this thread's
    MXCSR: its output must then equal the TF op's exactly. Elsewhere: again
    with every subnormal of its float constants and inputs flushed, the
    outputs compared with their subnormals flushed (intermediates are not
    covered there)."""
    mxcsr = _mxcsr()
    if mxcsr is not None:
        get, put, _ = mxcsr
        old = get()
        put(old | 0x8040)  # FTZ (bit 15) and DAZ (bit 6)
        try:
            _, out, _ = run_tflite(model, 1, [list(x.shape) for x in inputs], inputs)
        except Rejected:
            return False
        finally:
            put(old)
        return len(out) == 1 and same(out[0], expected)
    m = parse_model(model)
    for t in m.subgraphs[0].tensors:
        data = buffer_data(m, t) if t.type == TT.FLOAT32 else None
        if data is None or len(data) < 4:
            continue
        data = data.copy()
        values = data[: len(data) // 4 * 4].view(np.float32)
        values[:] = flush_subnormals(values)
        buf = schema.BufferT()  # its own copy: the buffer may be shared with an int tensor
        buf.data = data
        m.buffers.append(buf)
        t.buffer = len(m.buffers) - 1
    flushed_inputs = [flush_subnormals(x) for x in inputs]
    try:
        _, out, _ = run_tflite(pack_model(m), 1, [list(x.shape) for x in inputs], flushed_inputs)
    except Rejected:
        return False
    return len(out) == 1 and same(flush_subnormals(out[0]), flush_subnormals(expected))


def _compare_all(got: list, expected: list, what: str, fail: Callable[[str], None]) -> None:
    if len(got) != len(expected):
        fail(f"{what}: {len(got)} outputs vs {len(expected)}")
        return
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if not same(g, e):
            fail(f"{what}: output {i}: {_diff(g, e)}")


def _reinvoke(model: bytes, plan: dict, check: Callable, fail: Callable) -> None:
    """One interpreter: x1, x2, resize to a batch, x3, resize back, x1 again;
    each output must equal a fresh interpreter's."""
    check("reinvoke")
    seed = plan["input_seed"]
    inputs1, out1, it = run_tflite(model, plan["threads"], None, None, seed, plan["values"])
    details = it.get_input_details()
    shapes = [list(d["shape"]) for d in details]

    def step(label: str, shape_batch: int | None, rng_seed: int) -> None:
        rng = np.random.default_rng(rng_seed)
        try:
            if shape_batch is not None:
                for d, s in zip(details, shapes, strict=True):
                    it.resize_tensor_input(d["index"], [shape_batch, *s[1:]])
                it.allocate_tensors()
            now = it.get_input_details()
            xs = [random_array(d["shape"], d["dtype"], rng, plan["values"]) for d in now]
            for d, x in zip(now, xs, strict=True):
                it.set_tensor(d["index"], x)
            it.invoke()
            got = [it.get_tensor(d["index"]) for d in it.get_output_details()]
        except Exception as error:  # noqa: BLE001
            fail(f"reinvoke {label}: the interpreter that ran before raises {error!r}")
            return
        resize = [[shape_batch, *s[1:]] for s in shapes] if shape_batch is not None else None
        try:
            _, fresh, _ = run_tflite(model, 1, resize, xs)
        except Rejected as rejected:
            fail(f"reinvoke {label}: a fresh interpreter rejects it: {rejected}")
            return
        _compare_all(got, fresh, f"reinvoke {label}", fail)

    _compare_all(out1, run_tflite(model, 1, None, inputs1)[1], "reinvoke x1", fail)
    step("x2", None, seed + 1)
    step("batch", plan["reinvoke_batch"], seed + 2)
    step("back to batch 1", 1, seed)


def worker_main() -> None:
    """`--worker`: reads requests (a JSON header line, then the mutant's and
    the original's bytes) from stdin, writes JSON lines to its stdout."""
    import faulthandler

    limit = os.environ.get("LOWBIT_FUZZ_MEMORY_LIMIT")
    if limit:  # a runaway allocation fails instead of taking the shared machine's memory
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (int(limit), int(limit)))
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # anything printed by the runtimes goes to stderr
    faulthandler.enable(file=sys.stderr, all_threads=True)
    import warnings

    warnings.filterwarnings("ignore")
    lite_module()  # imported before announcing readiness

    global _progress

    def progress(stage: str) -> None:
        out.write(json.dumps({"stage": stage}) + "\n")

    _progress = progress
    out.write(json.dumps({"ready": os.getpid()}) + "\n")
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        header = json.loads(line)
        model = stdin.read(header["model_bytes"])
        original = stdin.read(header["original_bytes"])
        print(f"--- mutant {header['index']} {header['kind']} on {header['seed']}",
              file=sys.stderr, flush=True)
        try:
            result = execute(header, model, original)
        except Exception as error:  # noqa: BLE001 - a bug here must not look like a crash
            result = {"outcome": "harness_error", "failures": [f"harness error: {error!r}"],
                      "checks": []}
        out.write(json.dumps({"result": result}) + "\n")


# ==========================================================================
# The parent: drives workers, catches crashes and hangs, keeps statistics
# ==========================================================================

_SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                      "ERROR: ThreadSanitizer", "ERROR: MemorySanitizer",
                      "WARNING: ThreadSanitizer")


class WorkerDied(Exception):
    pass


class Worker:
    """One child process running mutants."""

    def __init__(self, env: dict, log_dir: Path, memory_limit_gb: float | None):
        self.env = env
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        env = dict(env)
        if memory_limit_gb and "san.so" not in env.get("LD_PRELOAD", ""):
            # set by the worker itself (no preexec_fn: this process may have
            # threads); none under a sanitizer, which reserves terabytes of
            # address space for its shadow memory
            env["LOWBIT_FUZZ_MEMORY_LIMIT"] = str(int(memory_limit_gb * (1 << 30)))
        self.proc = subprocess.Popen(
            [sys.executable, str(THIS), "--worker"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, env=env,
        )
        self._buf = b""
        line = self.readline(time.monotonic() + 180)
        if line is None or "ready" not in line:
            self.stop()
            raise RuntimeError(f"the worker did not start: {self.stderr_tail()}")

    def readline(self, deadline: float) -> dict | None:
        """The next JSON line; None at EOF; TimeoutError past the deadline."""
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return None
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def send(self, header: dict, model: bytes, original: bytes) -> None:
        header = dict(header, model_bytes=len(model), original_bytes=len(original))
        try:
            self.proc.stdin.write(json.dumps(header).encode() + b"\n" + model + original)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as error:
            raise WorkerDied(str(error)) from error

    def log_size(self) -> int:
        return self.log_path.stat().st_size  # the child writes it; we only read

    def stderr_since(self, offset: int, limit: int = 6000) -> str:
        with open(self.log_path, "rb") as f:
            f.seek(offset)
            data = f.read()
        text = data.decode("utf-8", "replace")
        return text if len(text) <= limit else "...\n" + text[-limit:]

    def stderr_tail(self, limit: int = 4000) -> str:
        return self.stderr_since(max(self.log_size() - limit, 0), limit)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.kill()
        code = self.proc.wait()
        self.log.close()
        return code


@dataclass
class Stats:
    """What a campaign ran and found."""

    seed: int
    ran: int = 0
    accepted: int = 0
    rejected: int = 0
    seconds: float = 0.0
    seed_seconds: float = 0.0
    worker_starts: int = 0
    kinds: dict = field(default_factory=dict)  # kind -> Counter(ran, accepted, rejected)
    exceptions: Counter = field(default_factory=Counter)  # "stage: Type"
    messages: Counter = field(default_factory=Counter)
    checks: Counter = field(default_factory=Counter)
    unjudged: Counter = field(default_factory=Counter)
    seeds: Counter = field(default_factory=Counter)
    known: Counter = field(default_factory=Counter)  # tolerated known differences
    known_examples: list = field(default_factory=list)
    failures: list = field(default_factory=list)

    def add(self, mutant: Mutant, result: dict) -> None:
        self.ran += 1
        counts = self.kinds.setdefault(mutant.kind, Counter())
        counts["ran"] += 1
        self.seeds[mutant.seed.split("/")[0]] += 1
        outcome = result.get("outcome")
        if outcome in ("accepted", "rejected"):
            counts[outcome] += 1
            setattr(self, outcome, getattr(self, outcome) + 1)
        if outcome == "rejected":
            self.exceptions[f"{result['stage']}: {result['error']}"] += 1
            self.messages[_message_family(result.get("message", ""))] += 1
        for c in result.get("checks", []):
            self.checks[c] += 1
        if result.get("unjudged"):
            self.unjudged[result["unjudged"].split(" ")[0]] += 1
        if result.get("known"):
            self.known[result["known"]] += 1

    def brief(self) -> str:
        """Three lines: totals, mutants per kind, rejections by stage and type."""
        return "\n".join([
            f"fuzz seed {self.seed}: {self.ran} mutants in {self.seconds:.0f} s, accepted "
            f"{self.accepted}, rejected {self.rejected}, checks "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.checks.items())),
            "  per kind (ran/accepted): " + ", ".join(
                f"{k} {c['ran']}/{c['accepted']}" for k, c in sorted(self.kinds.items())),
            "  exceptions: " + ", ".join(f"{k} {v}" for k, v in self.exceptions.most_common())
            + ("; known FTZ differences: " + ", ".join(
                f"{k} {v}" for k, v in self.known.most_common()) if self.known else ""),
        ])

    def summary(self) -> str:
        rate = self.ran / self.seconds if self.seconds else 0.0
        lines = [
            f"fuzz seed {self.seed}: {self.ran} mutants in {self.seconds:.1f} s ({rate:.0f}/s; "
            f"seed models {self.seed_seconds:.1f} s), accepted {self.accepted}, rejected "
            f"{self.rejected}, worker starts {self.worker_starts}, failures "
            f"{len(self.failures)}",
            "  kind                        ran  accepted  rejected",
        ]
        for kind in _KIND_NAMES:
            c = self.kinds.get(kind, Counter())
            lines.append(f"  {kind:<26}{c['ran']:>5}{c['accepted']:>10}{c['rejected']:>10}")
        lines.append("  checks: " + ", ".join(f"{k} {v}" for k, v in sorted(self.checks.items())))
        lines.append("  seed models: " + ", ".join(f"{k} {v}" for k, v in
                                                    sorted(self.seeds.items())))
        lines.append("  exceptions (stage: type): " + ", ".join(
            f"{k} {v}" for k, v in self.exceptions.most_common()))
        if self.known:
            lines.append("  known differences, tolerated (TF flushes subnormals, TFLite does not;"
                         " --strict-ftz fails on them): " + ", ".join(
                             f"{k} {v}" for k, v in self.known.most_common()))
            for example in self.known_examples[:6]:
                lines.append(f"      e.g. {example}")
        if self.unjudged:
            lines.append("  differential not applicable: " + ", ".join(
                f"{k} {v}" for k, v in self.unjudged.most_common()))
        lines.append("  most common rejection messages:")
        lines += [f"    {v:>5}  {k}" for k, v in self.messages.most_common(25)]
        for f in self.failures:
            lines.append(f"  FAILURE {f['problem']}: {f['mutation']}")
            for msg in f["messages"][:5]:
                lines.append(f"      {msg[:400]}")
            lines.append(f"      saved: {f.get('saved')}")
            lines.append(f"      rerun: {f['rerun']}")
        return "\n".join(lines)


def _message_family(message: str) -> str:
    """A rejection message without its numbers and quoted values."""
    import re

    lines = [line for line in message.strip().splitlines() if line.strip()]
    text = lines[0] if lines else ""
    text = text.replace("cannot prepare the model: ", "").replace("lowbit delegate: ", "")
    text = re.sub(r"node \d+", "node N", text)
    text = re.sub(r"'[^']*'", "'..'", text)
    text = re.sub(r"-?\d+", "N", text)
    return text[:140]


def _save_failure(directory: Path, mutant: Mutant, campaign_seed: int, record: dict) -> str:
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"fuzz-s{campaign_seed}-{mutant.index:07d}-{mutant.kind}"
    (directory / f"{stem}.tflite").write_bytes(mutant.model)
    (directory / f"{stem}.original.tflite").write_bytes(mutant.original)
    payload = dict(record, header=mutant.header(), detail=mutant.detail,
                   model=f"{stem}.tflite", original=f"{stem}.original.tflite")
    (directory / f"{stem}.json").write_text(json.dumps(payload, indent=1, default=str))
    return str(directory / f"{stem}.json")


def _worker_env(kernel: str | None, library: str | None) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONFAULTHANDLER="1")
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), str(REPO / "converter"), env.get("PYTHONPATH")) if p)
    if kernel:
        env["LOWBIT_KERNEL"] = kernel
    if library:
        path = Path(library).resolve()
        env["LOWBIT_TFLITE_LIBRARY"] = str(path)
        runtimes = sanitizer_preload(path)
        if runtimes:
            # A sanitizer build (custom_ops/CMakeLists.txt -DLOWBIT_SANITIZE=...):
            # its runtime must be the process's first library, and libstdc++
            # too (tests/core/test_sanitizers.py explains why); no TensorFlow then.
            env["LD_PRELOAD"] = runtimes
            env["LOWBIT_FUZZ_NO_TF"] = "1"
            env.setdefault("ASAN_OPTIONS", "detect_leaks=0:halt_on_error=1:abort_on_error=1")
            env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    return env


def sanitizer_preload(library: Path) -> str:
    """The LD_PRELOAD a Python needs to load `library`: its sanitizer
    runtime and libstdc++, or '' for a library without a sanitizer."""
    import re

    ldd = subprocess.run(["ldd", str(library)], capture_output=True, text=True).stdout
    libs = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.MULTILINE))
    runtime = [p for n, p in libs.items() if re.match(r"lib(a|t|ub)san\.so", n)]
    if not runtime:
        return ""
    stdcxx = [p for n, p in libs.items() if n.startswith("libstdc++.so")]
    return " ".join(runtime[:1] + stdcxx[:1])


def run_one(worker: Worker, mutant: Mutant, timeout: float) -> tuple[dict, str | None, str]:
    """Sends one mutant to the worker. Returns (result, problem, worker stderr);
    problem is None, "crash", "hang", "sanitizer", "wrong" or "harness". After
    a crash or a hang the worker is stopped."""
    offset = worker.log_size()
    result, problem, stage = None, None, None
    try:
        worker.send(mutant.header(), mutant.model, mutant.original)
        deadline = time.monotonic() + timeout
        while True:
            line = worker.readline(deadline)
            if line is None:
                raise WorkerDied("end of output")
            if "stage" in line:
                stage = line["stage"]
            elif "result" in line:
                result = line["result"]
                break
    except TimeoutError:
        problem = "hang"
    except WorkerDied:
        problem = "crash"
    if problem is not None:
        code = worker.stop()
        if problem == "crash":
            sig = -code if code is not None and code < 0 else None
            how = signal.Signals(sig).name if sig else f"exit code {code}"
            message = f"the worker died ({how}) at stage {stage}"
        else:
            message = (f"no answer within {timeout} s (stage {stage}; a larger --timeout "
                       "tells slow from stuck)")
        result = {"outcome": problem, "failures": [message], "checks": [], "stage": stage}
    stderr = worker.stderr_since(offset)
    if problem in (None, "crash") and any(m in stderr for m in _SANITIZER_MARKERS):
        problem = "sanitizer"
        result.setdefault("failures", []).append("sanitizer report in the worker's stderr")
    if problem is None and result.get("failures"):
        problem = "harness" if result["outcome"] == "harness_error" else "wrong"
    return result, problem, stderr


def run_campaign(
    seed: int,
    count: int | None = None,
    seconds: float | None = None,
    save_failures: str | Path | None = None,
    timeout: float = 20.0,
    kernel: str | None = None,
    library: str | None = None,
    memory_limit_gb: float | None = 16.0,
    strict_ftz: bool = False,
    seed_cache: Path | None = None,
    only: list[int] | None = None,
    log: Callable[[str], None] = print,
) -> Stats:
    """Runs mutants 0, 1, 2, ... of `seed` (or just `only`) until `count` ran
    or `seconds` passed (whichever first; the seed models' conversion is not
    counted in `seconds`)."""
    stats = Stats(seed=seed)
    start = time.monotonic()
    seeds = seed_set(build_seed_models(seed_cache, log))
    stats.seed_seconds = time.monotonic() - start
    failures_dir = Path(save_failures) if save_failures else None
    log_dir = Path(tempfile.mkdtemp(prefix="lowbit-fuzz-logs-"))  # the workers' stderr
    env = _worker_env(kernel, library)
    worker: Worker | None = None
    start = time.monotonic()
    indices = iter(only) if only is not None else iter(range(1 << 62))
    try:
        for index in indices:
            if count is not None and stats.ran >= count:
                break
            if seconds is not None and time.monotonic() - start > seconds:
                break
            mutant = make_mutant(seeds, seed, index)
            if strict_ftz:
                mutant.plan["strict_ftz"] = True
            if worker is None:
                worker = Worker(env, log_dir, memory_limit_gb)
                stats.worker_starts += 1
            result, problem, stderr = run_one(worker, mutant, timeout)
            if problem in ("crash", "hang"):
                worker = None
            stats.add(mutant, result)
            if result.get("known") and len(stats.known_examples) < 20:
                stats.known_examples.append(
                    f"{mutant.describe()}: {result.get('known_message')}; rerun: python "
                    f"tests/helpers/fuzz_tflite_models.py --seed {seed} --only {mutant.index}")
            if problem is not None:
                rerun = (f"python tests/helpers/fuzz_tflite_models.py --seed {seed} "
                         f"--only {mutant.index}")
                record = {
                    "problem": problem,
                    "mutation": mutant.describe(),
                    "messages": list(result.get("failures", [])),
                    "stage": result.get("stage"),
                    "stderr": stderr[-6000:],
                }
                if failures_dir is None:
                    failures_dir = Path(tempfile.mkdtemp(prefix="lowbit-fuzz-failures-"))
                record["saved"] = _save_failure(failures_dir, mutant, seed, record)
                record["rerun"] = (f"{rerun}   (in-process, no isolation: python "
                                   "tests/helpers/fuzz_tflite_models.py --replay "
                                   f"{record['saved']})")
                stats.failures.append(record)
                log(f"FAILURE ({problem}) {mutant.describe()}\n    "
                    + "\n    ".join(record["messages"][:5]) + f"\n    saved {record['saved']}")
    finally:
        if worker is not None:
            worker.stop()
        stats.seconds = time.monotonic() - start
        shutil.rmtree(log_dir, ignore_errors=True)  # failures keep their stderr
    return stats


def replay(path: str, strict_ftz: bool = False) -> int:
    """Runs a saved failure in this process (no isolation)."""
    record = json.loads(Path(path).read_text())
    if strict_ftz:
        record["header"]["plan"]["strict_ftz"] = True
    folder = Path(path).parent
    model = (folder / record["model"]).read_bytes()
    original = (folder / record["original"]).read_bytes()
    print(record["mutation"])
    sys.stdout.flush()
    result = execute(record["header"], model, original)
    print(json.dumps(result, indent=1))
    return 1 if result.get("failures") else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=7, help="campaign seed")
    parser.add_argument("--seconds", type=float, default=None, help="stop after this long")
    parser.add_argument("--count", type=int, default=None, help="stop after this many mutants")
    parser.add_argument("--save-failures", default=None, help="directory for failing cases")
    parser.add_argument("--timeout", type=float, default=None,
                        help="per mutant, seconds (default 20, 120 with --kernel reference)")
    parser.add_argument("--kernel", default=None, help="LOWBIT_KERNEL for the worker")
    parser.add_argument("--library", default=None, help="liblowbit_tflite.so to test")
    parser.add_argument("--memory-limit-gb", type=float, default=16.0,
                        help="address-space limit of the worker (0: none)")
    parser.add_argument("--strict-ftz", action="store_true",
                        help="fail on TF/TFLite differences from flushed subnormals too")
    parser.add_argument("--only", type=int, action="append", help="run just this mutant")
    parser.add_argument("--list", type=int, default=None, metavar="N",
                        help="describe the first N mutants, run nothing")
    parser.add_argument("--replay", default=None, help="rerun a saved failure in-process")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--build-seeds", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    if args.build_seeds:
        _build_seeds_main(args.build_seeds)
        return 0
    if args.replay:
        return replay(args.replay, args.strict_ftz)
    if args.list is not None:
        seeds = seed_set(build_seed_models())
        for i in range(args.list):
            print(make_mutant(seeds, args.seed, i).describe())
        return 0
    if args.timeout is None:
        args.timeout = 120.0 if args.kernel == "reference" else 20.0
    if args.seconds is None and args.count is None and args.only is None:
        args.seconds = 60.0
    stats = run_campaign(
        args.seed, count=args.count, seconds=args.seconds, save_failures=args.save_failures,
        timeout=args.timeout, kernel=args.kernel, library=args.library,
        memory_limit_gb=args.memory_limit_gb or None, strict_ftz=args.strict_ftz,
        only=args.only,
    )
    if args.only:
        seeds = seed_set(build_seed_models(log=lambda _: None))
        for i in args.only:
            print(make_mutant(seeds, args.seed, i).describe())
    print(stats.summary())
    return 1 if stats.failures else 0


if __name__ == "__main__":
    sys.exit(main())
