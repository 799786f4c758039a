r"""Constraint-driven compression: a trained float Keras model and a constraint in,
the per-layer low-bit model that meets it out.

    result = lowbit_tf.compress(model, (x_train, y_train), (x_val, y_val),
                                max_accuracy_drop=0.01)          # or target_size_bytes=...,
    result.model, result.tflite_model, result.report             # target_latency_ms=...
    print(result.report); result.report.plot("pareto.png")

What is searched. Each ``Conv2D`` and ``Dense`` layer of the model (except the
first and the last, which stay float by default: ``keep_float``) gets one of
``precisions``: ``"binary"`` (QuantConv2D / QuantDense with sign inputs and
sign kernel, LowbitBconv2d / LowbitBgemm), ``"ternary"`` (sign inputs, ternary
kernel: LowbitMultibitConv2d), ``"abcMxN"`` (ABCConv2D / ABCDense with M weight
and N activation bases), ``"fastfood"`` (Dense layers only: FastfoodDense, an
O(n log n) transform learned from scratch in the fine-tune), or stays
``"float"``. A layer whose input cannot be
negative (it comes from a ReLU, through pooling, flattening or dropout) gets no
sign-input precision (the sign of a ReLU output is always +1): only the ABC
ones, whose activation bases threshold [0, 1]. Every candidate starts from the
float model's weights and is fine-tuned briefly with knowledge distillation
from the float model (loss = (1 - distill) * cross-entropy + distill * T^2 *
KL(teacher_T || student_T)), then converted with `lowbit_tf.convert` and
evaluated in our TFLite runtime: the accuracy a report gives is the converted
model's on ``val_data``.

With ``int8=True`` the float parts may also go int8 (TFLite's int8 builtins,
calibrated on ``train_data``; the lowbit ops read and write the int8 tensors,
docs/int8.md): a move of the search like a layer's, shown as
``int8: float parts`` in the report.

The cost side needs no device: the size is `lowbit_tf.summary`'s prediction of
the .tflite bytes (with int8 float parts: their float weights at one byte each
instead of four; the evaluated candidates also report their real bytes), the
latency `lowbit_tf.cost_model`'s estimate for ``target`` (x86 measured here;
Arm from instruction counts), labelled as an estimate.

The search (each fine-tune counts against ``budget``; ``max_seconds`` too):

1. Sensitivity, without training: each layer alone at its most compressing
   precision, the accuracy that costs (Keras, on a slice of ``val_data``).
2. An order of moves: layers by cost saved per accuracy lost.
   C_k = the first k moves made. Costs of every C_k are known at once.
3. Size / latency targets: the smallest k whose C_k meets them (none: the
   constraint is unreachable with these precisions, and the report says what
   the smallest reachable cost is); then, within the budget, the most sensitive
   moved layers back off to a less compressing precision while the cost still
   meets the target, keeping the most accurate candidate.
   Accuracy only: a bisection over k for the largest C_k within
   ``max_accuracy_drop``, then the next move at less compressing precisions.
4. The chosen candidate: of those meeting every constraint, the most accurate
   under a size / latency target, else the smallest.

Interrupting the search (Ctrl-C, or a ``progress`` callback raising
KeyboardInterrupt) stops it cleanly with the best candidate so far.
"""

from __future__ import annotations

import dataclasses
import re
import sys
import time
import types
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from lowbit_tf import cost_model, layers, lite
from lowbit_tf import summary as lb_summary
from lowbit_tf._facade import convert
from lowbit_tf._keras import keras

__all__ = ["Candidate", "CompressionReport", "CompressionResult", "compress"]

_ABC = re.compile(r"abc(\d)x(\d)$")
#: The precisions entry of the float parts' int8 move (not a layer name: Keras
#: names have no spaces).
FLOAT_PARTS = "float parts"
_PASS_THROUGH = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.Flatten,
                 keras.layers.Dropout, keras.layers.Reshape, keras.layers.GlobalAveragePooling2D,
                 keras.layers.GlobalMaxPooling2D)


