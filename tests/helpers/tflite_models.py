"""Building and reading .tflite files for the tests, with the flatbuffers object
API of the TFLite schema (so building needs neither the TF ops nor the
converter): ``ModelBuilder`` (tensors, constant buffers, custom ops),
``bconv_options`` (LowbitBconv2d's FlexBuffer options), ``Case`` (a one-op
LowbitBconv2d model with its input and NumPy result) and ``tflite_ops`` (the
operators of a converted model, via the converter's schema).
"""

from __future__ import annotations

import flatbuffers
import numpy as np
from ai_edge_litert import schema_py_generated as schema
from flatbuffers import flexbuffers
from reference import bconv2d_np, bitpack_np


def bconv2d_ref(x, w, multiplier, bias, stride, dilation, padding, pad_value, activation):
    """tests/helpers/reference.py's binary conv, for a +-1 filter in OHWI [Cout,KH,KW,C]."""
    return bconv2d_np(x, np.transpose(w, (1, 2, 3, 0)), multiplier, bias, stride, dilation,
                      padding, pad_value, activation.lower())


# --------------------------------------------------------------------------
# Building .tflite models
# --------------------------------------------------------------------------

_TYPES = {
    np.dtype(np.float32): schema.TensorType.FLOAT32,
    np.dtype(np.int32): schema.TensorType.INT32,
    np.dtype(np.int64): schema.TensorType.INT64,
    np.dtype(np.int8): schema.TensorType.INT8,
    np.dtype(np.int16): schema.TensorType.INT16,
}


def bconv_options(**overrides) -> bytes:
    """FlexBuffer custom options of LowbitBconv2d; None values drop the key."""
    options = {
        "channels_in": 1,
        "kernel_h": 3,
        "kernel_w": 3,
        "stride_h": 1,
        "stride_w": 1,
        "dilation_h": 1,
        "dilation_w": 1,
        "padding": "VALID",
        "pad_value": 0,
        "activation": "NONE",
    }
    options.update(overrides)
    return bytes(flexbuffers.Dumps({k: v for k, v in options.items() if v is not None}))


class ModelBuilder:
    """Tiny .tflite writer: tensors, CUSTOM/builtin ops, one subgraph."""

    def __init__(self) -> None:
        self.tensors: list = []
        self.buffers: list = [schema.BufferT()]
        self.ops: list = []
        self.codes: list = []

    def tensor(self, shape, dtype, data: np.ndarray | None = None, name: str | None = None,
               quantization: tuple | None = None):
        """quantization: (scales, zero_points) lists (one each: per tensor), or
        (scales, zero_points, quantized_dimension)."""
        t = schema.TensorT()
        t.shape = list(shape)
        t.type = _TYPES[np.dtype(dtype)]
        t.name = name or f"t{len(self.tensors)}"
        if quantization is not None:
            q = schema.QuantizationParametersT()
            q.scale = [float(v) for v in quantization[0]]
            q.zeroPoint = [int(v) for v in quantization[1]]
            q.quantizedDimension = quantization[2] if len(quantization) > 2 else 0
            t.quantization = q
        if data is not None:
            buf = schema.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data, dtype=dtype).tobytes(), np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def _code(self, builtin: int, custom: str | None) -> int:
        key = (builtin, custom)
        for i, c in enumerate(self.codes):
            if (c.builtinCode, c.customCode) == key:
                return i
        code = schema.OperatorCodeT()
        code.builtinCode = builtin
        code.deprecatedBuiltinCode = min(builtin, 127)
        code.customCode = custom
        self.codes.append(code)
        return len(self.codes) - 1

    def custom_op(self, name: str, inputs, outputs, options: bytes) -> None:
        op = schema.OperatorT()
        op.opcodeIndex = self._code(schema.BuiltinOperator.CUSTOM, name.encode())
        op.inputs, op.outputs = list(inputs), list(outputs)
        op.customOptions = list(options)
        op.customOptionsFormat = schema.CustomOptionsFormat.FLEXBUFFERS
        self.ops.append(op)

    def add_op(self, inputs, outputs) -> None:
        op = schema.OperatorT()
        op.opcodeIndex = self._code(schema.BuiltinOperator.ADD, None)
        op.inputs, op.outputs = list(inputs), list(outputs)
        op.builtinOptionsType = schema.BuiltinOptions.AddOptions
        op.builtinOptions = schema.AddOptionsT()
        self.ops.append(op)

    def finish(self, inputs, outputs) -> bytes:
        sub = schema.SubGraphT()
        sub.tensors, sub.operators = self.tensors, self.ops
        sub.inputs, sub.outputs = list(inputs), list(outputs)
        sub.name = "main"
        model = schema.ModelT()
        model.version = 3
        model.operatorCodes = self.codes
        model.subgraphs = [sub]
        model.buffers = self.buffers
        model.description = "lowbit test model"
        b = flatbuffers.Builder(1024)
        b.Finish(model.Pack(b), file_identifier=b"TFL3")
        return bytes(b.Output())


