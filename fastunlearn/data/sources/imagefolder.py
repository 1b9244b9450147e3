"""``imagefolder:PATH``: class sub-folders of image files, decoded to RGB uint8 and
centre-cropped; folders above :data:`EAGER_MAX_FILES` images are decoded lazily
(:class:`LazyImages`)."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastunlearn.data._registry import register_dataset
from fastunlearn.data.base import ImageDataset

__all__ = [
    "EAGER_MAX_FILES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "IMAGE_EXTENSIONS",
    "LazyImages",
    "imagefolder",
    "load_image",
]

logger = logging.getLogger(__name__)

#: ``imagefolder:`` holds at most this many images in memory when ``eager=None``.
EAGER_MAX_FILES = 20000
#: File name suffixes (lower case) treated as images by ``imagefolder:``.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_image(path: str | os.PathLike[str], image_size: int) -> Tensor:
    """Decode an image file to uint8 ``[3, S, S]``: RGB, shorter side resized to ``S``
    (bilinear), then a centre crop.  Unreadable files raise ``ValueError`` naming the file."""
    from PIL import Image, UnidentifiedImageError

    s = int(image_size)
    try:
        with Image.open(path) as img:
            img.draft("RGB", (s, s))  # JPEG: decode at a reduced scale that is still >= S
            img = img.convert("RGB")
            w, h = img.size
            scale = s / min(w, h)
            nw, nh = max(s, round(w * scale)), max(s, round(h * scale))
            if (nw, nh) != (w, h):
                img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - s) // 2, (nh - s) // 2
            img = img.crop((left, top, left + s, top + s))
            arr = np.asarray(img, dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ValueError(f"cannot read image {path}: {e}") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _num_workers() -> int:
    return max(1, min(8, os.cpu_count() or 1))


def _decode_many(
    files: Sequence[str], image_size: int, executor: ThreadPoolExecutor | None = None
) -> Tensor:
    out = torch.empty((len(files), 3, image_size, image_size), dtype=torch.uint8)
    if len(files) == 0:
        return out

    def work(i: int) -> None:
        out[i] = load_image(files[i], image_size)

    if len(files) < 8:
        for i in range(len(files)):
            work(i)
    elif executor is not None:
        list(executor.map(work, range(len(files))))
    else:
        with ThreadPoolExecutor(_num_workers()) as pool:
            list(pool.map(work, range(len(files))))
    return out


class LazyImages:
    """Image files decoded on indexing; an :class:`~fastunlearn.data.base.ImageStore`.

    ``images[index]`` with a 1-D LongTensor (or list/slice) returns uint8 ``[n, 3, S, S]``; an
    integer index returns one ``[3, S, S]`` image.  Decoding uses a small thread pool.
    """

    def __init__(self, files: Sequence[str | os.PathLike[str]], image_size: int) -> None:
        self.files: list[str] = [str(f) for f in files]
        self.image_size = int(image_size)
        self.shape: tuple[int, ...] = (len(self.files), 3, self.image_size, self.image_size)
        self._pool: ThreadPoolExecutor | None = None

    def __len__(self) -> int:
        return len(self.files)

    def __repr__(self) -> str:
        return f"LazyImages(n={len(self)}, image_size={self.image_size})"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_pool"] = None
        return state

    def __getitem__(self, index: Tensor | int | slice | Sequence[int]) -> Tensor:
        n = len(self.files)
        if isinstance(index, slice):
            positions = list(range(n))[index]
        elif isinstance(index, int) or (isinstance(index, Tensor) and index.dim() == 0):
            i = int(index)
            if not -n <= i < n:
                raise IndexError(f"index {i} out of range for {n} images")
            return load_image(self.files[i], self.image_size)
        else:
            idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
            if idx.numel() and (int(idx.max()) >= n or int(idx.min()) < -n):
                raise IndexError(f"index out of range for {n} images")
            positions = [i % n for i in idx.tolist()]
        if len(positions) >= 8 and self._pool is None:
            self._pool = ThreadPoolExecutor(_num_workers())
        return _decode_many([self.files[i] for i in positions], self.image_size, self._pool)


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")


def _scan_classes(folder: Path) -> dict[str, list[Path]]:
    """Class sub-folder name -> sorted image files below it (recursively); empty ones dropped."""
    out: dict[str, list[Path]] = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        files = sorted(
            (Path(d) / f for d, _, names in os.walk(sub, followlinks=True) for f in names),
            key=lambda p: str(p.relative_to(sub)),
        )
        images = [f for f in files if _is_image(f)]
        if images:
            out[sub.name] = images
    return out


@register_dataset("imagefolder:")
def imagefolder(
    path: str,
    root: str | None = None,
    download: bool = False,
    augment: bool | None = None,
    image_size: int = 64,
    max_per_class: int | None = None,
    eager: bool | None = None,
) -> ImageDataset:
    """Image folder: PATH/<class>/*.jpg or PATH/{train,val|test}/<class>/*, RGB, centre-cropped."""
    folder = Path(path).expanduser()
    if root is not None and not folder.is_absolute():
        folder = Path(root).expanduser() / folder
    if not folder.is_dir():
        raise ValueError(f"imagefolder: {folder} is not a directory")
    if image_size < 1:
        raise ValueError(f"imagefolder: image_size must be >= 1, got {image_size}")
    if max_per_class is not None and max_per_class < 1:
        raise ValueError(f"imagefolder: max_per_class must be >= 1, got {max_per_class}")

    test_dir = next((folder / n for n in ("val", "test") if (folder / n).is_dir()), None)
    parts: dict[str, dict[str, list[Path]]]
    if (folder / "train").is_dir() and test_dir is not None:
        parts = {"train": _scan_classes(folder / "train"), "test": _scan_classes(test_dir)}
        if max_per_class is not None:
            parts = {k: {c: f[:max_per_class] for c, f in v.items()} for k, v in parts.items()}
        layout = f"train/ + {test_dir.name}/"
    else:
        per_class = _scan_classes(folder)
        if max_per_class is not None:
            per_class = {c: f[:max_per_class] for c, f in per_class.items()}
        parts = {
            "train": {c: [p for i, p in enumerate(f) if i % 5 != 4] for c, f in per_class.items()},
            "test": {c: [p for i, p in enumerate(f) if i % 5 == 4] for c, f in per_class.items()},
        }
        layout = "80/20 split of each class (every 5th file to test)"
    classes = sorted(set(parts["train"]) | set(parts["test"]))
    if not classes:
        raise ValueError(
            f"imagefolder: no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in class "
            f"sub-folders of {folder}"
        )
    lookup = {c: i for i, c in enumerate(classes)}

    def flatten(part: dict[str, list[Path]]) -> tuple[list[str], Tensor]:
        files = [str(f) for c in classes for f in part.get(c, [])]
        labels = [lookup[c] for c in classes for _ in part.get(c, [])]
        return files, torch.tensor(labels, dtype=torch.long)

    train_files, train_labels = flatten(parts["train"])
    test_files, test_labels = flatten(parts["test"])
    total = len(train_files) + len(test_files)
    hold = total <= EAGER_MAX_FILES if eager is None else bool(eager)
    logger.info(
        "imagefolder %s: %d classes, %d train / %d test images (%s), %s",
        folder,
        len(classes),
        len(train_files),
        len(test_files),
        layout,
        "decoding now" if hold else "decoding lazily",
    )

    def make(files: list[str]) -> Tensor | LazyImages:
        return _decode_many(files, image_size) if hold else LazyImages(files, image_size)

    return ImageDataset(
        name=f"imagefolder:{path}",
        classes=classes,
        train_images=make(train_files),
        train_labels=train_labels,
        test_images=make(test_files),
        test_labels=test_labels,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        augment=bool(augment) if augment is not None else False,
        source=str(folder),
    )
