"""Subsets of other datasets: :func:`class_balanced_subset` and ``fashion-mnist-10k``."""

from __future__ import annotations

import dataclasses

import torch

from fastunlearn.data._registry import register_dataset
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.sources.idx import fashion_mnist

__all__ = ["class_balanced_subset", "fashion_mnist_10k"]


@register_dataset("fashion-mnist-10k")
def fashion_mnist_10k(
    root: str | None = None, download: bool = False, augment: bool | None = None,
    size: int = 10_000, seed: int = 0,
) -> ImageDataset:
    """Fashion-MNIST with a seeded class-balanced 10k training subset (the audit's memorizing
    setting: small enough for a 2-core CPU to fit it to ~100 % train accuracy); full test set."""
    full = fashion_mnist(root=root, download=download, augment=augment)
    return class_balanced_subset(full, size, seed=seed, name="fashion-mnist-10k")


def class_balanced_subset(data: ImageDataset, size: int, *, seed: int = 0,
                          name: str | None = None) -> ImageDataset:
    """``data`` with ``size`` training images (the same number per class, drawn with a local
    generator seeded by ``seed``); the test set is unchanged."""
    labels = data.train_labels
    c = data.num_classes
    if not c <= size <= len(labels):
        raise ValueError(f"subset size must be in [{c}, {len(labels)}], got {size}")
    g = torch.Generator().manual_seed(int(seed))
    per = [size // c + (1 if k < size % c else 0) for k in range(c)]
    picks = []
    for k in range(c):
        idx = torch.nonzero(labels == k).flatten()
        picks.append(idx[torch.randperm(len(idx), generator=g)[: per[k]]])
    idx = torch.cat(picks).sort().values
    return dataclasses.replace(data, name=name or f"{data.name}-{size}",
                               train_images=data.train_images[idx], train_labels=labels[idx])
