r"""Quantizers: the low-bit forward map and the pseudo-gradient used to train it.

A quantizer maps a full-precision tensor to a low-precision one on the forward
pass and defines the gradient used on the backward pass, usually a
straight-through estimator (STE): the non-differentiable step is treated as the
identity, optionally clipped. Layers take quantizers through their
``input_quantizer`` and ``kernel_quantizer`` arguments, and the following are
equivalent::

    QuantConv2D(64, 3, kernel_quantizer="ste_sign")
    QuantConv2D(64, 3, kernel_quantizer=lowbit_tf.quantizers.SteSign(clip_value=1.0))

Available quantizers (short name -> class, function form if any):

=========================  ====================  ==========================  =========
name                       class                 function                    precision
=========================  ====================  ==========================  =========
``identity``               :class:`Identity`     --                          None
``ste_sign``               :class:`SteSign`      :func:`ste_sign`            1
``approx_sign``            :class:`ApproxSign`   :func:`approx_sign`         1
``swish_sign``             :class:`SwishSign`    :func:`swish_sign`          1
``magnitude_aware_sign``   MagnitudeAwareSign    magnitude_aware_sign        1
``ste_heaviside``          :class:`SteHeaviside` :func:`ste_heaviside`       1
``stochastic_sign``        StochasticSign        --                          1
``ste_tern``               :class:`SteTern`      :func:`ste_tern`            2
``stochastic_tern``        StochasticTern        --                          2
``dorefa``                 :class:`DoReFa`       :func:`dorefa_quantizer`    k_bit
``power_of_two``           :class:`PowerOfTwo`   --                          bits
``fixed_point``            :class:`FixedPoint`   --                          word_bits
``dorefa_gradient``        DoReFaGradient        --                          None
``power_of_two_gradient``  PowerOfTwoGradient    --                          None
=========================  ====================  ==========================  =========

``"dorefa_quantizer"`` (Larq's alias) also names :class:`DoReFa`, and
``DoReFaQuantizer`` is an alias of the class.

Identifiers are resolved by :func:`get`:

- ``None`` -> ``None`` (no quantization; the layer equals its Keras twin),
- a registered short name (``"ste_sign"``) or class name (``"SteSign"``) -> a new
  instance with default arguments,
- a dict produced by :func:`serialize` -> the instance it describes,
- a :class:`Quantizer` subclass -> a new instance with default arguments,
- any other callable (a quantizer instance, :func:`ste_sign`, a user function)
  -> itself.

Bit convention (shared with the fast ops and the converter): sign binarisation
maps ``x >= 0`` (``-0.0`` included) to ``+1`` and ``x < 0`` to ``-1``; NaN stays NaN.

Training and inference. Every quantizer is called as ``q(x, training=None)``.
Deterministic quantizers ignore ``training``. The stochastic ones
(:class:`StochasticSign`, :class:`StochasticTern`, :class:`FixedPoint` with
``rounding="stochastic"``) sample only when ``training`` is ``True`` (a Python
bool or a scalar boolean tensor); ``training=None`` or ``False`` gives their
deterministic inference map. A quantizer is not a Keras layer and cannot see
Keras's call context, so the layer that owns it passes its own ``training``
argument through: ``self.kernel_quantizer(kernel, training=training)``.
Subclasses opt in by giving ``call`` a ``training`` parameter; ``__call__``
passes it only to those.

Random numbers. Stochastic quantizers take a ``seed`` (an int, or None for a
random one). Each instance owns a :class:`keras.random.SeedGenerator` (with
tf-keras: a ``tf.random.Generator``), so two
instances built with the same seed produce the same sequence of draws, and
successive calls of one instance draw fresh numbers (also inside
``tf.function``). Build them where you build the layers (inside a distribution
strategy's scope when there is one), because the generator holds a variable.

Gradient quantizers (:class:`DoReFaGradient`, :class:`PowerOfTwoGradient`) are the
identity on the forward pass and quantize the gradient that flows back through
them; a layer applies one to its outputs, so the gradient reaching the layer is
quantized.

Deliberate differences from Larq (``larq.quantizers``), everything else (names,
defaults, forward values, gradients, edge cases) is meant to be identical:

- Quantizers are plain serializable callables, not Keras layers: there is no
  ``metrics=``/``name=`` argument (use the flip-ratio metric instead).
- Arguments are validated at construction (Larq accepts anything): a bad
  ``clip_value``, ``beta``, ``threshold_value``, ``k_bit``, ``mode`` ... raises
  :class:`ValueError` naming the argument and the value.
- :func:`swish_sign`: at ``x = +-inf`` the gradient is 0 (its limit); Larq's
  formula evaluates ``inf/inf`` there and returns NaN.
- :class:`DoReFa` is also registered as ``"dorefa"``; :func:`magnitude_aware_sign`
  and :func:`dorefa_quantizer` exist as functions (recent Larq versions only
  have the classes; older ones had the functions).
- :class:`StochasticSign`, :class:`StochasticTern`, :class:`PowerOfTwo`,
  :class:`FixedPoint` and the gradient quantizers have no Larq counterpart.

Adding a quantizer takes a few lines::

    @register_quantizer("my_sign")
    class MySign(Quantizer):
        precision = 1

        def __init__(self, clip_value=1.0):
            self.clip_value = clip_value

        def call(self, inputs):
            return ste_sign(inputs, clip_value=self.clip_value)

        def get_config(self):
            return {"clip_value": self.clip_value}
"""

from __future__ import annotations

import inspect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np
import tensorflow as tf

from lowbit_tf._keras import KERAS_3, floatx, keras
from lowbit_tf.math import sign

__all__ = [
    "AbcActivations",
    "AbcWeights",
    "ApproxSign",
    "DoReFa",
    "DoReFaGradient",
    "DoReFaQuantizer",
    "FixedPoint",
    "GradientQuantizer",
    "Identity",
    "MagnitudeAwareSign",
    "NoOp",
    "NoOpQuantizer",
    "PowerOfTwo",
    "PowerOfTwoGradient",
    "Quantizer",
    "QuantizerLike",
    "SteHeaviside",
    "SteSign",
    "SteTern",
    "StochasticSign",
    "StochasticTern",
    "SwishSign",
    "approx_sign",
    "deserialize",
    "dorefa_quantizer",
    "get",
    "magnitude_aware_sign",
    "register_quantizer",
    "serialize",
    "ste_heaviside",
    "ste_sign",
    "ste_tern",
    "swish_sign",
]

#: Anything :func:`get` accepts.
QuantizerLike = None | str | dict | Callable[[Any], Any]

_PACKAGE = "lowbit_tf"

# Short name -> quantizer class. Filled by `register_quantizer`.
_REGISTRY: dict[str, type[Quantizer]] = {}

_Q = TypeVar("_Q", bound="type[Quantizer]")


# ------------------------------------------------------------------ argument checks


def _as_float_tensor(x: Any) -> tf.Tensor:
    """Converts ``x`` to a tensor; integer and boolean inputs become ``floatx``."""
    x = tf.convert_to_tensor(x)
    if not x.dtype.is_floating:
        x = tf.cast(x, floatx())
    return x


