"""Post-training int8 for converted models: the float layers become TFLite's
int8 builtins (per-channel weights), the lowbit ops read and write int8.

TFLiteConverter's own post-training quantization calibrates by running the
float model in TensorFlow's TFLite interpreter, which cannot run our custom
ops (the PyPI runtimes hide the symbols a custom kernel registers with,
docs/tflite_runtime.md), so its calibration fails on a model with lowbit ops.
TensorFlow 2.21 splits that step from the quantizer, though: the calibrator
only writes each tensor's observed min and max into the flatbuffer (the
tensors' QuantizationParameters min / max), and `mlir_quantize` (the MLIR
quantizer that TFLiteConverter itself calls next) quantizes a model that
carries those statistics. So the route here is (docs/int8.md):

1. `calibrate`: run the float + lowbit model in our runtime
   (lowbit_tf.lite.Interpreter, default delegates off so that every tensor
   is kept) on the representative data and write min / max of every float
   activation tensor. The binary layers' real output ranges are observed,
   from the very kernels that will run them.
2. `quantize`: TensorFlow's MLIR quantizer. It quantizes every builtin it can
   (per-channel weights for convs and dense layers) and leaves the custom ops
   float, with a DEQUANTIZE before and a QUANTIZE after each.
3. `fuse_int8_io`: LowbitBconv2d, LowbitBgemm, LowbitBDepthwiseConv2d,
   LowbitMultibitConv2d and LowbitFastfood take the int8 tensors instead:
   an input produced by a DEQUANTIZE reads its int8 source (the sign of
   scale * (q - zero_point) is q >= zero_point, exactly the sign of the
   dequantized value; the multi-bit op's ABC / DoReFa planes are those of
   float(q - zero_point) * scale, what the DEQUANTIZE computed, from the
   tensor's own scale and zero point; Fastfood transforms that value); an
   output consumed only by one QUANTIZE writes that QUANTIZE's int8 tensor
   itself (output_type "int8", the same rounding as TFLite's QUANTIZE,
   docs/custom_ops.md); a residual produced by a
   DEQUANTIZE is read as int8 too (the op adds its real values, what the
   DEQUANTIZE computed); a ReLU (int8 RELU op) that is all that reads a
   LowbitBconv2d's int8 output is folded into it (output_activation "RELU":
   the ReLU after the residual add of QuickNet's last block of a section), and
   so is a float RELU before the one QUANTIZE that reads it (the same ReLU in
   a quantization-aware model).
   The DEQUANTIZE / QUANTIZE / RELU
   ops left without a use are removed. Other lowbit ops keep their float
   tensors and the DEQUANTIZE / QUANTIZE around them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from lowbit_converter.tflite_schema import schema

# The ops that read and write int8 tensors (docs/custom_ops.md, "int8 tensors").
INT8_IO_OPS = ("LowbitBconv2d", "LowbitBgemm", "LowbitBDepthwiseConv2d", "LowbitMultibitConv2d",
               "LowbitFastfood")


def _serialize(model: Any) -> bytes:
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _op_name(model: Any, op: Any) -> str:
    """A builtin's BuiltinOperator name, or a custom op's custom_code."""
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
    if builtin == schema.BuiltinOperator.CUSTOM:
        return (code.customCode or b"").decode()
    return _BUILTIN_NAMES.get(builtin, str(builtin))


_BUILTIN_NAMES = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}


def _samples(representative_dataset: Callable[[], Iterable[Any]], count: int) -> Iterable[list]:
    """The representative dataset's samples as lists of input arrays (TFLiteConverter's
    convention: a callable returning an iterable of input lists; a bare array or a
    dict of arrays is taken too)."""
    if not callable(representative_dataset):
        raise TypeError(
            "representative_dataset must be a callable returning an iterable of samples "
            f"(TFLiteConverter's convention), got {type(representative_dataset).__name__}"
        )
    seen = 0
    for sample in representative_dataset():
        if isinstance(sample, dict):
            sample = list(sample.values())
        elif not isinstance(sample, list | tuple):
            sample = [sample]
        if len(sample) != count:
            raise ValueError(
                f"representative_dataset sample {seen} has {len(sample)} inputs, the model "
                f"takes {count}"
            )
        seen += 1
        yield [np.asarray(v) for v in sample]
    if seen == 0:
        raise ValueError("representative_dataset yielded no samples")


def _lowbit_internal(model: Any, subgraph: Any) -> set[int]:
    """Tensors that only flow between lowbit ops (inside one delegate
    partition, where the runtime keeps no copy): no range is observed or
    needed for them (the lowbit ops read only the signs of a float input)."""
    lowbit = {}
    consumers: dict[int, list[bool]] = {}
    for op in subgraph.operators:
        is_lowbit = _op_name(model, op).startswith("Lowbit")
        for t in op.outputs:
            lowbit[int(t)] = is_lowbit
        for t in op.inputs:
            consumers.setdefault(int(t), []).append(is_lowbit)
    outputs = {int(t) for t in subgraph.outputs}
    return {t for t, produced in lowbit.items()
            if produced and t not in outputs and consumers.get(t) and all(consumers[t])}


def calibrate(tflite_model: bytes, representative_dataset: Callable[[], Iterable[Any]]) -> bytes:
    """`tflite_model` (float + lowbit ops) with the min and max each float
    activation tensor takes on the representative data, written as TFLite's
    calibrator writes them (QuantizationParameters min / max), measured by
    running it in our runtime."""
    from lowbit_tf.lite import Interpreter

    try:  # every tensor kept: no default (XNNPACK) delegate, which keeps none of its own
        from ai_edge_litert.interpreter import OpResolverType
        runtime = "ai_edge_litert"
    except ImportError:  # pragma: no cover - the converter's environment has TensorFlow
        from tensorflow.lite.experimental import OpResolverType
        runtime = "tensorflow"
    interpreter = Interpreter(
        model_content=tflite_model, runtime=runtime, experimental_preserve_all_tensors=True,
        experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    subgraph = model.subgraphs[0]
    skipped = _lowbit_internal(model, subgraph)
    # Tensors an op writes, and the inputs: not a tensor left unused in the
    # table (flatbuffer_pass folds a RELU into its MAX_POOL_2D and keeps the
    # ReLU's output tensor, which then has no data).
    written = {*subgraph.inputs, *(t for op in subgraph.operators for t in op.outputs)}
    observed = [i for i, t in enumerate(subgraph.tensors)
                if t.type == schema.TensorType.FLOAT32 and i not in skipped and i in written
                and not (t.buffer and model.buffers[t.buffer].data is not None
                         and len(model.buffers[t.buffer].data))]
    ranges: dict[int, list[float]] = {}
    interpreter.allocate_tensors()
    inputs = interpreter.get_input_details()
    for sample in _samples(representative_dataset, len(inputs)):
        for detail, value in zip(inputs, sample, strict=True):
            value = value.astype(detail["dtype"], copy=False)
            if list(value.shape) != list(detail["shape"]):
                interpreter.resize_tensor_input(detail["index"], list(value.shape))
                interpreter.allocate_tensors()
            interpreter.set_tensor(detail["index"], value)
        interpreter.invoke()
        for i in observed:
            v = interpreter.get_tensor(i)
            if v.size == 0:
                continue
            lo, hi = float(np.min(v)), float(np.max(v))
            r = ranges.setdefault(i, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)
    for i, (lo, hi) in ranges.items():
        q = schema.QuantizationParametersT()
        q.min, q.max = [lo], [hi]
        subgraph.tensors[i].quantization = q
    return _serialize(model)


def quantize(calibrated: bytes, *, int8_inputs: bool, int8_outputs: bool,
             float_nodes: Sequence[str] = ()) -> bytes:
    """TensorFlow's MLIR quantizer on a calibrated model (what
    TFLiteConverter runs after its calibrator): int8 builtins with
    per-channel weights; float32 or int8 model inputs and outputs. The ops
    whose output tensors are named in `float_nodes` stay float32 (the
    quantizer's deny list, as TFLite's QuantizationDebugger uses it), with a
    DEQUANTIZE before and a QUANTIZE after them."""
    import tensorflow as tf
    from tensorflow.lite.python import convert

    return convert.mlir_quantize(
        calibrated,
        disable_per_channel=False,
        fully_quantize=False,
        input_data_type=tf.int8 if int8_inputs else tf.float32,
        output_data_type=tf.int8 if int8_outputs else tf.float32,
        denylisted_nodes=list(float_nodes) or None,
    )


def _names_layer(segment: str, layer: str) -> bool:
    """Whether a name-scope segment of a .tflite tensor name is layer
    `layer`'s: its name, or its name with the suffix "_<k>" TensorFlow adds
    when it makes a name scope unique (the converter's trace uses "stem_conv_1"
    for a layer "stem_conv")."""
    return segment == layer or (
        segment.startswith(layer + "_") and segment[len(layer) + 1:].isdigit())


def float_layer_nodes(tflite_model: bytes, requested: Sequence[str],
                      layer_names: Iterable[str], output_layers: Sequence[str] = ()) -> list[str]:
    """The output tensor names of the builtin ops that run the layers named in
    `requested` (Keras layer names among `layer_names`, or .tflite output
    tensor names as they are), for `quantize`'s float_nodes.

    A .tflite tensor name lists the name scopes of the TensorFlow ops fused
    into the op ("model_1/stem_relu_1/Relu;model_1/stem_conv_1/convolution;..."
    for a conv with its BatchNorm and ReLU folded in), so an op belongs to a
    layer when one of its scope segments names that layer. The "_<k>" suffix
    makes that ambiguous when layer names differ only by such a suffix
    ("conv2d" and "conv2d_1"): such a segment selects nothing, and a request
    that matches only through one raises, naming the tensors to give instead.
    The op that makes the model's output k is named after the signature
    ("StatefulPartitionedCall_1:0"), so it also answers to `output_layers[k]`,
    the Keras layer whose output that is.
    Raises ValueError for a name that selects no builtin op (a lowbit layer
    already has no int8 weights to skip: it is not a float layer)."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    layers = set(layer_names)
    ops = []  # (output tensor names, scope segments) of every builtin op
    for subgraph in model.subgraphs:
        outputs = dict(zip((int(t) for t in subgraph.outputs), output_layers, strict=False))
        for op in subgraph.operators:
            if _op_name(model, op).startswith("Lowbit"):
                continue
            names = [subgraph.tensors[t].name.decode() for t in op.outputs]
            segments = {seg for name in names for loc in name.split(";")
                        for seg in loc.split("/")[1:]}  # [0] is the model's scope
            segments |= {outputs[int(t)] for t in op.outputs if int(t) in outputs}
            ops.append((names, segments))
    nodes: list[str] = []
    for request in requested:
        chosen, ambiguous = [], []
        for names, segments in ops:
            if request in names:
                chosen.append(names)
                continue
            owners = [{layer for layer in layers if _names_layer(seg, layer)} for seg in segments]
            if any(o == {request} for o in owners):
                chosen.append(names)
            elif any(request in o for o in owners):
                ambiguous.append(names)
        if not chosen:
            if ambiguous:
                raise ValueError(
                    f"int8_float_layers: the op names of layer {request!r} in the converted "
                    "model cannot be told from another layer's (layer names that differ only "
                    "by a '_<number>' suffix); give the .tflite output tensor name instead, "
                    f"one of {sorted(n for names in ambiguous for n in names)}")
            float_layers = sorted({layer for _, segments in ops for seg in segments
                                   for layer in layers if _names_layer(seg, layer)})
            raise ValueError(
                f"int8_float_layers: {request!r} names no float layer of the converted model "
                "(a Keras layer name, or a .tflite output tensor name); its float layers: "
                f"{float_layers}")
        nodes += [n for names in chosen for n in names if n not in nodes]
    return nodes


