"""Integrated-gradient saliency over the weights as a multiple of ``m`` plain forward+backward.

pytest-benchmark suite (``make bench``) and a plain script::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_ig.py [CASE…] [--repeats N] [--steps M]

:func:`fastunlearn.kernels.ig.integrated_gradients` with ``m`` steps costs ``m`` forward+backward
passes; the target (issue 4) is ≤ 1.05 × ``m`` × (fwd+bwd). Per case, each round times, in
turn (conftest.time_rounds: one warm-up round, medians of the rest; model in eval mode):

* ``{m}x fwd+bwd`` — the baseline: ``m`` times zero_grad, summed cross-entropy of the batch,
  ``backward()``;
* ``fastunlearn-riemann`` / ``fastunlearn-gausslegendre`` — ``integrated_gradients(model,
  (x, y), steps=m, method=…)`` from the zero baseline;
* ``reference-gausslegendre`` — the plain way: per step a fresh dict of interpolated weights
  through ``torch.func.functional_call`` and ``autograd.grad`` (the check, also timed).

Each fastunlearn result must match the reference of the same rule (rel. err ≤ 1e-4, fp32).
The ``ratio`` column of ``benchmarks/results/<device>.csv`` is relative to the baseline, i.e.
already divided by ``m``.
"""

from __future__ import annotations

import sys

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fastunlearn.kernels.ig import IG_METHODS, integrated_gradients, quadrature
from fastunlearn.models import create_model

SUITE = "ig"
CASES = {  # name: (model, channels, image size, batch)
    "small_cnn-28px-b128": ("small_cnn", 1, 28, 128),
    "resnet18-32px-b32": ("resnet18", 3, 32, 32),
}
#: (warm-up, timed) rounds per case: the small case takes ~0.2 s a call on 2 CPU threads, so it
#: gets more of both (its first rounds run several times slower while oneDNN and the
#: allocator settle)
ROUNDS = {"small_cnn-28px-b128": (3, 25), "resnet18-32px-b32": (1, 5)}
STEPS = 8
TOLERANCE = 1e-4
TARGET = 1.05


def setup_case(case: str, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    name, chans, size, batch = CASES[case]
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=chans, img_size=size).to(device).eval()
    x = torch.randn(batch, chans, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    return model, x, y


def fwd_bwd_loop(model: nn.Module, x: Tensor, y: Tensor, steps: int) -> None:
    for _ in range(steps):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y, reduction="sum").backward()


def reference_ig(model: nn.Module, x: Tensor, y: Tensor, steps: int,
                 method: str) -> dict[str, Tensor]:
    """Zero-baseline IG the plain way: a new interpolated parameter dict per step through
    ``functional_call``; mean loss, like ``integrated_gradients``' default."""
    params = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    buffers = dict(model.named_buffers())
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    for a, w in zip(*quadrature(steps, method)):
        pa = {n: (a * p).requires_grad_() for n, p in params.items()}
        loss = F.cross_entropy(functional_call(model, (pa, buffers), (x,)), y)
        for n, g in zip(pa, torch.autograd.grad(loss, list(pa.values()))):
            total[n] += w * g
    return {n: params[n] * total[n] for n in params}


def rel_err(got: dict[str, Tensor], ref: dict[str, Tensor]) -> float:
    """max over parameters of max|got − ref| / max|ref|."""
    return max(((got[n] - r).abs().max() / r.abs().max().clamp_min(1e-30)).item()
               for n, r in ref.items())


def run_case(bench, case: str, steps: int = STEPS,  # noqa: ANN001 - the conftest module
             repeats: int | None = None) -> list[dict[str, object]]:
    """Time the baseline, both quadrature rules and the reference interleaved; CSV rows.
    ``repeats`` (timed rounds) defaults to the case's entry in :data:`ROUNDS`."""
    warmup, default = ROUNDS[case]
    repeats = repeats or default
    device = bench.bench_device()
    model, x, y = setup_case(case, device)
    baseline = f"{steps}x fwd+bwd"
    fns = {baseline: lambda: fwd_bwd_loop(model, x, y, steps)}
    for method in IG_METHODS:
        fns[f"fastunlearn-{method}"] = (
            lambda method=method: integrated_gradients(model, (x, y), steps=steps, method=method))
    fns["reference-gausslegendre"] = lambda: reference_ig(model, x, y, steps, "gausslegendre")
    timings, results = bench.time_rounds(fns, device, repeats, warmup=warmup)
    errs = {"reference-gausslegendre": 0.0}
    for method in IG_METHODS:
        ref = (results["reference-gausslegendre"] if method == "gausslegendre"
               else reference_ig(model, x, y, steps, method))
        errs[f"fastunlearn-{method}"] = rel_err(results[f"fastunlearn-{method}"], ref)
    return bench.make_rows(SUITE, case, timings, baseline, repeats, errs)


# --------------------------------------------------------------------------- pytest ----------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("case", list(CASES))
    def test_ig_ratio(benchmark, bench, record_rows, case: str) -> None:  # noqa: ANN001
        rows = benchmark.pedantic(run_case, args=(bench, case), rounds=1, iterations=1)
        record_rows(rows)
        for row in rows:
            if row["rel_err"]:
                assert float(str(row["rel_err"])) <= TOLERANCE, row


def main(argv: list[str]) -> None:
    import conftest as bench  # this folder is sys.path[0] when run as a script

    steps = int(argv[argv.index("--steps") + 1]) if "--steps" in argv else STEPS
    cases, repeats = bench.script_args(argv, CASES, None)
    for case in cases:
        rows = run_case(bench, case, steps, repeats)
        path = bench.append_rows(rows)
        sys.stdout.write(bench.format_rows(rows))
        sys.stdout.write(f"-> {path}  (target: fastunlearn ratio ≤ {TARGET})\n")
        bad = [r for r in rows if r["rel_err"] and float(str(r["rel_err"])) > TOLERANCE]
        if bad:
            raise SystemExit(f"IG disagrees with the reference beyond {TOLERANCE}: {bad}")


if __name__ == "__main__":
    main(sys.argv[1:])
