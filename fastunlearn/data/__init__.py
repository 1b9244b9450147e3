"""Datasets (registry of loaders), forget sets, and splits of a user's own torch Datasets
(``ForgetSplit.from_datasets``).

Importing this package registers the built-in datasets: it imports every source module of
:mod:`fastunlearn.data.sources` (one per source), each of which registers its loaders.
"""

from fastunlearn.data._registry import (
    DatasetNotFoundError,
    dataset_descriptions,
    list_datasets,
    load_dataset,
    register_dataset,
)
from fastunlearn.data.base import DataPart, DatasetImages, ImageDataset, LoaderOptions
from fastunlearn.data.sources import (  # noqa: F401  (importing them registers the built-ins)
    cifar,
    digits,
    idx,
    imagefolder,
    subsets,
    synthetic,
)
from fastunlearn.data.splits import (
    ForgetSplit,
    forget_by_scores,
    forget_classes,
    forget_indices,
    forget_random,
    split_from_spec,
)

__all__ = [
    "DataPart",
    "DatasetImages",
    "DatasetNotFoundError",
    "ForgetSplit",
    "ImageDataset",
    "LoaderOptions",
    "dataset_descriptions",
    "forget_by_scores",
    "forget_classes",
    "forget_indices",
    "forget_random",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "split_from_spec",
]
