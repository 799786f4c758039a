r"""Model summary with bits, memory, operation counts and the predicted .tflite size.

    import lowbit_tf
    s = lowbit_tf.summary(model)   # prints the table, returns a ModelSummary
    # (lowbit_tf.summary.summary(model) is the same function; the module is callable)
    s.total_params, s.binary_macs, s.compression_ratio, s.predicted_tflite_bytes

Per layer: the weight and input (activation) bits, the parameters by precision,
their memory, the multiply-accumulates (MACs) by precision with binary ones
(1-bit weights times 1-bit inputs: XNOR + popcount) counted apart, the output
shape, and the predicted bytes the layer adds to the converted ``.tflite``.

Counting rules:

- **Bits.** A quantized layer's kernel has its kernel quantizer's ``precision``
  (32 without one); its inputs have the input quantizer's precision. ABC-Net
  layers: weight bits ``M`` (binary bases), input bits ``N``. Everything else
  is 32-bit. Biases, BatchNorm statistics, ABC shifts/betas and Fastfood
  diagonals are 32-bit parameters.
- **Memory** is ``sum(params * bits) / 8`` bytes; the compression ratio is the
  float32 memory of the same parameters (4 bytes each) over that.
- **MACs** per example (batch axis excluded): conv (1-D, 2-D, 3-D) ``output
  positions * filters * kernel positions * in_channels / groups``, depthwise
  ``output positions * in_channels * depth_multiplier * kernel positions``,
  separable the depthwise part plus ``output positions * in_channels *
  depth_multiplier * filters`` (the pointwise part, whose inputs are float),
  transposed conv ``input positions * kernel size``, locally connected ``output
  positions * kernel positions * in_channels * filters``, dense ``rows * in *
  units``. A MAC is binary when both operands are 1-bit, else it is counted at
  ``max(weight bits, input bits)``. ABC-Net layers count ``M * N`` binary
  convolutions / products. FastfoodDense counts ``k n (3 + 2 log2 n)`` float32
  operations per row (3 diagonal products and the two butterflies' additions).
  Layers without kernels (pooling, BatchNorm, activations) count 0.
- **Predicted .tflite size** (what ``lowbit_converter.convert(model)`` writes):
  ``TFLITE_BASE_BYTES`` (plus ``TFLITE_NOTE_BYTES`` where there are custom ops: the
  converter's note on what runs the model) plus, per layer that becomes an op,
  ``TFLITE_OP_BYTES`` plus its constant data. A binary layer lowered to
  ``LowbitBconv2d`` stores ``filters * (4 * ceil(kh * kw * in_channels / 32) + 8)``
  bytes (one bit per weight packed in int32 words per output channel, and a float
  multiplier and bias per channel) plus
  ``TFLITE_CUSTOM_OP_BYTES``; a multi-bit layer lowered to ``LowbitMultibitConv2d``
  stores M such packed planes, an alpha per plane and channel, a bias per channel and
  its betas and shifts, plus ``TFLITE_CUSTOM_OP_BYTES + TFLITE_MULTIBIT_EXTRA_BYTES``; a
  grouped layer is one op per group plus a split and a concatenation; a
  ``FastfoodDense`` is one ``LowbitFastfood`` with its three diagonals, int32
  permutation and bias. The BatchNorm and ReLU folded into a lowered layer take nothing;
  a BatchNormalization right after a float conv/dense layer is folded into it by TFLite
  (nothing, or a bias of ``4 * channels`` bytes); one elsewhere becomes a multiply and
  an add (``8 * channels`` bytes); every other layer stores its parameters as float32 (4
  bytes each). The constants were fitted on converted models; the estimate is within 5%
  for the models of ``tests/keras/test_training_tools.py`` (within 1% measured) when their
  weights are non-trivial (the TFLite converter removes all-zero biases and shares
  identical constant buffers, so freshly initialised models come out somewhat smaller
  than predicted).
"""

from __future__ import annotations