def _is_real(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_clip_value(clip_value: Any) -> float | None:
    """Returns ``clip_value`` as a float, or None; raises ValueError if it is not > 0."""
    if clip_value is None:
        return None
    if not _is_real(clip_value) or not clip_value > 0:  # `not >` also rejects NaN
        raise ValueError(
            f"`clip_value` must be a positive number or None, received clip_value={clip_value!r}."
        )
    return float(clip_value)


def _check_positive(name: str, value: Any) -> float:
    """Returns ``value`` as a float; raises ValueError unless it is a finite number > 0."""
    if not _is_real(value) or not 0 < value < math.inf:
        raise ValueError(f"`{name}` must be a positive number, received {name}={value!r}.")
    return float(value)


def _check_non_negative(name: str, value: Any) -> float:
    """Returns ``value`` as a float; raises ValueError unless it is a finite number >= 0."""
    if not _is_real(value) or not 0 <= value < math.inf:
        raise ValueError(f"`{name}` must be a number >= 0, received {name}={value!r}.")
    return float(value)


def _check_int(
    name: str, value: Any, minimum: int | None = None, maximum: int | None = None
) -> int:
    """Returns ``value`` as an int; raises ValueError unless it is an integer in range."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ValueError(f"`{name}` must be an integer, received {name}={value!r}.")
    value = int(value)
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        bounds = (
            f"between {minimum} and {maximum}"
            if minimum is not None and maximum is not None
            else f">= {minimum}"
            if minimum is not None
            else f"<= {maximum}"
        )
        raise ValueError(f"`{name}` must be an integer {bounds}, received {name}={value!r}.")
    return value


def _check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, received {name}={value!r}.")
    return value


def _check_choice(name: str, value: Any, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        valid = " or ".join(repr(c) for c in choices)
        raise ValueError(f"`{name}` must be {valid}, received {name}={value!r}.")
    return value


def _check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    return _check_int("seed", seed, minimum=0)


# -------------------------------------------------------------------- shared maths


def _clipped_gradient(x: tf.Tensor, dy: tf.Tensor, clip_value: float | None) -> tf.Tensor:
    """``dy`` where ``|x| <= clip_value`` (inclusive) and 0 elsewhere; ``dy`` if None."""
    if clip_value is None:
        return dy
    return tf.where(tf.abs(x) <= clip_value, dy, tf.zeros_like(dy))


def _work_dtype(dtype: tf.DType) -> tf.DType:
    """float32 for 16-bit floats (computed in float32), else ``dtype`` itself."""
    return tf.float32 if dtype.size < 4 else dtype


def _is_training(training: Any) -> bool | tf.Tensor:
    """``training`` as a Python bool, or as a boolean scalar tensor if it is one."""
    if training is None:
        return False
    if isinstance(training, (bool, int)):
        return bool(training)
    if tf.is_tensor(training) or isinstance(training, tf.Variable):
        static = tf.get_static_value(training)
        if static is not None:
            return bool(static)
        return tf.cast(training, tf.bool)
    return bool(training)


def _select(training: bool | tf.Tensor, if_true: Callable[[], Any], if_false: Callable[[], Any]):
    """``if_true()`` or ``if_false()`` as ``training`` (a bool or boolean tensor) says."""
    if isinstance(training, bool):
        return if_true() if training else if_false()
    return tf.where(training, if_true(), if_false())


def _training_switch_ste(
    inputs: tf.Tensor,
    training: bool | tf.Tensor,
    clip_value: float | None,
    in_training: Callable[[tf.Tensor], tf.Tensor],
    at_inference: Callable[[tf.Tensor], tf.Tensor],
) -> tf.Tensor:
    """``in_training(x)`` or ``at_inference(x)`` as ``training`` says, with the clipped
    straight-through gradient either way (the stochastic quantizers)."""

    @tf.custom_gradient
    def quantize(x):
        def grad(dy):
            return _clipped_gradient(x, dy, clip_value)

        return _select(training, lambda: in_training(x), lambda: at_inference(x)), grad

    return quantize(inputs)


def _floor_log2(a: tf.Tensor) -> tf.Tensor:
    """``floor(log2(a))`` exactly, for finite ``a > 0`` (the logarithm is corrected)."""
    two = tf.constant(2.0, a.dtype)
    e = tf.floor(tf.math.log(a) / tf.constant(math.log(2.0), a.dtype))
    e = tf.where(tf.pow(two, e) > a, e - 1, e)
    return tf.where(tf.pow(two, e + 1) <= a, e + 1, e)


def _log2_round_up(a: tf.Tensor, e: tf.Tensor, uniform: tf.Tensor | None) -> tf.Tensor:
    """Whether ``a`` in ``[2^e, 2^(e+1))`` rounds up to ``2^(e+1)`` in the log domain.

    Nearest (``uniform`` None): up iff ``log2(a) - e >= 1/2``, i.e. the mantissa
    ``a / 2^e >= sqrt(2)`` (compared in float64). Stochastic: up with probability
    ``log2(a) - e``, i.e. iff ``u < log2(a / 2^e)`` for ``u ~ U[0, 1)``.
    """
    mantissa = a / tf.pow(tf.constant(2.0, a.dtype), e)  # exact, in [1, 2)
    if uniform is None:
        return tf.cast(mantissa, tf.float64) >= math.sqrt(2.0)
    log_fraction = tf.math.log(mantissa) / tf.constant(math.log(2.0), a.dtype)
    return uniform < log_fraction


def _power_of_two_quantize(
    x: tf.Tensor,
    bits: int,
    max_exponent: int | None,
    uniform: tf.Tensor | None,
) -> tf.Tensor:
    """Signed power-of-two quantization (see :class:`PowerOfTwo`); ``uniform`` for stochastic."""
    dtype = x.dtype
    xw = tf.cast(x, _work_dtype(dtype))
    a = tf.abs(xw)
    finite_positive = tf.math.logical_and(a > 0, tf.math.is_finite(a))
    safe = tf.where(finite_positive, a, tf.ones_like(a))
    e_floor = _floor_log2(safe)
    e = e_floor + tf.cast(_log2_round_up(safe, e_floor, uniform), a.dtype)
    levels = 2 ** (bits - 1) - 1
    if max_exponent is None:
        # Top of the window: the largest exponent any element can round to.
        a_max = tf.reduce_max(tf.where(finite_positive, a, tf.zeros_like(a)))
        safe_max = tf.where(a_max > 0, a_max, tf.ones_like(a_max))
        m_floor = _floor_log2(safe_max)
        if uniform is None:
            up = _log2_round_up(safe_max, m_floor, None)
        else:
            up = safe_max > tf.pow(tf.constant(2.0, a.dtype), m_floor)  # ceil
        e_high = tf.stop_gradient(m_floor + tf.cast(up, a.dtype))
    else:
        e_high = tf.constant(float(max_exponent), a.dtype)
    e_low = e_high - (levels - 1)
    two = tf.constant(2.0, a.dtype)
    magnitude = tf.where(e < e_low, tf.zeros_like(a), tf.pow(two, tf.minimum(e, e_high)))
    magnitude = tf.where(tf.math.is_inf(a), tf.pow(two, e_high) + tf.zeros_like(a), magnitude)
    magnitude = tf.where(a == 0, tf.zeros_like(a), magnitude)
    return tf.cast(tf.sign(xw) * magnitude, dtype)


# ---------------------------------------------------------------- function forms


@keras.saving.register_keras_serializable(package=_PACKAGE)
def ste_sign(x: Any, clip_value: float | None = 1.0) -> tf.Tensor:
    r"""Sign binarisation with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            1 & |x| \le \text{clip\_value} \\ 0 & |x| > \text{clip\_value}
        \end{cases}

    ``-0.0`` maps to ``+1``. The gradient bound is inclusive: at
    ``|x| == clip_value`` the gradient is still passed through.

    Arguments:
        x: Input tensor (or anything convertible to one).
        clip_value: Threshold for clipping gradients; ``None`` passes the
            gradient through unchanged everywhere. Must be positive.

    Returns:
        A tensor of the same shape and (floating) dtype as ``x`` with values in
        ``{-1, +1}``.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.

    References:
        Courbariaux et al., "Binarized Neural Networks: Training Deep Neural
        Networks with Weights and Activations Constrained to +1 or -1", 2016.
    """
    clip_value = _check_clip_value(clip_value)
    x = _as_float_tensor(x)

    @tf.custom_gradient
    def _ste_sign(x):
        def grad(dy):
            return _clipped_gradient(x, dy, clip_value)

        return sign(x), grad

    return _ste_sign(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def approx_sign(x: Any) -> tf.Tensor:
    r"""Sign binarisation with the ApproxSign (Bi-Real Net) pseudo-gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            2 - 2|x| & |x| \le 1 \\ 0 & |x| > 1
        \end{cases}

    The gradient is the derivative of the piecewise quadratic
    :math:`F(x) = 2x + x^2` on :math:`[-1, 0)`, :math:`2x - x^2` on
    :math:`[0, 1]`, :math:`\pm 1` outside: 2 at 0, falling linearly to 0 at
    :math:`|x| = 1` (where it is exactly 0).

    Arguments:
        x: Input tensor (or anything convertible to one).

    Returns:
        A tensor like ``x`` with values in ``{-1, +1}``.

    References:
        Liu et al., "Bi-Real Net: Enhancing the Performance of 1-bit CNNs With
        Improved Representational Capability and Advanced Training Algorithm", 2018.
    """
    x = _as_float_tensor(x)

    @tf.custom_gradient
    def _approx_sign(x):
        def grad(dy):
            abs_x = tf.abs(x)
            return tf.where(abs_x <= 1.0, (1 - abs_x) * 2 * dy, tf.zeros_like(dy))

        return sign(x), grad

    return _approx_sign(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def swish_sign(x: Any, beta: float = 5.0) -> tf.Tensor:
    r"""Sign binarisation with the SignSwish (BNN+) pseudo-gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} =
            \frac{\beta \left(2 - \beta x \tanh(\beta x / 2)\right)}{1 + \cosh(\beta x)}

    the derivative of :math:`2\sigma(\beta x)(1 + \beta x (1 - \sigma(\beta x))) - 1`:
    :math:`\beta` at 0, slightly negative for large :math:`|x|`, 0 at
    :math:`\pm\infty`.

    Arguments:
        x: Input tensor (or anything convertible to one).
        beta: Larger values give a closer approximation of the derivative of
            the sign. Must be positive.

    Returns:
        A tensor like ``x`` with values in ``{-1, +1}``.

    Raises:
        ValueError: if ``beta`` is not a positive number.

    References:
        Darabi et al., "BNN+: Improved Binary Network Training", 2018.
    """
    beta = _check_positive("beta", beta)
    x = _as_float_tensor(x)

    @tf.custom_gradient
    def _swish_sign(x):
        def grad(dy):
            b_x = beta * x
            g = dy * beta * (2 - b_x * tf.tanh(b_x * 0.5)) / (1 + tf.cosh(b_x))
            return tf.where(tf.math.is_inf(x), tf.zeros_like(g), g)

        return sign(x), grad

    return _swish_sign(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def magnitude_aware_sign(x: Any, clip_value: float | None = 1.0) -> tf.Tensor:
    r"""Sign scaled by the mean magnitude per output channel (Bi-Real Net).

    .. math::

        q(W)_{\dots, c} = \alpha_c \operatorname{sign}(W_{\dots, c}),
        \qquad \alpha_c = \operatorname{mean}_{\dots} |W_{\dots, c}|

    The mean runs over every axis but the last (the output channels of a
    Keras kernel), as Larq computes it; for a tensor of rank <= 1 nothing is
    reduced, so :math:`\alpha = |x|` element-wise. :math:`\alpha` is a constant
    for the gradient (``stop_gradient``), so the gradient is
    :math:`\alpha_c` times the clipped straight-through gradient of
    :func:`ste_sign`.

    Arguments:
        x: Input tensor of known rank (usually a kernel).
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.

    Returns:
        A tensor like ``x`` with values in ``{-alpha_c, +alpha_c}`` per channel.

    Raises:
        ValueError: for a bad ``clip_value`` or an input of unknown rank.

    References:
        Liu et al., "Bi-Real Net", 2018, section 3.3.
    """
    clip_value = _check_clip_value(clip_value)
    x = _as_float_tensor(x)
    if x.shape.rank is None:
        raise ValueError("magnitude_aware_sign needs an input of known rank.")
    scale = tf.stop_gradient(tf.reduce_mean(tf.abs(x), axis=list(range(x.shape.rank - 1))))
    return scale * ste_sign(x, clip_value=clip_value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def ste_heaviside(x: Any, clip_value: float | None = 1.0) -> tf.Tensor:
    r"""Binarisation to ``{0, 1}`` with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} 1 & x > 0 \\ 0 & x \le 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            1 & |x| \le \text{clip\_value} \\ 0 & |x| > \text{clip\_value}
        \end{cases}

    Zero (of either sign) maps to 0. Computed as ``sign(relu(x))``, as Larq.

    Arguments:
        x: Input tensor (or anything convertible to one).
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.

    Returns:
        A tensor like ``x`` with values in ``{0, 1}``.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.
    """
    clip_value = _check_clip_value(clip_value)
    x = _as_float_tensor(x)

    @tf.custom_gradient
    def _ste_heaviside(x):
        def grad(dy):
            return _clipped_gradient(x, dy, clip_value)

        return tf.sign(tf.nn.relu(x)), grad

    return _ste_heaviside(x)


@keras.saving.register_keras_serializable(package=_PACKAGE)
def ste_tern(
    x: Any,
    threshold_value: float = 0.05,
    ternary_weight_networks: bool = False,
    clip_value: float | None = 1.0,
) -> tf.Tensor:
    r"""Ternarisation to ``{-1, 0, +1}`` with a clipped straight-through gradient.

    .. math::

        q(x) = \operatorname{sign}\left(\operatorname{sign}(x + \Delta)
                                      + \operatorname{sign}(x - \Delta)\right)
             = \begin{cases} +1 & x \ge \Delta \\ 0 & |x| < \Delta \\
                             -1 & x \le -\Delta \end{cases}

    (so :math:`x = \pm\Delta` itself maps to :math:`\pm 1`). :math:`\Delta` is
    ``threshold_value`` or, with ``ternary_weight_networks=True``, the TWN
    threshold computed from the whole tensor:

    .. math:: \Delta = \frac{0.7}{n} \sum_{i=1}^{n} |x_i|

    The gradient is 1 where :math:`|x| \le` ``clip_value`` (inclusive), else 0;
    no gradient flows through the TWN threshold.

    Arguments:
        x: Input tensor (or anything convertible to one).
        threshold_value: The fixed threshold :math:`\Delta` (>= 0), used when
            ``ternary_weight_networks`` is False.
        ternary_weight_networks: Use the TWN threshold instead.
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.

    Returns:
        A tensor like ``x`` with values in ``{-1, 0, +1}``.

    Raises:
        ValueError: for a negative ``threshold_value``, a non-bool
            ``ternary_weight_networks`` or a bad ``clip_value``.

    References:
        Li, Zhang, Liu, "Ternary Weight Networks", 2016.
    """
    threshold_value = _check_non_negative("threshold_value", threshold_value)
    ternary_weight_networks = _check_bool("ternary_weight_networks", ternary_weight_networks)
    clip_value = _check_clip_value(clip_value)
    x = _as_float_tensor(x)

    @tf.custom_gradient
    def _ste_tern(x):
        if ternary_weight_networks:
            threshold = 0.7 * tf.reduce_sum(tf.abs(x)) / tf.cast(tf.size(x), x.dtype)
        else:
            threshold = threshold_value

        def grad(dy):
            return _clipped_gradient(x, dy, clip_value)

        return tf.sign(tf.sign(x + threshold) + tf.sign(x - threshold)), grad

    return _ste_tern(x)


#: The widest DoReFa quantization: the multi-bit ops run at most 16 bit planes
#: (custom_ops/core/multibit_conv2d.cc, kMaxActivationBits), and past that a
#: float32 grid of 2^k - 1 steps on [0, 1] stops being exact anyway.
MAX_DOREFA_BITS = 16


def _dorefa(x: tf.Tensor, k_bit: int, mode: str) -> tf.Tensor:
    """DoReFa k-bit quantization of activations or weights (see :class:`DoReFa`)."""
    if mode == "activations":
        x = tf.clip_by_value(x, 0.0, 1.0)
    else:
        limited = tf.tanh(x)
        largest = tf.stop_gradient(tf.reduce_max(tf.abs(limited)))
        x = tf.math.divide_no_nan(limited, 2.0 * largest) + 0.5

    @tf.custom_gradient
    def _quantize_k(x):
        n = 2**k_bit - 1
        return tf.round(x * n) / n, lambda dy: dy

    outputs = _quantize_k(x)
    if mode == "weights":
        outputs = 2.0 * outputs - 1.0
    return outputs


@keras.saving.register_keras_serializable(package=_PACKAGE)
def dorefa_quantizer(x: Any, k_bit: int = 2, mode: str = "activations") -> tf.Tensor:
    r"""DoReFa-Net k-bit quantizer; the function form of :class:`DoReFa`.

    Arguments:
        x: Input tensor (or anything convertible to one).
        k_bit: Number of bits, 1 to 16 (``MAX_DOREFA_BITS``).
        mode: ``"activations"`` or ``"weights"``.

    Raises:
        ValueError: for ``k_bit`` outside [1, 16] or an unknown ``mode``.
    """
    k_bit = _check_int("k_bit", k_bit, minimum=1, maximum=MAX_DOREFA_BITS)
    mode = _check_choice("mode", mode, ("activations", "weights"))
    return _dorefa(_as_float_tensor(x), k_bit, mode)


ste_sign.precision = 1  # type: ignore[attr-defined]
approx_sign.precision = 1  # type: ignore[attr-defined]
swish_sign.precision = 1  # type: ignore[attr-defined]
# The function forms declare what their classes declare (Quantizer.inference_is_sign).
ste_sign.inference_is_sign = True  # type: ignore[attr-defined]
approx_sign.inference_is_sign = True  # type: ignore[attr-defined]
swish_sign.inference_is_sign = True  # type: ignore[attr-defined]
magnitude_aware_sign.precision = 1  # type: ignore[attr-defined]
# ... and Quantizer.binary_form.
ste_sign.binary_form = "sign"  # type: ignore[attr-defined]
approx_sign.binary_form = "sign"  # type: ignore[attr-defined]
swish_sign.binary_form = "sign"  # type: ignore[attr-defined]
magnitude_aware_sign.binary_form = "scaled_sign"  # type: ignore[attr-defined]
ste_heaviside.precision = 1  # type: ignore[attr-defined]
ste_tern.precision = 2  # type: ignore[attr-defined]
ste_tern.grid_levels = 2  # type: ignore[attr-defined]
dorefa_quantizer.precision = None  # type: ignore[attr-defined]  # depends on k_bit


# ----------------------------------------------------------------------- base class


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Quantizer:
    """Base class of lowbit_tf quantizers.

    A quantizer is a callable ``q(x, training=None) -> tensor`` with a Keras
    config. Subclasses implement :meth:`call` and, if they take arguments,
    :meth:`get_config` (``from_config`` calls ``cls(**config)``). A subclass
    whose ``call`` has a ``training`` parameter receives the ``training``
    argument of ``__call__`` (see the module docstring); others never see it.
    Register a subclass with :func:`register_quantizer` to make it available by
    short name.

    Attributes:
        precision: Bits per quantized value (1 for sign binarisation), or None
            for full precision. Used by model summaries and the converter.
        inference_is_sign: True when the quantizer's inference map (what a
            converted model runs) is exactly ``sign(x)`` with the bit
            convention above, so the converter may run it as the ops'
            bit-packing. A new sign quantizer declares it here; the converter
            keeps no list of them.
        binary_form: What every value the quantizer outputs is, in training
            as at inference (NaN aside), so that a layer may compute with the
            bitwise TF ops in both (``lowbit_tf.layers``, ``use_ops``): ``"sign"``,
            -1 or +1; ``"scaled_sign"``, +-alpha_c with one
            alpha_c >= 0 per index ``c`` of the last axis (a kernel's
            output channel); None, anything else (the layer keeps the float
            emulation). Only the values matter: the gradient stays the
            quantizer's own.
        grid_levels: n when every value the quantizer outputs (training or
            not) is 2 q / n - 1 for an integer q in [0, n]: a symmetric uniform
            grid on [-1, 1] (ternary: n = 2; DoReFa k-bit weights: 2^k - 1).
            Such a kernel is a sum of binary planes, which the multi-bit op
            runs (``lowbit_tf.layers``); None otherwise.
        unit_grid_bits: k when every value is q / (2^k - 1) for an integer
            q in [0, 2^k - 1] (DoReFa k-bit activations), the multi-bit op's
            "dorefa" inputs; None otherwise.
    """

    precision: int | None = None
    inference_is_sign: bool = False
    binary_form: str | None = None
    grid_levels: int | None = None
    unit_grid_bits: int | None = None

    #: Set automatically: whether this class's ``call`` takes ``training``.
    _call_takes_training: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._call_takes_training = "training" in inspect.signature(cls.call).parameters

    def __call__(self, inputs: Any, training: Any = None) -> tf.Tensor:
        """Quantizes ``inputs``; ``training`` reaches stochastic quantizers only."""
        inputs = _as_float_tensor(inputs)
        if self._call_takes_training:
            return self.call(inputs, training=training)
        return self.call(inputs)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        """Quantizes ``inputs`` (a floating-point tensor)."""
        raise NotImplementedError(f"{type(self).__name__} must implement `call`.")

    def get_config(self) -> dict[str, Any]:
        """Returns the constructor arguments of this quantizer."""
        return {}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Quantizer:
        """Creates a quantizer from the output of :meth:`get_config`."""
        return cls(**config)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class _Seeded:
    """Mixin: a seeded stream of uniform random numbers for stochastic quantizers."""

    seed: int | None

    def _init_seed(self, seed: Any) -> None:
        self.seed = _check_seed(seed)
        if KERAS_3:
            self._seed_generator = keras.random.SeedGenerator(self.seed)
        else:  # tf-keras has no SeedGenerator; TensorFlow's stateful generator
            self._seed_generator = (tf.random.Generator.from_non_deterministic_state()
                                    if self.seed is None else
                                    tf.random.Generator.from_seed(self.seed))

    def _uniform(self, shape: tf.Tensor, dtype: tf.DType) -> tf.Tensor:
        """Draws ``U[0, 1)`` of ``shape``; the stream advances on every call."""
        if KERAS_3:
            seed = self._seed_generator.next()
        else:
            seed = self._seed_generator.make_seeds(1)[:, 0]
        return tf.random.stateless_uniform(shape, seed=seed, dtype=_work_dtype(dtype))


def register_quantizer(name: str, package: str = _PACKAGE) -> Callable[[_Q], _Q]:
    """Class decorator: makes a :class:`Quantizer` subclass available by short name.

    It also registers the class as Keras-serializable (``package>ClassName``) so
    models using it load without ``custom_objects``.

    Arguments:
        name: Short name for :func:`get`, e.g. ``"ste_sign"``.
        package: Keras serialization package of the class.
    """

    def decorator(cls: _Q) -> _Q:
        if not (isinstance(cls, type) and issubclass(cls, Quantizer)):
            raise TypeError(f"Only Quantizer subclasses can be registered, got {cls!r}.")
        previous = _REGISTRY.get(name)
        if previous is not None and previous.__qualname__ != cls.__qualname__:
            raise ValueError(
                f"Quantizer name {name!r} is already registered to {previous.__qualname__}."
            )
        _REGISTRY[name] = cls
        return keras.saving.register_keras_serializable(package=package)(cls)

    return decorator


# ------------------------------------------------------------------ sign quantizers


@register_quantizer("identity")
class Identity(Quantizer):
    r"""The identity, :math:`q(x) = x`, with gradient 1: no quantization.

    ``get("identity")`` returns this; a layer with identity (or ``None``)
    quantizers computes exactly what its Keras twin computes.
    """

    precision = None

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs


@register_quantizer("noop")
class NoOp(Quantizer):
    r"""The identity, :math:`q(x) = x`, that marks a variable with a ``precision``
    (Larq's ``NoOp``, formerly ``NoOpQuantizer``).

    It changes no value: it tells :class:`lowbit_tf.optimizers.Bop` (and the
    summary) that a latent kernel is binary, ``kernel_quantizer=NoOp(precision=1)``,
    without binarising it in the forward pass. A layer does not warn about
    starved weights for it.
    """

    def __init__(self, precision: int | None = None):
        if precision is not None:
            precision = _check_int("precision", precision, minimum=1)
        self.precision = precision

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return inputs

    def get_config(self) -> dict[str, Any]:
        return {"precision": self.precision}


NoOpQuantizer = NoOp  # Larq's earlier name


@register_quantizer("ste_sign")
class SteSign(Quantizer):
    r"""Serializable sign binariser with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            1 & |x| \le \text{clip\_value} \\ 0 & |x| > \text{clip\_value}
        \end{cases}

    Same values and gradient as :func:`ste_sign`, which it calls.

    Arguments:
        clip_value: Threshold for clipping gradients; ``None`` passes the
            gradient through unchanged everywhere. Must be positive.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.

    References:
        Courbariaux et al., "Binarized Neural Networks: Training Deep Neural
        Networks with Weights and Activations Constrained to +1 or -1", 2016.
    """

    precision = 1
    binary_form = "sign"
    inference_is_sign = True

    def __init__(self, clip_value: float | None = 1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return ste_sign(inputs, clip_value=self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


@register_quantizer("approx_sign")
class ApproxSign(Quantizer):
    r"""Sign binariser with the ApproxSign (Bi-Real Net) pseudo-gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            2 - 2|x| & |x| \le 1 \\ 0 & |x| > 1
        \end{cases}

    See :func:`approx_sign`, which it calls.

    Arguments:
        None.

    References:
        Liu et al., "Bi-Real Net: Enhancing the Performance of 1-bit CNNs With
        Improved Representational Capability and Advanced Training Algorithm", 2018.
    """

    precision = 1
    binary_form = "sign"
    inference_is_sign = True

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return approx_sign(inputs)


@register_quantizer("swish_sign")
class SwishSign(Quantizer):
    r"""Sign binariser with the SignSwish (BNN+) pseudo-gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} =
            \frac{\beta \left(2 - \beta x \tanh(\beta x / 2)\right)}{1 + \cosh(\beta x)}

    See :func:`swish_sign`, which it calls.

    Arguments:
        beta: Larger values give a closer approximation of the derivative of
            the sign. Must be positive.

    Raises:
        ValueError: if ``beta`` is not a positive number.

    References:
        Darabi et al., "BNN+: Improved Binary Network Training", 2018.
    """

    precision = 1
    binary_form = "sign"
    inference_is_sign = True

    def __init__(self, beta: float = 5.0):
        self.beta = _check_positive("beta", beta)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return swish_sign(inputs, beta=self.beta)

    def get_config(self) -> dict[str, Any]:
        return {"beta": self.beta}


@register_quantizer("magnitude_aware_sign")
class MagnitudeAwareSign(Quantizer):
    r"""Sign scaled by the mean magnitude per output channel (Bi-Real Net).

    .. math::

        q(W)_{\dots, c} = \alpha_c \operatorname{sign}(W_{\dots, c}),
        \qquad \alpha_c = \operatorname{mean}_{\dots} |W_{\dots, c}|

    :math:`\alpha` is the mean of :math:`|W|` over every axis but the last,
    treated as a constant by the gradient; the gradient is :math:`\alpha_c`
    times the clipped straight-through gradient. See
    :func:`magnitude_aware_sign`, which it calls.

    Arguments:
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.

    References:
        Liu et al., "Bi-Real Net", 2018, section 3.3.
    """

    precision = 1
    binary_form = "scaled_sign"

    def __init__(self, clip_value: float | None = 1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return magnitude_aware_sign(inputs, clip_value=self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


@register_quantizer("ste_heaviside")
class SteHeaviside(Quantizer):
    r"""Binariser to ``{0, 1}`` with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} 1 & x > 0 \\ 0 & x \le 0 \end{cases}
        \qquad
        \frac{\partial q}{\partial x} = \begin{cases}
            1 & |x| \le \text{clip\_value} \\ 0 & |x| > \text{clip\_value}
        \end{cases}

    See :func:`ste_heaviside`, which it calls.

    Arguments:
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.

    Raises:
        ValueError: if ``clip_value`` is not a positive number or None.
    """

    precision = 1

    def __init__(self, clip_value: float | None = 1.0):
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return ste_heaviside(inputs, clip_value=self.clip_value)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value}


@register_quantizer("stochastic_sign")
class StochasticSign(_Seeded, Quantizer):
    r"""BinaryConnect binariser: stochastic in training, deterministic at inference.

    In training (``training=True``):

    .. math::

        q(w) = \begin{cases} +1 & \text{with probability } p = \sigma(w) \\
                             -1 & \text{with probability } 1 - p \end{cases}
        \qquad \sigma(w) = \operatorname{clip}\left(\frac{w + 1}{2}, 0, 1\right)

    (the "hard sigmoid"; ``w >= 1`` is always +1, ``w <= -1`` always -1, ``w = 0``
    is +1 half of the time). At inference (``training`` None or False) it is the
    deterministic sign, +1 for ``w >= 0``, like :func:`ste_sign`. NaN stays NaN.
    The gradient is the clipped straight-through estimator of :func:`ste_sign`
    in both cases.

    Arguments:
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.
        seed: Seed of the random draws (an int >= 0), or None for a random seed.

    Raises:
        ValueError: for a bad ``clip_value`` or ``seed``.

    References:
        Courbariaux, Bengio, David, "BinaryConnect: Training Deep Neural Networks
        with binary weights during propagations", 2015.
    """

    precision = 1
    binary_form = "sign"
    # The inference map (training=False) is the deterministic sign.
    inference_is_sign = True

    def __init__(self, clip_value: float | None = 1.0, seed: int | None = None):
        self.clip_value = _check_clip_value(clip_value)
        self._init_seed(seed)

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        training = _is_training(training)
        clip_value = self.clip_value

        def stochastic(x):
            u = self._uniform(tf.shape(x), x.dtype)
            p = tf.clip_by_value((tf.cast(x, u.dtype) + 1) / 2, 0.0, 1.0)
            y = tf.where(u < p, tf.ones_like(x), -tf.ones_like(x))
            return tf.where(tf.math.is_nan(x), x, y)

        return _training_switch_ste(inputs, training, clip_value, stochastic, sign)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value, "seed": self.seed}


# ------------------------------------------------------------- ternary quantizers


@register_quantizer("ste_tern")
class SteTern(Quantizer):
    r"""Ternariser to ``{-1, 0, +1}`` with a clipped straight-through gradient.

    .. math::

        q(x) = \begin{cases} +1 & x \ge \Delta \\ 0 & |x| < \Delta \\
                             -1 & x \le -\Delta \end{cases}

    with :math:`\Delta` = ``threshold_value``, or with
    ``ternary_weight_networks=True`` the TWN threshold
    :math:`\Delta = 0.7 \cdot \frac{1}{n}\sum_i |x_i|` of the whole tensor. The
    gradient is 1 where :math:`|x| \le` ``clip_value`` (inclusive), else 0. See
    :func:`ste_tern`, which it calls.

    Arguments:
        threshold_value: The fixed threshold :math:`\Delta` (>= 0).
        ternary_weight_networks: Use the TWN threshold instead of the fixed one.
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.

    Raises:
        ValueError: for a negative ``threshold_value``, a non-bool
            ``ternary_weight_networks`` or a bad ``clip_value``.

    References:
        Li, Zhang, Liu, "Ternary Weight Networks", 2016.
    """

    precision = 2

    def __init__(
        self,
        threshold_value: float = 0.05,
        ternary_weight_networks: bool = False,
        clip_value: float | None = 1.0,
    ):
        self.threshold_value = _check_non_negative("threshold_value", threshold_value)
        self.ternary_weight_networks = _check_bool(
            "ternary_weight_networks", ternary_weight_networks
        )
        # {-1, 0, +1}; the TWN threshold only moves where the zeros are.
        self.grid_levels = 2
        self.clip_value = _check_clip_value(clip_value)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return ste_tern(
            inputs,
            threshold_value=self.threshold_value,
            ternary_weight_networks=self.ternary_weight_networks,
            clip_value=self.clip_value,
        )

    def get_config(self) -> dict[str, Any]:
        return {
            "threshold_value": self.threshold_value,
            "ternary_weight_networks": self.ternary_weight_networks,
            "clip_value": self.clip_value,
        }


@register_quantizer("stochastic_tern")
class StochasticTern(_Seeded, Quantizer):
    r"""Ternary connect: stochastic ternarisation in training, deterministic at inference.

    In training (``training=True``), with :math:`w` clipped to :math:`[-1, 1]`:

    .. math::

        q(w) = \begin{cases} \operatorname{sign}(w) & \text{with probability } |w| \\
                             0 & \text{with probability } 1 - |w| \end{cases}

    so :math:`E[q(w)] = w` on :math:`[-1, 1]`; ``w = 0`` is always 0 and
    ``|w| >= 1`` always :math:`\operatorname{sign}(w)`. At inference
    (``training`` None or False) it takes the most likely value:
    :math:`\operatorname{sign}(w)` if :math:`|w| \ge 1/2`, else 0. NaN stays
    NaN. The gradient is 1 where :math:`|w| \le` ``clip_value`` (inclusive), else 0.

    Arguments:
        clip_value: Threshold for clipping gradients; ``None`` for no clipping.
        seed: Seed of the random draws (an int >= 0), or None for a random seed.

    Raises:
        ValueError: for a bad ``clip_value`` or ``seed``.

    References:
        Lin, Courbariaux, Memisevic, Bengio, "Neural Networks with Few
        Multiplications", 2015, section 2.
    """

    precision = 2
    grid_levels = 2  # {-1, 0, +1}

    def __init__(self, clip_value: float | None = 1.0, seed: int | None = None):
        self.clip_value = _check_clip_value(clip_value)
        self._init_seed(seed)

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        training = _is_training(training)
        clip_value = self.clip_value

        def sign_or_zero(x, keep):
            y = tf.where(keep, tf.sign(x), tf.zeros_like(x))
            return tf.where(tf.math.is_nan(x), x, y)

        def stochastic(x):
            u = self._uniform(tf.shape(x), x.dtype)
            return sign_or_zero(x, u < tf.cast(tf.abs(x), u.dtype))

        def deterministic(x):
            return sign_or_zero(x, tf.abs(x) >= 0.5)

        return _training_switch_ste(inputs, training, clip_value, stochastic, deterministic)

    def get_config(self) -> dict[str, Any]:
        return {"clip_value": self.clip_value, "seed": self.seed}


# ------------------------------------------------------------ multi-bit quantizers


@register_quantizer("dorefa")
class DoReFa(Quantizer):
    r"""DoReFa-Net k-bit quantizer for activations or weights.

    The core is :math:`\operatorname{quantize}_k(x) = \frac{1}{n}\operatorname{round}(n x)`,
    :math:`n = 2^k - 1`, on :math:`[0, 1]` (``round`` is half-to-even, as
    ``tf.round``), with a straight-through gradient.

    ``mode="activations"``: :math:`q(x) = \operatorname{quantize}_k(\operatorname{clip}(x, 0, 1))`,
    values in :math:`\{0, 1/n, \dots, 1\}`; the gradient is 1 for
    :math:`0 \le x \le 1` (inclusive) and 0 elsewhere (the gradient of the clip).

    ``mode="weights"``:

    .. math::

        q(w) = 2 \operatorname{quantize}_k\left(
            \frac{\tanh w}{2 \max |\tanh w|} + \frac{1}{2}\right) - 1

    values in :math:`\{-1, -1 + 2/n, \dots, 1\}`, with the maximum over the
    whole tensor, treated as a constant by the gradient, so
    :math:`\partial q / \partial w = (1 - \tanh^2 w) / \max|\tanh w|`. For an
    all-zero tensor the normalised value is 1/2 everywhere (``divide_no_nan``)
    and the gradient is 0. Note that ``w = 0`` normalises to exactly 1/2, which
    ``round`` sends to the even neighbour: with ``k_bit=1`` the weights map to
    +1 for ``w > 0`` and to -1 for ``w <= 0``.

    Arguments:
        k_bit: Number of bits, 1 to 16 (``MAX_DOREFA_BITS``: the most the
            multi-bit ops run).
        mode: ``"activations"`` or ``"weights"``.

    Raises:
        ValueError: for ``k_bit`` outside [1, 16] (or not an integer) or an
            unknown ``mode``.

    References:
        Zhou et al., "DoReFa-Net: Training Low Bitwidth Convolutional Neural
        Networks with Low Bitwidth Gradients", 2016.
    """

    precision = None

    def __init__(self, k_bit: int = 2, mode: str = "activations"):
        self.k_bit = _check_int("k_bit", k_bit, minimum=1, maximum=MAX_DOREFA_BITS)
        self.mode = _check_choice("mode", mode, ("activations", "weights"))
        self.precision = self.k_bit
        if self.mode == "weights":
            self.grid_levels = 2**self.k_bit - 1
        else:
            self.unit_grid_bits = self.k_bit

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        return _dorefa(inputs, self.k_bit, self.mode)

    def get_config(self) -> dict[str, Any]:
        return {"k_bit": self.k_bit, "mode": self.mode}


#: Larq's former name of :class:`DoReFa`.
DoReFaQuantizer = DoReFa
_REGISTRY["dorefa_quantizer"] = DoReFa


@register_quantizer("power_of_two")
class PowerOfTwo(Quantizer):
    r"""Logarithmic quantization to zero or a signed power of two.

    With ``bits`` = :math:`b` bits per value (one sign bit, :math:`b - 1` bits
    for an exponent code, one code reserved for zero) there are
    :math:`L = 2^{b-1} - 1` exponents :math:`e_{lo} = e_{hi} - L + 1, \dots, e_{hi}`
    and

    .. math::

        q(x) = \begin{cases}
            0 & x = 0 \text{ or } e(x) < e_{lo} \\
            \operatorname{sign}(x)\, 2^{\min(e(x),\, e_{hi})} & \text{otherwise}
        \end{cases}
        \qquad e(x) = \operatorname{round}(\log_2 |x|)

    Rounding is to the nearest exponent in the log domain (up iff
    :math:`|x| \ge \sqrt{2} \cdot 2^{\lfloor \log_2 |x| \rfloor}`; powers of two
    map to themselves exactly). Values too small for the window flush to 0,
    values too large (and :math:`\pm\infty`) saturate at :math:`\pm 2^{e_{hi}}`.
    The window top :math:`e_{hi}` is ``max_exponent``, or, when that is None,
    :math:`\operatorname{round}(\log_2 \max |x|)` of the tensor (no saturation).

    Gradient: straight-through within range, 1 where
    :math:`|x| \le 2^{e_{hi}}` (inclusive), 0 beyond; 1 everywhere when
    ``max_exponent`` is None.

    Arguments:
        bits: Bits per value, >= 2 (``bits=2`` is ``{0, +-2^max_exponent}``).
        max_exponent: Exponent of the largest magnitude (an integer), or None to
            take it from the data.

    Raises:
        ValueError: for ``bits < 2`` or a non-integer ``max_exponent``.

    References:
        Miyashita, Lee, Murmann, "Convolutional Neural Networks using
        Logarithmic Data Representation", 2016.
    """

    precision = None

    def __init__(self, bits: int = 4, max_exponent: int | None = 0):
        self.bits = _check_int("bits", bits, minimum=2)
        self.max_exponent = (
            None if max_exponent is None else _check_int("max_exponent", max_exponent)
        )
        self.precision = self.bits

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        bits, max_exponent = self.bits, self.max_exponent

        @tf.custom_gradient
        def _power_of_two(x):
            def grad(dy):
                if max_exponent is None:
                    return dy
                return _clipped_gradient(x, dy, 2.0**max_exponent)

            return _power_of_two_quantize(x, bits, max_exponent, None), grad

        return _power_of_two(inputs)

    def get_config(self) -> dict[str, Any]:
        return {"bits": self.bits, "max_exponent": self.max_exponent}


# ------------------------------------------------------------------------- ABC-Net
# Shared by the quantizers below and by the ABC layers (lowbit_tf.layers), which
# make the activation shifts and betas trainable weights.

@tf.custom_gradient
def _sign_ste(x: tf.Tensor) -> tuple[tf.Tensor, Callable[[tf.Tensor], tf.Tensor]]:
    """``sign`` (``sign(0) = +1``) with the plain straight-through gradient."""

    def grad(dy: tf.Tensor) -> tf.Tensor:
        return dy

    return sign(x), grad


def abc_weight_shifts(num_bases: int) -> list[float]:
    r"""ABC-Net's weight-base shifts :math:`u_i = -1 + 2 (i - 1) / (M - 1)`, ``[0.0]`` for M = 1."""
    if num_bases == 1:
        return [0.0]
    return [-1.0 + 2.0 * i / (num_bases - 1) for i in range(num_bases)]


