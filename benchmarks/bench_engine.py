"""Overhead of the engine's step runner over a plain hand-written PyTorch loop.

pytest-benchmark suite (``make bench``) and a plain script::

    FASTUNLEARN_BENCH_THREADS=2 .venv/bin/python benchmarks/bench_engine.py [CASE…] [--repeats N]

Per case, the same model (two copies from one initialisation), data and optimiser (SGD,
momentum 0.9, weight decay 5e-4, cosine schedule) train one pass of ``STEPS`` batches:

* ``plain`` — ``for x, y in part.batches(...)``: set the cosine lr, ``zero_grad``, forward,
  cross-entropy, ``backward``, ``step``: what anyone would write by hand;
* ``runner`` — the same pass through :func:`fastunlearn.engine.run_epochs` and
  :class:`~fastunlearn.engine.StepRunner` (finite-loss check, ``LambdaLR`` schedule, guard
  hooks, progress bar object, timing) — the path ``fu.train`` and every method take.

Rounds interleave the two (conftest.time_rounds: one warm-up round, medians of the rest).
``ratio`` = runner seconds / plain seconds; steps/s relative to the plain loop = 1 / ratio
(goal ≥ 0.97 on CPU for small_cnn and resnet18). ``rel_err``: the two copies' weights after
the first round (bit-identical updates give 0).
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn.functional as F

from fastunlearn.data import load_dataset
from fastunlearn.engine import StepRunner, run_epochs
from fastunlearn.models import create_model

SUITE = "engine"
CASES = {  # name: (model, channels, image size, batch, steps per round)
    "small_cnn-28px-b128": ("small_cnn", 1, 28, 128, 20),
    "resnet18-32px-b32": ("resnet18", 3, 32, 32, 10),
}
REPEATS = 7
BASELINE = "plain"
GOAL = 0.97  # runner steps/s ≥ GOAL × plain steps/s


def run_case(bench, case: str, repeats: int = REPEATS) -> list[dict[str, object]]:  # noqa: ANN001
    device = bench.bench_device()
    name, chans, size, batch, steps = CASES[case]
    data = load_dataset("synthetic", num_classes=10, channels=chans, size=size,
                        train_per_class=batch * steps // 10, test_per_class=1)
    part = data.train
    torch.manual_seed(0)
    a = create_model(name, data).to(device).train()
    b = create_model(name, data).to(device).train()
    b.load_state_dict(a.state_dict())
    lr, total = 0.01, steps * (repeats + 1)

    def sgd(m: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.SGD(m.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)

    opt_a, opt_b = sgd(a), sgd(b)
    gen_a, gen_b = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    state = {"step": 0}
    runner = StepRunner(opt_b, lr, total, schedule="cosine", progress=False)

    def plain() -> None:
        for x, y in part.batches(batch, shuffle=True, generator=gen_a, device=device):
            s = state["step"]
            for g in opt_a.param_groups:
                g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(1.0, s / total)))
            loss = F.cross_entropy(a(x), y)
            opt_a.zero_grad(set_to_none=True)
            loss.backward()
            opt_a.step()
            state["step"] = s + 1

    def engine() -> None:
        run_epochs(b, part, lambda net, x, y: F.cross_entropy(net(x), y), runner, 1, batch,
                   gen_b, device)

    plain()
    engine()
    err = max(float((pa - pb).detach().abs().max()) / max(float(pa.detach().abs().max()), 1e-30)
              for pa, pb in zip(a.parameters(), b.parameters()))
    timings, _ = bench.time_rounds({"plain": plain, "runner": engine}, device, repeats,
                                   warmup=0)
    runner.close()
    return bench.make_rows(SUITE, case, timings, BASELINE, repeats, {"runner": err})


def summary(rows: list[dict[str, object]]) -> str:
    by = {r["provider"]: r for r in rows}
    rel = 1 / float(str(by["runner"]["ratio"]))
    mark = "ok" if rel >= GOAL else f"MISSED goal {GOAL}"
    return f"{rows[0]['case']:22s} runner steps/s = {rel:.3f} × plain loop ({mark})\n"


try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("case", list(CASES))
    def test_engine_overhead(benchmark, bench, record_rows, case: str) -> None:  # noqa: ANN001
        rows = benchmark.pedantic(run_case, args=(bench, case), rounds=1, iterations=1)
        record_rows(rows)
        by = {r["provider"]: r for r in rows}
        assert float(str(by["runner"]["rel_err"])) < 1e-6  # the same updates


def main(argv: list[str]) -> None:
    import conftest as bench  # this folder is sys.path[0] when run as a script

    cases, repeats = bench.script_args(argv, CASES, REPEATS)
    for case in cases:
        rows = run_case(bench, case, repeats)
        path = bench.append_rows(rows)
        sys.stdout.write(bench.format_rows(rows) + summary(rows))
        sys.stdout.flush()
    sys.stdout.write(f"-> {path}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
