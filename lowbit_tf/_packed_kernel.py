"""The bit-packed kernel of a quantized layer, kept between inference calls.

At inference (a call with ``training=False``: ``model.predict``,
``model.evaluate``, ``model.export``'s serving function) the layers that run
on the ops read their kernel bit-packed from this cache instead of quantizing
and packing the float kernel again on every call, which for a large layer
costs more than the binary convolution itself (AlexNet's fc6 has 38M weights:
four passes over 150 MB).

When is it refreshed? Keras's optimizers update the kernel's underlying
tf.Variable directly, with no hook a layer could observe, so the cache keeps a
``fresh`` flag instead:

- every call that is not an inference call (``training=True``, and
  ``training=None``, which custom training loops use) marks it stale: an
  optimizer step may follow;
- ``set_weights``, Keras's weight loading (``load_weights``, ``load_model``)
  and ``build`` mark it stale;
- an inference call repacks it when it is stale, then reads it.

So the cache misses only an assignment the layer cannot see: code that writes
``layer.kernel`` itself (``layer.kernel.assign(...)``) must call
``layer.kernel_changed()`` afterwards. A ``tf.train.Checkpoint`` saves and
restores the cache with the kernel (it is tracked by the layer), so the two
stay consistent.

The variables are plain tf.Variables, not Keras weights: they are not in
``layer.weights``, ``get_weights()`` or ``.keras`` files, which keep their
layout. Under a ``tf.distribute`` strategy each replica keeps its own copy
(``ON_READ`` synchronization): a replica refreshes its cache in its own
replica context, without cross-replica communication.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

__all__ = ["PackedKernelCache"]

_LOCAL = dict(
    trainable=False,
    synchronization=tf.VariableSynchronization.ON_READ,
    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
)


class PackedKernelCache(tf.Module):
    """The packed signs of a layer's quantized kernel, its per-output-channel
    scale (ones for a sign kernel) and whether they are fresh.

    Arguments:
        packed_shape: shape of the int32 packed filter the op reads.
        channels: output channels (the scale's length).
        name: for the variables (the layer's name).
    """

    def __init__(self, packed_shape: Sequence[int], channels: int, name: str):
        super().__init__(name=f"{name}_packed_kernel")
        with tf.init_scope():  # variables, even when built inside a tf.function
            self.packed = tf.Variable(tf.zeros(packed_shape, tf.int32), name="packed", **_LOCAL)
            self.scale = tf.Variable(tf.ones([channels], tf.float32), name="scale", **_LOCAL)
            self.fresh = tf.Variable(False, name="fresh", **_LOCAL)

    def mark_stale(self) -> None:
        """The kernel may have changed: the next inference call repacks."""
        self.fresh.assign(False)

    def read(
        self, compute: Callable[[], tuple[tf.Tensor, tf.Tensor]]
    ) -> tuple[tf.Tensor, tf.Tensor]:
        """(packed filter, scale): the cached ones, or `compute()`'s when stale
        (then stored and marked fresh)."""

        def refresh() -> tuple[tf.Tensor, tf.Tensor]:
            packed, scale = compute()
            updates = [self.packed.assign(packed), self.scale.assign(scale),
                       self.fresh.assign(True)]  # fmt: skip
            with tf.control_dependencies(updates):
                return tf.identity(packed), tf.identity(scale)

        def cached() -> tuple[tf.Tensor, tf.Tensor]:
            return tf.identity(self.packed), tf.identity(self.scale)

        return tf.cond(self.fresh, cached, refresh)
