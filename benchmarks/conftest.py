"""Shared pieces of the benchmark suites (``make bench`` = ``pytest benchmarks --benchmark-only``).

Every ``bench_*.py`` file is collected as a test module. Each suite times, per case, a baseline
(a plain forward+backward of the same batch) and every provider **interleaved round by round**
(one warm-up round, then medians), so load changes on a shared machine hit all of them alike,
and appends one CSV row per (case, provider) to ``results/<device>.csv``.

Fixtures for any suite:

* ``bench`` — this module, the namespace of the helpers below (a script run of a suite gets
  the same object with ``import conftest``: the script's folder is first on ``sys.path``).
* ``bench_device`` — the device of the run (CUDA when present, else CPU).
* ``record_rows`` — ``record_rows(rows) -> Path``: appends rows to ``results/<device>.csv`` and
  copies each provider's ratio into the pytest-benchmark ``extra_info``.

Helpers: :func:`bench_threads`, :func:`device_name`, :func:`versions`, :func:`time_rounds`,
:func:`make_rows`, :func:`append_rows`. CPU runs use ``FASTUNLEARN_BENCH_THREADS`` threads
(default 2, the protocol of DESIGN §4); the CSV is named after them (``cpu-2threads.csv``), a
GPU run after the device (``nvidia-h100-80gb-hbm3.csv``). ``FASTUNLEARN_BENCH_RESULTS=DIR``
sends the rows elsewhere (trial runs).
"""

from __future__ import annotations

import csv
import datetime as _dt
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

from fastunlearn._device import slug
from fastunlearn._timing import measure

RESULTS = Path(__file__).parent / "results"
#: Columns of ``results/<device>.csv`` (one row per suite, case, provider and run). The first
#: ten are the original layout, so a writer that knows only those still lines up.
FIELDS = ("case", "provider", "device", "seconds", "ratio", "peak_mem_mb", "rel_err", "repeats",
          "versions", "time", "suite", "cpu_ratio")


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Module | None:
    # a file named on the command line is collected by pytest itself (no second copy here)
    if (file_path.suffix == ".py" and file_path.name.startswith("bench_")
            and not parent.session.isinitpath(file_path)):
        return pytest.Module.from_parent(parent, path=file_path)
    return None


# --------------------------------------------------------------------------- helpers ---------
def bench_threads() -> int:
    """CPU threads of a benchmark run: ``$FASTUNLEARN_BENCH_THREADS``, default 2."""
    raw = os.environ.get("FASTUNLEARN_BENCH_THREADS", "2")
    if not raw.isdigit() or int(raw) < 1:
        raise ValueError(f"FASTUNLEARN_BENCH_THREADS must be a positive integer, got {raw!r}")
    return int(raw)


def results_dir() -> Path:
    """``$FASTUNLEARN_BENCH_RESULTS`` (for trial runs), default ``benchmarks/results``."""
    return Path(os.environ.get("FASTUNLEARN_BENCH_RESULTS", RESULTS))


def bench_device() -> torch.device:
    """CUDA when present, else CPU (with :func:`bench_threads` threads, set here)."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    torch.set_num_threads(bench_threads())
    return torch.device("cpu")


def device_name() -> str:
    """``cpu-<n>threads`` or the CUDA device name slugified (``nvidia-h100-80gb-hbm3``)."""
    if torch.cuda.is_available():
        return slug(torch.cuda.get_device_name(0))
    return f"cpu-{bench_threads()}threads"


def versions(*packages: str) -> str:
    """``python=…;torch=…;timm=…;fastunlearn=…`` plus the named distributions (installed)."""
    out = [f"python={platform.python_version()}", f"torch={torch.__version__}"]
    for dist in ("timm", "fastunlearn", *packages):
        try:
            out.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ";".join(out)


@dataclass
class Timing:
    """Medians over the timed rounds: wall ``seconds`` (device synchronised) and process CPU
    seconds (``time.process_time``: less disturbed by other jobs on a shared CPU); the largest
    peak memory (MB above the start, see :class:`fastunlearn._timing.measure`)."""

    seconds: float
    cpu_seconds: float
    peak_mem_mb: float
    runs: list[float] = field(default_factory=list)


def time_rounds(
    fns: Mapping[str, Callable[[], Any]], device: torch.device, repeats: int = 5,
    warmup: int = 1,
) -> tuple[dict[str, Timing], dict[str, Any]]:
    """Run every ``fns[k]()`` once per round, interleaved, ``warmup + repeats`` rounds; return
    the :class:`Timing` of each over the last ``repeats`` rounds and each one's last result."""
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats ≥ 1 and warmup ≥ 0, got {repeats}, {warmup}")
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    peak = dict.fromkeys(fns, 0.0)
    results: dict[str, Any] = {}
    for r in range(warmup + repeats):
        for k, fn in fns.items():
            c0 = time.process_time()
            with measure(device) as m:
                results[k] = fn()
            c1 = time.process_time()
            if r >= warmup:
                wall[k].append(m.seconds)
                cpu[k].append(c1 - c0)
                peak[k] = max(peak[k], m.peak_mem_mb)
    return ({k: Timing(statistics.median(wall[k]), statistics.median(cpu[k]), peak[k], wall[k])
             for k in fns}, results)


