"""A small binary CNN for 8x8 images (scikit-learn's digits), and its training batches."""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from lowbit_tf import constraints, layers
from lowbit_tf._keras import keras


def binary_digits_cnn(
    input_shape: tuple[int, int, int] = (8, 8, 1), num_classes: int = 10
) -> keras.Model:
    """Float stem, two binary 3x3 conv blocks, float classifier.

    The stem stays in float (binarising a 1-channel image loses too much); each
    binary block is QuantConv2D(ste_sign inputs and kernel, weights clipped to
    [-1, 1], +1 padding) -> BatchNormalization, which the converter folds into
    one LowbitBconv2d op. Layer names are stable.
    """
    def binary_conv(filters: int, name: str) -> layers.QuantConv2D:
        return layers.QuantConv2D(
            filters, 3, padding="same", pad_values=1.0, use_bias=False,
            input_quantizer="ste_sign", kernel_quantizer="ste_sign",
            kernel_constraint=constraints.WeightClip(1.0), name=name,
        )

    return keras.Sequential(
        [
            keras.Input(input_shape, name="image"),
            keras.layers.Conv2D(32, 3, padding="same", use_bias=False, name="stem_conv"),
            keras.layers.BatchNormalization(name="stem_bn"),
            binary_conv(64, "bconv1"),
            keras.layers.BatchNormalization(name="bconv1_bn"),
            keras.layers.MaxPooling2D(2, name="pool1"),
            binary_conv(64, "bconv2"),
            keras.layers.BatchNormalization(name="bconv2_bn"),
            keras.layers.MaxPooling2D(2, name="pool2"),
            keras.layers.Flatten(name="flatten"),
            keras.layers.Dense(num_classes, name="logits"),
        ],
        name="binary_digits_cnn",
    )


def training_batches(x: Any, y: Any, batch_size: int, seed: int) -> Any:
    """A ``tf.data.Dataset`` of ``(x, y)`` batches in a new order every epoch, fixed by ``seed``.

    Pass it to ``model.fit`` in place of the arrays (with ``shuffle=False``:
    the dataset does the shuffling). Every iteration over the dataset, which
    is every epoch, draws a new permutation of all samples; the sequence of
    permutations depends only on ``seed`` (and TensorFlow's global seed, which
    ``keras.utils.set_random_seed`` sets), so a run repeats exactly. Make it
    once per training run: one ``fit(dataset, epochs=n)`` and ``n`` calls
    ``fit(dataset, epochs=e + 1, initial_epoch=e)`` on the same dataset see
    the same ``n`` orders. The last batch is partial when ``batch_size`` does
    not divide the sample count, as with ``fit(x, y, batch_size=...)``.

    Why not ``fit(x, y, shuffle=True)``: after ``keras.utils.set_random_seed``
    Keras 3 feeds NumPy arrays in the first epoch's order in every epoch (the
    shuffle runs with the same seeds each time), which is training without
    reshuffling.
    """
    return (
        tf.data.Dataset.from_tensor_slices((x, y))
        .shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )

