"""Core data containers: an image dataset held as uint8 tensors, and index views into it.

Images stay uint8 ``[N, C, H, W]`` in host memory; a batch is moved to the target device and
normalised there (``x / 255 - mean) / std``), which is what keeps small datasets fast on CPU and
cheap to ship to a GPU.  Large folders (``imagefolder:PATH``) use :class:`LazyImages`, which
decodes files on indexing but has the same interface.

A user's own map-style ``torch.utils.data.Dataset`` (:meth:`ForgetSplit.from_datasets
<fastunlearn.data.splits.ForgetSplit.from_datasets>`) is the same :class:`ImageDataset` with
:class:`DatasetImages` stores and ``mean = std = None``: its samples are already float tensors
made by the user's own transforms, so nothing is normalised or augmented here, and
:meth:`DataPart.batches` reads them through a ``torch.utils.data.DataLoader`` (the dataset's
``loader`` options: workers, pinned memory) in the very order the in-memory path would use.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import Tensor


class ImageStore(Protocol):
    """Anything indexable by a 1-D LongTensor that returns ``[n, C, H, W]`` images: uint8 for
    a dataset with ``mean``/``std`` (normalised per batch), float for one without
    (:class:`DatasetImages`: the user's transforms made them)."""

    shape: tuple[int, ...]

    def __len__(self) -> int: ...

    def __getitem__(self, index: Tensor) -> Tensor: ...


#: Share of the test set held out for validation by default (``ForgetSplit.val_fraction``).
DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class LoaderOptions:
    """How a user dataset is read (:class:`DatasetImages` stores only; the in-memory built-in
    datasets ignore them): ``num_workers`` / ``pin_memory`` go to the
    ``torch.utils.data.DataLoader`` behind :meth:`DataPart.batches` (memory is pinned only
    when the batches go to a CUDA device); ``batch_size`` is the user's own batch size, for
    their method configs (``fu.FTConfig(batch_size=split.batch_size)``) — methods keep their
    config's ``batch_size``."""

    batch_size: int = 128
    num_workers: int = 0
    pin_memory: bool = False

    def __post_init__(self) -> None:
        for name in ("batch_size", "num_workers"):
            v = getattr(self, name)
            low = 1 if name == "batch_size" else 0
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an integer ≥ {low}, got {v!r}")
        if not isinstance(self.pin_memory, bool):
            raise ValueError(f"pin_memory must be True or False, got {self.pin_memory!r}")


@dataclass
class ImageDataset:
    """A labelled image classification dataset with a train and a test part.

    ``train_images`` / ``test_images`` are uint8 ``[N, C, H, W]`` tensors (or an
    :class:`ImageStore` for folders too large for memory); labels are int64 ``[N]``.
    ``mean`` / ``std`` are per-channel, in [0, 1] units. ``mean = std = None``: the images are
    float tensors used as they are (a user dataset whose own transforms normalised them;
    ``augment`` must then be False). ``val_positions``: fixed positions of the test part that
    form the validation set (a user's validation Dataset or indices; None = every split draws
    its seeded ``val_fraction``); ``loader``: :class:`LoaderOptions`.
    """

    name: str
    classes: list[str]
    train_images: Tensor | ImageStore
    train_labels: Tensor
    test_images: Tensor | ImageStore
    test_labels: Tensor
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    augment: bool = False
    source: str = ""
    loader: LoaderOptions = field(default_factory=LoaderOptions)
    val_positions: Tensor | None = None

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
        if (self.mean is None) != (self.std is None):
            raise ValueError(f"dataset {self.name!r}: give both mean and std, or neither")
        if self.mean is None:
            if self.augment:
                raise ValueError(f"dataset {self.name!r}: augment=True needs uint8 images with "
                                 "mean/std; a user dataset augments in its own transforms")
        elif len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"dataset {self.name!r}: mean/std must have one value per channel")
        if self.val_positions is not None:
            v = torch.as_tensor(self.val_positions, dtype=torch.long).reshape(-1).unique()
            if v.numel() and not (0 <= int(v.min()) and int(v.max()) < len(self.test_labels)):
                raise ValueError(f"dataset {self.name!r}: val_positions out of range for "
                                 f"{len(self.test_labels)} test samples")
            self.val_positions = v

    @property
    def normalized(self) -> bool:
        """Whether batches are normalised here (uint8 images + mean/std) rather than taken as
        the float tensors the user's own transforms made."""
        return self.mean is not None

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
        positions: Callable[[Tensor], None] | None = None,
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield normalised float ``(x, y)`` batches on ``device``.

        ``augment`` defaults to the dataset's own setting and only applies when shuffling
        (i.e. for training): random crop with 4-pixel zero padding and horizontal flip.
        On a user dataset (:class:`DatasetImages`) the batches are its own tensors, read by a
        ``DataLoader`` with the dataset's ``loader`` options in the same order, and
        ``augment`` is ignored (the user's transforms augment, if they do).
        ``positions``, when given, is called with each batch's positions in this view (a long
        tensor) before the batch is yielded — how training records per-example statistics.
        """
        n = len(self)
        if n == 0:
            return
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        nb = n // batch_size if drop_last else math.ceil(n / batch_size)
        if isinstance(self._images, DatasetImages):
            # a user dataset: its own transforms made the tensors (no normalisation and no
            # augmentation here); the same order, read through a DataLoader
            yield from self._loader_batches(order, batch_size, nb, torch.device(device),
                                            positions)
            return
        do_aug = (self.dataset.augment if augment is None else augment) and shuffle
        for b in range(nb):
            pos = order[b * batch_size : (b + 1) * batch_size]
            x, y = self.raw(pos)
            x = normalize(x.to(device, non_blocking=True), self.dataset.mean, self.dataset.std)
            if do_aug:
                x = random_crop_flip(x, generator=generator)
            if positions is not None:
                positions(pos)
            yield x, y.to(device, non_blocking=True)

    def _loader_batches(self, order: Tensor, batch_size: int, nb: int, device: torch.device,
                        positions: Callable[[Tensor], None] | None = None,
                        ) -> Iterator[tuple[Tensor, Tensor]]:
        """``nb`` batches of positions ``order`` of a :class:`DatasetImages` view, read by a
        ``DataLoader`` (labels from this view, so relabelled views keep their labels)."""
        from torch.utils.data import DataLoader

        store = self._images
        assert isinstance(store, DatasetImages)
        opts = self.dataset.loader
        chunks = [order[b * batch_size:(b + 1) * batch_size] for b in range(nb)]
        # the loader draws a worker base seed from its generator on every iteration: a local
        # one (never the global RNG), seeded from this epoch's order
        first = order[:64].double()
        weights = torch.arange(1, len(first) + 1, dtype=torch.float64)
        seed = int((first * weights).sum()) + len(order)
        pin = opts.pin_memory and device.type == "cuda"
        loader = DataLoader(
            _Rows(store, self.indices), batch_sampler=[c.tolist() for c in chunks],
            num_workers=opts.num_workers, pin_memory=pin, collate_fn=_as_batch,
            generator=torch.Generator().manual_seed(seed),
        )
        for pos, x in zip(chunks, loader):
            x = normalize(x, None, None)  # float32, as the in-memory path yields
            if positions is not None:
                positions(pos)
            yield x.to(device, non_blocking=pin), self.labels[pos].to(device, non_blocking=pin)

    def tensors(self, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
        """The whole view as one normalised batch (only for small views)."""
        x, y = self.raw(torch.arange(len(self)))
        return normalize(x.to(device), self.dataset.mean, self.dataset.std), y.to(device)


def _is_pil(x: object) -> bool:
    return type(x).__module__.split(".")[0] == "PIL"


def sample_image(item: Any, where: str, shape: tuple[int, ...] | None = None) -> Tensor:
    """The image of one ``(image, label)`` sample of a user dataset, checked: a float
    ``[C, H, W]`` tensor (of ``shape`` when given). A one-line TypeError says what to add to
    the dataset's transform otherwise."""
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"{where} must return (image, label) pairs, got {type(item).__name__}")
    x = item[0]
    if not isinstance(x, Tensor):
        kind = "PIL images" if _is_pil(x) else f"{type(x).__name__} images"
        raise TypeError(f"{where} returns {kind}, not tensors: add transforms.ToTensor() (and "
                        "your transforms.Normalize) to its transform")
    if not x.is_floating_point():
        raise TypeError(f"{where} returns {x.dtype} image tensors; fastunlearn applies no "
                        "scaling or normalisation to your data: add transforms.ToTensor() or "
                        "transforms.ConvertImageDtype(torch.float32) (and your Normalize)")
    if x.dim() != 3:
        raise ValueError(f"{where} returns images of shape {tuple(x.shape)}; expected "
                         "[channels, height, width]")
    if shape is not None and tuple(x.shape) != shape:
        raise ValueError(f"{where} returns images of shape {tuple(x.shape)} and {shape}; give "
                         "every image one size (e.g. transforms.Resize + CenterCrop)")
    return x


