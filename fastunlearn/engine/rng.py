"""Seeded randomness that leaves the caller's global RNG as it found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


@contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[torch.Generator]:
    """Inside the block torch's global RNG is seeded with ``seed`` (dropout, ``randn`` in
    initialisers: reproducible runs) and a CPU generator seeded alike is yielded for
    shuffling; on exit the global RNG state (CPU, and ``device``'s CUDA generator when it is
    a CUDA device) is restored, so a library call never changes the user's random stream."""
    dev = torch.device(device) if device is not None else torch.device("cpu")
    cuda = [dev.index if dev.index is not None else torch.cuda.current_device()] \
        if dev.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield torch.Generator().manual_seed(seed)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG and return a CPU generator for shuffling. Only for code that
    already runs inside :func:`seeded` or another ``fork_rng`` (``fu.unlearn`` runs every
    method inside one), so the caller's global RNG is restored afterwards."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
