"""Eager vs ``torch.compile``-d training steps (what ``compile=True`` does), with the compile
time reported apart.

pytest-benchmark suite (``make bench``: ``pytest benchmarks --benchmark-only``) and a plain
script::

    FASTUNLEARN_BENCH_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python \\
        benchmarks/bench_compile.py [CASE…] [--repeats N]

A step is what :func:`fastunlearn.train.train` does per batch: zero_grad, forward (the eager
module, or ``torch.compile(model)`` sharing its parameters), cross-entropy, backward, SGD step
— under fp16 autocast with a GradScaler on CUDA. Per case: the first compiled step alone
(``compiled-cold``: compilation included), then eager / compiled steps interleaved round by
round (conftest.time_rounds: one warm-up round, medians of the rest). ``ratio`` /
``cpu_ratio`` = wall / process-CPU seconds per step over eager's (below 1 = compiled is
faster; steps/s speed-up = 1 / ratio); ``compiled-cold`` minus ``compiled`` is the compile
time. ``rel_err``: the first step's loss, compiled vs eager. The script also prints what
``compile="auto"`` would choose (speed-up ≥ 1 + :data:`fastunlearn.kernels.compile.MARGIN`).
Rows go to ``benchmarks/results/<device>.csv``.
"""

from __future__ import annotations

import sys
import time
from contextlib import nullcontext

import torch
import torch.nn.functional as F

from fastunlearn._timing import measure
from fastunlearn.kernels.compile import MARGIN
from fastunlearn.models import create_model

SUITE = "compile"
CASES = {  # name: (model, channels, image size, batch)
    "small_cnn-28px-b128": ("small_cnn", 1, 28, 128),
    "resnet18-32px-b32": ("resnet18", 3, 32, 32),
    "vit_tiny-32px-b32": ("vit_tiny", 3, 32, 32),
}
REPEATS = 7
BASELINE = "eager"
#: GPU target of the issue: compiled ≥ 1.3× eager steps/s for resnet18 and vit_tiny.
GPU_TARGET = {"resnet18-32px-b32": 1.3, "vit_tiny-32px-b32": 1.3}


def run_case(bench, case: str, repeats: int = REPEATS) -> list[dict[str, object]]:  # noqa: ANN001
    """Cold compiled step, then interleaved eager / compiled rounds (``bench``: conftest)."""
    device = bench.bench_device()
    name, chans, size, batch = CASES[case]
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, in_chans=chans, img_size=size).to(device).train()
    x = torch.randn(batch, chans, size, size, device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    compiled = torch.compile(model)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9)
    amp = device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)

    def autocast():  # noqa: ANN202
        return torch.autocast("cuda", dtype=torch.float16) if amp else nullcontext()

    def step(net: torch.nn.Module) -> torch.Tensor:
        with autocast():
            loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return loss.detach()

    with torch.no_grad(), autocast():
        eager_loss = F.cross_entropy(model(x), y).item()  # the weights of the cold step
    c0 = time.process_time()
    with measure(device) as cold:
        cold_loss = step(compiled).item()
    cold_cpu = time.process_time() - c0
    timings, _ = bench.time_rounds(
        {"eager": lambda: step(model), "compiled": lambda: step(compiled)}, device, repeats
    )
    timings["compiled-cold"] = bench.Timing(cold.seconds, cold_cpu, cold.peak_mem_mb,
                                            [cold.seconds])
    err = abs(cold_loss - eager_loss) / max(abs(eager_loss), 1e-30)
    return bench.make_rows(SUITE, case, timings, BASELINE, repeats,
                           {"compiled": err, "compiled-cold": err})


def summary(rows: list[dict[str, object]]) -> str:
    """One line: steps/s of both, speed-up, compile time, the choice of ``compile="auto"``."""
    by = {r["provider"]: r for r in rows}
    e, c = float(str(by["eager"]["seconds"])), float(str(by["compiled"]["seconds"]))
    cold = float(str(by["compiled-cold"]["seconds"]))
    cpu_speedup = 1 / float(str(by["compiled"]["cpu_ratio"]))
    pick = "compiled" if e / c >= 1 + MARGIN else "eager"
    return (f"{rows[0]['case']:22s} eager {1 / e:8.2f} steps/s  compiled {1 / c:8.2f} steps/s"
            f"  speed-up {e / c:5.2f}x (cpu time {cpu_speedup:5.2f}x)  compile {cold - c:6.1f} s"
            f"  auto → {pick}\n")


def check(rows: list[dict[str, object]]) -> list[str]:
    """Messages for rows that miss: loss agreement always, the speed-up target on CUDA."""
    bad = []
    for r in rows:
        if r["rel_err"] and float(str(r["rel_err"])) > 1e-2:
            bad.append(f"{r['case']} {r['provider']}: loss rel_err {r['rel_err']} > 1e-2")
        target = GPU_TARGET.get(str(r["case"]))
        if torch.cuda.is_available() and target and r["provider"] == "compiled":
            if 1 / float(str(r["ratio"])) < target:
                bad.append(f"{r['case']}: compiled {1 / float(str(r['ratio'])):.2f}x eager "
                           f"steps/s < {target}x")
    return bad


# --------------------------------------------------------------------------- pytest ----------
try:
    import pytest
except ImportError:  # script mode without pytest
    pytest = None

if pytest is not None:

    @pytest.mark.parametrize("case", list(CASES))
    def test_compile_speed(benchmark, bench, record_rows, case: str) -> None:  # noqa: ANN001
        rows = benchmark.pedantic(run_case, args=(bench, case), rounds=1, iterations=1)
        record_rows(rows)
        assert not check(rows), check(rows)


def main(argv: list[str]) -> None:
    import conftest as bench  # this folder is sys.path[0] when run as a script

    cases, repeats = bench.script_args(argv, CASES, REPEATS)
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
