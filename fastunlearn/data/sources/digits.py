"""scikit-learn's bundled digits (1797 8x8 images): offline, no files to find."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from fastunlearn.data._registry import register_dataset
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.sources._common import DIGIT_CLASSES, mean_std

__all__ = ["digits"]


@register_dataset("digits")
def digits(
    root: str | None = None, download: bool = False, augment: bool | None = None
) -> ImageDataset:
    """scikit-learn digits: 1797 8x8 grayscale handwritten digits, 10 classes (bundled, offline)."""
    import sklearn.datasets
    from sklearn.model_selection import train_test_split

    bunch = sklearn.datasets.load_digits()
    values = np.asarray(bunch.data, dtype=np.float64).reshape(-1, 1, 8, 8)
    images = torch.from_numpy(np.rint(values * 255.0 / 16.0).clip(0, 255).astype(np.uint8))
    y = np.asarray(bunch.target, dtype=np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, random_state=0, stratify=y
    )
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    train_images = images[torch.from_numpy(idx_train)].contiguous()
    mean, std = mean_std(train_images)
    return ImageDataset(
        name="digits",
        classes=list(DIGIT_CLASSES),
        train_images=train_images,
        train_labels=torch.from_numpy(y[idx_train]),
        test_images=images[torch.from_numpy(idx_test)].contiguous(),
        test_labels=torch.from_numpy(y[idx_test]),
        mean=mean,
        std=std,
        augment=bool(augment) if augment is not None else False,
        source=str(Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"),
    )