def abc_weight_bases(
    kernel: tf.Tensor, num_bases: int, per_channel: bool
) -> tuple[tf.Tensor, tf.Tensor]:
    """ABC-Net's M binary weight bases and their least-squares scales; see :class:`AbcWeights`.

    Returns ``(bases, alphas)``: bases of shape ``(M, *kernel.shape)`` in
    {-1, +1}; alphas of shape ``(M,)``, or ``(M, out)`` per output channel.
    """
    kernel = tf.convert_to_tensor(kernel)
    rank = kernel.shape.rank
    axes = list(range(rank - 1)) if per_channel else None
    mean = tf.stop_gradient(tf.reduce_mean(kernel, axis=axes, keepdims=True))
    std = tf.stop_gradient(tf.math.reduce_std(kernel, axis=axes, keepdims=True))
    bases = tf.stack(
        [_sign_ste(kernel - mean + u * std) for u in abc_weight_shifts(num_bases)]
    )
    b = tf.cast(tf.stop_gradient(bases), tf.float64)
    w = tf.cast(tf.stop_gradient(kernel), tf.float64)
    eye = tf.eye(num_bases, dtype=tf.float64)
    if per_channel:
        out = kernel.shape[-1]
        bm = tf.transpose(tf.reshape(b, (num_bases, -1, out)), (2, 0, 1))  # (out, M, K)
        wm = tf.transpose(tf.reshape(w, (-1, out)))[:, :, None]  # (out, K, 1)
    else:
        bm = tf.reshape(b, (1, num_bases, -1))  # (1, M, K)
        wm = tf.reshape(w, (1, -1, 1))
    size = tf.cast(tf.shape(bm)[-1], tf.float64)
    gram = tf.matmul(bm, bm, transpose_b=True) + 1e-6 * size * eye  # ridge: equal bases
    alphas = tf.linalg.solve(gram, tf.matmul(bm, wm))[..., 0]  # (out or 1, M)
    alphas = tf.transpose(alphas) if per_channel else alphas[0]
    return bases, tf.cast(alphas, kernel.dtype)


