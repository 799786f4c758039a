"""What every larq-zoo architecture shares: Keras 2's automatic layer names,
input validation, larq-zoo's global pooling, and the finished model.

larq-zoo's literature models leave most layers unnamed, so their names are the
ones Keras 2 (tf.keras) generates in a fresh session: the snake-case class
name, then ``_1``, ``_2``, ... for the next layers of that class (``conv2d``,
``conv2d_1``), and ``input_1`` for the input. Those names are what a larq-zoo
``.h5`` weights file holds, so our models name every layer explicitly with
:class:`KerasNames`, which counts the same way (Keras 3 counts per process and
would give other names).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lowbit_tf._keras import keras

#: larq-zoo's default resolution (ImageNet).
DEFAULT_SIZE = 224


class KerasNames:
    """Hands out Keras 2's automatic layer names for one model."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    def __call__(self, base: str) -> str:
        count = self._counts.get(base, 0)
        self._counts[base] = count + 1
        return base if count == 0 else f"{base}_{count}"


def check_weights(weights: str | Path | None) -> Path | None:
    """`weights` as a path to an existing file, or None; larq-zoo's "imagenet"
    would download, which we never do."""
    if weights is None:
        return None
    if weights == "imagenet":
        raise ValueError(
            "weights='imagenet' would download larq-zoo's file; download it yourself "
            "and pass its path as weights=..."
        )
    path = Path(weights)
    if not path.is_file():
        raise ValueError(
            f"weights must be None or the path of a larq-zoo .h5 file, got {weights!r}")
    return path


def image_input(
    input_shape: Sequence[int | None] | None,
    input_tensor: Any,
    include_top: bool,
) -> Any:
    """The model's input, as larq-zoo makes it: (224, 224, 3) by default with
    the classifier on top, any (None, None, 3) image without it."""
    if input_tensor is not None:
        if not keras.backend.is_keras_tensor(input_tensor):
            raise ValueError(f"input_tensor must be a Keras tensor, got {input_tensor!r}")
        return input_tensor
    if input_shape is None:
        input_shape = (DEFAULT_SIZE, DEFAULT_SIZE, 3) if include_top else (None, None, 3)
    shape = tuple(input_shape)
    if len(shape) != 3 or shape[-1] != 3 or not all(
            d is None or (isinstance(d, int) and d > 0) for d in shape):
        raise ValueError(f"input_shape must be (height, width, 3), got {input_shape!r}")
    if include_top and None in shape:
        raise ValueError(
            f"include_top=True needs a static input_shape (the classifier's size "
            f"depends on it), got {input_shape!r}"
        )
    # Keras 2 numbers inputs from 1.
    return keras.Input(shape, name="input_1", dtype="float32")


def global_pool(x: Any, names: KerasNames, name: str | None = None) -> Any:
    """larq-zoo's global average pooling: AveragePooling2D over the whole (static)
    map, then Flatten, which runs faster than GlobalAveragePooling2D on Larq
    Compute Engine; GlobalAveragePooling2D when the size is dynamic."""
    height, width = x.shape[1:3]
    if height is None or width is None:
        return keras.layers.GlobalAveragePooling2D(
            name=name or names("global_average_pooling2d"))(x)
    x = keras.layers.AveragePooling2D(
        (height, width), name=f"{name}_pool" if name else names("average_pooling2d"))(x)
    return keras.layers.Flatten(name=f"{name}_flatten" if name else names("flatten"))(x)


def softmax(x: Any, names: KerasNames, name: str | None = None) -> Any:
    """larq-zoo's float32 softmax head (float32 also under mixed precision)."""
    return keras.layers.Activation("softmax", dtype="float32",
                                   name=name or names("activation"))(x)


def finish(inputs: Any, outputs: Any, name: str, weights: Path | None) -> keras.Model:
    """The model, with larq-zoo's weights loaded from `weights` if given."""
    from lowbit_models.zoo.h5_weights import load_larq_zoo_weights

    model = keras.Model(inputs, outputs, name=name)
    if weights is not None:
        load_larq_zoo_weights(model, weights)
    return model


def start(
    input_shape: Sequence[int | None] | None,
    input_tensor: Any,
    weights: str | Path | None,
    include_top: bool,
    num_classes: int,
) -> tuple[KerasNames, Any, Path | None]:
    """Checks the arguments every zoo model takes; returns the model's name
    counter, its input and the weights file (or None)."""
    if include_top and not (isinstance(num_classes, int) and num_classes > 0):
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    path = check_weights(weights)
    return KerasNames(), image_input(input_shape, input_tensor, include_top), path
