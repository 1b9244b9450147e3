"""CIFAR-10 and CIFAR-100 from torchvision's pickled batches (``cifar-10-batches-py`` /
``cifar-100-python``), searched in ``root``, ``$FASTUNLEARN_DATA`` and the cache directory."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastunlearn.data._registry import DatasetNotFoundError, register_dataset
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.sources._common import DATA_ENV_VAR, cache_dir, dedupe, env_dir

__all__ = ["CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "cifar10", "cifar100"]

logger = logging.getLogger(__name__)

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


def _load_cifar(
    *,
    name: str,
    title: str,
    tv_class: str,
    base_folder: str,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    root: str | None,
    download: bool,
    augment: bool | None,
) -> ImageDataset:
    roots: list[Path] = []
    if root is not None:
        roots.append(Path(root))
    env = env_dir()
    if env is not None:
        roots.append(env)
    roots = dedupe([*roots, cache_dir()])

    problems: list[str] = []
    for r in roots:
        if not (r / base_folder).is_dir():
            continue
        try:
            return _cifar_from(name, tv_class, r, False, mean, std, augment)
        except RuntimeError as e:  # torchvision: "Dataset not found or corrupted."
            problems.append(f"{r / base_folder}: {e}")
            logger.warning("%s: %s is unusable: %s", title, r / base_folder, e)
    if download:
        target = Path(root).expanduser() if root is not None else cache_dir()
        logger.info("downloading %s to %s", title, target)
        try:
            return _cifar_from(name, tv_class, target, True, mean, std, augment)
        except (OSError, RuntimeError) as e:
            raise DatasetNotFoundError(
                f"{title}: download to {target} failed ({e}); check the network or put "
                f"{base_folder}/ under ${DATA_ENV_VAR}"
            ) from e
    env_note = "" if env is not None else f" (${DATA_ENV_VAR} is unset)"
    bad = f" ({'; '.join(problems)})" if problems else ""
    raise DatasetNotFoundError(
        f"{title} not found: no usable {base_folder}/ under {', '.join(map(str, roots))}"
        f"{env_note}{bad}; to fix: put {base_folder}/ under ${DATA_ENV_VAR} "
        f"(or pass --download / download=True when online)"
    )


def _cifar_from(
    name: str,
    tv_class: str,
    root: Path,
    download: bool,
    mean: tuple[float, ...],
    std: tuple[float, ...],
    augment: bool | None,
) -> ImageDataset:
    import torchvision.datasets as tvd

    cls = getattr(tvd, tv_class)
    train = cls(str(root), train=True, download=download)
    test = cls(str(root), train=False, download=False)

    def images(ds: Any) -> Tensor:
        return (
            torch.from_numpy(np.asarray(ds.data, dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()
        )

    def labels(ds: Any) -> Tensor:
        return torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)

    return ImageDataset(
        name=name,
        classes=list(train.classes),
        train_images=images(train),
        train_labels=labels(train),
        test_images=images(test),
        test_labels=labels(test),
        mean=mean,
        std=std,
        augment=True if augment is None else bool(augment),
        source=str(Path(root) / cls.base_folder),
    )


@register_dataset("cifar10")
def cifar10(
    root: str | None = None, download: bool = False, augment: bool | None = None
) -> ImageDataset:
    """CIFAR-10: 60k 32x32 colour images, 10 classes (torchvision's cifar-10-batches-py)."""
    return _load_cifar(
        name="cifar10",
        title="CIFAR-10",
        tv_class="CIFAR10",
        base_folder="cifar-10-batches-py",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        root=root,
        download=download,
        augment=augment,
    )


@register_dataset("cifar100")
def cifar100(
    root: str | None = None, download: bool = False, augment: bool | None = None
) -> ImageDataset:
    """CIFAR-100: 60k 32x32 colour images, 100 classes (torchvision's cifar-100-python)."""
    return _load_cifar(
        name="cifar100",
        title="CIFAR-100",
        tv_class="CIFAR100",
        base_folder="cifar-100-python",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
        root=root,
        download=download,
        augment=augment,
    )
