"""`lowbit-convert`: convert a saved Keras model to .tflite from the shell."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

    from lowbit_converter.convert import convert_with_report
    from lowbit_converter.folding import ConversionError
    from lowbit_tf import layers  # noqa: F401 - registers the lowbit layers for loading
    from lowbit_tf._keras import keras

    if not args.model.is_file():
        parser.error(f"model file not found: {args.model}")
    output = args.output or args.model.with_suffix(".tflite")
    try:
        model = keras.models.load_model(args.model)
        result = convert_with_report(
            model, lowbit=not args.float, float_fallback=args.float_fallback
        )
    except (ConversionError, ValueError, OSError) as error:
        print(f"lowbit-convert: error: {error}", file=sys.stderr)
        return 1
    output.write_bytes(result.tflite_model)
    print(
        f"wrote {output} ({len(result.tflite_model)} bytes); lowered layers: "
        f"{', '.join(result.lowered_layers) or 'none'}; custom ops: {result.report.custom_ops}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
