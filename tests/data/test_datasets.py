"""Tests for the built-in dataset loaders (``fastunlearn.data.sources``, re-exported by
``fastunlearn.data.datasets``)."""

from __future__ import annotations

import gzip
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from fastunlearn.data import datasets as D
from fastunlearn.data._registry import (
    DatasetNotFoundError,
    dataset_descriptions,
    list_datasets,
    load_dataset,
)
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.sources import _common, idx

ALL_NAMES = ["cifar10", "cifar100", "digits", "fashion-mnist", "imagefolder:", "mnist", "synthetic"]
IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


# ------------------------------------------------------------------------------------ helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Serialise a uint8 array (1-D labels or 3-D images) in idx format."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x00000800 | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool | None = None) -> Path:
    data = idx_bytes(array)
    gz = path.suffix == ".gz" if gz is None else gz
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_fake_idx_set(
    directory: Path, n_train: int = 12, n_test: int = 5, gz: bool = True, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write the 4 tiny idx files of an MNIST-like dataset; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(n_test) % 10).astype(np.uint8),
    }
    directory.mkdir(parents=True, exist_ok=True)
    for key, name in IDX_NAMES.items():
        write_idx(directory / (name + (".gz" if gz else "")), arrays[key], gz=gz)
    return arrays


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $FASTUNLEARN_DATA, no Debian dir, an empty cache: nothing can be found."""
    monkeypatch.delenv(D.DATA_ENV_VAR, raising=False)
    monkeypatch.setattr(idx, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "no-debian"))
    monkeypatch.setattr(_common, "CACHE_DIR", tmp_path / "cache")
    return tmp_path


def check_dataset(ds: ImageDataset, channels: int, size: int, num_classes: int) -> None:
    for x, y in ((ds.train_images, ds.train_labels), (ds.test_images, ds.test_labels)):
        assert isinstance(x, torch.Tensor)
        assert x.dtype == torch.uint8 and x.is_contiguous()
        assert tuple(x.shape[1:]) == (channels, size, size)
        assert y.dtype == torch.int64 and y.shape == (x.shape[0],)
        if len(y):
            assert int(y.min()) >= 0 and int(y.max()) < num_classes
    assert ds.num_classes == num_classes
    assert len(ds.mean) == len(ds.std) == channels
    assert all(0 <= m <= 1 for m in ds.mean) and all(0 < s <= 1 for s in ds.std)
    assert ds.source


# ------------------------------------------------------------------------------------ read_idx


def test_read_idx_tiny_files_gz_and_plain(tmp_path: Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    labels = np.array([7, 1, 255], dtype=np.uint8)
    for gz in (False, True):
        suffix = ".gz" if gz else ""
        x = D.read_idx(write_idx(tmp_path / f"img{suffix}", images, gz=gz))
        y = D.read_idx(write_idx(tmp_path / f"lab{suffix}", labels, gz=gz))
        assert x.dtype == torch.uint8 and tuple(x.shape) == (2, 3, 4)
        assert torch.equal(x, torch.from_numpy(images))
        assert y.dtype == torch.uint8 and torch.equal(y, torch.from_numpy(labels))
    # compression is detected from the content, not the name
    x = D.read_idx(write_idx(tmp_path / "plain-named.gz", images, gz=False))
    assert torch.equal(x, torch.from_numpy(images))
    x.add_(1)  # writable, not a view of a read-only buffer


def test_read_idx_rejects_bad_files(tmp_path: Path) -> None:
    good = idx_bytes(np.zeros((3, 4, 4), dtype=np.uint8))
    cases = {
        "truncated": good[:-5],
        "too-long": good + b"\x00",
        "bad-magic": b"\x00\x00\x0d\x03" + good[4:],
        "short-header": good[:6],
        "empty": b"",
        "truncated-gz": gzip.compress(good)[:-10],
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=name):
            D.read_idx(path)


def test_real_fashion_mnist() -> None:
    root = Path("/usr/share/datasets/fashion-mnist")
    if not root.is_dir():
        pytest.skip("Debian dataset-fashion-mnist is not installed")
    x = D.read_idx(root / "train-images-idx3-ubyte.gz")
    y = D.read_idx(root / "train-labels-idx1-ubyte.gz")
    assert tuple(x.shape) == (60000, 28, 28) and x.dtype == torch.uint8
    assert torch.equal(y.long().bincount(minlength=10), torch.full((10,), 6000))
    assert tuple(D.read_idx(root / "t10k-images-idx3-ubyte.gz").shape) == (10000, 28, 28)

    ds = D.fashion_mnist(root=str(root))
    check_dataset(ds, channels=1, size=28, num_classes=10)
    assert len(ds.train_labels) == 60000 and len(ds.test_labels) == 10000
    assert ds.classes[0] == "T-shirt/top" and ds.classes[-1] == "Ankle boot"
    assert ds.mean == (0.2860,) and ds.std == (0.3530,)
    assert ds.augment is False
    assert ds.source == str(root)
    assert torch.equal(ds.train_images[:, 0], x)


# ------------------------------------------------------------------------------------ idx search


@pytest.mark.parametrize("layout", ["direct", "fashion-mnist", "FashionMNIST/raw"])
def test_fashion_mnist_found_via_env(
    isolated: Path, monkeypatch: pytest.MonkeyPatch, layout: str
) -> None:
    data = isolated / "data"
    target = data if layout == "direct" else data / layout
    arrays = write_fake_idx_set(target, gz=layout != "direct")
    monkeypatch.setenv(D.DATA_ENV_VAR, str(data))
    ds = load_dataset("fashion-mnist")
    check_dataset(ds, channels=1, size=28, num_classes=10)
    assert ds.source == str(target)
    assert torch.equal(ds.train_images[:, 0], torch.from_numpy(arrays["train_images"]))
    assert torch.equal(ds.test_labels, torch.from_numpy(arrays["test_labels"]).long())
    assert ds.classes[1] == "Trouser"


def test_root_argument_wins_over_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_idx_set(isolated / "env" / "fashion-mnist", n_train=12)
    write_fake_idx_set(isolated / "mine", n_train=7)
    monkeypatch.setenv(D.DATA_ENV_VAR, str(isolated / "env"))
    ds = D.fashion_mnist(root=str(isolated / "mine"))
    assert len(ds.train_labels) == 7 and ds.source == str(isolated / "mine")


def test_mnist_found_via_env(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_fake_idx_set(isolated / "data" / "mnist", n_train=9, n_test=4, gz=False)
    monkeypatch.setenv(D.DATA_ENV_VAR, str(isolated / "data"))
    ds = load_dataset("mnist")
    check_dataset(ds, channels=1, size=28, num_classes=10)
    assert ds.classes == [str(i) for i in range(10)]
    assert (len(ds.train_labels), len(ds.test_labels)) == (9, 4)
    assert ds.mean == (0.1307,) and ds.std == (0.3081,)


def test_idx_missing_everything(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(D.DATA_ENV_VAR, str(isolated / "empty"))
    for name in ("fashion-mnist", "mnist"):
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset(name)
        msg = str(info.value)
        assert "\n" not in msg
        assert "FASTUNLEARN_DATA" in msg and str(isolated / "empty") in msg
        assert "download=True" in msg
    with pytest.raises(DatasetNotFoundError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion-mnist")
    monkeypatch.delenv(D.DATA_ENV_VAR)
    with pytest.raises(FileNotFoundError, match="FASTUNLEARN_DATA"):
        D.fashion_mnist(root=str(isolated / "nothing-here"))


def test_idx_label_out_of_range(isolated: Path) -> None:
    write_fake_idx_set(isolated / "bad")
    write_idx(isolated / "bad" / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 2, 3, 10]))
    with pytest.raises(ValueError, match="out of range"):
        D.mnist(root=str(isolated / "bad"))


def test_idx_download_uses_torchvision_raw_files(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tvd = pytest.importorskip("torchvision.datasets")
    calls: list[tuple[str, bool, bool]] = []

    class FakeFashionMNIST:
        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            calls.append((root, train, download))
            write_fake_idx_set(Path(root) / "FashionMNIST" / "raw", n_train=10, n_test=3)

    monkeypatch.setattr(tvd, "FashionMNIST", FakeFashionMNIST)
    with pytest.raises(DatasetNotFoundError):
        D.fashion_mnist()
    assert calls == []
    ds = D.fashion_mnist(download=True)
    assert calls and all(download for _, _, download in calls)
    assert ds.source == str(isolated / "cache" / "FashionMNIST" / "raw")
    assert len(ds.train_labels) == 10 and len(ds.test_labels) == 3


# ------------------------------------------------------------------------------------ CIFAR


def test_cifar_missing_offline(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    empty = isolated / "empty"
    empty.mkdir()
    monkeypatch.setenv(D.DATA_ENV_VAR, str(empty))
    for name, folder in (("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python")):
        with pytest.raises(DatasetNotFoundError) as info:
            load_dataset(name, root=str(empty))
        msg = str(info.value)
        assert "\n" not in msg
        assert folder in msg and "FASTUNLEARN_DATA" in msg and "download" in msg


def test_cifar_conversion_with_fake_torchvision(
    isolated: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    tvd = pytest.importorskip("torchvision.datasets")
    rng = np.random.default_rng(0)

    class FakeCIFAR10:
        base_folder = "cifar-10-batches-py"

        def __init__(self, root: str, train: bool = True, download: bool = False) -> None:
            self.classes = ["airplane", "automobile", "bird", "cat", "deer"]
            self.classes += ["dog", "frog", "horse", "ship", "truck"]
            n = 6 if train else 4
            self.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            self.targets = [i % 10 for i in range(n)]

    monkeypatch.setattr(tvd, "CIFAR10", FakeCIFAR10)
    (isolated / "data" / "cifar-10-batches-py").mkdir(parents=True)
    monkeypatch.setenv(D.DATA_ENV_VAR, str(isolated / "data"))
    ds = load_dataset("cifar10")
    check_dataset(ds, channels=3, size=32, num_classes=10)
    assert ds.classes[0] == "airplane"
    assert ds.augment is True and load_dataset("cifar10", augment=False).augment is False
    assert ds.source == str(isolated / "data" / "cifar-10-batches-py")
    assert ds.mean == D.CIFAR10_MEAN


# ------------------------------------------------------------------------------------ digits


def test_digits() -> None:
    pytest.importorskip("sklearn")
    ds = load_dataset("digits")
    check_dataset(ds, channels=1, size=8, num_classes=10)
    assert (len(ds.train_labels), len(ds.test_labels)) == (1437, 360)
    assert ds.classes == [str(i) for i in range(10)]
    assert int(ds.train_images.max()) == 255 and int(ds.train_images.min()) == 0
    # stratified: every class is in both parts in about the same proportion
    tr = ds.train_labels.bincount(minlength=10).double()
    te = ds.test_labels.bincount(minlength=10).double()
    assert bool(((te / (tr + te)) - 0.2).abs().max() < 0.02)
    expected_mean = ds.train_images.double().div(255).mean().item()
    assert ds.mean[0] == pytest.approx(expected_mean)
    again = D.digits()
    assert torch.equal(again.train_images, ds.train_images)
    assert torch.equal(again.test_labels, ds.test_labels)


# ------------------------------------------------------------------------------------ imagefolder

COLOURS = {"cat": (200, 10, 10), "dog": (10, 200, 10), "emu": (10, 10, 200)}


def make_folder(root: Path, per_class: int, sizes: tuple[tuple[int, int], ...]) -> None:
    from PIL import Image

    for c, colour in COLOURS.items():
        (root / c).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            img = Image.new("RGB", (w, h), colour)
            img.putpixel((0, 0), (i, i, i))  # makes each file distinct
            img.save(root / c / f"img{i:02d}.png")
    (root / "cat" / "notes.txt").write_text("not an image")


def test_imagefolder_split_layout(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    make_folder(tmp_path / "flat", per_class=10, sizes=((12, 9), (7, 15), (8, 8)))
    ds = load_dataset(f"imagefolder:{tmp_path / 'flat'}", image_size=6)
    assert ds.classes == ["cat", "dog", "emu"]
    assert (len(ds.train_labels), len(ds.test_labels)) == (24, 6)
    assert torch.equal(ds.test_labels, torch.tensor([0, 0, 1, 1, 2, 2]))
    check_dataset(ds, channels=3, size=6, num_classes=3)
    assert ds.mean == D.IMAGENET_MEAN and ds.augment is False
    assert ds.source == str(tmp_path / "flat")
    # centre of each image is the class colour
    assert ds.test_images[2, :, 3, 3].tolist() == list(COLOURS["dog"])
    assert ds.train_images[-1, :, 3, 3].tolist() == list(COLOURS["emu"])

    lazy = D.imagefolder(str(tmp_path / "flat"), image_size=6, eager=False)
    assert isinstance(lazy.train_images, D.LazyImages)
    assert lazy.train_images.shape == (24, 3, 6, 6) and len(lazy.test_images) == 6
    for part in ("train", "test"):
        eager_x = getattr(ds, f"{part}_images")
        lazy_x = getattr(lazy, f"{part}_images")[torch.arange(len(eager_x))]
        assert lazy_x.dtype == torch.uint8 and torch.equal(lazy_x, eager_x)
    pos = torch.tensor([5, 0, 5])
    assert torch.equal(lazy.train_images[pos], ds.train_images[pos])
    assert torch.equal(lazy.train_images[3], ds.train_images[3])
    x, y = next(lazy.train.batches(batch_size=10, shuffle=True))
    assert x.shape == (10, 3, 6, 6) and x.dtype == torch.float32 and y.shape == (10,)

    small = D.imagefolder(str(tmp_path / "flat"), image_size=4, max_per_class=5)
    assert (len(small.train_labels), len(small.test_labels)) == (12, 3)


def test_imagefolder_train_val_layout(tmp_path: Path) -> None:
    pytest.importorskip("PIL")
    make_folder(tmp_path / "tv" / "train", per_class=3, sizes=((10, 10),))
    make_folder(tmp_path / "tv" / "val", per_class=2, sizes=((9, 13),))
    ds = D.imagefolder("tv", root=str(tmp_path), image_size=5)
    assert ds.classes == ["cat", "dog", "emu"]
    assert (len(ds.train_labels), len(ds.test_labels)) == (9, 6)
    assert torch.equal(ds.train_labels, torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2]))
    assert ds.test_images[5, :, 2, 2].tolist() == list(COLOURS["emu"])
    lazy = D.imagefolder(str(tmp_path / "tv"), image_size=5, eager=False)
    assert torch.equal(lazy.test_images[torch.arange(6)], ds.test_images)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a directory"):
        load_dataset(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty" / "cls").mkdir(parents=True)
    (tmp_path / "empty" / "cls" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="no images"):
        D.imagefolder(str(tmp_path / "empty"))


# ------------------------------------------------------------------------------------ synthetic


def test_synthetic_shapes_and_determinism() -> None:
    ds = load_dataset("synthetic", num_classes=5, channels=3, size=6)
    check_dataset(ds, channels=3, size=6, num_classes=5)
    assert ds.classes == [f"class{i}" for i in range(5)]
    assert (len(ds.train_labels), len(ds.test_labels)) == (300, 100)
    assert torch.equal(ds.train_labels.bincount(), torch.full((5,), 60))
    again = D.synthetic(num_classes=5, channels=3, size=6)
    assert torch.equal(again.train_images, ds.train_images)
    other = D.synthetic(num_classes=5, channels=3, size=6, seed=1)
    assert not torch.equal(other.train_images, ds.train_images)


def test_synthetic_is_learnable() -> None:
    ds = D.synthetic()
    x_train, y_train = ds.train.tensors()
    x_test, y_test = ds.test.tensors()
    centroids = torch.stack([x_train[y_train == c].mean(0) for c in range(ds.num_classes)])
    dist = torch.cdist(x_test.flatten(1), centroids.flatten(1))
    acc = (dist.argmin(1) == y_test).double().mean().item()
    assert acc > 0.9


# ------------------------------------------------------------------------------------ registry


def test_registry_names_and_unknown() -> None:
    assert set(ALL_NAMES) <= set(list_datasets())
    descriptions = dataset_descriptions()
    for name in ALL_NAMES:
        assert descriptions[name] and "\n" not in descriptions[name]
    with pytest.raises(ValueError) as info:
        load_dataset("nope")
    msg = str(info.value)
    assert "nope" in msg and "fashion-mnist" in msg and "imagefolder:PATH" in msg


def test_every_source_registers_when_the_package_is_imported() -> None:
    """A fresh interpreter: importing the registry runs the package ``fastunlearn.data`` first,
    which registers every built-in (the registry itself imports no loader module)."""
    code = "from fastunlearn.data._registry import list_datasets; print(','.join(list_datasets()))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                         timeout=120, check=True).stdout.strip().split(",")
    assert set(ALL_NAMES) | {"fashion-mnist-10k"} == set(out)


def test_stable_import_path_reexports_the_sources() -> None:
    from fastunlearn.data.sources import cifar, imagefolder, subsets, synthetic

    assert D.read_idx is idx.read_idx and D.fashion_mnist is idx.fashion_mnist
    assert D.cifar10 is cifar.cifar10 and D.synthetic is synthetic.synthetic
    assert D.LazyImages is imagefolder.LazyImages
    assert D.class_balanced_subset is subsets.class_balanced_subset
    assert D.CACHE_DIR == _common.CACHE_DIR
    assert sorted(D.__all__) == sorted(n for n in D.__all__ if hasattr(D, n))


def test_class_balanced_subset() -> None:
    ds = D.synthetic(num_classes=4, train_per_class=10, test_per_class=3)
    sub = D.class_balanced_subset(ds, 10, seed=1)
    assert sub.name == "synthetic-10" and len(sub.train_labels) == 10
    assert sub.train_labels.bincount(minlength=4).tolist() == [3, 3, 2, 2]
    assert torch.equal(sub.test_labels, ds.test_labels)
    again = D.class_balanced_subset(ds, 10, seed=1)
    assert torch.equal(again.train_images, sub.train_images)
    with pytest.raises(ValueError, match="subset size"):
        D.class_balanced_subset(ds, 3)


def test_import_is_light() -> None:
    code = (
        "import sys, fastunlearn.data.datasets; "
        "bad = [m for m in ('torchvision', 'sklearn') if m in sys.modules]; "
        "sys.exit(1 if bad else 0)"
    )
    root = Path(__file__).resolve().parents[2]
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, timeout=120)
    assert result.returncode == 0
