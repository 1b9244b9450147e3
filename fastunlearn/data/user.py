"""Bring your own data: the parts of a :class:`~fastunlearn.data.splits.ForgetSplit` made from
any map-style torch ``Dataset`` of ``(image tensor, int label)``.

>>> split = ForgetSplit.from_datasets(train_ds, forget=ids, test=test_ds, val=0.1)

:meth:`ForgetSplit.from_datasets <fastunlearn.data.splits.ForgetSplit.from_datasets>` calls
:func:`user_split_parts` here and assembles the split; this module knows nothing of splits
(``splits`` imports ``user``, never the other way round).

The result is the same split type the built-in datasets give (one code path for every method,
metric and report): an :class:`~fastunlearn.data.base.ImageDataset` whose image stores are
:class:`~fastunlearn.data.base.DatasetImages` over the user's datasets and whose
``mean`` / ``std`` are None — the user's transforms made the tensors, and fastunlearn adds no
normalisation and no augmentation. A validation Dataset is appended to the test part and named
by the dataset's ``val_positions``.

Labels are read from a ``targets`` / ``labels`` attribute (through ``Subset`` /
``ConcatDataset`` / ``TensorDataset``) when one exists and no ``target_transform`` could change
them, else from one pass over the data (logged: it runs the image transforms too).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset, TensorDataset

from fastunlearn.data.base import (
    DEFAULT_VAL_FRACTION,
    DatasetImages,
    ImageDataset,
    LoaderOptions,
)

__all__ = ["UserSplitParts", "dataset_labels", "user_split_parts"]

log = logging.getLogger(__name__)


def _unwrap(obj: Any, what: str) -> tuple[Any, DataLoader | None]:
    """``(dataset, loader)``: a DataLoader gives its ``.dataset``; a map-style Dataset itself."""
    loader = obj if isinstance(obj, DataLoader) else None
    ds = obj.dataset if loader is not None else obj
    if isinstance(ds, torch.utils.data.IterableDataset):
        raise TypeError(f"{what}: an IterableDataset has no indices to forget; give a map-style "
                        "Dataset (with __getitem__ and __len__)")
    if not (callable(getattr(ds, "__getitem__", None)) and callable(getattr(ds, "__len__", None))):
        raise TypeError(f"{what} must be a map-style torch Dataset (or a DataLoader over one), "
                        f"got {type(ds).__name__}")
    return ds, loader


def _as_label_tensor(v: Any, n: int) -> Tensor | None:
    if v is None or callable(v) or isinstance(v, (str, bytes)):
        return None
    try:
        t = torch.as_tensor(np.asarray(v))
    except (TypeError, ValueError, RuntimeError):
        return None
    if t.dim() != 1 or len(t) != n or t.is_floating_point() or t.is_complex() \
            or t.dtype == torch.bool:
        return None
    return t.long()


def _attribute_labels(ds: Any) -> Tensor | None:
    """Labels from the dataset's own bookkeeping, or None when it has none to trust."""
    n = len(ds)
    if isinstance(ds, Subset):
        base = _attribute_labels(ds.dataset)
        return None if base is None else base[torch.as_tensor(list(ds.indices), dtype=torch.long)]
    if isinstance(ds, ConcatDataset):
        parts = [_attribute_labels(d) for d in ds.datasets]
        return None if any(p is None for p in parts) else torch.cat(parts)
    if isinstance(ds, TensorDataset):
        return _as_label_tensor(ds.tensors[1], n) if len(ds.tensors) >= 2 else None
    if getattr(ds, "target_transform", None) is not None:
        return None  # the attribute holds the labels before the transform
    for attr in ("targets", "labels"):
        t = _as_label_tensor(getattr(ds, attr, None), n)
        if t is not None:
            return t
    return None


def _label_of(item: Any, where: str) -> int:
    if not isinstance(item, (tuple, list)) or len(item) < 2:
        raise TypeError(f"{where} must return (image, label) pairs, got {type(item).__name__}")
    y = item[1]
    if isinstance(y, Tensor) and y.numel() == 1 and not y.is_floating_point():
        return int(y)
    if isinstance(y, (int, np.integer)) and not isinstance(y, bool):
        return int(y)
    raise TypeError(f"{where} returns labels of type {type(y).__name__}; expected an int class "
                    "index (map names to indices in a target_transform)")


