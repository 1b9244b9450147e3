"""Dataset registry: ``@register_dataset("name")`` on a loader, ``load_dataset(name)``."""

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
    name: str,
) -> Callable[[Callable[..., ImageDataset]], Callable[..., ImageDataset]]:
    """Register ``loader(**kwargs) -> ImageDataset`` under ``name``; its docstring's first line
    is the description shown by ``fastunlearn list datasets``.

    A name ending in ``:`` (e.g. ``"imagefolder:"``) takes a path argument: ``load_dataset(
    "imagefolder:/data/val")`` calls ``loader(path="/data/val", ...)``.
    """

    def deco(fn: Callable[..., ImageDataset]) -> Callable[..., ImageDataset]:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} is registered twice")
        doc = inspect.getdoc(fn) or ""
        _DATASETS[name] = DatasetEntry(name, fn, doc.splitlines()[0] if doc else "")
        return fn

    return deco


def list_datasets(pattern: str = "*") -> list[str]:
    """Registered dataset names (``imagefolder:PATH`` shown as ``imagefolder:``)."""
    _ensure_builtin()
    return sorted(n for n in _DATASETS if fnmatch.fnmatch(n, pattern))


def dataset_descriptions() -> dict[str, str]:
    _ensure_builtin()
    return {n: _DATASETS[n].description for n in sorted(_DATASETS)}


def load_dataset(name: str, **kwargs) -> ImageDataset:
    """Load a registered dataset by name, e.g. ``"fashion-mnist"``, ``"digits"``,
    ``"imagefolder:/path/to/val"``. Keyword arguments go to the loader (``root=``,
    ``download=``, ``augment=`` …)."""
    _ensure_builtin()
    key = name.strip().lower()
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


def _ensure_builtin() -> None:
    # Importing the module registers the built-in loaders (kept lazy: torchvision is heavy).
    from fastunlearn.data import datasets  # noqa: F401
