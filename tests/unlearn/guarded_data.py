"""Test data that refuses evaluation-only reads: a test-image store that only hands out the
validation positions, and split properties that raise — shared by the no-test-reads tests of
the methods and of the tuning script."""

from __future__ import annotations

import torch


class ForbiddenRead(AssertionError):
    """Raised when a method reads evaluation-only test data."""


class GuardedImages:
    """A test-image store that only hands out the positions in ``allowed`` (the validation
    hold-out) and records every read."""

    def __init__(self, images: torch.Tensor, allowed: torch.Tensor) -> None:
        self._images = images
        self.shape = tuple(images.shape)
        self._allowed = torch.zeros(len(images), dtype=torch.bool)
        self._allowed[allowed] = True
        self.reads = 0

    def __len__(self) -> int:
        return len(self._images)

    def __getitem__(self, index: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(index, dtype=torch.long).reshape(-1)
        bad = idx[~self._allowed[idx]]
        if bad.numel():
            raise ForbiddenRead(f"read {bad.numel()} test image(s) outside the validation part, "
                                f"e.g. {bad[:5].tolist()}")
        self.reads += int(idx.numel())
        return self._images[idx]


def forbid(name: str, by: str = "a method") -> property:
    """A property that raises :class:`ForbiddenRead` when ``split.<name>`` is read."""
    def getter(self):  # noqa: ANN001, ANN202
        raise ForbiddenRead(f"split.{name} was read by {by}")
    return property(getter)
