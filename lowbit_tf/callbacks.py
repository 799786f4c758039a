"""Training callbacks (Larq's ``larq.callbacks``)."""

from __future__ import annotations

from collections.abc import Callable, MutableMapping
from typing import Any

from lowbit_tf._keras import keras, to_numpy

__all__ = ["HyperparameterScheduler"]


class HyperparameterScheduler(keras.callbacks.Callback):
    """Sets an optimizer hyperparameter from a schedule, every epoch or every step.

    As Larq's: ``schedule(t, current_value)`` (or ``schedule(t)``) gives the new
    value, ``t`` being the epoch (``update_freq="epoch"``) or the optimizer's
    iteration count (``"step"``); the value is logged under ``log_name`` at the
    end of each epoch. Example, Bop's adaptivity rate halved every 10 epochs::

        HyperparameterScheduler(lambda epoch: 1e-4 * 0.5 ** (epoch // 10),
                                "gamma", optimizer=bop)

    Arguments:
        schedule: ``t -> value`` or ``(t, value) -> value``.
        hyperparameter: Name of the optimizer attribute (a variable or a number).
        optimizer: The optimizer holding it; default: the model's. With
            :class:`lowbit_tf.optimizers.CaseOptimizer`, pass the inner optimizer
            whose hyperparameter it is (e.g. its Bop).
        update_freq: ``"epoch"`` or ``"step"``.
        verbose: Print each new value when > 0.
        log_name: Name in the epoch logs; default ``hyperparameter``.
    """

    def __init__(self, schedule: Callable[..., Any], hyperparameter: str,
                 optimizer: Any = None, update_freq: str = "epoch", verbose: int = 0,
                 log_name: str | None = None):
        super().__init__()
        if update_freq not in ("epoch", "step"):
            raise ValueError("HyperparameterScheduler: update_freq must be 'epoch' or "
                             f"'step', received update_freq={update_freq!r}.")
        self.optimizer = optimizer
        self.schedule = schedule
        self.hyperparameter = hyperparameter
        self.update_freq = update_freq
        self.verbose = verbose
        self.log_name = log_name or hyperparameter

    def set_model(self, model: Any) -> None:
        super().set_model(model)
        if self.optimizer is None:
            self.optimizer = model.optimizer
        if not hasattr(self.optimizer, self.hyperparameter):
            raise ValueError(
                f"HyperparameterScheduler: the optimizer {type(self.optimizer).__name__} "
                f"has no hyperparameter {self.hyperparameter!r}."
            )

    def _value(self) -> float:
        return float(to_numpy(getattr(self.optimizer, self.hyperparameter)))

    def set_hyperparameter(self, t: int) -> float:
        """Sets the hyperparameter to the schedule's value at ``t``; returns it."""
        try:
            value = self.schedule(t, self._value())
        except TypeError:  # a one-argument schedule
            value = self.schedule(t)
        current = getattr(self.optimizer, self.hyperparameter)
        if hasattr(current, "assign"):
            current.assign(value)
        else:
            setattr(self.optimizer, self.hyperparameter, value)
        if self.verbose > 0:
            print(f"{self.update_freq.capitalize()} {t}: {self.log_name} is now {self._value()}.")
        return self._value()

    def on_train_batch_begin(self, batch: int, logs: MutableMapping[str, Any] | None = None):
        if self.update_freq == "step":  # the global step, not the batch of the epoch
            self.set_hyperparameter(int(to_numpy(self.optimizer.iterations)))

    def on_epoch_begin(self, epoch: int, logs: MutableMapping[str, Any] | None = None):
        if self.update_freq == "epoch":
            self.set_hyperparameter(epoch)

    def on_epoch_end(self, epoch: int, logs: MutableMapping[str, Any] | None = None):
        if logs is not None:
            logs[self.log_name] = self._value()
