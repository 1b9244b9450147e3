"""Paths and helpers shared by the dataset sources (no registrations here).

``DATA_ENV_VAR`` and ``CACHE_DIR`` are read when a loader runs (through :func:`env_dir` and
:func:`cache_dir`), so changing them here — e.g. ``monkeypatch.setattr(_common, "CACHE_DIR",
tmp)`` in a test — affects every source.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

#: Environment variable naming a directory that holds datasets.
DATA_ENV_VAR = "FASTUNLEARN_DATA"
#: Download / cache directory used when ``root`` is not given.
CACHE_DIR = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "fastunlearn"
#: Class names of the digit datasets (MNIST, scikit-learn digits).
DIGIT_CLASSES = [str(i) for i in range(10)]


def cache_dir() -> Path:
    """The download / cache directory (:data:`CACHE_DIR`, read at call time)."""
    return CACHE_DIR


def env_dir() -> Path | None:
    """The directory named by ``$FASTUNLEARN_DATA``, or None when it is unset or empty."""
    value = os.environ.get(DATA_ENV_VAR, "").strip()
    return Path(value).expanduser() if value else None


def dedupe(paths: Iterable[Path]) -> list[Path]:
    """``paths`` with ``~`` expanded and repeats dropped, in their first order."""
    out: list[Path] = []
    for p in paths:
        p = p.expanduser()
        if p not in out:
            out.append(p)
    return out


def mean_std(images: Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean/std of uint8 ``[N, C, H, W]`` images in [0, 1] units (std floored)."""
    x = images.double().div(255.0).transpose(0, 1).reshape(images.shape[1], -1)
    mean = tuple(float(v) for v in x.mean(dim=1))
    std = tuple(max(float(v), 1e-3) for v in x.std(dim=1))
    return mean, std
