"""The built-in dataset loaders and their constants, re-exported from one place.

This module is the stable import path (``from fastunlearn.data.datasets import read_idx``);
the code lives in :mod:`fastunlearn.data.sources`, one module per source, each registering its
datasets when ``fastunlearn.data`` is imported. Nothing here registers anything.

To redirect where the loaders look, set ``$FASTUNLEARN_DATA`` or change
``fastunlearn.data.sources._common.CACHE_DIR`` (rebinding the names below changes nothing).
"""

from fastunlearn.data.sources._common import CACHE_DIR, DATA_ENV_VAR, DIGIT_CLASSES
from fastunlearn.data.sources.cifar import (
    CIFAR10_MEAN,
    CIFAR10_STD,
    CIFAR100_MEAN,
    CIFAR100_STD,
    cifar10,
    cifar100,
)
from fastunlearn.data.sources.digits import digits
from fastunlearn.data.sources.idx import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    fashion_mnist,
    mnist,
    read_idx,
)
from fastunlearn.data.sources.imagefolder import (
    EAGER_MAX_FILES,
    IMAGE_EXTENSIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    LazyImages,
    imagefolder,
    load_image,
)
from fastunlearn.data.sources.subsets import class_balanced_subset, fashion_mnist_10k
from fastunlearn.data.sources.synthetic import synthetic

__all__ = [
    "CACHE_DIR",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "DATA_ENV_VAR",
    "DEBIAN_FASHION_MNIST_DIR",
    "DIGIT_CLASSES",
    "EAGER_MAX_FILES",
    "FASHION_MNIST_CLASSES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "LazyImages",
    "cifar10",
    "cifar100",
    "class_balanced_subset",
    "digits",
    "fashion_mnist",
    "fashion_mnist_10k",
    "imagefolder",
    "load_image",
    "mnist",
    "read_idx",
    "synthetic",
]