def abc_activation_shifts(num_bases: int) -> np.ndarray:
    """Default activation shifts v_j: thresholds 0.5 - v_j spread evenly over
    [-1, 1] (a single base, N = 1, thresholds at 0: H(x) = sign(x))."""
    thresholds = np.linspace(-1.0, 1.0, num_bases) if num_bases > 1 else np.zeros(1)
    return 0.5 - thresholds


def abc_activation_bases(inputs: Any, shifts: Any) -> tf.Tensor:
    r"""The binary activation bases :math:`H_{v_j}(x) = \text{sign}(\text{clip}(x + v_j,
    0, 1) - 0.5)`, stacked on a new first axis (one per shift).

    Values in {-1, +1} (+1 where :math:`x + v_j \ge 0.5`); the gradient with
    respect to x and v_j is that of the clip (sign is straight-through).
    """
    x = tf.convert_to_tensor(inputs)
    shifts = tf.convert_to_tensor(shifts, x.dtype)
    return tf.stack(
        [_sign_ste(tf.clip_by_value(x + shifts[j], 0.0, 1.0) - 0.5)
         for j in range(shifts.shape[0])]
    )


@register_quantizer("abc_weights")
class AbcWeights(Quantizer):
    r"""ABC-Net weight quantizer (Lin, Zhao and Pan, 2017): M binary bases.

    .. math::
        W \approx \sum_{i=1}^{M} \alpha_i B_i, \quad
        B_i = \text{sign}(W - \bar W + u_i \sigma_W), \quad
        u_i = -1 + \tfrac{2(i-1)}{M-1}

    with the alphas fitted by least squares on every call (per output channel,
    the last axis, with ``per_channel=True``: an extension of the paper).
    Gradients are straight-through: :math:`\partial L/\partial W = \sum_i
    \alpha_i \partial L/\partial B_i`. The same bases drive
    :class:`lowbit_tf.layers.ABCConv2D`, which computes the M * N binary
    convolutions separately rather than with the summed kernel.

    Arguments:
        num_bases: M >= 1.
        per_channel: fit mean, std and alphas per output channel.
    """

    def __init__(self, num_bases: int = 3, per_channel: bool = False):
        self.num_bases = _check_int("num_bases", num_bases, minimum=1)
        self.per_channel = _check_bool("per_channel", per_channel)
        self.precision = self.num_bases  # M binary planes

    def bases(self, kernel: Any) -> tuple[tf.Tensor, tf.Tensor]:
        """``(bases, alphas)`` as :func:`abc_weight_bases` computes them."""
        return abc_weight_bases(kernel, self.num_bases, self.per_channel)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        bases, alphas = self.bases(inputs)
        shape = (self.num_bases,) + (1,) * (bases.shape.rank - 1)
        if self.per_channel:
            shape = shape[:-1] + (alphas.shape[-1],)
        return tf.reduce_sum(bases * tf.reshape(alphas, shape), axis=0)

    def get_config(self) -> dict[str, Any]:
        return {"num_bases": self.num_bases, "per_channel": self.per_channel}