import math
import sys
import types
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from lowbit_tf import _facade
from lowbit_tf import layers as lb_layers
from lowbit_tf._keras import keras

__all__ = ["LayerSummary", "ModelSummary", "summary"]

#: Fixed part of a converted model (header, subgraph, signature, metadata), bytes.
TFLITE_BASE_BYTES = 800
#: Per operator (operator, its tensors' entries and names, buffer table), bytes.
TFLITE_OP_BYTES = 400
#: Extra per custom op (its name and FlexBuffer options), bytes.
TFLITE_CUSTOM_OP_BYTES = 350
#: Extra per LowbitMultibitConv2d (two more inputs, two more options), bytes.
TFLITE_MULTIBIT_EXTRA_BYTES = 250
#: Per small glue operator around a custom op (reshape, gather, add), bytes.
TFLITE_GLUE_BYTES = 150
#: Extra per model with custom ops: the converter's note on what runs it (the
#: model's description and its metadata entry "lowbit_tf"), bytes.
TFLITE_NOTE_BYTES = 320

_FLOAT = 32


@dataclass
class LayerSummary:
    """One row of the summary."""

    name: str
    type: str
    output_shape: tuple[Any, ...]
    weight_bits: int | None  # None: no kernel
    input_bits: int | None  # None: not a computing layer
    params: dict[int, int] = field(default_factory=dict)  # bits -> count
    macs: dict[int, int] = field(default_factory=dict)  # bits -> count (1: binary)
    predicted_tflite_bytes: int = 0

    @property
    def total_params(self) -> int:
        return sum(self.params.values())

    @property
    def memory_bytes(self) -> float:
        return sum(bits * n for bits, n in self.params.items()) / 8

    @property
    def binary_macs(self) -> int:
        return self.macs.get(1, 0)

    @property
    def total_macs(self) -> int:
        return sum(self.macs.values())


@dataclass
class ModelSummary:
    """The summary of a model: its rows and totals. ``str()`` gives the table."""

    name: str
    layers: list[LayerSummary]
    #: Bytes of the model as a whole beyond TFLITE_BASE_BYTES (the note of a
    #: model with custom ops).
    model_bytes: int = 0

    def _sum(self, attr: str) -> dict[int, int]:
        total: dict[int, int] = {}
        for row in self.layers:
            for bits, n in getattr(row, attr).items():
                total[bits] = total.get(bits, 0) + n
        return dict(sorted(total.items()))

    @property
    def params_by_precision(self) -> dict[int, int]:
        return self._sum("params")

    @property
    def macs_by_precision(self) -> dict[int, int]:
        return self._sum("macs")

    @property
    def total_params(self) -> int:
        return sum(self.params_by_precision.values())

    @property
    def memory_bytes(self) -> float:
        return sum(row.memory_bytes for row in self.layers)

    @property
    def float32_memory_bytes(self) -> int:
        return 4 * self.total_params

    @property
    def compression_ratio(self) -> float:
        """float32 memory / quantized memory of the parameters."""
        memory = self.memory_bytes
        return self.float32_memory_bytes / memory if memory else 1.0

    @property
    def binary_macs(self) -> int:
        return self.macs_by_precision.get(1, 0)

    @property
    def total_macs(self) -> int:
        return sum(self.macs_by_precision.values())

    @property
    def predicted_tflite_bytes(self) -> int:
        return (TFLITE_BASE_BYTES + self.model_bytes
                + sum(row.predicted_tflite_bytes for row in self.layers))

    def __str__(self) -> str:
        def bits(b: int | None) -> str:
            return "-" if b is None else str(b)

        def by_precision(d: dict[int, int]) -> str:
            return " ".join(f"{n:,}@{b}b" for b, n in d.items() if n) or "0"

        headers = ["Layer (type)", "Output shape", "W bits", "A bits", "Params (count@bits)",
                   "Memory (kB)", "MACs (count@bits; 1b = binary)", "tflite (kB)"]  # fmt: skip
        rows = [
            [f"{r.name} ({r.type})", str(r.output_shape), bits(r.weight_bits),
             bits(r.input_bits), by_precision(r.params), f"{r.memory_bytes / 1024:.2f}",
             by_precision(r.macs), f"{r.predicted_tflite_bytes / 1024:.2f}"]
            for r in self.layers
        ]  # fmt: skip
        rows.append(["Total", "", "", "", by_precision(self.params_by_precision),
                     f"{self.memory_bytes / 1024:.2f}", by_precision(self.macs_by_precision),
                     f"{self.predicted_tflite_bytes / 1024:.2f}"])  # fmt: skip
        widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=True)]
        line = "+" + "+".join("-" * (w + 2) for w in widths) + "+"

        def fmt(cells: list[str]) -> str:
            return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

        out = [f"Model: {self.name}", line, fmt(headers), line]
        out += [fmt(r) for r in rows[:-1]] + [line, fmt(rows[-1]), line]
        out.append(
            f"Total params: {self.total_params:,}   memory: {self.memory_bytes / 1024:.2f} kB "
            f"(float32: {self.float32_memory_bytes / 1024:.2f} kB, compression "
            f"{self.compression_ratio:.2f}x)"
        )
        out.append(
            f"MACs: {self.total_macs:,} (binary: {self.binary_macs:,}, others: "
            f"{self.total_macs - self.binary_macs:,})   predicted .tflite: "
            f"{self.predicted_tflite_bytes / 1024:.1f} kB"
        )
        return "\n".join(out)