class Case:
    """One LowbitBconv2d configuration with random data."""

    def __init__(
        self,
        n=1,
        h=5,
        w=5,
        c=3,
        cout=4,
        kh=3,
        kw=3,
        stride=(1, 1),
        dilation=(1, 1),
        padding="VALID",
        pad_value=0,
        activation="NONE",
        packed_input=False,
        seed=0,
    ):
        self.__dict__.update(locals())
        del self.__dict__["self"]
        rng = np.random.default_rng(seed)
        self.x = rng.standard_normal((n, h, w, c)).astype(np.float32)
        self.x[rng.random(self.x.shape) < 0.05] = 0.0  # sign(0) = +1
        self.weights = np.where(rng.random((cout, kh, kw, c)) < 0.5, -1.0, 1.0).astype(np.float32)
        self.filter = bitpack_np(self.weights.reshape(cout, -1))  # compact OHWI bits
        self.multiplier = rng.uniform(0.1, 2.0, cout).astype(np.float32)
        self.bias = rng.uniform(-3, 3, cout).astype(np.float32)

    def options(self, **overrides) -> bytes:
        opts = dict(
            channels_in=self.c,
            kernel_h=self.kh,
            kernel_w=self.kw,
            stride_h=self.stride[0],
            stride_w=self.stride[1],
            dilation_h=self.dilation[0],
            dilation_w=self.dilation[1],
            padding=self.padding,
            pad_value=self.pad_value,
            activation=self.activation,
        )
        if not isinstance(self.padding, str):  # ((top, bottom), (left, right))
            (top, bottom), (left, right) = self.padding
            opts.update(padding="EXPLICIT", explicit_pad_top=top, explicit_pad_bottom=bottom,
                        explicit_pad_left=left, explicit_pad_right=right)
        opts.update(overrides)
        return bconv_options(**opts)

    def model_input(self) -> np.ndarray:
        return bitpack_np(self.x) if self.packed_input else self.x

    def expected(self) -> np.ndarray:
        return bconv2d_ref(
            self.x,
            self.weights,
            self.multiplier,
            self.bias,
            self.stride,
            self.dilation,
            self.padding,
            self.pad_value,
            self.activation,
        )

    def model(
        self,
        options: bytes | None = None,
        filter_data: np.ndarray | None = None,
        multiplier: np.ndarray | None = None,
        bias: np.ndarray | None = None,
        input_shape=None,
        input_dtype=None,
        output_shape=None,
    ) -> bytes:
        mb = ModelBuilder()
        inp = self.model_input()
        x = mb.tensor(input_shape or inp.shape, input_dtype or inp.dtype, name="input")
        fil = self.filter if filter_data is None else filter_data
        f = mb.tensor(fil.shape, fil.dtype, fil, name="filter")
        mul = self.multiplier if multiplier is None else multiplier
        m = mb.tensor(mul.shape, mul.dtype, mul, name="multiplier")
        bi = self.bias if bias is None else bias
        b = mb.tensor(bi.shape, bi.dtype, bi, name="bias")
        y = mb.tensor(output_shape or self.expected().shape, np.float32, name="output")
        opts = self.options() if options is None else options
        mb.custom_op("LowbitBconv2d", [x, f, m, b], [y], opts)
        return mb.finish([x], [y])


def tflite_ops(tflite: bytes):
    """The operators of subgraph 0 as (name, operator) pairs (a custom op by its
    custom code, a builtin by its BuiltinOperator name), the subgraph and the
    schema module, read with the converter's flatbuffer object API."""
    from lowbit_converter.tflite_schema import schema

    model = schema.ModelT.InitFromPackedBuf(bytearray(tflite), 0)
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    sub = model.subgraphs[0]
    result = []
    for op in sub.operators:
        code = model.operatorCodes[op.opcodeIndex]
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        name = code.customCode.decode() if code.customCode else names[builtin]
        result.append((name, op))
    return result, sub, schema