@register_quantizer("abc_activations")
class AbcActivations(Quantizer):
    r"""ABC-Net activation quantizer: N shifted binary bases.

    .. math::
        A \approx \sum_{j=1}^{N} \beta_j H_{v_j}(A), \quad
        H_v(x) = \text{sign}(\text{clip}(x + v, 0, 1) - 0.5)

    As a standalone quantizer (e.g. a layer's ``input_quantizer``) the shifts
    v_j and scales beta_j are constants: by default the thresholds 0.5 - v_j
    spread over [-1, 1] and beta_j = 1/N. :class:`lowbit_tf.layers.ABCConv2D`
    and :class:`~lowbit_tf.layers.ABCDense` make them trainable weights
    initialised the same way. Gradient: that of the clip (straight-through
    sign).

    Arguments:
        num_bases: N >= 1.
        shifts: N shifts v_j, or None for the defaults.
        betas: N scales beta_j, or None for 1/N each.
    """

    def __init__(self, num_bases: int = 3, shifts: Sequence[float] | None = None,
                 betas: Sequence[float] | None = None):
        self.num_bases = _check_int("num_bases", num_bases, minimum=1)
        for name, values in (("shifts", shifts), ("betas", betas)):
            if values is not None and len(values) != self.num_bases:
                raise ValueError(
                    f"`{name}` must have num_bases={self.num_bases} values, received "
                    f"{name}={list(values)!r}."
                )
        self.shifts = (
            [float(v) for v in shifts] if shifts is not None
            else abc_activation_shifts(self.num_bases).tolist()
        )
        self.betas = (
            [float(v) for v in betas] if betas is not None
            else [1.0 / self.num_bases] * self.num_bases
        )
        self.precision = self.num_bases

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        h = abc_activation_bases(inputs, self.shifts)
        betas = tf.reshape(tf.constant(self.betas, inputs.dtype),
                           (self.num_bases,) + (1,) * inputs.shape.rank)
        return tf.reduce_sum(h * betas, axis=0)

    def get_config(self) -> dict[str, Any]:
        return {"num_bases": self.num_bases, "shifts": self.shifts, "betas": self.betas}