def _precision(quantizer: Any) -> int:
    if quantizer is None:
        return _FLOAT
    return getattr(quantizer, "precision", None) or _FLOAT


def _shape(layer: keras.layers.Layer, which: str) -> tuple[Any, ...]:
    try:
        tensor = getattr(layer, which)
    except (AttributeError, ValueError) as e:
        raise ValueError(
            f"summary: layer '{layer.name}' has no {which} shape; build the model "
            "(e.g. with keras.Input) before summarising it."
        ) from e
    if isinstance(tensor, (list, tuple)):
        tensor = tensor[0]
    return tuple(tensor.shape)


def _prod(values: Any) -> int:
    return math.prod(int(v) for v in values if v is not None)


def _count(variables: Any) -> int:
    return sum(_prod(v.shape) for v in variables)


def _conversion_plan(model: keras.Model) -> tuple[dict[str, Any], set[str], dict[str, int]]:
    """What the conversion does to the model's layers, as far as sizes go.

    Returns ``(plans, folded, extra)``: the binary convs lowered to
    ``LowbitBconv2d`` (by name, from the converter's own planning), the layers
    that become no op of their own (BatchNorm/ReLU folded into a lowered conv;
    a BatchNorm right after a float conv or dense layer, which the TFLite
    converter folds into that layer's weights), and extra bytes some layers get
    from a fold (the bias a bias-less float layer gains).
    """
    try:
        planned = _facade.conversion_plan(model)
    except ValueError:  # not convertible as is; predict float ops
        return {}, set(), {}
    if planned is None:  # converter not installed: no lowering predicted
        return {}, set(), {}
    plans, graph = planned
    folded: set[str] = set()
    for plan in plans.values():
        folded.update(x.name for x in (getattr(plan, "batch_norm", None),
                                       getattr(plan, "relu", None)) if x is not None)
    extra: dict[str, int] = {}
    by_name = {layer.name: layer for layer in model.layers}
    float_linear = (keras.layers.Conv2D, keras.layers.Dense, keras.layers.DepthwiseConv2D)
    for name, layer in by_name.items():
        if name in plans or not isinstance(layer, float_linear):
            continue
        if isinstance(layer, (lb_layers.ABCConv2D, lb_layers.ABCDense)):
            continue
        nxt = by_name.get(graph.only_consumer(name) or "")
        activation = getattr(layer.activation, "__name__", "linear")
        if isinstance(nxt, keras.layers.BatchNormalization) and activation == "linear":
            folded.add(nxt.name)
            if not layer.use_bias:
                extra[name] = 4 * int(layer.kernel.shape[-1])
    return plans, folded, extra


