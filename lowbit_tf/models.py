"""Larq's ``larq.models``: :func:`summary`, which is :func:`lowbit_tf.summary.summary`
(per layer: precision, parameters, memory, MACs; and the predicted ``.tflite``
size). Larq's ``include_macs`` argument is accepted (our summary always counts
MACs)."""

from __future__ import annotations

from typing import Any

__all__ = ["summary"]


def summary(model: Any, print_fn: Any = None, include_macs: bool = True) -> Any:
    """Prints (with ``print_fn``, default ``print``, as Larq) and returns the
    model's :class:`lowbit_tf.summary.ModelSummary`."""
    from lowbit_tf.summary import summary as lowbit_summary

    del include_macs  # always included
    return lowbit_summary(model, print_fn=print if print_fn is None else print_fn)
