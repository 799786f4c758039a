"""larq-zoo's architectures on lowbit_tf layers, with larq-zoo's layer names,
so that larq-zoo's ``.h5`` weight files load into them (pass the file as
``weights=``; nothing is downloaded).

Every builder takes larq-zoo's keyword arguments: ``input_shape``,
``input_tensor``, ``weights`` (None or a path), ``include_top``, ``num_classes``.
"""

from lowbit_models.zoo.binary_alexnet import BinaryAlexNet
from lowbit_models.zoo.birealnet import BiRealNet
from lowbit_models.zoo.densenet import (
    BinaryDenseNet28,
    BinaryDenseNet37,
    BinaryDenseNet37Dilated,
    BinaryDenseNet45,
)
from lowbit_models.zoo.dorefanet import DoReFaNet
from lowbit_models.zoo.h5_weights import load_larq_zoo_weights, read_larq_zoo_weights
from lowbit_models.zoo.meliusnet import MeliusNet22
from lowbit_models.zoo.quicknet import QuickNet, QuickNetLarge, QuickNetSmall
from lowbit_models.zoo.real_to_bin import RealToBinaryNet
from lowbit_models.zoo.resnet_e import BinaryResNetE18
from lowbit_models.zoo.xnornet import XNORNet

#: larq-zoo's name of each model -> its builder here.
ZOO_MODELS = {
    "BinaryAlexNet": BinaryAlexNet,
    "BiRealNet": BiRealNet,
    "BinaryResNetE18": BinaryResNetE18,
    "BinaryDenseNet28": BinaryDenseNet28,
    "BinaryDenseNet37": BinaryDenseNet37,
    "BinaryDenseNet37Dilated": BinaryDenseNet37Dilated,
    "BinaryDenseNet45": BinaryDenseNet45,
    "DoReFaNet": DoReFaNet,
    "XNORNet": XNORNet,
    "MeliusNet22": MeliusNet22,
    "RealToBinaryNet": RealToBinaryNet,
    "QuickNetSmall": QuickNetSmall,
    "QuickNet": QuickNet,
    "QuickNetLarge": QuickNetLarge,
}

__all__ = [*ZOO_MODELS, "ZOO_MODELS", "load_larq_zoo_weights", "read_larq_zoo_weights"]
