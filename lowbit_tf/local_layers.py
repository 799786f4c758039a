r"""Locally connected layers with quantized inputs and kernel (Larq's
``QuantLocallyConnected1D`` / ``QuantLocallyConnected2D``).

Keras 3 dropped ``LocallyConnected1D/2D``, so they are written here, with Keras
2's arguments, weight shapes and results (Larq builds on Keras 2's), so that a
Larq model's weights load as they are. A locally connected layer is a
convolution whose filters are not shared: output position ``p`` has its own
kernel ``W[p]``:

.. math::  y[b, p, o] = \sum_f \text{patch}(q_i(x))[b, p, f] \; q_k(W)[p, f, o] + \text{bias}[p, o]

Keras 2 stores the kernel in one of three layouts (``implementation``):

- ``1`` (the default): ``(output positions, kernel positions x in channels,
  filters)``; the patch's features in the input's order: ``(row, col,
  channel)`` for ``channels_last``, ``(channel, row, col)`` for
  ``channels_first``; ``padding="valid"`` only (as in Keras 2);
- ``2``: a dense ``(input positions x in channels, output positions x filters)``
  matrix, multiplied by a fixed 0/1 mask of which input position reaches which
  output position (axes in the data format's order); ``"valid"`` or
  ``"same"``, where Keras 2's "same" connects output ``i`` to inputs
  ``i * stride - k // 2 ... i * stride - k // 2 + k - 1`` (clipped to the
  input), not TensorFlow's SAME geometry;
- ``3`` (a sparse list of the connected weights) is not supported: a clear
  error says to use 1 or 2, which compute the same function.

Bias: shape ``(output positions..., filters)``; with ``channels_first`` Keras 2
adds it *reshaped* (not transposed) to ``(1, filters, output positions...)``,
and so does this layer, so that Larq's weights give Larq's numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_tf import constraints as lb_constraints
from lowbit_tf import quantizers as lb_quantizers
from lowbit_tf._keras import InputSpec, image_data_format, keras
from lowbit_tf.layers import QuantizedLayerMixin, _resolve_activation

__all__ = ["QuantLocallyConnected1D", "QuantLocallyConnected2D"]

_PACKAGE = "lowbit_tf"


def _tuple(owner: str, name: str, value: Any, rank: int) -> tuple[int, ...]:
    values = (value,) * rank if isinstance(value, int) else tuple(value)
    if len(values) != rank or not all(isinstance(v, int) and v > 0 for v in values):
        raise ValueError(
            f"{owner}: `{name}` must be a positive integer or {rank} of them, "
            f"received {name}={value!r}."
        )
    return values


def _output_size(size: int, kernel: int, padding: str, stride: int) -> int:
    """Keras 2's ``conv_output_length`` (no dilation)."""
    if padding == "valid":
        size = size - kernel + 1
    return (size + stride - 1) // stride


def connection_mask(in_shape: Sequence[int], kernel: Sequence[int], strides: Sequence[int],
                    padding: str) -> np.ndarray:
    """Boolean ``(*in_shape, *out_shape)``: which input position reaches which output
    position, as Keras 2's ``conv_kernel_mask`` (its "same" geometry, see the module
    docstring)."""
    out_shape = [_output_size(n, k, padding, s)
                 for n, k, s in zip(in_shape, kernel, strides, strict=True)]
    mask = np.zeros(tuple(in_shape) + tuple(out_shape), bool)
    for out_pos in itertools.product(*(range(n) for n in out_shape)):
        ranges = []
        for d, (n, k, s) in enumerate(zip(in_shape, kernel, strides, strict=True)):
            left = k // 2
            center = out_pos[d] * s + (left if padding == "valid" else 0)
            ranges.append(range(max(0, center - left), min(n, center + k - left)))
        for in_pos in itertools.product(*ranges):
            mask[in_pos + out_pos] = True
    return mask