_SEPARABLE = (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)
_TRANSPOSED = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose,
               keras.layers.Conv3DTranspose)
#: Keras's layers with kernels (their quantized twins derive from them).
_LINEAR = (keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Dense,
           keras.layers.DepthwiseConv2D, *_SEPARABLE, *_TRANSPOSED)


def _kernels(layer: keras.layers.Layer) -> list[tuple[Any, Any]]:
    """(kernel variable, its quantizer) of a layer: the depthwise and the
    pointwise kernel of a separable conv, else its one ``kernel``."""
    if isinstance(layer, _SEPARABLE):
        return [(layer.depthwise_kernel, getattr(layer, "depthwise_quantizer", None)),
                (layer.pointwise_kernel, getattr(layer, "pointwise_quantizer", None))]
    return [(layer.kernel, getattr(layer, "kernel_quantizer", None))]


def _layer_summary(
    layer: keras.layers.Layer, plans: dict[str, Any], folded: set[str], extra: dict[str, int]
) -> LayerSummary:
    out_shape = _shape(layer, "output")
    row = LayerSummary(layer.name, type(layer).__name__, out_shape, None, None)
    weights = list(layer.weights)
    if isinstance(layer, (lb_layers.ABCConv2D, lb_layers.ABCDense)):
        m, n = layer.num_weight_bases, layer.num_activation_bases
        row.weight_bits, row.input_bits = m, n
        kernel = _prod(layer.kernel.shape)
        row.params = {m: kernel, _FLOAT: _count(weights) - kernel}
        macs = _layer_macs(layer, out_shape)[0]
        row.macs = {1: macs * m * n} if macs else {}
    elif isinstance(layer, (lb_layers.QuantizedLayerMixin, *_LINEAR)):
        row.input_bits = _precision(getattr(layer, "input_quantizer", None))
        row.params, row.macs = {}, {}
        input_bits = row.input_bits
        kernels = _kernels(layer)
        for (kernel, quantizer), macs in zip(kernels, _layer_macs(layer, out_shape),
                                             strict=True):
            bits = _precision(quantizer)
            row.weight_bits = row.weight_bits or bits  # the first kernel's
            row.params[bits] = row.params.get(bits, 0) + _prod(kernel.shape)
            kind = 1 if bits == input_bits == 1 else max(bits, input_bits)
            row.macs[kind] = row.macs.get(kind, 0) + macs
            input_bits = _FLOAT  # a separable conv's pointwise half reads float values
        rest = _count(weights) - sum(_prod(k.shape) for k, _ in kernels)
        if rest:
            row.params[_FLOAT] = row.params.get(_FLOAT, 0) + rest
    elif weights:
        row.params = {_FLOAT: _count(weights)}
    if isinstance(layer, lb_layers.FastfoodDense):
        row.macs = {_FLOAT: _layer_macs(layer, out_shape)[0]}
    row.params = {b: c for b, c in sorted(row.params.items()) if c}
    row.macs = {b: c for b, c in sorted((row.macs or {}).items()) if c}
    row.predicted_tflite_bytes = _predicted_bytes(layer, row, plans, folded)
    if row.predicted_tflite_bytes:
        row.predicted_tflite_bytes += extra.get(layer.name, 0)
    return row


def _spatial(layer: keras.layers.Layer, shape: tuple[Any, ...]) -> tuple[Any, ...]:
    return shape[1:-1] if getattr(layer, "data_format", "channels_last") == "channels_last" \
        else shape[2:]