@register_quantizer("fixed_point")
class FixedPoint(_Seeded, Quantizer):
    r"""Signed fixed-point quantization with nearest or stochastic rounding.

    A two's-complement fixed-point number with ``word_bits`` :math:`W` bits of
    which ``fraction_bits`` :math:`F` are fractional has resolution
    :math:`\epsilon = 2^{-F}` and range
    :math:`[-2^{W-F-1}, 2^{W-F-1} - \epsilon]` (Gupta et al.'s
    :math:`\langle IL, FL \rangle` with :math:`IL = W - F`). With
    :math:`k = x / \epsilon`:

    - nearest (Gupta et al.'s round-to-nearest, ties downwards):
      :math:`\lceil k - 1/2 \rceil`,
    - stochastic: :math:`\lfloor k \rfloor + 1` with probability
      :math:`k - \lfloor k \rfloor`, else :math:`\lfloor k \rfloor`
      (unbiased: :math:`E[q(x)] = x` within range),

    then saturation to the range (``saturate=True``), or two's-complement
    wrap-around (``saturate=False``), and :math:`q(x) = \epsilon k`.
    ``rounding="stochastic"`` samples only when ``training`` is True and
    rounds to nearest otherwise (inference). The gradient is straight-through
    within range: 1 where :math:`-2^{W-F-1} \le x \le 2^{W-F-1} - \epsilon`
    (inclusive), 0 outside. Results are exact while :math:`W` does not exceed
    the float mantissa (24 bits for float32, 11 for float16).

    Arguments:
        word_bits: Total bits :math:`W`, 1 to 32.
        fraction_bits: Fractional bits :math:`F`, 0 to ``word_bits - 1``.
        rounding: ``"nearest"`` or ``"stochastic"``.
        saturate: Clip to the range (True) or wrap around (False).
        seed: Seed of the stochastic rounding (an int >= 0), or None.

    Raises:
        ValueError: for inconsistent ``word_bits``/``fraction_bits``, an unknown
            ``rounding``, a non-bool ``saturate`` or a bad ``seed``.

    References:
        Gupta, Agrawal, Gopalakrishnan, Narayanan, "Deep Learning with Limited
        Numerical Precision", 2015.
    """

    precision = None

    def __init__(
        self,
        word_bits: int = 16,
        fraction_bits: int = 8,
        rounding: str = "nearest",
        saturate: bool = True,
        seed: int | None = None,
    ):
        self.word_bits = _check_int("word_bits", word_bits, minimum=1, maximum=32)
        self.fraction_bits = _check_int(
            "fraction_bits", fraction_bits, minimum=0, maximum=self.word_bits - 1
        )
        self.rounding = _check_choice("rounding", rounding, ("nearest", "stochastic"))
        self.saturate = _check_bool("saturate", saturate)
        self._init_seed(seed)
        self.precision = self.word_bits

    @property
    def range(self) -> tuple[float, float]:
        """The smallest and largest representable values."""
        eps = 2.0**-self.fraction_bits
        half = 2 ** (self.word_bits - 1)
        return -half * eps, (half - 1) * eps

    def call(self, inputs: tf.Tensor, training: Any = None) -> tf.Tensor:
        training = _is_training(training) if self.rounding == "stochastic" else False
        low, high = self.range
        scale = 2.0**self.fraction_bits
        half = 2.0 ** (self.word_bits - 1)
        saturate = self.saturate

        def finish(k):
            if saturate:
                return tf.clip_by_value(k, -half, half - 1)
            return tf.math.floormod(k + half, 2 * half) - half

        def nearest(k):
            return finish(tf.math.ceil(k - 0.5))

        def stochastic(k):
            return finish(tf.floor(k + self._uniform(tf.shape(k), k.dtype)))

        @tf.custom_gradient
        def _fixed_point(x):
            def grad(dy):
                inside = tf.math.logical_and(x >= low, x <= high)
                return tf.where(inside, dy, tf.zeros_like(dy))

            k = tf.cast(x, _work_dtype(x.dtype)) * scale
            k = _select(training, lambda: stochastic(k), lambda: nearest(k))
            return tf.cast(k / scale, x.dtype), grad

        return _fixed_point(inputs)

    def get_config(self) -> dict[str, Any]:
        return {
            "word_bits": self.word_bits,
            "fraction_bits": self.fraction_bits,
            "rounding": self.rounding,
            "saturate": self.saturate,
            "seed": self.seed,
        }


