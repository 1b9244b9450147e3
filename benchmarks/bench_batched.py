"""Model-batched training (one vmapped step for K models) against K sequential training steps.

pytest-benchmark suite (``make bench``: ``pytest benchmarks --benchmark-only``) and a plain
script::

    FASTUNLEARN_BENCH_THREADS=2 OMP_NUM_THREADS=2 .venv/bin/python \\
        benchmarks/bench_batched.py [CASE…] [--repeats N]

Per case, K freshly initialised models of the case's architecture, Fashion-MNIST-shaped
batches (1×28×28, B = 128, 10 classes, random values; data loading is not timed). A round
times one training step of all K models each way, interleaved round by round
(conftest.time_rounds, medians):

* ``sequential`` — the baseline: K steps one after the other, each exactly as
  :func:`fastunlearn.train.train` steps a model (its own ``torch.optim.SGD``; fp16 autocast and
  a GradScaler on CUDA) — :class:`fastunlearn.kernels.batched.SequentialSteps`;
* ``batched`` — one ``vmap(functional_call)`` forward/backward over the stacked parameters and
  the stacked SGD update — :class:`fastunlearn.kernels.batched.BatchedSteps`, what
  ``train_many(batched=True)`` runs.

``ratio`` / ``cpu_ratio`` = batched wall / process-CPU seconds over sequential's (below 1 =
batched is faster; speed-up = 1 / ratio). ``rel_err``: the weights after the first step (the
warm-up round), batched against sequential from the same start (‖Δw‖ / ‖w‖ over all K
models; ≤ 1e-5 on CPU, ≤ 1e-3 on CUDA with TF32 convolutions and fp16 autocast). The
script also prints what ``batched="auto"`` would pick (speed-up ≥ 1 +
:data:`fastunlearn.kernels.batched.MARGIN`). Rows go to ``benchmarks/results/<device>.csv``.
"""

from __future__ import annotations

import copy
import sys

import torch

from fastunlearn.kernels.batched import MARGIN, BatchedSteps, SequentialSteps
from fastunlearn.models import create_model
from fastunlearn.train import TrainConfig

SUITE = "batched"
CASES = {  # name: (model, K)
    "small_cnn-k8": ("small_cnn", 8),
    "small_cnn-k32": ("small_cnn", 32),
    "lenet5-k8": ("lenet5", 8),
    "lenet5-k32": ("lenet5", 32),
}
BATCH, SIZE, CLASSES = 128, 28, 10
REPEATS = 5
BASELINE = "sequential"
#: rel_err limit: fp32 on CPU; TF32 convolutions and fp16 autocast on CUDA.
TOLERANCE = {"cpu": 1e-5, "cuda": 1e-3}
#: GPU goal of the issue: batched ≥ 8× K sequential steps for K = 32 small CNNs (ratio ≤ 1/8).
GPU_TARGET = {"small_cnn-k32": 1 / 8, "lenet5-k32": 1 / 8}


def _rel_err(a: list[torch.nn.Module], b: BatchedSteps) -> float:
    """‖batched − sequential‖ / ‖sequential‖ over all weights of all K models."""
    stacked = dict(zip(b.names, b.params))
    err, scale = 0.0, 0.0
    for i, m in enumerate(a):
        for name, p in m.named_parameters():
            err += (stacked[name][i] - p).double().pow(2).sum().item()
            scale += p.double().pow(2).sum().item()
    return (err / max(scale, 1e-300)) ** 0.5


def run_case(bench, case: str, repeats: int = REPEATS) -> list[dict[str, object]]:  # noqa: ANN001
    """First step of both from the same weights (the check and the warm-up), then interleaved
    rounds of one step of all K models (``bench``: conftest)."""
    device = bench.bench_device()
    name, k = CASES[case]
    torch.manual_seed(0)
    models = [create_model(name, num_classes=CLASSES, in_chans=1, img_size=SIZE)
              for _ in range(k)]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(k, BATCH, 1, SIZE, SIZE, generator=g).to(device)
    y = torch.randint(0, CLASSES, (k, BATCH), generator=g).to(device)
    config = TrainConfig(lr=0.05, device=str(device), progress=False)
    seq = SequentialSteps([copy.deepcopy(m) for m in models], config, device)
    bat = BatchedSteps([copy.deepcopy(m) for m in models], config, device)
    seq.step(x, y, config.lr)
    bat.step(x, y, config.lr)
    err = _rel_err(seq.models, bat)
    timings, _ = bench.time_rounds(
        {"sequential": lambda: seq.step(x, y, config.lr),
         "batched": lambda: bat.step(x, y, config.lr)}, device, repeats, warmup=0)
    return bench.make_rows(SUITE, case, timings, BASELINE, repeats, {"batched": err})


def summary(rows: list[dict[str, object]]) -> str:
    """One line: seconds per step of all K each way, the speed-up, the choice of "auto"."""
    by = {r["provider"]: r for r in rows}
    s, b = float(str(by["sequential"]["seconds"])), float(str(by["batched"]["seconds"]))
    pick = "batched" if s / b >= 1 + MARGIN else "sequential"
    return (f"{rows[0]['case']:16s} sequential {s * 1e3:9.1f} ms  batched {b * 1e3:9.1f} ms  "
            f"speed-up {s / b:5.2f}x (cpu time {1 / float(str(by['batched']['cpu_ratio'])):5.2f}x)"
            f"  auto → {pick}\n")


def check(rows: list[dict[str, object]]) -> list[str]:
    """Messages for rows that miss: agreement always, the speed-up goal on CUDA."""
    bad = []
    tol = TOLERANCE["cuda" if torch.cuda.is_available() else "cpu"]
    for r in rows:
        if r["rel_err"] and float(str(r["rel_err"])) > tol:
            bad.append(f"{r['case']} {r['provider']}: weights rel_err {r['rel_err']} > {tol}")
        target = GPU_TARGET.get(str(r["case"]))
        if torch.cuda.is_available() and target and r["provider"] == "batched":
            if float(str(r["ratio"])) > target:
                bad.append(f"{r['case']}: batched {1 / float(str(r['ratio'])):.1f}x sequential "
                           f"< {1 / target:.0f}x")
    return bad


# --------------------------------------------------------------------------- pytest ----------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("case", list(CASES))
    def test_batched_ratio(benchmark, bench, record_rows, case: str) -> None:  # noqa: ANN001
        rows = benchmark.pedantic(run_case, args=(bench, case), rounds=1, iterations=1)
        record_rows(rows)
        assert not check(rows), check(rows)


def main(argv: list[str]) -> None:
    import conftest as bench  # this folder is sys.path[0] when run as a script

    cases, repeats = bench.script_args(argv, CASES, REPEATS)
    path = None
    for case in cases:
        rows = run_case(bench, case, repeats)
        path = bench.append_rows(rows)
        sys.stdout.write(bench.format_rows(rows) + summary(rows))
        for msg in check(rows):
            sys.stdout.write(f"MISSED: {msg}\n")
        sys.stdout.flush()
    sys.stdout.write(f"-> {path}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
