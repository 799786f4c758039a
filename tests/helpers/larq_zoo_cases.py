"""The larq-zoo models the tests compare with real larq-zoo, and the seeded
weights and inputs both sides use. Plain NumPy: it runs in the project's
environment and in the Keras 2 side one (tests/helpers/make_larq_zoo_reference.py).

Sizes are the smallest that keep each architecture as it is at 224: 64x64
(a stem that divides by 4, then /8: a 2x2 map before the pooling); BinaryResNetE18
and BinaryDenseNet28 also at 32x32, where larq-zoo switches to its CIFAR stem;
XNORNet only at 224x224, since its 6x6 "valid" convolution needs a 6x6 map
after three poolings (inputs >= 217).
"""

from __future__ import annotations

import zlib

import numpy as np

NUM_CLASSES = 10
BATCH = 2

#: case -> (larq-zoo builder, which is also ours, input side).
CASES = {
    "binary_alexnet": ("BinaryAlexNet", 64),
    "birealnet": ("BiRealNet", 64),
    "binary_resnet_e18": ("BinaryResNetE18", 64),
    "binary_resnet_e18_32": ("BinaryResNetE18", 32),
    "binary_densenet28": ("BinaryDenseNet28", 64),
    "binary_densenet28_32": ("BinaryDenseNet28", 32),
    "binary_densenet37": ("BinaryDenseNet37", 64),
    "binary_densenet37_dilated": ("BinaryDenseNet37Dilated", 64),
    "binary_densenet45": ("BinaryDenseNet45", 64),
    "dorefanet": ("DoReFaNet", 64),
    "xnornet": ("XNORNet", 224),
    "meliusnet22": ("MeliusNet22", 64),
    "real_to_binary_net": ("RealToBinaryNet", 64),
    "quicknet_small": ("QuickNetSmall", 64),
    "quicknet": ("QuickNet", 64),
    "quicknet_large": ("QuickNetLarge", 64),
}

#: Kernel shape on which larq-zoo's own quantizers are compared (HWIO).
QUANTIZER_SHAPE = (3, 3, 4, 5)

#: Cases also compared in training mode (BatchNorm on batch statistics) with
#: gradients. Not DoReFa-Net: its max pooling reads 2-bit-valued maps full of
#: ties, so where a gradient goes is an implementation detail (real larq-zoo's
#: own early-layer gradients change by 2x with TF_ENABLE_ONEDNN_OPTS=0); its
#: quantizers' gradients are compared on their own.
TRAINING_CASES = ("quicknet_small", "birealnet")

#: The case whose Keras 2 .h5 layout (groups, attributes, shapes; no values)
#: the reference keeps, for testing the loader on larq-zoo's file format.
H5_CASE = "quicknet_small"


def _rng(*key: object) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def seeded_weight(layer: str, index: int, shape: tuple[int, ...], weight: str) -> np.ndarray:
    """The value of weight number `index` (named `weight`, e.g. "kernel") of
    `layer`: uniform in [-1, 1), and in [0.5, 1.5) for BatchNorm's moving
    variance, which must be positive."""
    low, high = (0.5, 1.5) if weight == "moving_variance" else (-1.0, 1.0)
    return _rng(layer, index, tuple(shape)).uniform(low, high, shape).astype(np.float32)


def gradient_summary(weights: list[tuple[str, int, np.ndarray]]) -> np.ndarray:
    """[projection, norm] of each (layer, index, gradient): the gradient's dot
    product with a seeded direction, and its L2 norm (a few numbers that any
    wrong gradient element moves, instead of megabytes of gradients)."""
    return np.array([
        [np.sum(grad.astype(np.float64) * _rng("probe", layer, index).uniform(-1, 1, grad.shape)),
         np.linalg.norm(grad.astype(np.float64))]
        for layer, index, grad in weights])


def seeded_input(side: int) -> np.ndarray:
    """The batch of images both sides run: uniform in [-1, 1)."""
    return _rng("input", side).uniform(-1.0, 1.0, (BATCH, side, side, 3)).astype(np.float32)
