"""Device helpers. Nothing here touches CUDA at import time."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``"auto"``/None → CUDA when available, else CPU; anything else is passed to torch."""
    if device is None or (isinstance(device, str) and device == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; use 'cpu'")
    return dev


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels so wall-clock timings are honest."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device("cpu")


# ------------------------------------------------------------------ machine names (one place)
def cpu_model_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else the platform's processor/machine."""
    import platform

    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    """For reports: ``CPU (x86_64, 1 torch thread, 2 cores)`` or the CUDA device's name."""
    import os
    import platform

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    n = torch.get_num_threads()
    threads = f"{n} torch thread{'s' if n != 1 else ''}"
    return f"CPU ({platform.machine()}, {threads}, {os.cpu_count()} cores)"


def slug(text: str) -> str:
    """``text`` as a file-name-safe lower-case slug (``"NVIDIA H100"`` → ``nvidia-h100``)."""
    import re

    return re.sub(r"[^a-z0-9]+", "-", str(text).lower()).strip("-")
