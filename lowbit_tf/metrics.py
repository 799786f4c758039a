r"""Training metrics for binary networks.

:class:`FlipRatio` measures how many binary weights change sign from one
training step to the next, the usual health check of a BNN (a ratio that stays
at 0 means the binary weights are frozen, one that stays high means training is
noisy). It is a Keras metric; the simplest way to see it in ``model.fit`` is the
``metrics=["flip_ratio"]`` argument of the quantized layers::

    layer = lowbit_tf.layers.QuantDense(
        64, kernel_quantizer="ste_sign", kernel_constraint="weight_clip",
        metrics=["flip_ratio"],
    )
    history = model.fit(...)            # logs "<layer name>_flip_ratio"

or :func:`scope`, which adds the metric to every quantized layer built inside
it (as in Larq)::

    with lowbit_tf.metrics.scope(["flip_ratio"]):
        model = build_model()

A layer with the metric updates it on every training call (``training=True``)
with the sign pattern of its quantized kernel, i.e. before the optimizer step of
that batch: the value logged for step ``t`` compares the binary weights used by
step ``t`` with those used by step ``t - 1``, so it is the fraction of weights
flipped by the previous update. The metric can also be used directly::

    m = FlipRatio()
    m.update_state([1, 1]); m.update_state([2, 2]); m.update_state([1, 2])
    m.result()   # (1 + 0.5) / 2 = 0.75
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from typing import Any

import tensorflow as tf

from lowbit_tf._keras import KERAS_3, keras

__all__ = ["FlipRatio", "get_training_metrics", "scope"]

_AVAILABLE_METRICS = frozenset({"flip_ratio"})
_TRAINING_METRICS: set[str] = set()


def check_training_metrics(metrics: Iterable[str] | None, owner: str = "") -> list[str]:
    """Validates a list of training-metric names (``["flip_ratio"]``).

    Raises:
        ValueError: naming the unknown metric and listing the available ones.
    """
    if metrics is None:
        return []
    if isinstance(metrics, str):
        metrics = [metrics]
    result = []
    for metric in metrics:
        if metric not in _AVAILABLE_METRICS:
            prefix = f"{owner}: " if owner else ""
            raise ValueError(
                f"{prefix}unknown training metric {metric!r} in `metrics`. "
                f"Available: {', '.join(sorted(_AVAILABLE_METRICS))}."
            )
        if metric not in result:
            result.append(metric)
    return result


@contextlib.contextmanager
def scope(metrics: Iterable[str] = ()) -> Iterator[set[str]]:
    """Adds training metrics to every quantized layer created inside the block.

    Arguments:
        metrics: Names of training metrics; today only ``"flip_ratio"``.

    Raises:
        ValueError: for an unknown metric name.
    """
    names = check_training_metrics(list(metrics))
    backup = set(_TRAINING_METRICS)
    _TRAINING_METRICS.update(names)
    try:
        yield _TRAINING_METRICS
    finally:
        _TRAINING_METRICS.clear()
        _TRAINING_METRICS.update(backup)


def get_training_metrics() -> set[str]:
    """The live set of training metrics of the current :func:`scope`."""
    return _TRAINING_METRICS


@keras.saving.register_keras_serializable(package="lowbit_tf")
class FlipRatio(keras.metrics.Metric):
    r"""Mean fraction of values that changed since the previous update.

    For updates :math:`v_0, v_1, \dots, v_T` (same shape, :math:`n` values):

    .. math::

        \text{result} = \frac{1}{T} \sum_{t=1}^{T}
            \frac{1}{n} \#\{k : v_{t,k} \ne v_{t-1,k}\}

    and 0 before the second update. Values are compared after casting to
    ``values_dtype`` (``int8``), so pass sign patterns (the quantized layers pass
    ``sign(quantized kernel)``).

    ``reset_state`` (called by Keras at the start of every epoch) clears the
    running mean but keeps the last values, so the first step of an epoch is
    compared with the last step of the previous one. (Larq drops that step; the
    results are otherwise identical.)

    Arguments:
        values_shape: Shape of the tracked tensor; fixed at construction.
        values_dtype: Dtype the values are cast to before comparison.
        name: Metric name.
        dtype: Dtype of the result.
    """

    def __init__(
        self,
        values_shape: Iterable[int] = (),
        values_dtype: str = "int8",
        name: str = "flip_ratio",
        dtype: Any = None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.values_shape = [int(d) for d in values_shape]
        self.values_dtype = tf.as_dtype(values_dtype).name
        self._size = 1
        for d in self.values_shape:
            self._size *= d
        self.previous_values = self._state("previous_values", self.values_shape,
                                           self.values_dtype)
        # 1 once `previous_values` holds a real update; survives reset_state.
        self.has_previous = self._state("has_previous", (), self.dtype)
        self.total = self._state("total", (), self.dtype)
        self.count = self._state("count", (), self.dtype)

    def _state(self, name: str, shape: Any, dtype: Any) -> Any:
        """A zero-initialised state variable (each Keras spells it its own way)."""
        if KERAS_3:
            return self.add_variable(shape=shape, initializer="zeros", dtype=dtype,
                                     aggregation="only_first_replica", name=name)
        return self.add_weight(name=name, shape=shape, initializer="zeros", dtype=dtype,
                               aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)

    def update_state(self, values: Any, sample_weight: Any = None) -> None:
        """Compares ``values`` with the previous update; ``sample_weight`` is ignored."""
        values = tf.cast(tf.convert_to_tensor(values), self.values_dtype)
        values = tf.reshape(values, self.values_shape)
        previous = tf.convert_to_tensor(self.previous_values)
        changed = tf.math.count_nonzero(tf.not_equal(values, previous))
        ratio = tf.cast(changed, self.dtype) / max(self._size, 1)
        seen = tf.convert_to_tensor(self.has_previous)
        self.total.assign(tf.convert_to_tensor(self.total) + ratio * seen)
        self.count.assign(tf.convert_to_tensor(self.count) + seen)
        self.previous_values.assign(values)
        self.has_previous.assign(tf.ones_like(seen))

    def result(self) -> tf.Tensor:
        return tf.math.divide_no_nan(tf.convert_to_tensor(self.total),
                                     tf.convert_to_tensor(self.count))

    def reset_state(self) -> None:
        self.total.assign(tf.zeros_like(tf.convert_to_tensor(self.total)))
        self.count.assign(tf.zeros_like(tf.convert_to_tensor(self.count)))

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "values_shape": self.values_shape,
            "values_dtype": self.values_dtype,
        }