def make_rows(
    suite: str, case: str, timings: Mapping[str, Timing], baseline: str, repeats: int,
    rel_err: Mapping[str, float] | None = None, packages: Mapping[str, Sequence[str]] | None = None,
) -> list[dict[str, object]]:
    """One row per provider of ``timings``; ``ratio`` / ``cpu_ratio`` are its wall / CPU median
    over that of ``timings[baseline]`` (the same rounds). ``packages[provider]`` adds the
    versions of that provider's distributions."""
    base = timings[baseline]
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    rows = []
    for k, t in timings.items():
        err = (rel_err or {}).get(k)
        rows.append({
            "suite": suite, "case": case, "provider": k, "device": device_name(),
            "seconds": round(t.seconds, 4), "ratio": round(t.seconds / base.seconds, 3),
            "cpu_ratio": round(t.cpu_seconds / max(base.cpu_seconds, 1e-9), 3),
            "peak_mem_mb": round(t.peak_mem_mb, 1),
            "rel_err": "" if err is None else f"{err:.1e}", "repeats": repeats,
            "versions": versions(*(packages or {}).get(k, ())), "time": stamp,
        })
    return rows


def append_rows(rows: Sequence[Mapping[str, object]], path: Path | None = None) -> Path:
    """Append ``rows`` (keys ⊆ :data:`FIELDS`) to ``path`` (default
    ``<results_dir()>/<device>.csv``).
    A file written with other columns is rewritten once with :data:`FIELDS` (missing → empty)."""
    path = path or results_dir() / f"{device_name()}.csv"
    extra = sorted({k for r in rows for k in r} - set(FIELDS))
    if extra:
        raise ValueError(f"unknown CSV column(s) {extra}; the columns are {FIELDS}")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            if tuple(reader.fieldnames or ()) != FIELDS:
                old = [{k: v for k, v in r.items() if k in FIELDS} for r in reader]
                with path.open("w", newline="") as out:
                    w = csv.DictWriter(out, fieldnames=FIELDS)
                    w.writeheader()
                    w.writerows(old)
    new = not path.exists() or not path.stat().st_size
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


def script_args(argv: Sequence[str], cases: Sequence[str],
                default_repeats: int | None) -> tuple[list[str], int | None]:
    """Script mode's ``[CASE…] [--repeats N]``: the cases named (default all) and the repeats."""
    repeats = int(argv[list(argv).index("--repeats") + 1]) if "--repeats" in argv else \
        default_repeats
    return [a for a in argv if a in cases] or list(cases), repeats


def format_rows(rows: Sequence[Mapping[str, object]]) -> str:
    """Plain-text table of rows (script mode)."""
    return "".join(f"{r['case']:20s} {r['provider']:26s} {float(str(r['seconds'])):9.3f}s  "
                   f"x{float(str(r['ratio'])):6.2f} (cpu x{float(str(r['cpu_ratio'])):6.2f})  "
                   f"peak {float(str(r['peak_mem_mb'])):8.1f} MB  err {r['rel_err'] or '-'}\n"
                   for r in rows)


# --------------------------------------------------------------------------- fixtures --------
@pytest.fixture(scope="session")
def bench() -> ModuleType:
    """The helpers of this module (``bench.time_rounds``, ``bench.make_rows``, …)."""
    return sys.modules[__name__]


@pytest.fixture(name="bench_device", scope="session")
def _bench_device_fixture() -> torch.device:
    return bench_device()


@pytest.fixture
def record_rows(benchmark: Any) -> Callable[[Sequence[Mapping[str, object]]], Path]:
    """``record_rows(rows)``: append to ``results/<device>.csv``; ratios into ``extra_info``."""

    def record(rows: Sequence[Mapping[str, object]]) -> Path:
        path = append_rows(rows)
        benchmark.extra_info.update({str(r["provider"]): r["ratio"] for r in rows})
        benchmark.extra_info["csv"] = str(path)
        return path

    return record
