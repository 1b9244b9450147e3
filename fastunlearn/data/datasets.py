"""Built-in dataset loaders, registered with :func:`~fastunlearn.data._registry.register_dataset`.

Every loader takes ``root=None, download=False, augment=None`` (plus its own keyword arguments)
and returns an :class:`~fastunlearn.data.base.ImageDataset` holding uint8 ``[N, C, H, W]`` images
and int64 labels.  Nothing is downloaded unless ``download=True``; a missing dataset raises
:class:`~fastunlearn.data._registry.DatasetNotFoundError` with a one-line hint on how to get it.

Heavy optional dependencies (torchvision, scikit-learn, PIL) are imported inside the loaders so
that importing this module stays cheap.
"""

from __future__ import annotations

import gzip
import logging
import math
import os
import zlib
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from fastunlearn.data._registry import DatasetNotFoundError, register_dataset
from fastunlearn.data.base import ImageDataset

__all__ = [
    "CACHE_DIR",
    "DATA_ENV_VAR",
    "DEBIAN_FASHION_MNIST_DIR",
    "EAGER_MAX_FILES",
    "IMAGE_EXTENSIONS",
    "LazyImages",
    "cifar10",
    "cifar100",
    "digits",
    "fashion_mnist",
    "imagefolder",
    "load_image",
    "mnist",
    "read_idx",
    "synthetic",
]

logger = logging.getLogger(__name__)

#: Environment variable naming a directory that holds datasets.
DATA_ENV_VAR = "FASTUNLEARN_DATA"
#: Where Debian's ``dataset-fashion-mnist`` package installs the idx files.
DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
#: Download / cache directory used when ``root`` is not given.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastunlearn"
#: ``imagefolder:`` holds at most this many images in memory when ``eager=None``.
EAGER_MAX_FILES = 20000
#: File name suffixes (lower case) treated as images by ``imagefolder:``.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
)

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
DIGIT_CLASSES = [str(i) for i in range(10)]
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

_IDX_LABELS_MAGIC = 0x00000801
_IDX_IMAGES_MAGIC = 0x00000803
# Logical idx file -> accepted base names (each also accepted with a ".gz" suffix).
_IDX_FILES: dict[str, tuple[str, ...]] = {
    "train_images": ("train-images-idx3-ubyte", "train-images.idx3-ubyte"),
    "train_labels": ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte"),
    "test_images": ("t10k-images-idx3-ubyte", "t10k-images.idx3-ubyte"),
    "test_labels": ("t10k-labels-idx1-ubyte", "t10k-labels.idx1-ubyte"),
}


# --------------------------------------------------------------------------------------------
# idx files (MNIST, Fashion-MNIST)
# --------------------------------------------------------------------------------------------


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


def _dedupe(paths: Iterable[Path]) -> list[Path]:
    out: list[Path] = []
    for p in paths:
        p = p.expanduser()
        if p not in out:
            out.append(p)
    return out


def _env_dir() -> Path | None:
    value = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def _idx_search_dirs(
    root: str | None, subdir: str, tv_folder: str, env_direct: bool, extra: Sequence[str]
) -> list[Path]:
    dirs: list[Path] = []
    if root is not None:
        r = Path(root)
        dirs += [r, r / subdir, r / tv_folder / "raw"]
    env = _env_dir()
    if env is not None:
        dirs += ([env] if env_direct else []) + [env / subdir, env / tv_folder / "raw"]
    dirs += [Path(d) for d in extra]
    dirs += [CACHE_DIR / subdir, CACHE_DIR / tv_folder / "raw"]
    return _dedupe(dirs)


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
        env_note = "" if _env_dir() is not None else f" (${DATA_ENV_VAR} is unset)"
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

    target = Path(root).expanduser() if root is not None else CACHE_DIR
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


# --------------------------------------------------------------------------------------------
# CIFAR (torchvision)
# --------------------------------------------------------------------------------------------


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
    env = _env_dir()
    if env is not None:
        roots.append(env)
    roots = _dedupe([*roots, CACHE_DIR])

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
        target = Path(root).expanduser() if root is not None else CACHE_DIR
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


# --------------------------------------------------------------------------------------------
# scikit-learn digits, synthetic
# --------------------------------------------------------------------------------------------


def _mean_std(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 ``[N, C, H, W]`` images in [0, 1] units (std floored)."""
    x = images.double().div(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    mean = tuple(float(v) for v in x.mean(dim=1))
    std = tuple(max(float(v), 1e-3) for v in x.std(dim=1))
    return mean, std


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
    mean, std = _mean_std(train_images)
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
        mean, std = _mean_std(x_train)
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


# --------------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------------


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
    import dataclasses

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
