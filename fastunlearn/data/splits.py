"""Forget sets: which training samples must be forgotten, and the views every method needs.

A :class:`ForgetSplit` partitions the train set into ``forget`` and ``retain`` (disjoint, union =
train) and the dataset's test set into a seeded validation hold-out ``val`` (default 10 %) and the
evaluation ``test`` part (the rest). ``test`` is further split into ``test_forget`` /
``test_retain`` (for class forgetting: test samples of the forgotten classes vs the rest; for
sample forgetting: empty / the whole test part), and ``val`` likewise into ``val_forget`` /
``val_retain``.

Methods read ``forget``, ``retain`` and ``val`` only; ``test`` is for evaluation (a test
instruments it and runs every registered method).

The built-in datasets (:func:`forget_classes`, :func:`forget_random`, :func:`forget_indices`)
and a user's own torch Datasets (:meth:`ForgetSplit.from_datasets`) give the same
:class:`ForgetSplit`, so every method, metric and report has one code path.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from fastunlearn.data.base import DEFAULT_VAL_FRACTION, DataPart, ImageDataset
from fastunlearn.data.user import user_split_parts

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "ForgetSplit",
    "forget_classes",
    "forget_indices",
    "forget_random",
    "split_from_spec",
]


def _hold_out(n: int, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Sorted ``(held_out, rest)`` positions of ``0..n-1``: ``round(fraction·n)`` (at least one
    when ``fraction`` > 0) drawn with a local generator seeded by ``seed``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or \
            not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {fraction!r}")
    k = max(1, round(fraction * n)) if fraction > 0 and n > 1 else 0
    if k >= n and n:
        k = n - 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed)))
    return perm[:k].sort().values, perm[k:].sort().values


@dataclass
class ForgetSplit:
    """A dataset with a forget set. ``spec`` is JSON-serialisable and rebuilds the split
    exactly through :func:`split_from_spec`.

    ``val_fraction`` of the test part (drawn with ``val_seed``) is the validation hold-out;
    ``val_fraction=None`` takes the dataset's fixed ``val_positions`` instead (a user's own
    validation Dataset or indices, see :meth:`from_datasets`)."""

    data: ImageDataset
    forget_idx: Tensor
    spec: dict[str, Any]
    forget_class_ids: list[int] = field(default_factory=list)
    val_fraction: float | None = DEFAULT_VAL_FRACTION
    val_seed: int = 0

    @classmethod
    def from_datasets(
        cls,
        train: Any,
        *,
        forget: Any,
        test: Any,
        val: Any = DEFAULT_VAL_FRACTION,
        classes: Sequence[str] | None = None,
        batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        seed: int = 0,
        name: str | None = None,
    ) -> ForgetSplit:
        """A split of your own data: any map-style ``torch.utils.data.Dataset`` of ``(image
        tensor, int label)`` (or a ``DataLoader``: its dataset, and its ``batch_size`` /
        ``num_workers`` / ``pin_memory`` as defaults). Your transforms run as given:
        fastunlearn normalises and augments nothing on this path.

        ``forget``: training indices, a boolean mask over the training set, or a class name /
        list of names (from ``classes=`` or ``train.classes``). ``val``: a Dataset, indices
        into ``test``, or a fraction of ``test`` drawn with ``seed``. Labels come from a
        ``targets`` / ``labels`` attribute when there is one, else from one pass over the
        data (see :mod:`fastunlearn.data.user`)."""
        parts = user_split_parts(
            train, test=test, forget=forget, val=val, classes=classes, batch_size=batch_size,
            num_workers=num_workers, pin_memory=pin_memory, name=name,
        )
        if parts.forget_classes is not None:
            base = forget_classes(parts.data, parts.forget_classes)
        else:
            base = forget_indices(parts.data, parts.forget_ids)
        return cls(parts.data, base.forget_idx, base.spec, list(base.forget_class_ids),
                   val_fraction=parts.val_fraction, val_seed=int(seed))

    def __post_init__(self) -> None:
        self.forget_idx = torch.as_tensor(self.forget_idx, dtype=torch.long).sort().values
        n = len(self.data.train_labels)
        mask = torch.zeros(n, dtype=torch.bool)
        mask[self.forget_idx] = True
        self._forget_mask = mask
        self.retain_idx = torch.nonzero(~mask).flatten()
        n_test = len(self.data.test_labels)
        if self.val_fraction is None:
            fixed = self.data.val_positions
            if fixed is None:
                raise ValueError("val_fraction=None needs a dataset with fixed val_positions "
                                 "(ForgetSplit.from_datasets with val= a Dataset or indices)")
            held = torch.zeros(n_test, dtype=torch.bool)
            held[fixed] = True
            self._val_idx, self._test_idx = fixed, torch.nonzero(~held).flatten()
        else:
            self._val_idx, self._test_idx = _hold_out(n_test, self.val_fraction, self.val_seed)
        if self.forget_class_ids:
            tmask = torch.isin(self.data.test_labels, torch.tensor(self.forget_class_ids))
        else:
            tmask = torch.zeros(n_test, dtype=torch.bool)
        self._test_forget_idx = self._test_idx[tmask[self._test_idx]]
        self._test_retain_idx = self._test_idx[~tmask[self._test_idx]]
        self._val_forget_idx = self._val_idx[tmask[self._val_idx]]
        self._val_retain_idx = self._val_idx[~tmask[self._val_idx]]

    @property
    def kind(self) -> str:
        return str(self.spec["type"])

    @property
    def forget(self) -> DataPart:
        return DataPart(self.data, "train", self.forget_idx, "forget")

    @property
    def retain(self) -> DataPart:
        return DataPart(self.data, "train", self.retain_idx, "retain")

    @property
    def full(self) -> DataPart:
        return DataPart(self.data, "train", torch.arange(len(self.data.train_labels)), "train")

    @property
    def test(self) -> DataPart:
        """The evaluation part: the dataset's test set minus the validation hold-out. Methods
        never read it."""
        return DataPart(self.data, "test", self._test_idx, "test")

    @property
    def batch_size(self) -> int:
        """The user's batch size (``from_datasets``; 128 for the built-in datasets), for
        method configs: ``fu.FTConfig(batch_size=split.batch_size)``."""
        return self.data.loader.batch_size

    @property
    def val(self) -> DataPart:
        """The seeded validation hold-out (``val_fraction`` of the dataset's test set, or the
        user's own validation set): what methods read for targets, step searches and
        guards."""
        return DataPart(self.data, "test", self._val_idx, "val")

    @property
    def val_forget(self) -> DataPart:
        """Validation samples of the forgotten classes (empty for sample forgetting)."""
        return DataPart(self.data, "test", self._val_forget_idx, "val_forget")

    @property
    def val_retain(self) -> DataPart:
        """Validation samples of the retained classes (all of ``val`` for sample forgetting)."""
        return DataPart(self.data, "test", self._val_retain_idx, "val_retain")

    def with_val(self, fraction: float = DEFAULT_VAL_FRACTION, seed: int = 0) -> ForgetSplit:
        """The same forget set with another validation hold-out (``fraction`` of the test set,
        drawn with ``seed``; 0 = no validation part). On a user split with its own validation
        set, the test part it draws from includes that set."""
        return ForgetSplit(self.data, self.forget_idx, dict(self.spec), list(self.forget_class_ids),
                           val_fraction=fraction, val_seed=seed)

    @property
    def test_forget(self) -> DataPart:
        return DataPart(self.data, "test", self._test_forget_idx, "test_forget")

    @property
    def test_retain(self) -> DataPart:
        return DataPart(self.data, "test", self._test_retain_idx, "test_retain")

    @property
    def forget_class_names(self) -> list[str]:
        return [self.data.classes[i] for i in self.forget_class_ids]

    def describe(self) -> str:
        if self.kind == "class":
            return f"class {', '.join(self.forget_class_names)} ({len(self.forget_idx)} samples)"
        if self.kind == "indices":
            return f"{len(self.forget_idx)} listed samples"
        return f"{len(self.forget_idx)} {self.kind} samples (seed {self.spec.get('seed')})"


def forget_classes(data: ImageDataset, classes: Iterable[str | int] | str | int) -> ForgetSplit:
    """Forget every training sample of one or several classes (names or indices)."""
    if isinstance(classes, (str, int)):
        classes = [classes]
    ids = [data.class_index(c) for c in classes]
    if not ids:
        raise ValueError("forget_classes needs at least one class name or index")
    if len(set(ids)) != len(ids):
        raise ValueError(f"class listed twice in {list(classes)!r}; give each class once")
    if len(ids) >= data.num_classes:
        raise ValueError(
            f"cannot forget all {data.num_classes} classes of {data.name}; leave at least one"
        )
    ids = sorted(ids)
    idx = torch.nonzero(torch.isin(data.train_labels, torch.tensor(ids))).flatten()
    if idx.numel() == 0:
        raise ValueError(f"classes {ids} have no training samples in {data.name}")
    spec = {"type": "class", "classes": [data.classes[i] for i in ids]}
    return ForgetSplit(data, idx, spec, ids)


def forget_random(
    data: ImageDataset,
    count: int | None = None,
    *,
    fraction: float | None = None,
    seed: int = 0,
) -> ForgetSplit:
    """Forget ``count`` (or ``fraction`` of the) training samples drawn uniformly at random.
    The same seed always gives the same set."""
    n = len(data.train_labels)
    if (count is None) == (fraction is None):
        raise ValueError("forget_random needs exactly one of count= or fraction=")
    if fraction is not None:
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must be in (0, 1), got {fraction}")
        count = max(1, round(fraction * n))
    assert count is not None
    if isinstance(count, bool) or int(count) != count:
        raise ValueError(f"count must be a whole number, got {count!r}")
    count = int(count)
    if count <= 0:
        raise ValueError(f"forget count must be positive, got {count}")
    if count >= n:
        raise ValueError(
            f"forget count {count} must be smaller than the {n} training samples of {data.name}"
        )
    g = torch.Generator().manual_seed(int(seed))
    idx = torch.randperm(n, generator=g)[:count]
    spec: dict[str, Any] = {"type": "random", "count": count, "seed": int(seed)}
    if fraction is not None:
        spec["fraction"] = fraction
    return ForgetSplit(data, idx, spec)


def forget_indices(data: ImageDataset, ids: Sequence[int] | Tensor) -> ForgetSplit:
    """Forget an explicit list of training-set indices (no duplicates, all in range)."""
    t = torch.as_tensor(list(ids) if not isinstance(ids, Tensor) else ids, dtype=torch.long)
    t = t.flatten()
    n = len(data.train_labels)
    if t.numel() == 0:
        raise ValueError("forget_indices got an empty list; give at least one training index")
    vals, counts = t.unique(return_counts=True)
    if (counts > 1).any():
        dup = vals[counts > 1][:10].tolist()
        raise ValueError(f"duplicate ids in forget set: {dup}; give each index once")
    bad = t[(t < 0) | (t >= n)]
    if bad.numel():
        raise ValueError(f"ids out of range for {data.name} (0..{n - 1}): {bad[:10].tolist()}")
    if t.numel() >= n:
        raise ValueError("cannot forget every training sample; leave some to retain")
    return ForgetSplit(data, t, {"type": "indices", "ids": sorted(int(v) for v in t)})


def split_from_spec(data: ImageDataset, spec: dict[str, Any]) -> ForgetSplit:
    """Rebuild a split from its ``spec`` (as stored in checkpoint metadata)."""
    kind = spec.get("type")
    if kind == "class":
        return forget_classes(data, spec["classes"])
    if kind == "random":
        if "fraction" in spec:
            return forget_random(data, fraction=spec["fraction"], seed=spec.get("seed", 0))
        return forget_random(data, count=spec["count"], seed=spec.get("seed", 0))
    if kind == "indices":
        split = forget_indices(data, spec["ids"])
        if isinstance(spec.get("selected"), dict):  # how a hard set was chosen
            split.spec["selected"] = dict(spec["selected"])
        return split
    if kind in ("memorized", "mixed", "worst"):
        raise ValueError(f"a {kind} forget set is chosen by memorization scores or a model: "
                         "resolve it first (fu.forget_by_scores, or fastunlearn audit / study, "
                         "which train the selection models)")
    raise ValueError(f"unknown forget spec type {kind!r}; expected class, random or indices")


def forget_by_scores(data: ImageDataset, scores: Sequence[float] | Tensor | Any,
                     spec: str | dict[str, Any]) -> ForgetSplit:
    """Forget the training examples a ``memorized:`` / ``mixed:`` spec picks by per-example
    memorization ``scores`` (one per training example, higher = more memorized; e.g.
    :func:`fastunlearn.evaluate.memorization.proxy_scores` of ``fu.train``'s recorded
    ``history.confidence``, or a pool's
    :func:`~fastunlearn.evaluate.memorization.memorization_scores`).

    The split's spec is the resolved index list with how it was chosen, so it rebuilds without
    the scores (:func:`split_from_spec`)."""
    import numpy as np

    from fastunlearn.data.hard_sets import parse_hard_spec, select_by_scores

    asked = parse_hard_spec(spec) if isinstance(spec, str) else dict(spec)
    if asked.get("type") not in ("memorized", "mixed"):
        raise ValueError(f"forget_by_scores takes a memorized: or mixed: spec, got "
                         f"{asked.get('type')!r} (worst: needs a model: "
                         "fastunlearn.studies.worst_case.select_worst)")
    s = np.asarray(scores.detach().cpu() if isinstance(scores, Tensor) else scores,
                   dtype=np.float64).ravel()
    n = len(data.train_labels)
    if s.shape != (n,):
        raise ValueError(f"scores must hold one value per training example ({n}), got {s.size}")
    ids = select_by_scores(s, asked)
    split = forget_indices(data, torch.as_tensor(ids))
    split.spec["selected"] = {**asked, "by": "scores"}
    return split
