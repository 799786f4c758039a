"""What the experiment scripts share: arguments, data, the training loop, tables, plots.

Every experiment trains small networks on scikit-learn's 8x8 digits (shipped
with scikit-learn, nothing is downloaded; 1347 training and 450 test images,
stratified split), prints a table and writes ``<name>.png`` (and the table as
``<name>.txt``) into ``--output-dir``. ``--quick`` shrinks the run to seconds
(what the tests use); the defaults are the real run.

Each script is runnable as ``python experiments/<name>.py [--quick]`` and
importable (``main(argv) -> int``).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

DEFAULT_OUTPUT_DIR = Path(__file__).resolve().parent / "results"


@dataclass
class Config:
    """The parsed command line of an experiment."""

    name: str
    quick: bool
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    output_dir: Path
    extra: argparse.Namespace = field(default_factory=argparse.Namespace)


def parse_args(
    name: str,
    description: str,
    argv: Sequence[str] | None,
    epochs: int,
    quick_epochs: int = 2,
    batch_size: int = 64,
    quick_batch_size: int = 32,
    learning_rate: float = 1e-2,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> Config:
    """Parses the options every experiment has (plus ``add_arguments``' own)."""
    parser = argparse.ArgumentParser(prog=f"{name}.py", description=description)
    parser.add_argument("--quick", action="store_true",
                        help=f"tiny run for tests ({quick_epochs} epochs, fewer variants)")
    parser.add_argument("--epochs", type=int, default=None,
                        help=f"training epochs (default {epochs}; {quick_epochs} with --quick)")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"default {batch_size}; {quick_batch_size} with --quick (more "
                             "steps in the few epochs)")
    parser.add_argument("--learning-rate", type=float, default=learning_rate,
                        help=f"Adam's learning rate (default {learning_rate:g})")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weights, the data split and the batch orders "
                             "(default 0)")
    parser.add_argument("--output-dir", type=Path, default=DEFAULT_OUTPUT_DIR,
                        help="where the PNG and the table go (default: experiments/results)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    require_matplotlib(name)
    if args.epochs is None:
        args.epochs = quick_epochs if args.quick else epochs
    if args.batch_size is None:
        args.batch_size = quick_batch_size if args.quick else batch_size
    for option in ("epochs", "batch_size"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be >= 1, "
                         f"received {getattr(args, option)}")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    common = {"quick", "epochs", "batch_size", "learning_rate", "seed", "output_dir"}
    extra = argparse.Namespace(**{k: v for k, v in vars(args).items() if k not in common})
    return Config(name=name, quick=args.quick, epochs=args.epochs, batch_size=args.batch_size,
                  learning_rate=args.learning_rate, seed=args.seed,
                  output_dir=args.output_dir, extra=extra)


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    """Digits as NHWC float32 in [0, 1] and int labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def load_data(seed: int = 0) -> Data:
    """scikit-learn digits, the split of :func:`lowbit_tf.demo.load_digits_split`."""
    from lowbit_tf.demo import load_digits_split

    return Data(*load_digits_split(seed))


def upscaled(data: Data, factor: int = 4) -> Data:
    """The digits `factor` times larger (each pixel a factor x factor block):
    32x32 for the QuickNet-shaped networks, whose stem and transitions halve
    the size four times."""
    def up(x: np.ndarray) -> np.ndarray:
        return np.repeat(np.repeat(x, factor, axis=1), factor, axis=2)

    return Data(up(data.x_train), data.y_train, up(data.x_test), data.y_test)


# ----------------------------------------------------------------------- training


def batch_norm(**kwargs: Any) -> Any:
    """``BatchNormalization(momentum=0.9)``: the experiments' batch norm.

    1347 training images are 22 steps per epoch at batch 64. Keras's default
    momentum 0.99 averages over ~100 steps, longer than the weights stay put
    early in training, and the inference-mode statistics then lag behind (test
    accuracy near chance while training accuracy is 99%); 0.9 averages over ~10.
    """
    from lowbit_tf._keras import keras

    return keras.layers.BatchNormalization(momentum=kwargs.pop("momentum", 0.9), **kwargs)


@dataclass
class Result:
    """One trained variant: test accuracy after every epoch, and what it cost."""

    label: str
    test_accuracy: list[float]
    train_seconds: float
    params: int
    model: Any = field(default=None, repr=False)

    @property
    def final(self) -> float:
        return self.test_accuracy[-1]

    @property
    def best(self) -> float:
        return max(self.test_accuracy)


def train(
    label: str,
    build: Callable[[], Any],
    data: Data,
    config: Config,
    optimizer: Callable[[], Any] | None = None,
) -> Result:
    """Builds a model with ``build()`` (seeded), trains it, tests it after every epoch.

    ``build`` returns an uncompiled Keras model producing logits; ``optimizer``
    makes its optimizer (default Adam with ``config.learning_rate``). Every variant starts
    from ``keras.utils.set_random_seed(config.seed)`` and trains on
    :func:`lowbit_models.digits.training_batches` (one dataset for the whole run, so
    every epoch, one ``fit`` call each, draws a new order), so runs are
    reproducible and variants see the same batches in the same orders.
    """
    from lowbit_models.digits import training_batches
    from lowbit_tf._keras import keras

    keras.utils.set_random_seed(config.seed)
    model = build()
    model.compile(
        optimizer=optimizer() if optimizer else keras.optimizers.Adam(config.learning_rate),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    batches = training_batches(data.x_train, data.y_train, config.batch_size, config.seed)
    accuracies = []
    seconds = 0.0
    for epoch in range(config.epochs):
        start = time.perf_counter()
        model.fit(batches, epochs=epoch + 1, initial_epoch=epoch, shuffle=False, verbose=0)
        seconds += time.perf_counter() - start
        accuracies.append(accuracy(model, data))
    print(f"  {label:<34} test accuracy {accuracies[-1]:.4f} "
          f"(best {max(accuracies):.4f}), {seconds:.1f} s", flush=True)
    return Result(label, accuracies, seconds, model.count_params(), model)


def recalibrate_batch_norm(model: Any, data: Data, batch_size: int = 64, passes: int = 3) -> None:
    """Re-estimates every batch norm's moving statistics on the training set.

    For a network given other weights than it was trained with (e.g. a binary
    network's real-valued latent weights): forward passes in training mode,
    which update the moving mean and variance and nothing else.
    """
    for _ in range(passes):
        for start in range(0, len(data.x_train), batch_size):
            model(data.x_train[start:start + batch_size], training=True)


def accuracy(model: Any, data: Data) -> float:
    """Test-set accuracy (inference mode)."""
    logits = model.predict(data.x_test, batch_size=512, verbose=0)
    return float(np.mean(np.argmax(logits, axis=-1) == data.y_test))


# ------------------------------------------------------------------ tables, plots


def format_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (floats with 4 decimals), columns padded to line up."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4f}"
        return str(value)

    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    numeric = [all(_is_number(r[i]) for r in cells) for i in range(len(headers))]

    def line(values: Sequence[str]) -> str:
        padded = [v.rjust(w) if num else v.ljust(w)
                  for v, w, num in zip(values, widths, numeric, strict=True)]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join(("-" * (w + 1) + ":") if num else ("-" * (w + 2))
                          for w, num in zip(widths, numeric, strict=True)) + "|"
    return "\n".join([line(headers), rule, *(line(r) for r in cells)])


def _is_number(text: str) -> bool:
    try:
        float(text.replace(",", ""))
    except ValueError:
        return False
    return True


def report(config: Config, title: str, table: str, notes: Sequence[str] = ()) -> Path:
    """Prints the title, table and notes and writes them to ``<name>.txt``."""
    text = "\n".join([f"## {title}", "", table, *([""] + list(notes) if notes else [])]) + "\n"
    print("\n" + text, flush=True)
    path = config.output_dir / f"{config.name}.txt"
    path.write_text(text)
    return path


MATPLOTLIB_MISSING = (
    "{name}.py plots its results with matplotlib, which is not installed. Install the "
    "experiments' extra: pip install -e \".[experiments]\" (or: pip install matplotlib)."
)


def require_matplotlib(name: str) -> None:
    """Exits with what to install when matplotlib is missing: checked before any
    training, so that a run does not end in an ImportError after minutes."""
    import importlib.util

    if importlib.util.find_spec("matplotlib") is None:
        sys.exit(MATPLOTLIB_MISSING.format(name=name))


def pyplot() -> Any:
    """matplotlib.pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_curves(ax: Any, results: Sequence[Result], title: str) -> None:
    """Test accuracy per epoch, one line per result."""
    for result in results:
        epochs = np.arange(1, len(result.test_accuracy) + 1)
        ax.plot(epochs, result.test_accuracy, marker="." if len(epochs) < 40 else None,
                label=result.label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def save_figure(fig: Any, config: Config) -> Path:
    """Writes ``fig`` to ``<output-dir>/<name>.png`` and closes it."""
    path = config.output_dir / f"{config.name}.png"
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    pyplot().close(fig)
    print(f"wrote {path} and {path.with_suffix('.txt')}")
    return path


def header(config: Config, what: str) -> None:
    """Prints what runs, on which data, for how long."""
    print(f"{config.name}: {what}")
    print(f"  scikit-learn digits 8x8, {config.epochs} epochs, batch {config.batch_size}, "
          f"learning rate {config.learning_rate:g}, seed {config.seed}"
          f"{' (quick)' if config.quick else ''}", flush=True)


def run_main(main: Callable[[Sequence[str] | None], int]) -> None:
    """``if __name__ == "__main__": run_main(main)``."""
    sys.exit(main(sys.argv[1:]))
