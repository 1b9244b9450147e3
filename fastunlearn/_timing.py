"""Honest wall time and peak memory of a piece of work (device synchronised).

On CUDA the peak is ``torch.cuda.max_memory_allocated`` above the level at the start; on CPU a
background thread samples the process RSS (``/proc/self/statm``) every few milliseconds and the
peak is the maximum rise over the starting RSS (0.0 where /proc is unavailable).

:func:`measure_cold_warm` runs a piece of work several times and reports the first (cold) and
the later (warm) runs separately.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import torch

from fastunlearn._device import synchronize

T = TypeVar("T")

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except OSError:
        return 0


@dataclass
class Measurement:
    seconds: float = 0.0
    peak_mem_mb: float = 0.0


class measure:  # noqa: N801 - used as a context manager, reads like a function
    """``with measure(device) as m: ...`` → ``m.seconds``, ``m.peak_mem_mb``."""

    def __init__(self, device: torch.device, interval_s: float = 0.005) -> None:
        self.device = device
        self.interval_s = interval_s
        self.result = Measurement()
        self._stop = threading.Event()
        self._peak = 0
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, _rss_bytes())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> Measurement:
        synchronize(self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = _rss_bytes()
            self._peak = self._base
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self.result

    def __exit__(self, *exc: object) -> None:
        synchronize(self.device)
        self.result.seconds = time.perf_counter() - self._t0
        if self.device.type == "cuda":
            peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
            peak = max(self._peak, _rss_bytes())
        self.result.peak_mem_mb = max(0, peak - self._base) / 2**20


@dataclass
class ColdWarm:
    """Timings of the same work run several times in one process.

    ``cold_s`` is the first run (it pays one-off costs: lazy imports, ``torch.compile``,
    cuDNN autotuning, allocator growth); ``warm_s`` the median of the later runs (NaN with a
    single run); ``runs_s`` every run; ``peak_mem_mb`` the largest peak of any run.
    """

    cold_s: float
    warm_s: float
    runs_s: list[float]
    peak_mem_mb: float = 0.0

    @classmethod
    def from_runs(cls, seconds: list[float], peaks_mb: list[float] | None = None) -> ColdWarm:
        if not seconds:
            raise ValueError("ColdWarm needs at least one run")
        later = sorted(seconds[1:])
        if not later:
            warm = float("nan")
        elif len(later) % 2:
            warm = later[len(later) // 2]
        else:
            warm = 0.5 * (later[len(later) // 2 - 1] + later[len(later) // 2])
        return cls(float(seconds[0]), float(warm), [float(s) for s in seconds],
                   max(peaks_mb) if peaks_mb else 0.0)


def measure_cold_warm(
    fn: Callable[[], T], device: torch.device, runs: int = 2
) -> tuple[T, ColdWarm]:
    """Run ``fn()`` ``runs`` times under :class:`measure`; return the last result and the
    :class:`ColdWarm` timings."""
    if int(runs) != runs or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs}")
    seconds: list[float] = []
    peaks: list[float] = []
    result: T | None = None
    for _ in range(int(runs)):
        with measure(device) as m:
            result = fn()
        seconds.append(m.seconds)
        peaks.append(m.peak_mem_mb)
    return result, ColdWarm.from_runs(seconds, peaks)  # type: ignore[return-value]
