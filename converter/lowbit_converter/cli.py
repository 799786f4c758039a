"""`lowbit-convert`: convert a saved Keras model to .tflite from the shell.

The arguments and the files are checked before TensorFlow is imported (which
takes seconds to tens of seconds), so --help and a mistyped path answer at
once; TF_CPP_MIN_LOG_LEVEL is set before that import, and TensorFlow's C++
log of the conversion is filtered (lowbit_tf/_tf_logs.py), so what is printed is ours.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lowbit_tf._tf_logs import filtered_native_stderr, quiet_tensorflow_logs

# What keras.models.load_model reads (Keras 3): the .keras zip, legacy HDF5.
MODEL_SUFFIXES = (".keras", ".h5", ".hdf5")
# --int8 with no samples file (not a str: argparse would make it a Path).
QUANTIZATION_AWARE = object()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lowbit-convert",
        description="Convert a Keras model (.keras) to a .tflite flatbuffer whose binary "
        "layers run as lowbit custom ops (run it with lowbit_tf.lite.Interpreter).",
    )
    parser.add_argument("model", type=Path, help="a Keras model saved with model.save('m.keras')")
    parser.add_argument("-o", "--output", type=Path, help="output .tflite (default: next to model)")
    parser.add_argument("--float", action="store_true", help="convert without lowbit ops")
    parser.add_argument(
        "--float-fallback", action="store_true",
        help="keep quantized layers that no lowbit op can run as float ops instead of failing",
    )
    parser.add_argument(
        "--int8", type=Path, metavar="SAMPLES.npy", nargs="?", const=QUANTIZATION_AWARE,
        help="int8 (docs/int8.md): the float layers as int8 builtins, calibrated on the "
        "samples of this .npy file (one model input, samples along the first axis); with no "
        "file, quantization-aware: the ranges of the model's FakeQuantInt8 layers or of its "
        "TFMOT quantize wrappers",
    )
    parser.add_argument(
        "--int8-io", action="store_true",
        help="with --int8: int8 model input and output (inference_input_type / "
        "inference_output_type int8)",
    )
    parser.add_argument(
        "--int8-float-layer", action="append", default=[], metavar="NAME",
        help="with --int8: keep this layer float32 (a Keras layer name or a .tflite output "
        "tensor name; repeat for more)",
    )
    return parser


def check_paths(model: Path, output: Path | None, samples: Path | None = None) -> str | None:
    """Why `model` cannot be read or `output` not written, or None. Imports nothing."""
    if not model.exists():
        return f"model file not found: {model}"
    if model.is_dir():
        return (f"{model} is a directory; lowbit-convert reads a Keras 3 model file "
                "saved with model.save('model.keras')")
    if model.suffix.lower() not in MODEL_SUFFIXES:
        return (f"{model}: expected a Keras model file ({', '.join(MODEL_SUFFIXES)}), "
                "saved with model.save('model.keras')")
    if not os.access(model, os.R_OK):
        return f"model file not readable: {model}"
    if samples is not None and not samples.is_file():
        return f"--int8 samples file not found: {samples}"
    if output is not None:
        folder = output.parent if str(output.parent) else Path(".")
        if not folder.is_dir():
            return f"output folder not found: {folder}"
        if output.is_dir():
            return f"output {output} is a directory; give a file name such as model.tflite"
    return None


def load_model(path: Path):
    """keras.models.load_model(path); in the tf-keras mode with TFMOT
    installed, inside its quantize and prune scopes (lowbit_tf.tfmot), so a
    saved TFMOT QAT or pruning model loads with its wrappers."""
    import contextlib
    import importlib.util

    from lowbit_tf import _keras

    with contextlib.ExitStack() as scopes:
        tfmot = not _keras.KERAS_3 and importlib.util.find_spec("tensorflow_model_optimization")
        if tfmot:
            import tensorflow_model_optimization as tfmot_package

            from lowbit_tf import tfmot as lowbit_tfmot

            scopes.enter_context(lowbit_tfmot.quantize_scope())
            scopes.enter_context(tfmot_package.sparsity.keras.prune_scope())
        try:
            return _keras.keras.models.load_model(path)
        except (TypeError, ValueError) as error:
            if _keras.KERAS_3 and any(name in str(error) for name in TFMOT_WRAPPERS):
                raise ValueError(
                    f"{path} holds TensorFlow Model Optimization wrappers, which load in the "
                    "tf-keras mode only: run with TF_USE_LEGACY_KERAS=1 (docs/int8.md, TFMOT)"
                ) from error
            raise


# The layer classes of a saved TFMOT model.
TFMOT_WRAPPERS = ("QuantizeWrapper", "QuantizeLayer", "PruneLowMagnitude")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    samples = None if args.int8 is None or args.int8 is QUANTIZATION_AWARE else args.int8
    problem = check_paths(args.model, args.output, samples)
    if problem is None and args.int8_io and args.int8 is None:
        problem = "--int8-io needs --int8"
    if problem is None and args.int8_float_layer and samples is None:
        problem = "--int8-float-layer needs --int8 SAMPLES.npy (post-training int8)"
    if problem is not None:
        parser.error(problem)
    output = args.output or args.model.with_suffix(".tflite")

    # "3": also TensorFlow's C++ errors, such as "failed call to cuInit" on a
    # machine without a GPU; ours come as exceptions, printed below.
    quiet_tensorflow_logs("3")
    # The import-time lines (oneDNN, CUDA drivers) ignore the level.
    with filtered_native_stderr():
        from lowbit_converter.convert import convert_with_report
        from lowbit_converter.folding import ConversionError
        from lowbit_tf import layers  # noqa: F401 - registers the lowbit layers for loading

        try:
            model = load_model(args.model)
            int8 = {}
            if args.int8 is not None:
                import numpy as np

                io_type = "int8" if args.int8_io else "float32"
                int8 = dict(int8=True, inference_input_type=io_type,
                            inference_output_type=io_type)
            if samples is not None:
                data = np.load(samples, allow_pickle=False)
                int8.update(representative_dataset=lambda: ([s[None]] for s in data),
                            int8_float_layers=args.int8_float_layer)
            result = convert_with_report(
                model, lowbit=not args.float, float_fallback=args.float_fallback, **int8
            )
        except (ConversionError, ValueError, OSError) as error:
            problem = str(error)
    if problem is not None:
        print(f"lowbit-convert: error: {problem}", file=sys.stderr)
        return 1
    output.write_bytes(result.tflite_model)
    print(
        f"wrote {output} ({len(result.tflite_model)} bytes); lowered layers: "
        f"{', '.join(result.lowered_layers) or 'none'}; custom ops: {result.report.custom_ops}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