def _per_tensor_int8(tensor: Any) -> bool:
    q = tensor.quantization
    return (tensor.type == schema.TensorType.INT8 and q is not None and q.scale is not None
            and len(q.scale) == 1)


class _Uses:
    """Producers and consumers of a subgraph's tensors, kept up to date while
    fuse_int8_io rewires it."""

    def __init__(self, model: Any, subgraph: Any) -> None:
        self.subgraph = subgraph
        self.ops = subgraph.operators
        self.names = [_op_name(model, op) for op in self.ops]
        self.producer = {int(t): i for i, op in enumerate(self.ops) for t in op.outputs}
        self.consumers: dict[int, list[int]] = {}
        for i, op in enumerate(self.ops):
            for t in op.inputs:
                self.consumers.setdefault(int(t), []).append(i)
        self.graph_outputs = {int(t) for t in subgraph.outputs}
        self.removed: set[int] = set()

    def read_int8(self, op_index: int, slot: int) -> bool:
        """Input `slot` of op `op_index` from the int8 source of the DEQUANTIZE
        that makes it; the DEQUANTIZE goes when nothing else reads it."""
        op = self.ops[op_index]
        t = int(op.inputs[slot])
        p = self.producer.get(t)
        if p is None or self.names[p] != "DEQUANTIZE":
            return False
        source = int(self.ops[p].inputs[0])
        if not _per_tensor_int8(self.subgraph.tensors[source]):
            return False
        op.inputs[slot] = source
        self.consumers[t].remove(op_index)
        self.consumers.setdefault(source, []).append(op_index)
        if not self.consumers[t] and t not in self.graph_outputs:
            self.removed.add(p)
        return True

    def write_int8(self, op_index: int, through: str = "QUANTIZE") -> bool:
        """Output 0 of op `op_index` as the int8 tensor of the one `through`
        op (QUANTIZE, or RELU after an int8 output) that reads it, which goes."""
        op = self.ops[op_index]
        out = int(op.outputs[0])
        users = self.consumers.get(out, [])
        if out in self.graph_outputs or len(users) != 1 or self.names[users[0]] != through:
            return False
        target = int(self.ops[users[0]].outputs[0])
        if not _per_tensor_int8(self.subgraph.tensors[target]):
            return False
        op.outputs[0] = target
        self.producer[target] = op_index
        self.removed.add(users[0])
        return True

    def write_int8_after_relu(self, op_index: int) -> bool:
        """Output 0 of op `op_index` as the int8 tensor of the QUANTIZE that
        alone reads the float RELU that alone reads it (TFLiteConverter's
        quantization-aware path leaves a ReLU before a fake-quant float);
        both go."""
        op = self.ops[op_index]
        out = int(op.outputs[0])
        users = self.consumers.get(out, [])
        if out in self.graph_outputs or len(users) != 1 or self.names[users[0]] != "RELU":
            return False
        relu = users[0]
        if self.write_int8(relu):
            op.outputs[0] = self.ops[relu].outputs[0]
            self.producer[int(op.outputs[0])] = op_index
            self.removed.add(relu)
            return True
        return False