def _layer_macs(layer: keras.layers.Layer, out_shape: tuple[Any, ...]) -> list[int]:
    """MACs per example, one count per kernel of ``_kernels`` (one for FastfoodDense)."""
    if isinstance(layer, lb_layers.FastfoodDense):
        n, k = layer.padded_dim, layer.num_blocks
        return [_prod(out_shape[1:-1]) * k * n * (3 + 2 * int(math.log2(n)))]
    if isinstance(layer, lb_layers.QuantLocallyConnected1D | lb_layers.QuantLocallyConnected2D):
        # Every output position: kernel positions x in channels x filters.
        channels = _shape(layer, "input")[-1 if layer.data_format == "channels_last" else 1]
        return [_prod(layer.output_spatial) * _prod(layer.kernel_size) * channels
                * layer.filters]
    spatial = _prod(_spatial(layer, out_shape))
    if isinstance(layer, _SEPARABLE):
        return [spatial * _prod(layer.depthwise_kernel.shape),
                spatial * _prod(layer.pointwise_kernel.shape)]
    if isinstance(layer, _TRANSPOSED):  # each input pixel meets the whole kernel
        return [_prod(_spatial(layer, _shape(layer, "input"))) * _prod(layer.kernel.shape)]
    if isinstance(layer, _LINEAR):  # conv kernels hold in_channels / groups
        return [spatial * _prod(layer.kernel.shape)]
    return [0]


def _lowered_bytes(layer: keras.layers.Layer, plan: Any) -> int:
    """Bytes of the custom op(s) a lowered layer becomes: one per group."""
    # Conv kernels [KH, KW, C (per group), F], dense kernels [C, F]: each
    # output channel (of each weight plane) packs its weights into whole
    # int32 words.
    per_op = TFLITE_OP_BYTES + TFLITE_CUSTOM_OP_BYTES
    if isinstance(layer, lb_layers.QuantDepthwiseConv2D):
        # LowbitBDepthwiseConv2d: per tap the C * DM signs packed in words,
        # a multiplier and bias per output channel.
        kh, kw, c, dm = layer.kernel.shape
        return per_op + 4 * kh * kw * math.ceil(c * dm / 32) + 8 * c * dm
    if isinstance(layer, _SEPARABLE):
        # The depthwise half as above; the pointwise half a float CONV_2D.
        *taps, c, dm = layer.depthwise_kernel.shape
        pointwise = 4 * (_prod(layer.pointwise_kernel.shape)
                         + (int(layer.bias.shape[0]) if layer.use_bias else 0))
        return (per_op + 4 * _prod(taps) * math.ceil(c * dm / 32) + 8 * c * dm
                + TFLITE_OP_BYTES + pointwise)
    if isinstance(layer, lb_layers.QuantConv3D):
        # One LowbitBconv2d per depth tap, its [kh, kw, C] packed per filter;
        # glue: a gather per tap, the adds of their sums, the output transform
        # (a multiply and an add), the +1 padding along depth if any.
        kd, kh, kw, c, f = layer.kernel.shape
        glue = 2 * kd + 1 + (layer.padding == "same" and layer.pad_values == 1.0)
        return kd * (per_op + f * (4 * math.ceil(kh * kw * c / 32) + 8)) + glue * TFLITE_GLUE_BYTES
    if isinstance(layer, lb_layers.QuantConv2DTranspose):
        # One LowbitBconv2d per stride phase (ry, rx) with its taps ry, ry + s, ...
        # packed per filter, all sharing one multiplier and bias (the TFLite
        # converter stores equal constants once); a phase no tap reaches is
        # its bias broadcast. Glue: the concatenation and DEPTH_TO_SPACE of the
        # phases, the crop.
        kh, kw, f, c = layer.kernel.shape
        stride = int(layer.strides[0])
        total = (2 * TFLITE_GLUE_BYTES if stride > 1 else 0) + TFLITE_GLUE_BYTES + 8 * f
        for ry in range(stride):
            for rx in range(stride):
                taps = len(range(ry, kh, stride)) * len(range(rx, kw, stride))
                total += (per_op + 4 * f * math.ceil(taps * c / 32) if taps
                          else 2 * TFLITE_GLUE_BYTES)
        return total
    if isinstance(layer, lb_layers.QuantConv1D):  # the 2-D op between two reshapes
        return per_op + _prod(layer.kernel.shape[-1:]) * (
            4 * math.ceil(_prod(layer.kernel.shape[:-1]) / 32) + 8) + 2 * TFLITE_GLUE_BYTES
    *fan_in, f = layer.kernel.shape
    groups = int(getattr(layer, "groups", 1))
    words = math.ceil(_prod(fan_in) / 32)
    planes = getattr(plan, "planes", None)  # a multi-bit plan's weight/activation planes
    if planes is None:  # LowbitBconv2d / LowbitBgemm: filter, multiplier, bias
        data = f * (4 * words + 8)
    else:  # LowbitMultibitConv2d: filter, alphas, bias; shifts and betas per op
        m = planes.weights.shape[0]
        data = f * (m * (4 * words + 4) + 4)
        extra = 0 if planes.shifts is None else len(planes.shifts)
        data += groups * 4 * (len(planes.betas) + extra)
        per_op += TFLITE_MULTIBIT_EXTRA_BYTES
    # A grouped layer also needs a split and a concatenation of the channels.
    glue = 2 * TFLITE_OP_BYTES if groups > 1 else 0
    return groups * per_op + data + glue


