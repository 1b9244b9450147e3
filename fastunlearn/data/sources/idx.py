"""MNIST and Fashion-MNIST from idx files (gzip-compressed or plain).

The four files are searched in ``root``, ``$FASTUNLEARN_DATA`` and the cache directory (and,
for Fashion-MNIST, Debian's ``dataset-fashion-mnist`` directory), in the flat layout, a
per-dataset sub-folder, or torchvision's ``<Name>/raw`` folder.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from fastunlearn.data._registry import DatasetNotFoundError, register_dataset
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.sources._common import (
    DATA_ENV_VAR,
    DIGIT_CLASSES,
    cache_dir,
    dedupe,
    env_dir,
)

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "fashion_mnist",
    "mnist",
    "read_idx",
]

logger = logging.getLogger(__name__)

#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"

FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]

_IDX_LABELS_MAGIC = 0x00000801
_IDX_IMAGES_MAGIC = 0x00000803
# Logical idx file -> accepted base names (each also accepted with a ".gz" suffix).
_IDX_FILES: dict[str, tuple[str, ...]] = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


def read_idx(path: str | os.PathLike[str]) -> Tensor:
    """Parse an idx file (gzip-compressed or plain) into a uint8 tensor.

    Magic ``0x00000803`` (uint8 images) gives ``[N, rows, cols]``; ``0x00000801`` (uint8 labels)
    gives ``[N]``.  Compression is detected from the content, not the file name.  A bad magic
    number, a truncated or oversized payload, or a broken gzip stream raises ``ValueError``
    naming ``path``.
    """
    p = Path(path)
    with open(p, "rb") as f:
        raw = f.read()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise ValueError(f"{p}: corrupt gzip stream ({e})") from e
    if len(raw) < 4:
        raise ValueError(f"{p}: not an idx file (only {len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (_IDX_LABELS_MAGIC, _IDX_IMAGES_MAGIC):
        raise ValueError(
            f"{p}: bad idx magic number 0x{magic:08x} (expected 0x{_IDX_LABELS_MAGIC:08x} "
            f"for labels or 0x{_IDX_IMAGES_MAGIC:08x} for images)"
        )
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{p}: truncated idx header ({len(raw)} of {header} bytes)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = header + math.prod(dims)
    if len(raw) != expected:
        raise ValueError(
            f"{p}: idx size mismatch: header {dims} needs {expected} bytes, file has {len(raw)}"
        )
    data = np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
    return torch.from_numpy(data.copy())


def _idx_files_in(directory: Path) -> dict[str, Path] | None:
    """The four idx files in ``directory`` (gz or plain), or None if any is missing."""
    if not directory.is_dir():
        return None
    found: dict[str, Path] = {}
    for key, names in _IDX_FILES.items():
        for name in names:
            hit = next(
                (directory / n for n in (name, name + ".gz") if (directory / n).is_file()), None
            )
            if hit is not None:
                found[key] = hit
                break
        else:
            return None
    return found


def _idx_search_dirs(
    root: str | None, subdir: str, tv_folder: str, env_direct: bool, extra: Sequence[str]
) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        r = Path(root)
        dirs += [r, r / subdir, r / tv_folder / "raw"]
    env = env_dir()
    if env is not None:
        dirs += ([env] if env_direct else []) + [env / subdir, env / tv_folder / "raw"]
    dirs += [Path(d) for d in extra]
    dirs += [cache_dir() / subdir, cache_dir() / tv_folder / "raw"]
    return dedupe(dirs)


def _load_idx_dataset(
    *,
    name: str,
    title: str,
    subdir: str,
    tv_folder: str,
    tv_class: str,
    env_direct: bool,
    extra_dirs: Sequence[str],
    hint: str,
    classes: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    root: str | None,
    download: bool,
    augment: bool | None,
) -> ImageDataset:
    searched = _idx_search_dirs(root, subdir, tv_folder, env_direct, extra_dirs)
    files: dict[str, Path] | None = None
    for d in searched:
        files = _idx_files_in(d)
        if files is not None:
            break
    if files is None and download:
        files = _download_idx(title, tv_class, tv_folder, root)
    if files is None:
        env_note = "" if env_dir() is not None else f" (${DATA_ENV_VAR} is unset)"
        raise DatasetNotFoundError(
            f"{title} idx files not found in: {', '.join(map(str, searched))}{env_note}; "
            f"to fix: {hint}"
        )
    source = files["train_images"].parent
    logger.info("loading %s from %s", title, source)
    x_train, y_train = read_idx(files["train_images"]), read_idx(files["train_labels"])
    x_test, y_test = read_idx(files["test_images"]), read_idx(files["test_labels"])
    for key, x in (("train_images", x_train), ("test_images", x_test)):
        if x.dim() != 3:
            raise ValueError(
                f"{files[key]}: expected an images idx file, got shape {tuple(x.shape)}"
            )
    for key, y in (("train_labels", y_train), ("test_labels", y_test)):
        if y.dim() != 1:
            raise ValueError(
                f"{files[key]}: expected a labels idx file, got shape {tuple(y.shape)}"
            )
        if y.numel() and int(y.max()) >= len(classes):
            raise ValueError(
                f"{files[key]}: label {int(y.max())} out of range 0..{len(classes) - 1}"
            )
    return ImageDataset(
        name=name,
        classes=list(classes),
        train_images=x_train.unsqueeze(1).contiguous(),
        train_labels=y_train.long(),
        test_images=x_test.unsqueeze(1).contiguous(),
        test_labels=y_test.long(),
        mean=mean,
        std=std,
        augment=bool(augment) if augment is not None else False,
        source=str(source),
    )


def _download_idx(title: str, tv_class: str, tv_folder: str, root: str | None) -> dict[str, Path]:
    import torchvision.datasets as tvd

    target = Path(root).expanduser() if root is not None else cache_dir()
    logger.info("downloading %s to %s", title, target)
    cls = getattr(tvd, tv_class)
    try:
        for train in (True, False):
            cls(str(target), train=train, download=True)
    except (OSError, RuntimeError) as e:
        raise DatasetNotFoundError(
            f"{title}: download to {target} failed ({e}); check the network or put the idx "
            f"files there yourself"
        ) from e
    files = _idx_files_in(target / tv_folder / "raw")
    if files is None:
        raise DatasetNotFoundError(f"{title}: downloaded, but no idx files in {target / tv_folder}")
    return files


@register_dataset("fashion-mnist")
def fashion_mnist(
    root: str | None = None, download: bool = False, augment: bool | None = None
) -> ImageDataset:
    """Fashion-MNIST: 70k 28x28 grayscale clothing images, 10 classes (idx files)."""
    return _load_idx_dataset(
        name="fashion-mnist",
        title="Fashion-MNIST",
        subdir="fashion-mnist",
        tv_folder="FashionMNIST",
        tv_class="FashionMNIST",
        env_direct=True,
        extra_dirs=[DEBIAN_FASHION_MNIST_DIR],
        hint=(
            f"apt-get install dataset-fashion-mnist, or put the 4 idx .gz files in "
            f"${DATA_ENV_VAR}/fashion-mnist, or pass download=True (--download) when online"
        ),
        classes=FASHION_MNIST_CLASSES,
        mean=(0.2860,),
        std=(0.3530,),
        root=root,
        download=download,
        augment=augment,
    )


@register_dataset("mnist")
def mnist(
    root: str | None = None, download: bool = False, augment: bool | None = None
) -> ImageDataset:
    """MNIST: 70k 28x28 grayscale handwritten digits, 10 classes (idx files)."""
    return _load_idx_dataset(
        name="mnist",
        title="MNIST",
        subdir="mnist",
        tv_folder="MNIST",
        tv_class="MNIST",
        env_direct=False,
        extra_dirs=[],
        hint=(
            f"put the 4 idx .gz files in ${DATA_ENV_VAR}/mnist, or pass download=True "
            f"(--download) when online"
        ),
        classes=DIGIT_CLASSES,
        mean=(0.1307,),
        std=(0.3081,),
        root=root,
        download=download,
        augment=augment,
    )