# -------------------------------------------------------------- gradient quantizers


class GradientQuantizer(Quantizer):
    r"""Base class: the identity on the forward pass, quantized gradient on the backward.

    ``y = gq(x)`` returns ``x`` unchanged; the gradient that reaches ``x`` is
    ``quantize_gradient(dy)``. A layer applies one to its outputs
    (``outputs = gradient_quantizer(outputs)``), so the gradient flowing back
    into the layer is quantized. Subclasses implement :meth:`quantize_gradient`.

    Attributes:
        precision: None (the forward values are not quantized).
        gradient_precision: Bits per quantized gradient value.
    """

    precision = None
    gradient_precision: int | None = None

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        @tf.custom_gradient
        def _identity(x):
            return tf.identity(x), self.quantize_gradient

        return _identity(inputs)

    def quantize_gradient(self, dy: tf.Tensor) -> tf.Tensor:
        """Returns the quantized gradient for the incoming gradient ``dy``."""
        raise NotImplementedError(f"{type(self).__name__} must implement `quantize_gradient`.")


@register_quantizer("dorefa_gradient")
class DoReFaGradient(_Seeded, GradientQuantizer):
    r"""DoReFa-Net k-bit stochastic gradient quantization (identity forward).

    .. math::

        \tilde{dr} = 2 \max|dr| \left[\operatorname{quantize}_k\left(
            \frac{dr}{2 \max|dr|} + \frac{1}{2} + N(k)\right) - \frac{1}{2}\right],
        \qquad N(k) = \frac{\sigma}{2^k - 1},\ \sigma \sim U[-\tfrac{1}{2}, \tfrac{1}{2})

    with :math:`\operatorname{quantize}_k(v) = \operatorname{round}(n v)/n`,
    :math:`n = 2^k - 1`, applied after clipping its argument to :math:`[0, 1]`.
    The noise makes the rounding stochastic (and unbiased away from the ends).
    As in the paper, :math:`\max|dr|` is taken over all axes except the first
    (batch) axis, so each sample has its own scale; for a tensor of rank <= 1
    (or unknown rank) over the whole tensor. The result lies on the grid
    :math:`\max|dr| \cdot \{-1, -1 + 2/n, \dots, 1\}`; an all-zero gradient
    stays zero.

    Arguments:
        k_bit: Bits per gradient value, >= 1.
        seed: Seed of the noise (an int >= 0), or None for a random seed.

    Raises:
        ValueError: for ``k_bit < 1`` (or not an integer) or a bad ``seed``.

    References:
        Zhou et al., "DoReFa-Net", 2016, section 2.4.
    """

    def __init__(self, k_bit: int = 6, seed: int | None = None):
        self.k_bit = _check_int("k_bit", k_bit, minimum=1)
        self._init_seed(seed)
        self.gradient_precision = self.k_bit

    def quantize_gradient(self, dy: tf.Tensor) -> tf.Tensor:
        n = 2**self.k_bit - 1
        rank = dy.shape.rank
        axes = list(range(1, rank)) if rank is not None and rank >= 2 else None
        largest = tf.reduce_max(tf.abs(dy), axis=axes, keepdims=True)
        noise = (self._uniform(tf.shape(dy), dy.dtype) - 0.5) / n
        v = tf.math.divide_no_nan(dy, 2 * largest) + 0.5 + tf.cast(noise, dy.dtype)
        v = tf.clip_by_value(v, 0.0, 1.0)
        return 2 * largest * (tf.round(v * n) / n - 0.5)

    def get_config(self) -> dict[str, Any]:
        return {"k_bit": self.k_bit, "seed": self.seed}


