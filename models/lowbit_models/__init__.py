"""Model definitions built from lowbit_tf layers.

    binary_digits_cnn   small binary CNN for scikit-learn's 8x8 digits (the demo)
"""

from lowbit_models.digits import binary_digits_cnn

__all__ = ["binary_digits_cnn"]