class _QuantLocallyConnected(QuantizedLayerMixin, keras.layers.Layer):
    """The N-d layer (N = ``rank``, 1 or 2)."""

    rank = 0  # set by the subclasses

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = 1,
        padding: str = "valid",
        data_format: str | None = None,
        activation: Any = None,
        use_bias: bool = True,
        input_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_quantizer: lb_quantizers.QuantizerLike = None,
        kernel_initializer: Any = "glorot_uniform",
        bias_initializer: Any = "zeros",
        kernel_regularizer: Any = None,
        bias_regularizer: Any = None,
        activity_regularizer: Any = None,
        kernel_constraint: Any = None,
        bias_constraint: Any = None,
        implementation: int = 1,
        **kwargs: Any,
    ):
        owner = type(self).__name__
        if isinstance(filters, bool) or not isinstance(filters, int) or filters < 1:
            raise ValueError(f"{owner}: `filters` must be a positive integer, "
                             f"received filters={filters!r}.")
        padding_name = str(padding).lower()
        if padding_name not in ("valid", "same"):
            raise ValueError(f"{owner}: `padding` must be 'valid' or 'same', "
                             f"received padding={padding!r}.")
        if implementation not in (1, 2):
            hint = (" implementation=3 (Keras 2's sparse kernel list) is not supported; "
                    "implementation=1 or 2 compute the same function"
                    if implementation == 3 else "")
            raise ValueError(f"{owner}: `implementation` must be 1 or 2, received "
                             f"implementation={implementation!r}.{hint}")
        if padding_name != "valid" and implementation == 1:
            raise ValueError(f"{owner}: padding={padding!r} needs implementation=2 "
                             "(implementation=1 takes padding='valid' only, as in Keras 2).")
        data_format = data_format or image_data_format()
        if data_format not in ("channels_last", "channels_first"):
            raise ValueError(f"{owner}: `data_format` must be 'channels_last' or "
                             f"'channels_first', received data_format={data_format!r}.")
        # Set before the mixin's __init__, which looks for the kernel constraint
        # when it warns about starved binary weights.
        self.kernel_constraint = lb_constraints.get(kernel_constraint)
        super().__init__(input_quantizer=input_quantizer, kernel_quantizer=kernel_quantizer,
                         activity_regularizer=activity_regularizer, **kwargs)
        self.filters = filters
        self.kernel_size = _tuple(owner, "kernel_size", kernel_size, self.rank)
        self.strides = _tuple(owner, "strides", strides, self.rank)
        self.padding = padding_name
        self.data_format = data_format
        self.activation = None if activation is None else _resolve_activation(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.bias_constraint = lb_constraints.get(bias_constraint)
        self.implementation = implementation
        self.input_spec = InputSpec(ndim=self.rank + 2)

    def _split_shape(self, input_shape: Sequence[int | None]) -> tuple[list[int], int]:
        """(spatial sizes, channels) of an input shape; they must be known."""
        if len(input_shape) != self.rank + 2:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}) expects inputs of rank "
                f"{self.rank + 2}, but received an input of rank {len(input_shape)} with "
                f"shape {tuple(input_shape)}."
            )
        if self.data_format == "channels_last":
            spatial, channels = list(input_shape[1:-1]), input_shape[-1]
        else:
            spatial, channels = list(input_shape[2:]), input_shape[1]
        if any(n is None for n in spatial) or channels is None:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}): the spatial sizes and "
                f"channels of its input must be known (the kernel is per position), "
                f"received input shape {tuple(input_shape)}."
            )
        return [int(n) for n in spatial], int(channels)

    def _output_spatial(self, spatial: Sequence[int]) -> list[int]:
        out = [_output_size(n, k, self.padding, s)
               for n, k, s in zip(spatial, self.kernel_size, self.strides, strict=True)]
        if min(out) <= 0:
            raise ValueError(
                f"Layer '{self.name}' ({type(self).__name__}): an input of spatial size "
                f"{tuple(spatial)} is smaller than kernel_size={self.kernel_size}; the "
                f"output would be {tuple(out)}."
            )
        return out

    def build(self, input_shape: Sequence[int | None]) -> None:
        spatial, channels = self._split_shape(input_shape)
        out = self._output_spatial(spatial)
        self.output_spatial = tuple(out)
        if self.implementation == 1:
            shape = (math.prod(out), math.prod(self.kernel_size) * channels, self.filters)
            # Flattened input position of every (output position, kernel position).
            offsets = list(itertools.product(*(range(k) for k in self.kernel_size)))
            index = [
                int(np.ravel_multi_index(
                    [o * s + k for o, s, k in zip(pos, self.strides, off, strict=True)],
                    spatial))
                for pos in itertools.product(*(range(n) for n in out))
                for off in offsets
            ]
            self._patch_index = np.asarray(index, np.int32).reshape(math.prod(out), -1)
        else:
            mask = connection_mask(spatial, self.kernel_size, self.strides, self.padding)
            if self.data_format == "channels_last":
                shape = (*spatial, channels, *out, self.filters)
                mask = mask.reshape((*spatial, 1, *out, 1))
            else:
                shape = (channels, *spatial, self.filters, *out)
                mask = mask.reshape((1, *spatial, 1, *out))
            self._kernel_mask = mask.astype(np.float32)
        self.kernel = self.add_weight(
            name="kernel",
            shape=shape,
            initializer=self.kernel_initializer,
            regularizer=self.kernel_regularizer,
            constraint=self.kernel_constraint,
        )
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(*out, self.filters),
                initializer=self.bias_initializer,
                regularizer=self.bias_regularizer,
                constraint=self.bias_constraint,
            )
        axis = -1 if self.data_format == "channels_last" else 1
        self.input_spec = InputSpec(ndim=self.rank + 2, axes={axis: channels})
        super().build(input_shape)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple:
        spatial, _ = self._split_shape(input_shape)
        out = tuple(self._output_spatial(spatial))
        if self.data_format == "channels_last":
            return (input_shape[0], *out, self.filters)
        return (input_shape[0], self.filters, *out)

    def _local_matmul(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """implementation=1: each output position's patch times its own kernel."""
        channels_last = self.data_format == "channels_last"
        x = inputs if channels_last else tf.transpose(inputs, [0, *range(2, self.rank + 2), 1])
        channels = x.shape[-1]
        x = tf.reshape(x, [tf.shape(x)[0], -1, channels])           # (B, in positions, C)
        patches = tf.gather(x, self._patch_index, axis=1)           # (B, P, K, C)
        if not channels_last:  # Keras 2 orders a channels_first patch (channel, position)
            patches = tf.transpose(patches, [0, 1, 3, 2])
        patches = tf.reshape(patches, [tf.shape(x)[0], patches.shape[1], -1])
        out = tf.einsum("bpf,pfo->bpo", patches, kernel)            # (B, P, filters)
        out = tf.reshape(out, [-1, *self.output_spatial, self.filters])
        if not channels_last:
            out = tf.transpose(out, [0, self.rank + 1, *range(1, self.rank + 1)])
        return out

    def _masked_matmul(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        """implementation=2: a dense matrix with the unconnected weights masked out."""
        kernel = kernel * self._kernel_mask
        half = len(kernel.shape) // 2
        kernel = tf.reshape(kernel, [math.prod(kernel.shape[:half]), -1])
        out = tf.matmul(tf.reshape(inputs, [tf.shape(inputs)[0], -1]), kernel)
        shape = ([*self.output_spatial, self.filters] if self.data_format == "channels_last"
                 else [self.filters, *self.output_spatial])
        return tf.reshape(out, [-1, *shape])

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        inputs = tf.convert_to_tensor(self.quantize_inputs(inputs, training))
        kernel = self.quantized_kernel(training)
        if self.implementation == 1:
            outputs = self._local_matmul(inputs, kernel)
        else:
            outputs = self._masked_matmul(inputs, kernel)
        if self.use_bias:
            if self.data_format == "channels_last":
                outputs = outputs + self.bias[None]
            else:  # Keras 2's bias_add: a reshape, not a transpose (module docstring)
                outputs = outputs + tf.reshape(self.bias, [1, self.filters, *self.output_spatial])
        if self.activation is not None:
            outputs = self.activation(outputs)
        return self.quantize_output_gradient(outputs, training)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "strides": self.strides,
            "padding": self.padding,
            "data_format": self.data_format,
            "activation": keras.activations.serialize(self.activation)
            if self.activation is not None else None,
            "use_bias": self.use_bias,
            "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
            "bias_initializer": keras.initializers.serialize(self.bias_initializer),
            "kernel_regularizer": keras.regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": keras.regularizers.serialize(self.bias_regularizer),
            "kernel_constraint": keras.constraints.serialize(self.kernel_constraint),
            "bias_constraint": keras.constraints.serialize(self.bias_constraint),
            "implementation": self.implementation,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantLocallyConnected1D(_QuantLocallyConnected):
    """Locally connected 1D layer, inputs ``(batch, steps, channels)`` (Larq's
    ``QuantLocallyConnected1D``; see the module docstring)."""

    rank = 1

    def __init__(self, filters: int, kernel_size: int | Sequence[int],
                 strides: int | Sequence[int] = 1, padding: str = "valid",
                 data_format: str | None = None, activation: Any = None,
                 use_bias: bool = True, input_quantizer: lb_quantizers.QuantizerLike = None,
                 kernel_quantizer: lb_quantizers.QuantizerLike = None,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, implementation: int = 1, **kwargs: Any):
        super().__init__(
            filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
            activation=activation, use_bias=use_bias, input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
            implementation=implementation, **kwargs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class QuantLocallyConnected2D(_QuantLocallyConnected):
    """Locally connected 2D layer, inputs ``(batch, rows, cols, channels)`` (Larq's
    ``QuantLocallyConnected2D``; see the module docstring)."""

    rank = 2

    def __init__(self, filters: int, kernel_size: int | Sequence[int],
                 strides: int | Sequence[int] = (1, 1), padding: str = "valid",
                 data_format: str | None = None, activation: Any = None,
                 use_bias: bool = True, input_quantizer: lb_quantizers.QuantizerLike = None,
                 kernel_quantizer: lb_quantizers.QuantizerLike = None,
                 kernel_initializer: Any = "glorot_uniform", bias_initializer: Any = "zeros",
                 kernel_regularizer: Any = None, bias_regularizer: Any = None,
                 activity_regularizer: Any = None, kernel_constraint: Any = None,
                 bias_constraint: Any = None, implementation: int = 1, **kwargs: Any):
        super().__init__(
            filters, kernel_size, strides=strides, padding=padding, data_format=data_format,
            activation=activation, use_bias=use_bias, input_quantizer=input_quantizer,
            kernel_quantizer=kernel_quantizer, kernel_initializer=kernel_initializer,
            bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, bias_constraint=bias_constraint,
            implementation=implementation, **kwargs)