@dataclasses.dataclass
class Candidate:
    """One evaluated (or only costed) configuration."""

    precisions: dict[str, str]
    predicted_bytes: int
    latency_ms: float
    accuracy: float | None = None  # the converted model's, on val_data
    tflite_bytes: int | None = None
    meets: bool = False
    note: str = ""
    #: The fine-tuned Keras model of an evaluated candidate, and its .tflite.
    model: Any = dataclasses.field(default=None, repr=False, compare=False)
    tflite: bytes | None = dataclasses.field(default=None, repr=False, compare=False)

    def describe(self) -> str:
        groups: dict[str, list[str]] = {}
        for name, precision in self.precisions.items():
            if precision != "float":
                groups.setdefault(precision, []).append(name)
        return "; ".join(f"{p}: {', '.join(n)}" for p, n in groups.items()) or "all float"


@dataclasses.dataclass
class CompressionReport:
    """What the search tried and chose; ``str()`` is the table."""

    target: str
    rates_source: str
    baseline_accuracy: float
    constraints: dict[str, float]
    candidates: list[Candidate]
    chosen: Candidate | None
    met: bool
    message: str
    stopped: str  # "done", "budget" or "interrupted"
    finetunes: int
    seconds: float

    def pareto_front(self, cost: str = "predicted_bytes") -> list[Candidate]:
        """The evaluated candidates no other beats on both accuracy and `cost`
        ("predicted_bytes" or "latency_ms"), by increasing cost."""
        evaluated = sorted((c for c in self.candidates if c.accuracy is not None),
                           key=lambda c: (getattr(c, cost), -c.accuracy))
        front, best = [], -1.0
        for c in evaluated:
            if c.accuracy > best:
                front.append(c)
                best = c.accuracy
        return front

    def __str__(self) -> str:
        lines = [
            f"lowbit_tf.compress: target {self.target}; constraints "
            + ", ".join(f"{k}={v:g}" for k, v in self.constraints.items()),
            f"latency: {self.rates_source}",
            f"float model: accuracy {self.baseline_accuracy:.4f} (converted, val_data)",
            f"{'#':>3} {'accuracy':>8} {'drop':>7} {'pred. KB':>9} {'.tflite KB':>10} "
            f"{'est. ms':>8} {'meets':>5}  precisions",
        ]
        for i, c in enumerate(self.candidates):
            acc = "-" if c.accuracy is None else f"{c.accuracy:.4f}"
            drop = "-" if c.accuracy is None else f"{self.baseline_accuracy - c.accuracy:+.4f}"
            real = "-" if c.tflite_bytes is None else f"{c.tflite_bytes / 1024:.1f}"
            mark = "*" if c is self.chosen else " "
            lines.append(f"{i:>3}{mark}{acc:>8} {drop:>7} {c.predicted_bytes / 1024:9.1f} "
                         f"{real:>10} {c.latency_ms:8.3f} {'yes' if c.meets else 'no':>5}  "
                         f"{c.describe()}{'  (' + c.note + ')' if c.note else ''}")
        lines.append(f"search: {self.finetunes} fine-tunes, {self.seconds:.1f} s, stopped: "
                     f"{self.stopped}")
        lines.append(("chosen: #" + str(self.candidates.index(self.chosen))
                      if self.chosen is not None else "chosen: none") + f" - {self.message}")
        return "\n".join(lines)

    def plot(self, path: str | Path) -> Path:
        """The accuracy against predicted size and estimated latency of every
        evaluated candidate, the Pareto fronts and the chosen one, as a PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        panels = ((axes[0], "predicted_bytes", 1 / 1024, "size (KB, predicted)"),
                  (axes[1], "latency_ms", 1.0, f"latency on {self.target} (ms, estimate)"))
        for ax, cost, scale, label in panels:
            done = [c for c in self.candidates if c.accuracy is not None]
            ax.scatter([getattr(c, cost) * scale for c in done], [c.accuracy for c in done],
                       c="0.6", label="candidates")
            front = self.pareto_front(cost)
            ax.plot([getattr(c, cost) * scale for c in front], [c.accuracy for c in front],
                    "b-o", label="Pareto front")
            if self.chosen is not None and self.chosen.accuracy is not None:
                ax.scatter([getattr(self.chosen, cost) * scale], [self.chosen.accuracy], s=150,
                           facecolors="none", edgecolors="r", label="chosen")
            ax.axhline(self.baseline_accuracy, color="k", ls=":", label="float")
            ax.set_xlabel(label)
            ax.set_ylabel("accuracy (converted model)")
        axes[0].legend(loc="lower right")
        fig.tight_layout()
        path = Path(path)
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path


@dataclasses.dataclass
class CompressionResult:
    """The chosen model (None when nothing met the constraints), the .tflite
    file the report's figures are of (int8 float parts included, if chosen),
    and the report."""

    model: keras.Model | None
    tflite_model: bytes | None
    report: CompressionReport


class _Budget:
    def __init__(self, finetunes: int, seconds: float | None) -> None:
        self.finetunes, self.seconds, self.used = finetunes, seconds, 0
        self.start = time.perf_counter()

    def left(self) -> bool:
        if self.used >= self.finetunes:
            return False
        return self.seconds is None or time.perf_counter() - self.start < self.seconds


def _precision_layer(layer: keras.layers.Layer, precision: str) -> keras.layers.Layer:
    """The quantized twin of a float Conv2D / Dense at `precision`."""
    config = layer.get_config()
    conv = isinstance(layer, keras.layers.Conv2D)
    keys = (("filters", "kernel_size", "strides", "padding", "dilation_rate", "groups")
            if conv else ("units",))
    base = {k: config[k] for k in keys if k in config}
    base.update(activation=config["activation"], use_bias=config["use_bias"], name=layer.name)
    if precision == "fastfood":  # Dense only; its transform is learned from scratch
        return layers.FastfoodDense(base["units"], activation=base["activation"],
                                    use_bias=base["use_bias"], seed=0, name=layer.name)
    abc = _ABC.match(precision)
    if abc:
        cls = layers.ABCConv2D if conv else layers.ABCDense
        base.pop("groups", None)
        return cls(**base, num_weight_bases=int(abc.group(1)),
                   num_activation_bases=int(abc.group(2)))
    kernel = {"binary": "ste_sign", "ternary": "ste_tern"}[precision]
    cls = layers.QuantConv2D if conv else layers.QuantDense
    return cls(**base, input_quantizer="ste_sign", kernel_quantizer=kernel,
               kernel_constraint="weight_clip")


def _build(model: keras.Model, precisions: dict[str, str]) -> keras.Model:
    """The model with `precisions` applied, weights copied from `model` (kernels
    and biases of the replaced layers; ABC's own weights start at their init)."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        precision = precisions.get(layer.name, "float")
        if precision == "float":
            return layer.__class__.from_config(layer.get_config())
        return _precision_layer(layer, precision)

    new = keras.models.clone_model(model, clone_function=clone)
    # clone_model keeps the layers' order (not every name: Keras renames inputs).
    for old, layer in zip(model.layers, new.layers, strict=True):
        precision = precisions.get(layer.name, "float")
        if precision == "float":
            layer.set_weights(old.get_weights())
        elif precision != "fastfood":
            layer.kernel.assign(np.clip(old.kernel.numpy(), -1.0, 1.0))
            if old.use_bias:
                layer.bias.assign(old.bias.numpy())
    return new


def _nonnegative_input(model: keras.Model, layer: keras.layers.Layer) -> bool:
    """Whether `layer`'s input comes from a ReLU (through pass-through layers)."""
    node = layer._inbound_nodes[0] if layer._inbound_nodes else None
    while node is not None:
        parents = node.parent_nodes if hasattr(node, "parent_nodes") else []
        if len(parents) != 1:
            return False
        producer = parents[0].operation if hasattr(parents[0], "operation") else None
        if producer is None:
            return False
        if isinstance(producer, keras.layers.ReLU):
            return True
        activation = getattr(producer, "activation", None)
        name = getattr(activation, "__name__", "")
        if isinstance(producer, keras.layers.Activation) or activation is not None:
            return name in ("relu", "relu6", "softmax", "sigmoid")
        if not isinstance(producer, _PASS_THROUGH):
            return False
        node = producer._inbound_nodes[0] if producer._inbound_nodes else None
    return False


def _logits_of(outputs: np.ndarray, probabilities: bool) -> np.ndarray:
    return np.log(np.clip(outputs, 1e-7, 1.0)) if probabilities else outputs


def _finetune(student: keras.Model, teacher_logits: np.ndarray, x: np.ndarray, y: np.ndarray,
              probabilities: bool, epochs: int, batch_size: int, learning_rate: float,
              distill: float, temperature: float, seed: int) -> None:
    """Brief training of `student` with knowledge distillation (module docstring)."""
    optimizer = keras.optimizers.Adam(learning_rate)
    rng = np.random.default_rng(seed)
    # The BatchNormalizations after a compressed layer see other statistics
    # than the float layer's: let their moving averages follow within the
    # few steps of a fine-tune (momentum 0.9 instead of Keras's 0.99).
    norms = [layer for layer in student.layers
             if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in norms]
    for layer in norms:
        layer.momentum = 0.9
    teacher_soft = tf.nn.softmax(teacher_logits / temperature).numpy()
    variables = student.trainable_variables

    @tf.function
    def step(xb: tf.Tensor, yb: tf.Tensor, soft: tf.Tensor) -> None:
        with tf.GradientTape() as tape:
            outputs = student(xb, training=True)
            logits = tf.math.log(tf.clip_by_value(outputs, 1e-7, 1.0)) if probabilities \
                else outputs
            hard = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(yb, logits))
            log_student = tf.nn.log_softmax(logits / temperature)
            soft_loss = tf.reduce_mean(tf.reduce_sum(
                soft * (tf.math.log(tf.clip_by_value(soft, 1e-12, 1.0)) - log_student), -1))
            loss = (1 - distill) * hard + distill * temperature ** 2 * soft_loss
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=True))

    for _ in range(epochs):
        order = rng.permutation(len(x))
        for start in range(0, len(x), batch_size):
            batch = order[start:start + batch_size]
            step(x[batch], y[batch].astype(np.int32), teacher_soft[batch])
    for layer, momentum in zip(norms, momenta, strict=True):
        layer.momentum = momentum