def _predicted_bytes(
    layer: keras.layers.Layer, row: LayerSummary, plans: dict[str, Any], folded: set[str]
) -> int:
    if layer.name in folded or isinstance(
        layer, (keras.layers.InputLayer, keras.layers.Dropout)
    ):
        return 0
    if isinstance(layer, lb_layers.FastfoodDense):
        # One LowbitFastfood: b, g, s and the int32 permutation, k * n each,
        # and a bias (zeros when the layer has none).
        blocks = layer.num_blocks * layer.padded_dim
        return TFLITE_OP_BYTES + TFLITE_CUSTOM_OP_BYTES + 4 * (4 * blocks + layer.units)
    if layer.name in plans:
        return _lowered_bytes(layer, plans[layer.name])
    if isinstance(layer, keras.layers.BatchNormalization):
        return TFLITE_OP_BYTES + 8 * _prod(layer.gamma.shape if layer.scale else layer.beta.shape)
    return TFLITE_OP_BYTES + 4 * row.total_params


def summary(
    model: keras.Model, print_fn: Callable[[str], Any] | None = print
) -> ModelSummary:
    """Summarises ``model`` (see the module docstring for what is counted).

    Arguments:
        model: A built Keras model (Sequential or functional).
        print_fn: Called with the table; ``None`` prints nothing.

    Returns:
        The :class:`ModelSummary` (rows and totals as numbers).

    Raises:
        TypeError: if ``model`` is not a Keras model.
        ValueError: if the model is not built.
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"summary expects a keras.Model, received {type(model).__name__}.")
    if not model.built:
        raise ValueError(
            f"summary: model '{model.name}' is not built; build it (e.g. with keras.Input) first."
        )
    plans, folded, extra = _conversion_plan(model)
    rows = [
        _layer_summary(layer, plans, folded, extra)
        for layer in model.layers
        if not isinstance(layer, keras.layers.InputLayer)
    ]
    custom_ops = bool(plans) or any(isinstance(layer, lb_layers.FastfoodDense)
                                    for layer in model.layers)
    result = ModelSummary(model.name, rows, TFLITE_NOTE_BYTES if custom_ops else 0)
    if print_fn is not None:
        print_fn(str(result))
    return result


class _CallableModule(types.ModuleType):
    """Lets ``lowbit_tf.summary(model)`` work where ``lowbit_tf.summary`` is this module."""

    def __call__(
        self, model: keras.Model, print_fn: Callable[[str], Any] | None = print
    ) -> ModelSummary:
        return summary(model, print_fn=print_fn)


sys.modules[__name__].__class__ = _CallableModule
