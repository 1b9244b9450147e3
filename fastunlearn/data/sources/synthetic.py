"""A seeded synthetic dataset: noisy class prototypes, tiny and linearly separable (tests)."""

from __future__ import annotations

import torch
from torch import Tensor

from fastunlearn.data._registry import register_dataset
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.sources._common import mean_std

__all__ = ["synthetic"]


@register_dataset("synthetic")
def synthetic(
    num_classes: int = 4,
    channels: int = 1,
    size: int = 8,
    train_per_class: int = 60,
    test_per_class: int = 20,
    seed: int = 0,
    root: str | None = None,
    download: bool = False,
    augment: bool | None = None,
) -> ImageDataset:
    """Synthetic: seeded noisy class prototypes, tiny and linearly separable (for tests)."""
    if num_classes < 1 or channels < 1 or size < 1:
        raise ValueError("synthetic: num_classes, channels and size must be >= 1")
    if train_per_class < 0 or test_per_class < 0:
        raise ValueError("synthetic: train_per_class and test_per_class must be >= 0")
    g = torch.Generator().manual_seed(seed)
    prototypes = torch.randint(0, 256, (num_classes, channels, size, size), generator=g).float()

    def sample(per_class: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(num_classes).repeat_interleave(per_class)
        labels = labels[torch.randperm(labels.numel(), generator=g)]
        noise = torch.randn((labels.numel(), channels, size, size), generator=g) * 48.0
        images = (prototypes[labels] + noise).round().clamp(0, 255).to(torch.uint8)
        return images.contiguous(), labels.long()

    x_train, y_train = sample(train_per_class)
    x_test, y_test = sample(test_per_class)
    if len(x_train):
        mean, std = mean_std(x_train)
    else:
        mean, std = (0.5,) * channels, (0.25,) * channels
    return ImageDataset(
        name="synthetic",
        classes=[f"class{i}" for i in range(num_classes)],
        train_images=x_train,
        train_labels=y_train,
        test_images=x_test,
        test_labels=y_test,
        mean=mean,
        std=std,
        augment=bool(augment) if augment is not None else False,
        source=f"synthetic:seed={seed}",
    )
