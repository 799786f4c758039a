"""The one place that decides which Keras lowbit_tf uses.

Every module of the package imports Keras as ``from lowbit_tf._keras import keras``
so that a tf-keras (Keras 2) mode can later be added here and nowhere else.
Today this is Keras 3 with the TensorFlow backend.
"""

import keras

__all__ = ["keras"]
