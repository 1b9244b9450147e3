"""Honest wall time and peak memory of a piece of work (device synchronised).

On CUDA the peak is ``torch.cuda.max_memory_allocated`` above the level at the start; on CPU a
background thread samples the process RSS (``/proc/self/statm``) every few milliseconds and the
peak is the maximum rise over the starting RSS (0.0 where /proc is unavailable).
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

import torch

from fastunlearn._device import synchronize

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
