r"""Optimizers for binary networks: Bop and a per-variable optimizer switch.

A BNN mixes binary weights (the kernels of binary layers) with full-precision
ones (BatchNorm, first and last layers, biases). :class:`Bop` trains only the
binary ones, without latent weights; :class:`CaseOptimizer` sends each variable
to the optimizer whose predicate claims it, and the rest to a default one::

    optimizer = lowbit_tf.optimizers.CaseOptimizer(
        (lowbit_tf.optimizers.Bop.is_binary_variable, lowbit_tf.optimizers.Bop()),
        default_optimizer=keras.optimizers.Adam(0.01),
    )
    model.compile(optimizer=optimizer, loss=...)

Both are ordinary Keras 3 optimizers (``keras.optimizers.Optimizer``
subclasses): they build, save and load with the model, and run under
``tf.distribute`` through Keras's own update path. The API follows Larq's
(``Bop(threshold, gamma)``, ``CaseOptimizer(*pairs, default_optimizer=...)``,
``Bop.is_binary_variable``).

Which variables are binary: a lowbit_tf quantized layer whose kernel quantizer
has ``precision == 1`` (``"ste_sign"``, ...) marks its latent kernel with
``kernel.precision = 1`` when it is built; :meth:`Bop.is_binary_variable`
reads that mark (Larq reads the same attribute).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from lowbit_tf._keras import KERAS_3, keras

__all__ = ["Bop", "CaseOptimizer"]


def _sign_pm(x: tf.Tensor) -> tf.Tensor:
    """``+1`` where ``x >= 0``, else ``-1``."""
    return tf.where(x >= 0, tf.ones_like(x), -tf.ones_like(x))


@keras.saving.register_keras_serializable(package="lowbit_tf")
class Bop(keras.optimizers.Optimizer):
    r"""Binary optimizer (Bop; Helwegen et al., "Latent Weights Do Not Exist", 2019).

    Bop keeps no latent weights: the variable itself holds the binary weight
    :math:`w \in \{-1, +1\}`. It keeps an exponential moving average of the
    gradient and flips a weight when that average is strong enough and points
    the same way as the weight (so that gradient descent would push it across
    zero):

    .. math::

        m_t = (1 - \gamma)\, m_{t-1} + \gamma\, g_t

        w_t = \begin{cases}
            -w_{t-1} & \text{if } w_{t-1} m_t > \tau
                \;\; (|m_t| > \tau \text{ and } \text{sign}(m_t) = \text{sign}(w_{t-1})) \\
            w_{t-1} & \text{otherwise}
        \end{cases}

    exactly as Larq computes it, ``w = sign(-sign(w m - threshold) w)`` with
    ``sign(0) = +1``: the first step also binarises a float initial kernel, and
    in the tie ``w m == threshold`` the weight becomes +1.

    ``gamma`` plays the role of the learning rate: it is stored as Keras's
    ``learning_rate`` (so it may be a ``LearningRateSchedule`` and learning-rate
    callbacks act on it) and appears as ``gamma`` in the config. Apply Bop only
    to binary variables, through :class:`CaseOptimizer`.

    Arguments:
        threshold: :math:`\tau \ge 0`, the average gradient needed to flip a weight.
        gamma: :math:`\gamma \in (0, 1]`, the adaptivity rate, or a schedule.
        name: Optimizer name.
        **kwargs: Other ``keras.optimizers.Optimizer`` arguments (``clipnorm``, ...).

    Raises:
        ValueError: for a negative ``threshold`` or a ``gamma`` outside (0, 1].
    """

    def __init__(
        self, threshold: float = 1e-8, gamma: Any = 1e-4, name: str = "Bop", **kwargs: Any
    ):
        kwargs.pop("learning_rate", None)
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, numbers.Real)
            or not threshold >= 0
        ):
            raise ValueError(f"Bop: `threshold` must be a number >= 0, received {threshold!r}.")
        if isinstance(gamma, numbers.Real) and not 0 < gamma <= 1:
            raise ValueError(f"Bop: `gamma` must be in (0, 1], received gamma={gamma!r}.")
        if KERAS_3:
            super().__init__(learning_rate=gamma, name=name, **kwargs)
        else:  # tf-keras: each optimizer builds its own learning rate
            super().__init__(name=name, **kwargs)
            self._learning_rate = self._build_learning_rate(gamma)
        self.threshold = float(threshold)

    @property
    def gamma(self) -> Any:
        """The adaptivity rate (Keras's ``learning_rate`` of this optimizer)."""
        return self.learning_rate

    def build(self, variables: Sequence[Any]) -> None:
        if getattr(self, "_gradient_averages", None) is not None:
            return
        super().build(variables)
        self._gradient_averages = [
            self.add_variable_from_reference(v, "gradient_average") for v in variables
        ]

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any = None) -> None:
        # Keras 3 passes the learning rate; tf-keras reads it from the optimizer.
        gamma = tf.cast(self.learning_rate if learning_rate is None else learning_rate,
                        variable.dtype)
        gradient = tf.cast(gradient, variable.dtype)
        if KERAS_3:
            m = self._gradient_averages[self._get_variable_index(variable)]
        else:
            m = self._gradient_averages[self._index_dict[self._var_key(variable)]]
        m_t = m + gamma * (gradient - m)
        w = tf.convert_to_tensor(variable)
        threshold = tf.constant(self.threshold, variable.dtype)
        w_t = _sign_pm(-tf.sign(w * m_t - threshold) * w)
        if KERAS_3:
            self.assign(m, m_t)
            self.assign(variable, w_t)
        else:
            m.assign(m_t)
            variable.assign(w_t)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        if KERAS_3:
            config["gamma"] = config.pop("learning_rate")
        else:
            config["gamma"] = self._serialize_hyperparameter(self._learning_rate)
        config["threshold"] = self.threshold
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> Bop:
        config = dict(config)
        if isinstance(config.get("gamma"), dict):
            config["gamma"] = keras.optimizers.schedules.deserialize(
                config["gamma"], custom_objects=custom_objects
            )
        return cls(**config)

    @staticmethod
    def is_binary_variable(variable: Any) -> bool:
        """True for variables marked ``precision == 1`` (latent kernels of lowbit_tf
        layers with a 1-bit kernel quantizer). A predicate for :class:`CaseOptimizer`."""
        return getattr(variable, "precision", 32) == 1


