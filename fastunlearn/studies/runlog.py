"""What every run records besides its metrics: its log file and the machine it ran on.

A leaf module (no study imports) so that the pool, the executors and the audit share one
definition.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch


class _run_log:  # noqa: N801 - context manager
    """Send this package's log records to ``dir/run.log`` while the run lasts."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir

    def __enter__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.dir / "run.log")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self.logger = logging.getLogger("fastunlearn")
        self.old = (self.logger.level, self.logger.propagate)
        # INFO and up go to the file; the console (root handlers) still sees what it saw
        # before — only records at the level the package was already set to pass on.
        self.forward = _Forward(self.logger.getEffectiveLevel())
        self.logger.setLevel(min(logging.INFO, self.logger.getEffectiveLevel()))
        self.logger.propagate = False
        self.logger.addHandler(self.handler)
        self.logger.addHandler(self.forward)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.removeHandler(self.forward)
        self.logger.setLevel(self.old[0])
        self.logger.propagate = self.old[1]
        self.handler.close()


class _Forward(logging.Handler):
    """Pass records at or above ``level`` on to the root logger's handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        for h in root.handlers:
            if record.levelno >= h.level:
                h.handle(record)



def machine(device: str | torch.device | None = "auto") -> str:
    """The machine a run ran on, as every report names it: the CUDA device's name, or
    ``CPU (x86_64, 2 torch threads, 8 cores)`` — ``device`` (``"auto"``: CUDA when there is
    one) decides which, so a ``--device cpu`` study on a GPU host records its CPU.
    One definition: :func:`fastunlearn.evaluate.report.machine_description`."""
    from fastunlearn._device import resolve_device
    from fastunlearn.evaluate.report import machine_description

    return machine_description(resolve_device(device))

