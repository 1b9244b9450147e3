"""Core data containers: an image dataset held as uint8 tensors, and index views into it.

Images stay uint8 ``[N, C, H, W]`` in host memory; a batch is moved to the target device and
normalised there (``x / 255 - mean) / std``), which is what keeps small datasets fast on CPU and
cheap to ship to a GPU.  Large folders (``imagefolder:PATH``) use :class:`LazyImages`, which
decodes files on indexing but has the same interface.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import torch
from torch import Tensor


class ImageStore(Protocol):
    """Anything indexable by a 1-D LongTensor that returns uint8 ``[n, C, H, W]`` images."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: Tensor) -> Tensor: ...


@dataclass
class ImageDataset:
    """A labelled image classification dataset with a train and a test part.

    ``train_images`` / ``test_images`` are uint8 ``[N, C, H, W]`` tensors (or an
    :class:`ImageStore` for folders too large for memory); labels are int64 ``[N]``.
    ``mean`` / ``std`` are per-channel, in [0, 1] units.
    """

    name: str
    classes: list[str]
    train_images: Tensor | ImageStore
    train_labels: Tensor
    test_images: Tensor | ImageStore
    test_labels: Tensor
    mean: tuple[float, ...]
    std: tuple[float, ...]
    augment: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        if len(self.train_images) != len(self.train_labels):
            raise ValueError(
                f"dataset {self.name!r}: {len(self.train_images)} train images but "
                f"{len(self.train_labels)} labels"
            )
        if len(self.test_images) != len(self.test_labels):
            raise ValueError(
                f"dataset {self.name!r}: {len(self.test_images)} test images but "
                f"{len(self.test_labels)} labels"
            )
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"dataset {self.name!r}: mean/std must have one value per channel")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def channels(self) -> int:
        return int(self.train_images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.train_images.shape[2]), int(self.train_images.shape[3])

    @property
    def train(self) -> DataPart:
        """All training samples."""
        return DataPart(self, "train", torch.arange(len(self.train_labels)))

    @property
    def test(self) -> DataPart:
        """All test samples."""
        return DataPart(self, "test", torch.arange(len(self.test_labels)))

    def class_index(self, cls: str | int) -> int:
        """Resolve a class name (case-insensitive; exact names win) or index; a ValueError
        lists the valid names."""
        lowered = [c.lower() for c in self.classes]
        key = str(cls).strip().lower()
        if not isinstance(cls, int) and key in lowered:
            return lowered.index(key)
        if isinstance(cls, int) or key.lstrip("-").isdigit():
            i = int(cls)
            if not 0 <= i < self.num_classes:
                raise ValueError(
                    f"class index {i} is out of range for {self.name} "
                    f"(0..{self.num_classes - 1}); valid names: {', '.join(self.classes)}"
                )
            return i
        raise ValueError(
            f"unknown class {cls!r} for {self.name}; valid names: {', '.join(self.classes)}"
        )

    def describe(self) -> dict:
        return {
            "name": self.name,
            "classes": list(self.classes),
            "channels": self.channels,
            "image_size": list(self.image_size),
            "train_size": len(self.train_labels),
            "test_size": len(self.test_labels),
        }


@dataclass
class DataPart:
    """A view of ``indices`` into the ``part`` ("train" or "test") of a dataset."""

    dataset: ImageDataset
    part: str
    indices: Tensor
    name: str = ""
    _labels: Tensor | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.part not in ("train", "test"):
            raise ValueError(f"part must be 'train' or 'test', got {self.part!r}")
        self.indices = torch.as_tensor(self.indices, dtype=torch.long).reshape(-1)
        if not self.name:
            self.name = self.part

    def __len__(self) -> int:
        return int(self.indices.numel())

    @property
    def _images(self) -> Tensor | ImageStore:
        return self.dataset.train_images if self.part == "train" else self.dataset.test_images

    @property
    def labels(self) -> Tensor:
        """Labels of the samples in this view (int64, CPU)."""
        if self._labels is None:
            all_labels = (
                self.dataset.train_labels if self.part == "train" else self.dataset.test_labels
            )
            self._labels = all_labels[self.indices]
        return self._labels

    def subset(self, positions: Tensor | Sequence[int], name: str = "") -> DataPart:
        """A view of some positions *within this view*."""
        pos = torch.as_tensor(positions, dtype=torch.long)
        return DataPart(self.dataset, self.part, self.indices[pos], name or self.name)

    def take(self, n: int, seed: int = 0) -> DataPart:
        """A seeded random sub-sample of at most ``n`` samples."""
        if n >= len(self):
            return self
        g = torch.Generator().manual_seed(seed)
        return self.subset(torch.randperm(len(self), generator=g)[:n].sort().values)

    def raw(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """uint8 images and int64 labels at ``positions`` of this view (CPU)."""
        idx = self.indices[positions]
        return self._images[idx], self.labels[positions]

    def batches(
        self,
        batch_size: int = 256,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        augment: bool | None = None,
        drop_last: bool = False,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield normalised float ``(x, y)`` batches on ``device``.

        ``augment`` defaults to the dataset's own setting and only applies when shuffling
        (i.e. for training): random crop with 4-pixel zero padding and horizontal flip.
        """
        n = len(self)
        if n == 0:
            return
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        do_aug = (self.dataset.augment if augment is None else augment) and shuffle
        nb = n // batch_size if drop_last else math.ceil(n / batch_size)
        for b in range(nb):
            pos = order[b * batch_size : (b + 1) * batch_size]
            x, y = self.raw(pos)
            x = normalize(x.to(device, non_blocking=True), self.dataset.mean, self.dataset.std)
            if do_aug:
                x = random_crop_flip(x, generator=generator)
            yield x, y.to(device, non_blocking=True)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """The whole view as one normalised batch (only for small views)."""
        x, y = self.raw(torch.arange(len(self)))
        return normalize(x.to(device), self.dataset.mean, self.dataset.std), y.to(device)


def normalize(x: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """uint8 ``[N, C, H, W]`` → float32 ``(x/255 - mean) / std`` on x's device."""
    m = torch.tensor(mean, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, device=x.device, dtype=torch.float32).view(1, -1, 1, 1)
    return (x.float() / 255.0 - m) / s


def random_crop_flip(
    x: Tensor, padding: int = 4, generator: torch.Generator | None = None
) -> Tensor:
    """Batched random crop (zero padding) + horizontal flip, one offset per sample."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator).to(x.device)
    rows = (dy.view(n, 1) + torch.arange(h, device=x.device).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w, device=x.device).view(1, w)).view(n, 1, 1, w)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
    cols = torch.where(flip, (dx.view(n, 1, 1, 1) + w - 1) - (cols - dx.view(n, 1, 1, 1)), cols)
    c = x.shape[1]
    batch = torch.arange(n, device=x.device).view(n, 1, 1, 1)
    chan = torch.arange(c, device=x.device).view(1, c, 1, 1)
    return padded[batch, chan, rows, cols]