def _labels_only(items: list[Any]) -> list[Any]:
    """DataLoader collate for the label pass (module level: picklable for worker processes)."""
    return [item[1] for item in items]


def dataset_labels(ds: Any, where: str = "dataset", num_workers: int = 0) -> Tensor:
    """int64 labels of every sample of a map-style dataset: from its ``targets`` / ``labels``
    attribute when present (see the module docstring), else one pass reading ``ds[i][1]``
    (through a DataLoader when ``num_workers`` > 0)."""
    t = _attribute_labels(ds)
    if t is not None:
        return t
    n = len(ds)
    log.info("%s: reading the labels of %d samples in one pass (a `targets` attribute would "
             "skip this)", where, n)
    if num_workers > 0:
        loader = DataLoader(ds, batch_size=256, num_workers=num_workers, collate_fn=_labels_only,
                            generator=torch.Generator().manual_seed(0))
        raw = [y for batch in loader for y in batch]
        return torch.tensor([_label_of((None, y), where) for y in raw], dtype=torch.long)
    return torch.tensor([_label_of(ds[i], where) for i in range(n)], dtype=torch.long)


def _class_names(classes: Sequence[str] | None, ds: Any, num_labels: int) -> list[str]:
    if classes is None:
        base = ds
        while classes is None and base is not None:
            classes = getattr(base, "classes", None)
            base = getattr(base, "dataset", None) if isinstance(base, Subset) else None
    if classes is None:
        return [str(i) for i in range(num_labels)]
    if isinstance(classes, dict):  # class_to_idx
        classes = [k for k, _ in sorted(classes.items(), key=lambda kv: kv[1])]
    names = [str(c) for c in classes]
    if len(set(names)) != len(names):
        raise ValueError(f"classes has a repeated name: {names}")
    if len(names) < num_labels:
        raise ValueError(f"the data has labels up to {num_labels - 1} but classes= names only "
                         f"{len(names)} classes")
    return names


def _check_labels(labels: Tensor, what: str) -> None:
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(f"{what} has negative labels ({int(labels.min())}); labels must be "
                         "class indices 0..C-1")


def _is_index_like(v: Any) -> bool:
    return isinstance(v, (Tensor, np.ndarray, list, tuple, range))


def _forget_kind(forget: Any) -> str:
    """"class", "mask" or "indices"."""
    if isinstance(forget, str):
        return "class"
    if not _is_index_like(forget):
        raise TypeError("forget must be training indices, a boolean mask or class name(s), got "
                        f"{type(forget).__name__}")
    if isinstance(forget, (Tensor, np.ndarray)):
        return "mask" if forget.dtype in (torch.bool, np.bool_) else "indices"
    items = list(forget)
    if items and all(isinstance(v, str) for v in items):
        return "class"
    if items and all(isinstance(v, (bool, np.bool_)) for v in items):
        return "mask"
    if any(isinstance(v, str) for v in items):
        raise TypeError("forget mixes class names and indices; give one kind")
    return "indices"


def _val_positions(val: Any, n_test: int, test_ds: Any) -> Tensor | None:
    """Validation positions into ``test`` (val given as indices), or None for a fraction."""
    t = torch.as_tensor(np.asarray(list(val) if not isinstance(val, (Tensor, np.ndarray))
                                   else val))
    if t.dtype == torch.bool:
        raise TypeError("val as a mask is not supported; give indices into test, a fraction "
                        "or a Dataset")
    if t.is_floating_point():
        raise TypeError("val indices must be integers")
    t = t.long().reshape(-1)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n_test):
        raise ValueError(f"val indices out of range for the {n_test} test samples of "
                         f"{type(test_ds).__name__}")
    if t.unique().numel() != t.numel():
        raise ValueError("val indices repeat an index; give each once")
    if t.numel() >= n_test:
        raise ValueError("val takes every test sample; leave some for evaluation")
    return t


class UserSplitParts(NamedTuple):
    """What :meth:`ForgetSplit.from_datasets` builds a split from: the dataset over the user's
    Datasets, the forget set as class names *or* training indices (the other is None), and the
    validation fraction (None: the dataset's fixed ``val_positions``)."""

    data: ImageDataset
    forget_classes: list[Any] | None
    forget_ids: Tensor | None
    val_fraction: float | None


def user_split_parts(
    train: Any,
    *,
    forget: Any,
    test: Any,
    val: Any = DEFAULT_VAL_FRACTION,
    classes: Sequence[str] | None = None,
    batch_size: int | None = None,
    num_workers: int | None = None,
    pin_memory: bool | None = None,
    name: str | None = None,
) -> UserSplitParts:
    """The checked parts of :meth:`ForgetSplit.from_datasets` (see there for the arguments);
    one-line ``TypeError`` / ``ValueError`` for bad input."""
    train_ds, loader = _unwrap(train, "train")
    test_ds, _ = _unwrap(test, "test")
    opts = LoaderOptions(
        batch_size=int(batch_size if batch_size is not None else
                       (loader.batch_size if loader is not None and loader.batch_size else 128)),
        num_workers=int(num_workers if num_workers is not None else
                        (loader.num_workers if loader is not None else 0)),
        pin_memory=bool(pin_memory if pin_memory is not None else
                        (loader.pin_memory if loader is not None else False)),
    )
    if len(train_ds) < 2:
        raise ValueError(f"train has {len(train_ds)} samples; need some to forget and some to "
                         "retain")
    if len(test_ds) == 0:
        raise ValueError("test is empty; give a held-out Dataset to evaluate on")

    val_ds = None
    val_fraction: float | None = None
    fixed: Tensor | None = None
    if isinstance(val, (DataLoader, Dataset)) or (
            not _is_index_like(val) and not isinstance(val, (int, float))
            and callable(getattr(val, "__getitem__", None))):
        val_ds, _ = _unwrap(val, "val")
    elif isinstance(val, bool):
        raise TypeError("val must be a fraction of test, indices into test or a Dataset, "
                        f"got {val!r}")
    elif isinstance(val, (int, float)):
        if not 0 <= val < 1:
            raise ValueError(f"val as a fraction of test must be in [0, 1), got {val!r} (for "
                             "a count, give indices)")
        val_fraction = float(val)
    elif _is_index_like(val):
        fixed = _val_positions(val, len(test_ds), test_ds)
    else:
        raise TypeError("val must be a fraction of test, indices into test or a Dataset, got "
                        f"{type(val).__name__}")

    w = opts.num_workers
    train_labels = dataset_labels(train_ds, "train", w)
    test_labels = dataset_labels(test_ds, "test", w)
    test_parts = [test_ds]
    if val_ds is not None:
        test_parts.append(val_ds)
        fixed = torch.arange(len(test_ds), len(test_ds) + len(val_ds))
        test_labels = torch.cat([test_labels, dataset_labels(val_ds, "val", w)])
    for what, t in (("train", train_labels), ("test", test_labels)):
        _check_labels(t, what)
    top = int(max(train_labels.max(), test_labels.max())) + 1
    names = _class_names(classes, train_ds, top)

    train_store = DatasetImages([train_ds], f"train ({type(train_ds).__name__})")
    test_store = DatasetImages(test_parts, f"test ({type(test_ds).__name__})")
    if test_store.shape[1:] != train_store.shape[1:] and len(test_store):
        raise ValueError(f"test images are {tuple(test_store.shape[1:])} but train images are "
                         f"{tuple(train_store.shape[1:])}; give both one size")
    data = ImageDataset(
        name=name or type(train_ds).__name__,
        classes=names,
        train_images=train_store,
        train_labels=train_labels,
        test_images=test_store,
        test_labels=test_labels,
        mean=None,
        std=None,
        augment=False,
        source="user",
        loader=opts,
        val_positions=fixed,
    )

    kind = _forget_kind(forget)
    if kind == "class":
        names_to_forget = [forget] if isinstance(forget, str) else list(forget)
        return UserSplitParts(data, names_to_forget, None, val_fraction)
    if kind == "mask":
        mask = torch.as_tensor(np.asarray(forget, dtype=bool)).reshape(-1)
        if len(mask) != len(train_labels):
            raise ValueError(f"forget mask has {len(mask)} entries but train has "
                             f"{len(train_labels)} samples")
        ids = torch.nonzero(mask).flatten()
    else:
        ids = torch.as_tensor(np.asarray(forget if not isinstance(forget, Tensor)
                                         else forget.cpu()))
        if ids.is_floating_point():
            raise TypeError("forget indices must be integers")
    return UserSplitParts(data, None, ids, val_fraction)