class DatasetImages:
    """An :class:`ImageStore` over a user's map-style Dataset(s) of ``(image tensor, label)``.

    ``store[idx]`` (1-D LongTensor) returns the datasets' own float ``[n, C, H, W]`` images:
    their transforms applied, nothing normalised or augmented here. Several datasets are read
    as one, concatenated in order (a test set followed by its validation set). A
    ``TensorDataset`` is indexed in one gather; any other dataset one sample at a time.
    """

    def __init__(self, datasets: Sequence[Any], where: str = "dataset") -> None:
        self.datasets = list(datasets)
        self.where = where
        sizes = [len(d) for d in self.datasets]
        self.offsets = [0]
        for n in sizes:
            self.offsets.append(self.offsets[-1] + n)
        first = next((d for d, n in zip(self.datasets, sizes) if n), None)
        image_shape = tuple(sample_image(first[0], where).shape) if first is not None else (0,) * 3
        self.shape: tuple[int, ...] = (self.offsets[-1], *image_shape)

    def __len__(self) -> int:
        return self.offsets[-1]

    def __repr__(self) -> str:
        kinds = ", ".join(type(d).__name__ for d in self.datasets)
        return f"DatasetImages({kinds}; n={len(self)}, image={tuple(self.shape[1:])})"

    def _locate(self, i: int) -> tuple[Any, int]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} out of range for {n} images")
        i %= n
        k = next(k for k in range(len(self.datasets)) if i < self.offsets[k + 1])
        return self.datasets[k], i - self.offsets[k]

    def image(self, i: int) -> Tensor:
        """The image of sample ``i``, checked."""
        ds, j = self._locate(int(i))
        return sample_image(ds[j], self.where, tuple(self.shape[1:]))

    def __getitem__(self, index: Tensor | int | Sequence[int]) -> Tensor:
        if isinstance(index, int) or (isinstance(index, Tensor) and index.dim() == 0):
            return self.image(int(index))
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        if idx.numel() == 0:
            return torch.empty((0, *self.shape[1:]))
        if len(self.datasets) == 1 and _is_tensor_dataset(self.datasets[0]):
            n = len(self)
            if int(idx.max()) >= n or int(idx.min()) < -n:
                raise IndexError(f"index out of range for {n} images")
            x = self.datasets[0].tensors[0][idx]
            return _checked_batch(x, self.where, tuple(self.shape[1:]))
        return torch.stack([self.image(i) for i in idx.tolist()])