def _variable_key(variable: Any) -> str:
    return getattr(variable, "path", None) or variable.name


@keras.saving.register_keras_serializable(package="lowbit_tf")
class CaseOptimizer(keras.optimizers.Optimizer):
    """Trains each variable with the optimizer whose predicate claims it.

    Arguments:
        *predicate_optimizer_pairs: ``(predicate, optimizer)`` pairs; a
            predicate takes a variable and returns True to claim it. A variable
            may be claimed by at most one predicate, and every optimizer must
            claim at least one variable.
        default_optimizer: Trains the variables no predicate claims; without
            one they are not trained (with a warning, as in Larq).
        name: Optimizer name.

    The assignment of variables to optimizers is made once, when the optimizer
    is built (on the model's trainable variables), and is saved in the config
    as one optimizer index per variable, in the order of the model's
    ``trainable_variables``, since predicates are arbitrary functions (Larq saves
    it by variable name; Keras 3 variable paths change when a model is reloaded):
    a loaded optimizer reuses the saved assignment. ``learning_rate`` reads and sets the
    default optimizer's (what learning-rate callbacks use); ``iterations``
    counts ``apply`` calls. The optimizer state (``variables``) is this
    optimizer's counter followed by every sub-optimizer's state.

    Raises:
        TypeError: for a pair that is not (callable, Keras optimizer) or a
            default that is not a Keras optimizer.
        ValueError: when building, if a variable is claimed twice or an
            optimizer claims nothing.
    """

    def __init__(
        self,
        *predicate_optimizer_pairs: tuple[Callable[[Any], bool], keras.optimizers.Optimizer],
        default_optimizer: keras.optimizers.Optimizer | None = None,
        name: str = "case_optimizer",
        **kwargs: Any,
    ):
        if not KERAS_3:
            raise NotImplementedError(
                "CaseOptimizer is not available under tf-keras (TF_USE_LEGACY_KERAS=1) yet: "
                "train with Keras 3, or with one tf-keras optimizer (Bop alone trains every "
                "variable it is given as binary)."
            )
        mapping = kwargs.pop("variable_mapping", None)
        kwargs.pop("learning_rate", None)
        for i, pair in enumerate(predicate_optimizer_pairs):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[0])):
                raise TypeError(
                    f"CaseOptimizer: `predicate_optimizer_pairs[{i}]` must be a "
                    f"(predicate, optimizer) pair, received {pair!r}."
                )
            if not isinstance(pair[1], keras.optimizers.Optimizer):
                raise TypeError(
                    f"CaseOptimizer: expected a keras optimizer at "
                    f"`predicate_optimizer_pairs[{i}][1]`, received {type(pair[1]).__name__}."
                )
        if default_optimizer is not None and not isinstance(
            default_optimizer, keras.optimizers.Optimizer
        ):
            raise TypeError(
                "CaseOptimizer: `default_optimizer` must be a keras optimizer or None, "
                f"received {type(default_optimizer).__name__}."
            )
        super().__init__(learning_rate=0.0, name=name, **kwargs)
        self.predicate_optimizer_pairs = [tuple(p) for p in predicate_optimizer_pairs]
        self.default_optimizer = default_optimizer
        self.optimizers = [opt for _, opt in self.predicate_optimizer_pairs]
        if default_optimizer is not None:
            self.optimizers.append(default_optimizer)
        # For each variable the optimizer is built on (in that order), its index
        # into `self.optimizers`, or None (not trained).
        self.variable_mapping: list[int | None] | None = (
            None if mapping is None else list(mapping)
        )

    @property
    def learning_rate(self) -> Any:
        if self.default_optimizer is None:
            return super().learning_rate
        return self.default_optimizer.learning_rate

    @learning_rate.setter
    def learning_rate(self, value: Any) -> None:
        if getattr(self, "default_optimizer", None) is None:
            keras.optimizers.Optimizer.learning_rate.fset(self, value)
        else:
            self.default_optimizer.learning_rate = value

    @property
    def variables(self) -> list[Any]:
        result = list(self._variables)
        for optimizer in getattr(self, "optimizers", []):
            result.extend(optimizer.variables)
        return result

    def _compute_mapping(self, variables: Sequence[Any]) -> list[int | None]:
        mapping: list[int | None] = []
        default_index = len(self.predicate_optimizer_pairs) if self.default_optimizer else None
        for variable in variables:
            claims = [i for i, (pred, _) in enumerate(self.predicate_optimizer_pairs)
                      if pred(variable)]  # fmt: skip
            if len(claims) > 1:
                raise ValueError(
                    f"CaseOptimizer: variable {_variable_key(variable)!r} is claimed by "
                    f"several optimizers (pairs {claims})."
                )
            if not claims and default_index is None:
                warnings.warn(
                    f"CaseOptimizer: no `default_optimizer` to train variable "
                    f"{_variable_key(variable)!r}; it is not trained.",
                    stacklevel=3,
                )
            mapping.append(claims[0] if claims else default_index)
        for i, (_, optimizer) in enumerate(self.predicate_optimizer_pairs):
            if i not in mapping:
                raise ValueError(
                    f"CaseOptimizer: optimizer {optimizer.name!r} (pair {i}) did not claim "
                    "any variable."
                )
        return mapping

    def _split(self, variables: Sequence[Any]) -> list[list[int]]:
        """Positions in ``variables`` for each optimizer of ``self.optimizers``."""
        groups: list[list[int]] = [[] for _ in self.optimizers]
        for position, variable in enumerate(variables):
            index = self.variable_mapping[self._get_variable_index(variable)]
            if index is not None:
                groups[index].append(position)
        return groups

    def build(self, variables: Sequence[Any]) -> None:
        if self.built:
            return
        variables = list(variables)
        super().build(variables)
        if self.variable_mapping is None:
            self.variable_mapping = self._compute_mapping(variables)
        elif len(self.variable_mapping) != len(variables):
            raise ValueError(
                f"CaseOptimizer: the saved `variable_mapping` covers "
                f"{len(self.variable_mapping)} variables, but the optimizer is built on "
                f"{len(variables)}."
            )
        for optimizer, group in zip(self.optimizers, self._split(variables),
                                    strict=True):  # fmt: skip
            if not optimizer.built:
                optimizer.build([variables[i] for i in group])
        self.built = True

    def apply(self, grads: Sequence[Any], trainable_variables: Sequence[Any] | None = None) -> None:
        if trainable_variables is None:
            trainable_variables = self._trainable_variables
        grads = list(grads)
        trainable_variables = list(trainable_variables)
        if not grads:
            return
        if not self.built:
            self.build(trainable_variables)
        for optimizer, group in zip(self.optimizers, self._split(trainable_variables),
                                    strict=True):  # fmt: skip
            pairs = [(grads[i], trainable_variables[i]) for i in group if grads[i] is not None]
            if pairs:
                optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
        self._iterations.assign_add(1)

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config.pop("learning_rate", None)
        config.update(
            {
                "optimizers": [
                    keras.optimizers.serialize(opt) for _, opt in self.predicate_optimizer_pairs
                ],
                "default_optimizer": (
                    keras.optimizers.serialize(self.default_optimizer)
                    if self.default_optimizer is not None
                    else None
                ),
                "variable_mapping": self.variable_mapping,
            }
        )
        return config

    @classmethod
    def from_config(cls, config: dict[str, Any], custom_objects: Any = None) -> CaseOptimizer:
        config = dict(config)
        optimizers = [
            keras.optimizers.deserialize(c, custom_objects=custom_objects)
            for c in config.pop("optimizers")
        ]
        default = config.pop("default_optimizer")
        if default is not None:
            default = keras.optimizers.deserialize(default, custom_objects=custom_objects)
        mapping = config.pop("variable_mapping", None)
        if mapping is None:
            raise ValueError(
                "CaseOptimizer.from_config: the config has no `variable_mapping` (the "
                "optimizer was saved before it was built); predicates cannot be restored."
            )
        pairs = [(lambda _: False, opt) for opt in optimizers]
        return cls(*pairs, default_optimizer=default, variable_mapping=mapping, **config)