def fuse_int8_io(tflite_model: bytes) -> tuple[bytes, int]:
    """Step 3 of the module docstring. Returns the model and how many int8
    tensors the lowbit ops now read or write directly."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    fused = 0
    for subgraph in model.subgraphs:
        uses = _Uses(model, subgraph)
        for i, op in enumerate(uses.ops):
            name = uses.names[i]
            if name not in INT8_IO_OPS:
                continue
            options = {k: v.decode() if isinstance(v, bytes) else v
                       for k, v in flexbuffers.Loads(bytes(bytearray(op.customOptions))).items()}
            if options.get("output_type", "float") == "float" and uses.write_int8(i):
                options["output_type"] = "int8"
                fused += 1
                if name == "LowbitBconv2d" and uses.write_int8(i, through="RELU"):
                    options["output_activation"] = "RELU"
                op.customOptions = np.frombuffer(flexbuffers.Dumps(options), np.uint8)
            elif (name == "LowbitBconv2d" and options.get("output_type", "float") == "float"
                  and uses.write_int8_after_relu(i)):
                options.update(output_type="int8", output_activation="RELU")
                fused += 1
                op.customOptions = np.frombuffer(flexbuffers.Dumps(options), np.uint8)
            fused += uses.read_int8(i, 0)
            if options.get("epilogue") in ("add", "affine_add"):
                fused += uses.read_int8(i, len(op.inputs) - 1)
        subgraph.operators = [op for i, op in enumerate(uses.ops) if i not in uses.removed]
    return _serialize(model), fused


def check_int8_io_types(inference_input_type: Any, inference_output_type: Any,
                        int8: bool) -> tuple[bool, bool]:
    """(int8 inputs, int8 outputs) from LCE / TFLiteConverter-style type
    arguments: float32 (or None) or int8, int8 only with int8=True."""
    result = []
    for name, value in (("inference_input_type", inference_input_type),
                        ("inference_output_type", inference_output_type)):
        text = "float32" if value is None else (
            getattr(value, "name", None) or getattr(value, "__name__", None) or str(value))
        if text not in ("float32", "int8"):
            raise ValueError(f"{name} must be float32 or int8, got {value!r}")
        if text == "int8" and not int8:
            raise ValueError(f"{name}=int8 needs int8=True (and a representative_dataset)")
        result.append(text == "int8")
    return result[0], result[1]
