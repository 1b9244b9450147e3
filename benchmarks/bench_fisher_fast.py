"""Fisher diagonal as a multiple of one plain forward+backward, measured in the same run.

pytest-benchmark suite (``make bench``: ``pytest benchmarks --benchmark-only``) and a plain
script (``OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fisher_fast.py [--repeats N]``).
Both time, per case, a plain fwd+bwd of the summed loss and each provider, interleaved round by
round (median over rounds after one warm-up round), check that every provider agrees with the
reference (rel. err ≤ 1e-4, fp32) and append one CSV row per (case, provider) to
``benchmarks/results/<device>.csv``.

Providers: ``reference`` (torch.func vmap, :func:`fastunlearn.kernels.fisher.fisher_diagonal`)
and ``fastunlearn`` (:func:`fastunlearn.kernels.fisher_fast.fast_fisher_diagonal`); ``opacus``
and ``backpack`` are added when importable (the ``bench`` extra).
"""

from __future__ import annotations

import csv
import datetime as _dt
import platform
import statistics
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F

from fastunlearn._timing import measure
from fastunlearn.kernels.fisher import fisher_diagonal
from fastunlearn.kernels.fisher_fast import fast_fisher_diagonal
from fastunlearn.models import create_model

RESULTS = Path(__file__).parent / "results"
CASES = {  # name: (model, image size, batch)
    "resnet18-32px-b32": ("resnet18", 32, 32),
    "vit_tiny-32px-b32": ("vit_tiny", 32, 32),
}
THREADS = 2


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0).replace(" ", "-").lower()
    return f"cpu-{THREADS}threads"


def _setup(case: str) -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    name, size, batch = CASES[case]
    torch.manual_seed(0)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = create_model(name, num_classes=10, in_chans=3, img_size=size).to(dev).eval()
    x = torch.randn(batch, 3, size, size, device=dev)
    y = torch.randint(0, 10, (batch,), device=dev)
    return model, x, y


def providers(model: torch.nn.Module, x: torch.Tensor,
              y: torch.Tensor) -> dict[str, Callable[[], dict[str, torch.Tensor]]]:
    out = {
        "reference": lambda: fisher_diagonal(model, x, y, chunk_size=x.shape[0]),
        "fastunlearn": lambda: fast_fisher_diagonal(model, x, y),
    }
    return out


def fwd_bwd(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> None:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y, reduction="sum").backward()


def rel_err(got: dict[str, torch.Tensor], ref: dict[str, torch.Tensor]) -> float:
    return max(((got[n] - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
               for n, r in ref.items())


def run_case(case: str, repeats: int = 5) -> list[dict[str, object]]:
    """Interleaved rounds: fwd+bwd, then each provider; medians after a warm-up round."""
    torch.set_num_threads(THREADS)
    model, x, y = _setup(case)
    provs = providers(model, x, y)
    dev = x.device
    times: dict[str, list[float]] = {k: [] for k in ["fwd+bwd", *provs]}
    peak: dict[str, float] = {k: 0.0 for k in times}
    results: dict[str, dict[str, torch.Tensor]] = {}
    for r in range(repeats + 1):
        for k in times:
            with measure(dev) as m:
                if k == "fwd+bwd":
                    fwd_bwd(model, x, y)
                else:
                    results[k] = provs[k]()
            if r > 0:  # round 0 is the warm-up
                times[k].append(m.seconds)
                peak[k] = max(peak[k], m.peak_mem_mb)
    base = statistics.median(times["fwd+bwd"])
    versions = f"torch={torch.__version__};python={platform.python_version()}"
    stamp = _dt.datetime.now().isoformat(timespec="seconds")
    rows = []
    for k in times:
        err = 0.0 if k in ("fwd+bwd", "reference") else rel_err(results[k], results["reference"])
        rows.append({"case": case, "provider": k, "device": device_name(),
                     "seconds": round(statistics.median(times[k]), 4),
                     "ratio": round(statistics.median(times[k]) / base, 3),
                     "peak_mem_mb": round(peak[k], 1), "rel_err": f"{err:.1e}",
                     "repeats": repeats, "versions": versions, "time": stamp})
    return rows


def append_rows(rows: list[dict[str, object]]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{device_name()}.csv"
    new = not path.exists()
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        if new:
            w.writeheader()
        w.writerows(rows)
    return path


# --------------------------------------------------------------------------- pytest ----------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("case", list(CASES))
    def test_fisher_ratio(benchmark, case: str) -> None:  # noqa: ANN001 - pytest fixture
        rows = benchmark.pedantic(run_case, args=(case,), rounds=1, iterations=1)
        append_rows(rows)
        for row in rows:
            assert float(str(row["rel_err"])) <= 1e-4, row
        benchmark.extra_info.update({r["provider"]: r["ratio"] for r in rows})


def main(argv: list[str]) -> None:
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 5
    cases = [a for a in argv if a in CASES] or list(CASES)
    for case in cases:
        rows = run_case(case, repeats)
        path = append_rows(rows)
        for r in rows:
            sys.stdout.write(f"{r['case']:20s} {r['provider']:12s} {r['seconds']:8.3f}s "
                             f"ratio {r['ratio']:6.2f}  peak {r['peak_mem_mb']:8.1f} MB  "
                             f"err {r['rel_err']}\n")
        sys.stdout.write(f"-> {path}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
