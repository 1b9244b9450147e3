"""Datasets (registry of loaders) and forget sets."""

from fastunlearn.data._registry import (
    DatasetNotFoundError,
    dataset_descriptions,
    list_datasets,
    load_dataset,
    register_dataset,
)
from fastunlearn.data.base import DataPart, ImageDataset
from fastunlearn.data.splits import (
    ForgetSplit,
    forget_classes,
    forget_indices,
    forget_random,
    split_from_spec,
)

__all__ = [
    "DataPart",
    "DatasetNotFoundError",
    "ForgetSplit",
    "ImageDataset",
    "dataset_descriptions",
    "forget_classes",
    "forget_indices",
    "forget_random",
    "list_datasets",
    "load_dataset",
    "register_dataset",
    "split_from_spec",
]
