"""Atomic file writes: stage under a temp name beside the target (fsynced, mode ``0o666 &
~umask``), then rename onto it and fsync the directory. A crash, kill or full disk leaves the
previous file or the new one, never a torn one.

A leaf module (standard library only) so that every writer — checkpoints, model weights, study
results — can share it without importing each other.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

__all__ = ["atomic_write_bytes", "commit", "current_umask", "stage"]


def current_umask() -> int:
    """The process umask (read from ``/proc`` where possible: setting it to query it is racy)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def stage(path: Path, data: bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` (mode ``0o666 & ~umask``, fsynced) and
    return the temp file's path; nothing is left behind on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            if hasattr(os, "fchmod"):  # mkstemp creates 0600 whatever the umask
                os.fchmod(fh.fileno(), 0o666 & ~current_umask())
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def commit(tmp: Path, path: Path) -> None:
    """Rename the staged ``tmp`` onto ``path`` (atomic) and make the rename durable."""
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # the directory entry too, so a power cut cannot undo the rename
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (temp file + fsync + rename), with the
    permissions the umask gives a new file."""
    commit(stage(path, data), path)


def jsonable(obj: object) -> object:
    """``obj`` with dict keys as strings, tuples as lists and NaN/inf as None (valid JSON for
    ``metrics.json`` and the CLI's ``--json``)."""
    import math

    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
