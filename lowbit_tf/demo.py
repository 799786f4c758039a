"""The main job on a built-in example: `python -m lowbit_tf.demo`.

Trains a small binary CNN (lowbit_models.binary_digits_cnn) on scikit-learn's
8x8 digits (shipped with scikit-learn, nothing is downloaded), converts it to
.tflite with lowbit custom ops, runs that through lowbit_tf.lite.Interpreter,
and prints Keras vs TFLite accuracy, float vs lowbit file sizes and latency.
Progress (one line per training epoch, then each step) goes to stderr, the
report to stdout. The files go to a temporary folder that is deleted at the
end, unless --output-dir names one to keep them in.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from lowbit_tf._tf_logs import filtered_native_stderr, quiet_tensorflow_logs


def load_digits_split(seed: int = 0) -> tuple[np.ndarray, ...]:
    """scikit-learn's digits as (x_train, y_train, x_test, y_test), x in [0, 1] NHWC."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=seed, stratify=y
    )
    return x_train, y_train, x_test, y_test


def progress(message: str) -> None:
    """One progress line on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


def epoch_progress_callback():
    """A Keras callback printing one line per epoch to stderr: loss, accuracy, seconds."""
    from lowbit_tf._keras import keras

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            metrics = "  ".join(f"{k} {v:.4f}" for k, v in logs.items()
                                if isinstance(v, (int, float)))
            progress(f"  epoch {epoch + 1:>3}/{self.params.get('epochs', '?')}  {metrics}  "
                     f"({time.perf_counter() - self._start:.1f} s)")

    return EpochProgress()


def fit_digits(model, x_train: np.ndarray, y_train: np.ndarray, epochs: int, seed: int,
               batch_size: int = 64, callbacks: list | None = None):
    """``model.fit`` on batches reshuffled every epoch in an order fixed by ``seed``.

    Feeds ``lowbit_models.digits.training_batches``, not the arrays: after
    ``keras.utils.set_random_seed``, Keras 3's ``fit(x, y, shuffle=True)``
    repeats the first epoch's order in every epoch.
    """
    from lowbit_tf._facade import digits_example

    _, training_batches = digits_example()
    batches = training_batches(x_train, y_train, batch_size, seed)
    return model.fit(batches, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def median_latency_ms(interpreter, sample: np.ndarray, runs: int) -> float:
    """Median wall time of one batch-1 invoke, after a warm-up."""
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], sample.shape)
    interpreter.allocate_tensors()
    interpreter.set_tensor(detail["index"], sample)
    for _ in range(10):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def load_tensorflow_quietly() -> None:
    """Imports TensorFlow and lets it look for a GPU with its C++ log filtered
    (lowbit_tf/_tf_logs.py): its import-time INFO lines and, on a machine with
    CUDA libraries but no GPU, "failed call to cuInit", read as failures in
    the demo's output. TF_CPP_MIN_LOG_LEVEL alone cannot hide them all (some
    are written before TensorFlow reads it); errors still pass the filter
    unless the user asked for level 3."""
    quiet_tensorflow_logs("3")
    with filtered_native_stderr():
        import tensorflow as tf

        tf.config.list_physical_devices()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20,
                        help="training epochs (default 20, about 10 s on 2 cores)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the weights, the train/test split and the batch order "
                             "(default 0)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="keep the .keras and .tflite files in this folder (default: a "
                             "temporary folder, deleted at the end)")
    parser.add_argument("--latency-runs", type=int, default=200,
                        help="timed batch-1 invocations per model; the median is reported "
                             "(default 200)")
    parser.add_argument("--quiet", action="store_true",
                        help="no progress lines on stderr (the report on stdout is the same)")
    args = parser.parse_args(argv)
    load_tensorflow_quietly()
    with contextlib.ExitStack() as stack:
        if args.output_dir is None:
            out_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lowbit_demo_")))
        else:
            out_dir = args.output_dir
            out_dir.mkdir(parents=True, exist_ok=True)
        return run(args, out_dir, kept=args.output_dir is not None)


def run(args: argparse.Namespace, out_dir: Path, kept: bool) -> int:
    """The demo, writing its files into ``out_dir`` (``kept``: a folder the user named)."""
    say = (lambda message: None) if args.quiet else progress

    from lowbit_tf import _facade
    from lowbit_tf._keras import keras
    from lowbit_tf.lite import Interpreter

    binary_digits_cnn, _ = _facade.digits_example()

    keras.utils.set_random_seed(args.seed)
    x_train, y_train, x_test, y_test = load_digits_split(args.seed)
    model = binary_digits_cnn()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    say(f"lowbit-tf demo: training a binary CNN for {args.epochs} epochs on "
        f"{len(x_train)} digits")
    start = time.perf_counter()
    history = fit_digits(model, x_train, y_train, args.epochs, args.seed,
                         callbacks=[] if args.quiet else [epoch_progress_callback()])
    train_s = time.perf_counter() - start
    keras_logits = model.predict(x_test, verbose=0)
    keras_acc = float(np.mean(keras_logits.argmax(-1) == y_test))

    say("converting to .tflite (lowbit and float)")
    model.save(out_dir / "digits.keras")
    lowbit_path = out_dir / "digits_lowbit.tflite"
    float_path = out_dir / "digits_float.tflite"
    conversion = _facade.convert_with_report(model)
    lowbit_path.write_bytes(conversion.tflite_model)
    float_path.write_bytes(_facade.convert(model, lowbit=False))
    # Bytes the binary layers' parameters take in float32 (kernel, plus the
    # per-channel scale and offset BatchNorm leaves) against the packed op inputs.
    binary_layers = [model.get_layer(name) for name in conversion.lowered_layers]
    float_weight_bytes = sum(4 * (int(np.prod(layer.kernel.shape)) + 2 * layer.filters)
                             for layer in binary_layers)
    packed_weight_bytes = conversion.report.custom_op_weight_bytes

    lowbit = Interpreter(model_path=lowbit_path, num_threads=1)
    tflite_logits = lowbit.predict(x_test)
    tflite_acc = float(np.mean(tflite_logits.argmax(-1) == y_test))
    agreement = float(np.mean(tflite_logits.argmax(-1) == keras_logits.argmax(-1)))
    max_rel = float(np.max(np.abs(tflite_logits - keras_logits)) / np.max(np.abs(keras_logits)))

    say(f"timing batch-1 inference, {args.latency_runs} runs per model")
    sample = x_test[:1]
    lowbit_ms = median_latency_ms(lowbit, sample, args.latency_runs)
    float_ms = median_latency_ms(
        Interpreter(model_path=float_path, num_threads=1, use_lowbit_delegate=False),
        sample, args.latency_runs,
    )
    lowbit_size, float_size = lowbit_path.stat().st_size, float_path.stat().st_size

    print("lowbit-tf demo: binary CNN on scikit-learn digits (8x8, 10 classes)")
    print(f"  training        {args.epochs} epochs in {train_s:.1f} s, "
          f"final loss {history.history['loss'][-1]:.3f}")
    print(f"  accuracy        Keras {keras_acc:.4f}   TFLite (lowbit kernels) {tflite_acc:.4f}   "
          f"(predictions agree on {agreement:.2%}, max rel. logit diff {max_rel:.1e})")
    print(f"  file size       float {float_size} B   lowbit {lowbit_size} B   "
          f"({float_size / lowbit_size:.1f}x smaller)")
    print(f"  binary layers   {', '.join(conversion.lowered_layers)}: weights float32 "
          f"{float_weight_bytes} B -> packed {packed_weight_bytes} B "
          f"({float_weight_bytes / packed_weight_bytes:.1f}x smaller)")
    print(f"  latency (1 img) float XNNPACK {float_ms:.3f} ms   lowbit {lowbit_ms:.3f} ms "
          "(median, 1 thread)")
    print(f"  files           {out_dir}" if kept else
          "  files           deleted (pass --output-dir DIR to keep the .keras and .tflite files)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