@register_quantizer("power_of_two_gradient")
class PowerOfTwoGradient(_Seeded, GradientQuantizer):
    r"""Quantized back-propagation: gradients rounded to signed powers of two.

    The identity on the forward pass; the gradient becomes
    :math:`\operatorname{sign}(dr)\, 2^{e}` (or 0), so multiplying by it is a
    shift. The exponent window has :math:`L = 2^{b-1} - 1` levels for
    ``bits`` = :math:`b` (sign bit, exponent code, one code for zero), as in
    :class:`PowerOfTwo`: values below :math:`2^{e_{lo}}` flush to 0. Rounding is
    in the log domain:

    - ``"nearest"``: :math:`e = \operatorname{round}(\log_2|dr|)`,
    - ``"stochastic"``: :math:`e = \lfloor \log_2|dr| \rfloor + 1` with
      probability :math:`\log_2|dr| - \lfloor \log_2|dr| \rfloor`, else
      :math:`\lfloor \log_2|dr| \rfloor`.

    The window top :math:`e_{hi}` is ``max_exponent`` (saturating above it) or,
    when None, follows the data: the exponent that :math:`\max|dr|` of the
    whole tensor rounds to (nearest) or :math:`\lceil \log_2 \max|dr| \rceil`
    (stochastic), so nothing saturates.

    Lin et al. round the layer inputs that multiply the back-propagated error;
    this object rounds the gradient it sees, which, applied to a layer's outputs,
    turns the multiplications of the backward pass into shifts as well.

    Arguments:
        bits: Bits per gradient value, >= 2.
        max_exponent: Top of the exponent window (an integer), or None to
            follow the gradient's largest magnitude.
        rounding: ``"nearest"`` or ``"stochastic"``.
        seed: Seed of the stochastic rounding (an int >= 0), or None.

    Raises:
        ValueError: for ``bits < 2``, a non-integer ``max_exponent``, an unknown
            ``rounding`` or a bad ``seed``.

    References:
        Lin, Courbariaux, Memisevic, Bengio, "Neural Networks with Few
        Multiplications", 2015, section 3.
    """

    def __init__(
        self,
        bits: int = 4,
        max_exponent: int | None = None,
        rounding: str = "nearest",
        seed: int | None = None,
    ):
        self.bits = _check_int("bits", bits, minimum=2)
        self.max_exponent = (
            None if max_exponent is None else _check_int("max_exponent", max_exponent)
        )
        self.rounding = _check_choice("rounding", rounding, ("nearest", "stochastic"))
        self._init_seed(seed)
        self.gradient_precision = self.bits

    def quantize_gradient(self, dy: tf.Tensor) -> tf.Tensor:
        uniform = None
        if self.rounding == "stochastic":
            uniform = self._uniform(tf.shape(dy), dy.dtype)
        return _power_of_two_quantize(dy, self.bits, self.max_exponent, uniform)

    def get_config(self) -> dict[str, Any]:
        return {
            "bits": self.bits,
            "max_exponent": self.max_exponent,
            "rounding": self.rounding,
            "seed": self.seed,
        }


# ------------------------------------------------------------ lookup, serialization


def _valid_names() -> list[str]:
    return sorted(set(_REGISTRY) | {cls.__name__ for cls in _REGISTRY.values()})


def _lookup(name: str, custom_objects: dict[str, Any] | None) -> Any:
    if custom_objects and name in custom_objects:
        return custom_objects[name]
    if name in _REGISTRY:
        return _REGISTRY[name]
    for cls in _REGISTRY.values():
        if cls.__name__ == name:
            return cls
    raise ValueError(f"Unknown quantizer {name!r}. Valid names: {', '.join(_valid_names())}.")


def serialize(quantizer: Callable[[Any], Any] | None) -> dict[str, Any] | None:
    """Returns a JSON-compatible config for ``quantizer`` (None for None).

    Works for :class:`Quantizer` instances and for Keras-registered functions
    such as :func:`ste_sign`.
    """
    if quantizer is None:
        return None
    return keras.saving.serialize_keras_object(quantizer)


def deserialize(
    config: str | dict[str, Any] | None, custom_objects: dict[str, Any] | None = None
) -> Callable[[Any], Any] | None:
    """Inverse of :func:`serialize`; also accepts a short or class name.

    Raises:
        ValueError: for an unknown name or a config that does not describe a
            callable; the message names the value and lists the valid names.
    """
    if config is None:
        return None
    if isinstance(config, str):
        obj = _lookup(config, custom_objects)
    elif isinstance(config, dict):
        objects = {cls.__name__: cls for cls in _REGISTRY.values()}
        objects.update(custom_objects or {})
        try:
            obj = keras.saving.deserialize_keras_object(config, custom_objects=objects)
        except (TypeError, ValueError) as e:
            raise ValueError(
                f"Could not deserialize quantizer config {config!r}: {e} "
                f"Valid names: {', '.join(_valid_names())}."
            ) from e
    else:
        raise ValueError(f"Could not interpret quantizer identifier: {config!r}")
    if isinstance(obj, type):
        obj = obj()
    if not callable(obj):
        raise ValueError(f"Quantizer config {config!r} did not give a callable: {obj!r}")
    return obj


def get(identifier: QuantizerLike) -> Callable[[Any], Any] | None:
    """Resolves a quantizer identifier (see the module docstring).

    Raises:
        ValueError: for an unknown name or an identifier that is not a name,
            dict, callable or None.
    """
    if identifier is None:
        return None
    if isinstance(identifier, (str, dict)):
        return deserialize(identifier)
    if isinstance(identifier, type) and issubclass(identifier, Quantizer):
        return identifier()
    if callable(identifier):
        return identifier
    raise ValueError(f"Could not interpret quantizer identifier: {identifier!r}")
