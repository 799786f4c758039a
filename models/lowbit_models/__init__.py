"""Model definitions built from lowbit_tf layers.

    binary_digits_cnn     small binary CNN for scikit-learn's 8x8 digits (the demo)
    alexnet               AlexNet, float and low-bit variants (same layer names)
    load_alexnet_weights  pretrained float AlexNet weights (.npy, TF1/TF2
                          checkpoints, .weights.h5) into any variant
    quicknet              QuickNet family (float stem, binary residual blocks)
"""

from lowbit_models.alexnet import VARIANTS as ALEXNET_VARIANTS
from lowbit_models.alexnet import alexnet
from lowbit_models.digits import binary_digits_cnn
from lowbit_models.quicknet import QUICKNET_CONFIGS, quicknet
from lowbit_models.weights import WeightLoadError, load_alexnet_weights

__all__ = [
    "ALEXNET_VARIANTS",
    "alexnet",
    "binary_digits_cnn",
    "load_alexnet_weights",
    "quicknet",
    "QUICKNET_CONFIGS",
    "WeightLoadError",
]