def _converted(model: keras.Model, int8: bool, samples: np.ndarray) -> bytes:
    if not int8:
        return convert(model)
    return convert(model, int8=True, representative_dataset=lambda: ([x[None]] for x in samples))


def _tflite_accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray, int8: bool = False,
                     samples: np.ndarray | None = None) -> tuple[float, bytes]:
    """(accuracy, the .tflite) of the converted model in our runtime; `int8`:
    its float parts int8, calibrated on `samples`."""
    content = _converted(model, int8, samples)
    interpreter = lite.Interpreter(model_content=content, num_threads=1)
    predictions = np.concatenate([
        np.argmax(interpreter.predict(x[i:i + 256]), axis=-1) for i in range(0, len(x), 256)])
    return float(np.mean(predictions == y)), content


def _as_arrays(data: Any, what: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        x, y = data
    except (TypeError, ValueError) as e:
        raise TypeError(f"compress: {what} must be a pair (x, y) of arrays, got "
                        f"{type(data).__name__}") from e
    x, y = np.asarray(x, np.float32), np.asarray(y).reshape(-1)
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"compress: {what} has {len(x)} inputs and {len(y)} labels")
    return x, y


def compress(
    model: keras.Model,
    train_data: tuple[Any, Any],
    val_data: tuple[Any, Any],
    *,
    max_accuracy_drop: float | None = None,
    target_size_bytes: int | None = None,
    target_latency_ms: float | None = None,
    target: str = "x86",
    budget: int = 8,
    max_seconds: float | None = None,
    precisions: Sequence[str] = ("abc2x2", "binary"),
    keep_float: Sequence[str] = ("first", "last"),
    finetune_epochs: int = 3,
    batch_size: int = 32,
    learning_rate: float = 1e-3,
    distill: float = 0.5,
    temperature: float = 2.0,
    seed: int = 0,
    int8: bool = False,
    rates: cost_model.TargetRates | None = None,
    progress: bool | Callable[[str], None] = True,
) -> CompressionResult:
    """Searches per-layer precisions of `model` for the constraint(s) given
    (module docstring) and returns the chosen model and the report.

    Args:
      model: a trained float Keras classifier (Sequential or functional) whose
        output is logits or softmax probabilities over classes.
      train_data, val_data: (x, y) arrays, y integer class labels; fine-tuning
        reads train_data, every accuracy is the converted model's on val_data.
      max_accuracy_drop: at most this much accuracy (a fraction: 0.01 = one
        point) below the converted float model's.
      target_size_bytes: the .tflite file at most this large (predicted).
      target_latency_ms: at most this latency on `target` (estimated).
      target: "x86", "aarch64" or "armv7": what the latency estimate is for.
      budget: fine-tunes the search may run (each candidate evaluated is one).
      max_seconds: stop starting fine-tunes after this many seconds.
      precisions: what a compressed layer may become, from the least to the most
        compressing ("binary", "ternary", "abcMxN" with M, N in 1..9, "fastfood"
        for Dense layers); each layer takes those that apply to it.
      keep_float: layer names that stay float; "first" and "last" name the
        first and the last Conv2D/Dense of the model.
      finetune_epochs, batch_size, learning_rate: each fine-tune's training.
      distill: the distillation term's weight (0: labels only); temperature: T.
      int8: also search int8 for the float parts (module docstring); the
        result's ``tflite_model`` is then converted that way when chosen.
      rates: the latency model's rates (default: `cost_model.rates_for(target)`).
      progress: True prints one line per step on stderr; a callable gets them.

    Raises:
      ValueError: no constraint, a bad precision / target / constraint value,
        or a model without a Conv2D or Dense layer to compress.
    """
    constraints = {k: v for k, v in (("max_accuracy_drop", max_accuracy_drop),
                                     ("target_size_bytes", target_size_bytes),
                                     ("target_latency_ms", target_latency_ms)) if v is not None}
    if not constraints:
        raise ValueError("compress: give at least one of max_accuracy_drop, target_size_bytes, "
                         "target_latency_ms")
    for key, value in constraints.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ValueError(f"compress: {key} must be a number >= 0, got {value!r}")
    if target not in cost_model.TARGETS:
        raise ValueError(f"compress: target must be one of {cost_model.TARGETS}, got {target!r}")
    for p in precisions:
        if p not in ("binary", "ternary", "fastfood") and not _ABC.match(p):
            raise ValueError(f"compress: unknown precision {p!r} (binary, ternary, abcMxN, "
                             "fastfood)")
    if not isinstance(budget, int) or budget < 1:
        raise ValueError(f"compress: budget must be a positive number of fine-tunes, got "
                         f"{budget!r}")
    x_train, y_train = _as_arrays(train_data, "train_data")
    x_val, y_val = _as_arrays(val_data, "val_data")
    say = (progress if callable(progress)
           else (lambda m: print(f"[compress] {m}", file=sys.stderr, flush=True)) if progress
           else (lambda m: None))
    rates = rates or cost_model.rates_for(target)
    kernels = [layer for layer in model.layers
               if type(layer) in (keras.layers.Conv2D, keras.layers.Dense)]
    if not kernels:
        raise ValueError("compress: the model has no Conv2D or Dense layer to compress")
    fixed = {kernels[0].name if k == "first" else kernels[-1].name if k == "last" else k
             for k in keep_float}
    searchable = [layer for layer in kernels if layer.name not in fixed]
    allowed = {
        layer.name: [p for p in precisions
                     if (p != "fastfood" or isinstance(layer, keras.layers.Dense))
                     and (p == "fastfood" or _ABC.match(p) or not _nonnegative_input(model, layer))]
        for layer in searchable
    }
    allowed = {name: ps for name, ps in allowed.items() if ps}
    probabilities = getattr(model.layers[-1], "activation", None) is keras.activations.softmax

    budget_state = _Budget(budget, max_seconds)
    teacher_logits = _logits_of(model.predict(x_train, verbose=0, batch_size=256), probabilities)
    baseline_accuracy, baseline_tflite = _tflite_accuracy(model, x_val, y_val)
    baseline_bytes = len(baseline_tflite)
    candidates: list[Candidate] = []

    calibration = x_train[:min(len(x_train), 200)]

    def is_int8(precision_map: dict[str, str]) -> bool:
        return precision_map.get(FLOAT_PARTS) == "int8"

    def costed(precision_map: dict[str, str], note: str = "") -> Candidate:
        built = _build(model, precision_map)
        report = lb_summary.summary(built, print_fn=None)
        size = report.predicted_tflite_bytes
        if is_int8(precision_map):
            # Float kernels at 1 byte a weight instead of 4, plus a scale
            # (float32) and zero point (int64) per output channel; biases stay
            # 4 bytes (int32); every tensor gets its quantization (~40 bytes).
            for layer in built.layers:
                if type(layer) in (keras.layers.Conv2D, keras.layers.Dense):
                    size -= 3 * int(np.prod(layer.kernel.shape)) - 12 * layer.kernel.shape[-1]
            size += 40 * len(built.layers)
        return Candidate(dict(precision_map), size,
                         cost_model.estimate_latency_ms(report, rates, is_int8(precision_map)),
                         note=note)

    def meets_cost(c: Candidate) -> bool:
        return ((target_size_bytes is None or c.predicted_bytes <= target_size_bytes)
                and (target_latency_ms is None or c.latency_ms <= target_latency_ms))

    def meets(c: Candidate) -> bool:
        accurate = (max_accuracy_drop is None or c.accuracy is not None
                    and c.accuracy >= baseline_accuracy - max_accuracy_drop - 1e-9)
        return meets_cost(c) and accurate and c.accuracy is not None

    def evaluate(c: Candidate) -> Candidate:
        for done in candidates:
            if done.precisions == c.precisions and done.accuracy is not None:
                return done
        student = _build(model, c.precisions)
        if any(p != "float" for n, p in c.precisions.items() if n != FLOAT_PARTS):
            _finetune(student, teacher_logits, x_train, y_train, probabilities,
                      finetune_epochs, batch_size, learning_rate, distill, temperature,
                      seed + budget_state.used)
            budget_state.used += 1
        c.accuracy, c.tflite = _tflite_accuracy(student, x_val, y_val,
                                                is_int8(c.precisions), calibration)
        c.tflite_bytes = len(c.tflite)
        c.meets = meets(c)
        c.model = student
        candidates.append(c)
        say(f"candidate {len(candidates) - 1}: accuracy {c.accuracy:.4f}, "
            f"{c.predicted_bytes / 1024:.1f} KB predicted, {c.latency_ms:.3f} ms est., "
            f"{'meets' if c.meets else 'does not meet'} - {c.describe()}")
        return c

    if int8:
        allowed[FLOAT_PARTS] = ["int8"]
    float_map = {name: "float" for name in allowed}
    baseline = costed(float_map, "float model")
    baseline.accuracy, baseline.tflite_bytes = baseline_accuracy, baseline_bytes
    baseline.tflite = baseline_tflite
    baseline.meets = meets(baseline)
    baseline.model = model
    candidates.append(baseline)
    say(f"float model: accuracy {baseline_accuracy:.4f}, {baseline_bytes / 1024:.1f} KB, "
        f"{baseline.latency_ms:.3f} ms est. on {target}; {len(allowed)} layers to search")
    stopped, message = "done", ""
    try:
        # 1-2. Sensitivity (no training) and the order of the moves.
        strongest = {name: ps[-1] for name, ps in allowed.items()}
        sample = slice(0, min(len(x_val), 512))
        drops, savings = {}, {}
        for name, precision in strongest.items():
            if name == FLOAT_PARTS:  # no training involved: the converted model itself
                accuracy, _ = _tflite_accuracy(model, x_val[sample], y_val[sample], True,
                                               calibration)
            else:
                probe = _build(model, {name: precision})
                accuracy = float(np.mean(
                    np.argmax(probe(x_val[sample], training=False), -1) == y_val[sample]))
            drops[name] = baseline_accuracy - accuracy
            moved = costed({**float_map, name: precision})
            savings[name] = (1 - moved.predicted_bytes / baseline.predicted_bytes
                             + 1 - moved.latency_ms / max(baseline.latency_ms, 1e-9))
            say(f"sensitivity {name} -> {precision}: accuracy -{drops[name]:.3f} untrained, "
                f"saves {savings[name]:.3f} (relative size + latency)")
        order = sorted(strongest, key=lambda n: savings[n] / (max(drops[n], 0) + 0.01),
                       reverse=True)
        path = []
        for k in range(len(order) + 1):
            config = {**float_map, **{n: strongest[n] for n in order[:k]}}
            path.append(costed(config, f"C_{k}"))

        if "target_size_bytes" in constraints or "target_latency_ms" in constraints:
            reachable = [k for k, c in enumerate(path) if meets_cost(c)]
            if not reachable:
                smallest = path[-1]
                message = (f"unreachable with precisions {tuple(precisions)}: with every "
                           f"searchable layer compressed the model is predicted at "
                           f"{smallest.predicted_bytes} bytes and {smallest.latency_ms:.3f} ms "
                           f"on {target}")
                candidates.append(smallest)
                raise _Stop("done")
            k = reachable[0]
            if not budget_state.left():
                raise _Stop("budget")
            best = evaluate(path[k])
            # Back off the most sensitive moved layers while the cost allows.
            for name in sorted(order[:k], key=lambda n: drops[n], reverse=True):
                if best.meets and max_accuracy_drop is not None:
                    break
                for softer in allowed[name][:-1]:
                    trial = costed({**best.precisions, name: softer}, f"{name} backed off")
                    if not meets_cost(trial):
                        continue
                    if not budget_state.left():
                        raise _Stop("budget")
                    trial = evaluate(trial)
                    if trial.accuracy > best.accuracy:
                        best = trial
                    break
        else:
            # Bisection: the largest k whose C_k keeps the accuracy.
            low, high = 0, len(path) - 1  # C_low meets (C_0 is the float model)
            while low < high:
                if not budget_state.left():
                    raise _Stop("budget")
                mid = (low + high + 1) // 2
                if evaluate(path[mid]).meets:
                    low = mid
                else:
                    high = mid - 1
            # The next move at a less compressing precision, if one is left.
            current = path[low].precisions
            for name in order[low:]:
                for softer in allowed[name][:-1]:
                    if not budget_state.left():
                        raise _Stop("budget")
                    trial = evaluate(costed({**current, name: softer}, f"{name} softer"))
                    if trial.meets:
                        current = trial.precisions
                        break
    except _Stop as stop:
        stopped = stop.reason
    except KeyboardInterrupt:
        stopped = "interrupted"
        say("interrupted: keeping the best candidate so far")

    chosen = _choose(candidates, constraints)
    met = chosen is not None
    if not message:
        message = ("meets " + ", ".join(constraints) if met else
                   "no evaluated candidate meets the constraints"
                   + (" (budget spent)" if stopped == "budget" else ""))
    report = CompressionReport(
        target, rates.source, baseline_accuracy, constraints, candidates, chosen, met, message,
        stopped, budget_state.used, time.perf_counter() - budget_state.start)
    say(message)
    if chosen is None:
        return CompressionResult(None, None, report)
    return CompressionResult(chosen.model, chosen.tflite, report)


class _Stop(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _choose(candidates: list[Candidate], constraints: dict[str, float]) -> Candidate | None:
    meeting = [c for c in candidates if c.meets and c.accuracy is not None]
    if not meeting:
        return None
    if "target_size_bytes" in constraints or "target_latency_ms" in constraints:
        return max(meeting, key=lambda c: (c.accuracy, -c.predicted_bytes))
    return min(meeting, key=lambda c: (c.predicted_bytes, c.latency_ms, -c.accuracy))


class _CallableModule(types.ModuleType):
    """Lets ``lowbit_tf.compress(model, ...)`` work where ``lowbit_tf.compress`` is
    this module (as ``lowbit_tf.summary``)."""

    def __call__(self, *args: Any, **kwargs: Any) -> CompressionResult:
        return compress(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
