"""Dataset registry: ``@register_dataset("name")`` on a loader, ``load_dataset(name)``.

This module never imports the loaders: each source module in :mod:`fastunlearn.data.sources`
registers its datasets when imported, and the package ``fastunlearn/data/__init__.py`` imports
them all (importing any ``fastunlearn.data.*`` module runs it first).  A third-party loader
registers the same way, from its own module.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass

from fastunlearn.data.base import ImageDataset


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not on this machine; the message says where to put them."""


@dataclass(frozen=True)
class DatasetEntry:
    name: str
    loader: Callable[..., ImageDataset]
    description: str


_DATASETS: dict[str, DatasetEntry] = {}


def register_dataset(
    name: str, *, replace: bool = False,
) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Register ``loader(**kwargs) -> ImageDataset`` under ``name``; its docstring's first line
    is the description shown by ``fastunlearn list datasets``. A name registered twice is a
    ValueError unless ``replace=True`` (a user's in-process data, registered again).

    A name ending in ``:`` (e.g. ``"imagefolder:"``) takes a path argument: ``load_dataset(
    "imagefolder:/data/val")`` calls ``loader(path="/data/val", ...)``.
    """

    def deco(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        if name in _DATASETS and not replace:
            raise ValueError(f"dataset {name!r} is registered twice")
        doc = inspect.getdoc(fn) or ""
        _DATASETS[name] = DatasetEntry(name, fn, doc.splitlines()[0] if doc else "")
        return fn

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names (``imagefolder:PATH`` shown as ``imagefolder:``)."""
    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))


def dataset_descriptions() -> dict[str, str]:
    """Registered dataset name -> its one-line description (the loader's first doc line)."""
    return {n: _DATASETS[n].description for n in sorted(_DATASETS)}


def load_dataset(name: str, **kwargs) -> ImageDataset:
    """Load a registered dataset by name, e.g. ``"fashion-mnist"``, ``"digits"``,
    ``"imagefolder:/path/to/val"``. Keyword arguments go to the loader (``root=``,
    ``download=``, ``augment=`` …)."""
    key = name.strip().lower()
    if key in _DATASETS:  # an exact name first (user data registers as "user:<digest>")
        return _DATASETS[key].loader(**kwargs)
    if ":" in key:
        prefix, _, arg = name.strip().partition(":")
        entry = _DATASETS.get(prefix.lower() + ":")
        if entry is None or not arg:
            raise ValueError(_unknown(name))
        return entry.loader(path=arg, **kwargs)
    entry = _DATASETS.get(key)
    if entry is None:
        raise ValueError(_unknown(name))
    return entry.loader(**kwargs)


def _unknown(name: str) -> str:
    names = ", ".join(n + ("PATH" if n.endswith(":") else "") for n in sorted(_DATASETS))
    return f"unknown dataset {name!r}; choose one of: {names}"

