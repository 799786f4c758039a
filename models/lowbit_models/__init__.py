"""Model definitions built from lowbit_tf layers.

    binary_digits_cnn     small binary CNN for scikit-learn's 8x8 digits (the demo)
    alexnet               AlexNet, float and low-bit variants (same layer names)
    load_alexnet_weights  pretrained float AlexNet weights (.npy, TF1/TF2
                          checkpoints, .weights.h5) into any variant
    quicknet              QuickNet family (float stem, binary residual blocks)
    zoo                   larq-zoo's architectures with larq-zoo's layer names
                          (BinaryAlexNet, ..., QuickNetLarge; load_larq_zoo_weights
                          reads larq-zoo .h5 weight files), also exported here
"""

from lowbit_models.alexnet import VARIANTS as ALEXNET_VARIANTS
from lowbit_models.alexnet import alexnet
from lowbit_models.digits import binary_digits_cnn
from lowbit_models.quicknet import QUICKNET_CONFIGS, quicknet
from lowbit_models.weights import WeightLoadError, load_alexnet_weights
from lowbit_models.zoo import (
    ZOO_MODELS,
    BinaryAlexNet,
    BinaryDenseNet28,
    BinaryDenseNet37,
    BinaryDenseNet37Dilated,
    BinaryDenseNet45,
    BinaryResNetE18,
    BiRealNet,
    DoReFaNet,
    MeliusNet22,
    QuickNet,
    QuickNetLarge,
    QuickNetSmall,
    RealToBinaryNet,
    XNORNet,
    load_larq_zoo_weights,
)

__all__ = [
    "ALEXNET_VARIANTS",
    "alexnet",
    "binary_digits_cnn",
    "load_alexnet_weights",
    "quicknet",
    "QUICKNET_CONFIGS",
    "WeightLoadError",
    "ZOO_MODELS",
    "BinaryAlexNet",
    "BiRealNet",
    "BinaryResNetE18",
    "BinaryDenseNet28",
    "BinaryDenseNet37",
    "BinaryDenseNet37Dilated",
    "BinaryDenseNet45",
    "DoReFaNet",
    "XNORNet",
    "MeliusNet22",
    "RealToBinaryNet",
    "QuickNetSmall",
    "QuickNet",
    "QuickNetLarge",
    "load_larq_zoo_weights",
]