def _is_tensor_dataset(ds: Any) -> bool:
    from torch.utils.data import TensorDataset

    return isinstance(ds, TensorDataset)


def _checked_batch(x: Tensor, where: str, shape: tuple[int, ...]) -> Tensor:
    if not x.is_floating_point() or tuple(x.shape[1:]) != shape:
        return torch.stack([sample_image((row, 0), where, shape) for row in x])
    return x


class _Rows:
    """Map-style dataset of a view's rows of a :class:`DatasetImages` (positions → images);
    ``__getitems__`` gathers a whole batch at once (the DataLoader's batched fetch)."""

    def __init__(self, store: DatasetImages, indices: Tensor) -> None:
        self.store = store
        self.indices = indices

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __getitem__(self, pos: int) -> Tensor:
        return self.store.image(int(self.indices[pos]))

    def __getitems__(self, positions: list[int]) -> Tensor:
        return self.store[self.indices[torch.as_tensor(positions, dtype=torch.long)]]


def _as_batch(batch: Tensor) -> Tensor:
    """The DataLoader's collate: ``_Rows.__getitems__`` already stacked the batch."""
    return batch


def normalize(x: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> Tensor:
    """uint8 ``[N, C, H, W]`` → float32 ``(x/255 - mean) / std`` on x's device. ``mean = std =
    None`` (a user dataset: its transforms normalised the images): ``x`` as float32, values
    unchanged."""
    if mean is None or std is None:
        return x if x.dtype == torch.float32 else x.float()
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
