"""Post-conversion pass over the .tflite flatbuffer.

TFLiteConverter(allow_custom_ops=True) emits each lowbit TF op as a CUSTOM
op whose custom_code is the TF op name and whose custom_options is a
FlexBuffer map of all the TF op's attributes. This pass:
  - checks every custom op is one of ours (anything else would fail to run);
  - rewrites each one's custom_options to exactly the documented keys
    (docs/custom_ops.md), dropping TF-internal attributes such as "T" and
    "Tout" and optional keys that have their default value, and validates
    their types and values;
  - checks the op's weight inputs (filter, multiplier, bias, and the
    epilogue's post_multiplier and post_bias) are constants;
  - folds a float RELU whose only reader is a MAX_POOL_2D into that pool's
    fused activation (max pooling and ReLU commute: both are monotone, so
    max(relu(x_i)) = relu(max(x_i))): the ReLU then runs on the pooled
    tensor, inside the pool, instead of as a pass of its own over the
    4x larger input (QuickNet's transition blocks: ReLU, then MaxPool);
  - where the model has lowbit ops, says what runs it: a plain TFLite
    interpreter only reports "Encountered unresolved custom op: LowbitBconv2d",
    so the model's description and its metadata entry "lowbit_tf" (read by
    `lowbit_tf.lite.describe_model`) name the ops and `lowbit_tf.lite.Interpreter`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import flatbuffers
import numpy as np
from flatbuffers import flexbuffers

from lowbit_converter.custom_op_specs import CUSTOM_OPS, CustomOpSpec
from lowbit_converter.folding import ConversionError
from lowbit_converter.tflite_schema import schema
from lowbit_tf import __version__
from lowbit_tf.lite import METADATA_NAME


@dataclass
class PassReport:
    """What the pass saw: custom ops by name, and bytes of their constant inputs."""

    custom_ops: dict[str, int] = field(default_factory=dict)
    custom_op_weight_bytes: int = 0


def _normalised_options(spec: CustomOpSpec, raw: bytes, where: str) -> dict:
    try:
        options = flexbuffers.Loads(raw)
    except Exception as error:  # flexbuffers raises assorted errors on bad data
        raise ConversionError(f"{where}: custom options are not a FlexBuffer map") from error
    if not isinstance(options, dict):
        raise ConversionError(f"{where}: custom options are not a FlexBuffer map")
    result = {}
    for key, option in spec.options.items():
        if key not in options and option.default is None:
            raise ConversionError(f"{where}: custom option {key!r} is missing")
        value = options.get(key, option.default)
        if option.type is str and isinstance(value, bytes):
            value = value.decode()
        if not isinstance(value, option.type) or isinstance(value, bool):
            raise ConversionError(
                f"{where}: custom option {key!r} = {value!r} is not {option.type.__name__}"
            )
        if option.choices is not None and value not in option.choices:
            raise ConversionError(
                f"{where}: custom option {key!r} = {value!r} not in {option.choices}"
            )
        if option.minimum is not None and value < option.minimum:
            raise ConversionError(f"{where}: custom option {key!r} = {value!r} < {option.minimum}")
        if option.default is not None and value == option.default:
            continue  # absent means the default (docs/custom_ops.md)
        result[key] = value
    return result


def run_pass(tflite_model: bytes) -> tuple[bytes, PassReport]:
    """Validates and normalises the lowbit custom ops of a converted model."""
    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite_model), 0)
    report = PassReport()
    for s, subgraph in enumerate(model.subgraphs):
        for i, op in enumerate(subgraph.operators):
            code = model.operatorCodes[op.opcodeIndex]
            builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
            if builtin != schema.BuiltinOperator.CUSTOM:
                continue
            name = (code.customCode or b"").decode()
            where = f"subgraph {s} operator {i} ({name})"
            spec = CUSTOM_OPS.get(name)
            if spec is None:
                raise ConversionError(
                    f"{where}: the model contains a custom op {name!r} that no lowbit "
                    "kernel implements; only builtins and lowbit ops can run"
                )
            raw = b"" if op.customOptions is None else bytes(bytearray(op.customOptions))
            options = _normalised_options(spec, raw, where)
            constness = spec.input_constness(options)
            if len(op.inputs) != len(constness):
                raise ConversionError(
                    f"{where}: expected {len(constness)} inputs, got {len(op.inputs)}"
                )
            op.customOptions = np.frombuffer(flexbuffers.Dumps(options), np.uint8)
            op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
            for tensor_index, constant in zip(op.inputs, constness, strict=True):
                if not constant:
                    continue
                tensor = subgraph.tensors[tensor_index]
                data = model.buffers[tensor.buffer].data
                empty = tensor.shape is not None and 0 in list(tensor.shape)
                if (data is None or len(data) == 0) and not empty:
                    raise ConversionError(
                        f"{where}: weight input {tensor.name!r} is not a constant"
                    )
                report.custom_op_weight_bytes += 0 if data is None else len(data)
            report.custom_ops[name] = report.custom_ops.get(name, 0) + 1
    for subgraph in model.subgraphs:
        _fold_relu_into_max_pool(model, subgraph)
    if report.custom_ops:
        _add_runtime_note(model, sorted(report.custom_ops))
    builder = flatbuffers.Builder(len(tflite_model) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), report


def _builtin(model: schema.ModelT, op: schema.OperatorT) -> int:
    code = model.operatorCodes[op.opcodeIndex]
    return max(code.builtinCode, code.deprecatedBuiltinCode)


def _fold_relu_into_max_pool(model: schema.ModelT, subgraph: schema.SubGraphT) -> None:
    """RELU -> MAX_POOL_2D (no fused activation) becomes MAX_POOL_2D with a
    fused RELU, where the ReLU's output is read by the pool alone (not by
    another op, not a model output) and both tensors are float32 (a
    quantized ReLU may change the scale). The ReLU's output tensor stays in
    the table, unused (TFLite allocates no memory for it)."""
    producer = {}
    readers: dict[int, int] = {}
    for op in subgraph.operators:
        for t in op.outputs if op.outputs is not None else []:
            producer[t] = op
        for t in op.inputs if op.inputs is not None else []:
            readers[t] = readers.get(t, 0) + 1
    outputs = set(subgraph.outputs if subgraph.outputs is not None else [])
    folded = []
    for op in subgraph.operators:
        if _builtin(model, op) != schema.BuiltinOperator.MAX_POOL_2D:
            continue
        options = op.builtinOptions
        if options.fusedActivationFunction != schema.ActivationFunctionType.NONE:
            continue
        pooled = op.inputs[0]
        relu = producer.get(pooled)
        if relu is None or _builtin(model, relu) != schema.BuiltinOperator.RELU:
            continue
        source = relu.inputs[0]
        if readers.get(pooled) != 1 or pooled in outputs or any(
            subgraph.tensors[t].type != schema.TensorType.FLOAT32 for t in (source, pooled)
        ):
            continue
        op.inputs[0] = source
        options.fusedActivationFunction = schema.ActivationFunctionType.RELU
        folded.append(relu)
    if folded:
        subgraph.operators = [op for op in subgraph.operators if all(op is not r for r in folded)]


def runtime_note(custom_ops: list[str]) -> str:
    """What a model with these lowbit ops says about how to run it."""
    return (
        f"lowbit-tf {__version__} model with custom ops {', '.join(custom_ops)}: run it with "
        "lowbit_tf.lite.Interpreter (pip install lowbit-tf-runtime, or lowbit-tf)"
    )


def _add_runtime_note(model: schema.ModelT, custom_ops: list[str]) -> None:
    """Puts `runtime_note` into the model's description and into its metadata
    entry METADATA_NAME (a buffer of UTF-8 text), replacing an earlier one."""
    note = runtime_note(custom_ops).encode()
    model.description = note
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(note, np.uint8)
    model.metadata = model.metadata or []
    for entry in model.metadata:
        if entry.name == METADATA_NAME.encode() and 0 < entry.buffer < len(model.buffers):
            model.buffers[entry.buffer] = buffer
            return
    entry = schema.MetadataT()
    entry.name = METADATA_NAME.encode()
    entry.buffer = len(model.buffers)
    model.buffers.append(buffer)
    model.metadata.append(entry)
