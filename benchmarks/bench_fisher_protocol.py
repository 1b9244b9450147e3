"""Fisher-diagonal protocol (issue 17 §1): same-run ratios over a plain forward+backward,
median of several rounds with the spread, every round kept.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_fisher_protocol.py --rounds 5 \
        --threads 2 --out benchmarks/results/fisher-protocol-<machine>.csv \
        [--cases CASE …] [--providers fastunlearn vmap opacus backpack] [--warmup 1] \
        [--no-check] [--profile]

Per case the model and batch are built once (seed 0); then ``--warmup`` untimed rounds and
``--rounds`` timed rounds. Each round runs the baseline — a plain forward+backward of the
summed cross-entropy, ``F.cross_entropy(model(x), y, reduction="sum").backward()``, on the
model in the mode the case sets — and each provider once, interleaved, the order rotated by one
from round to round (so no provider always runs right after the baseline); ``gc`` runs before
each call, not inside it. A provider's ratio in a round is its wall time over the baseline's
wall time *of that round* (``cpu_ratio``: the same with process CPU time, steadier on a shared
CPU). The summary per (case, provider) is the **median** ratio over the rounds with its **min**
and **max** — no best-of; the CSV keeps one row per (case, provider, round), the baseline's
rows included (ratio 1), with the case's median/min/max repeated on each row, the load average
when the round started and the versions.

Providers (from ``bench_fisher_fast.py``): ``fastunlearn`` (``fast_fisher_diagonal``), ``vmap``
(the torch.func reference), ``opacus`` and ``backpack`` (the ``bench`` extra; skipped with the
reason when missing or unable to handle the model). Unless ``--no-check``, fastunlearn's Fisher
is compared once per case with the vmap reference (and every other provider with fastunlearn's)
to rel. err ≤ 1e-4; after every call the script checks that each module's train/eval flag is
what it was before (the frozen-BN case: a model in train mode with its BatchNorm layers in
eval). A failed check is written to the CSV and makes the script exit non-zero at the end.

``--profile`` times nothing: it runs ``torch.profiler`` on the first selected case, a few calls
of the baseline and of ``fast_fisher_diagonal``, and prints (and writes next to ``--out``,
``<stem>-profile-<case>.txt``) the top ops by self CPU time of each and the ops whose self CPU
time grows most from the baseline to the Fisher — where the extra time goes.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import bench_fisher_fast as providers  # this folder is sys.path[0] when run as a script
import torch
from torch import Tensor, nn

from fastunlearn._device import cpu_model_name, slug

SUITE = "fisher-protocol"
BASELINE = "fwd+bwd"
PROVIDERS = providers.PROVIDERS
TOLERANCE = providers.TOLERANCE
FIELDS = (
    "suite", "case", "provider", "round", "rounds", "seconds", "baseline_seconds", "ratio",
    "cpu_seconds", "baseline_cpu_seconds", "cpu_ratio", "median_ratio", "min_ratio",
    "max_ratio", "median_cpu_ratio", "min_cpu_ratio", "max_cpu_ratio", "median_seconds",
    "rel_err", "modes_kept", "model", "img_size", "batch", "model_mode", "threads", "device",
    "cpu", "loadavg", "versions", "time",
)


@dataclass(frozen=True)
class Case:
    """``timm.create_model(model, pretrained=False, num_classes=10, **kwargs)`` (or
    ``fastunlearn.models.create_model`` with ``builder="fastunlearn"``: the CIFAR stem) on a
    ``[batch, 3, size, size]`` batch; ``frozen_bn``: train mode with every BatchNorm in eval."""

    model: str
    size: int
    batch: int
    builder: str = "timm"
    kwargs: dict[str, Any] = field(default_factory=dict)
    frozen_bn: bool = False


CASES: dict[str, Case] = {
    "resnet18-cifar-32px-b32": Case("resnet18", 32, 32, builder="fastunlearn"),
    "resnet18-imagenet-32px-b32": Case("resnet18", 32, 32),
    "resnet18-imagenet-224px-b8": Case("resnet18", 224, 8),
    "vit_tiny-p4-32px-b32": Case("vit_tiny_patch16_224", 32, 32,
                                 kwargs={"img_size": 32, "patch_size": 4}),
    "vit_tiny-p16-224px-b8": Case("vit_tiny_patch16_224", 224, 8),
    "mobilenetv2-32px-b32": Case("mobilenetv2_100", 32, 32),
    "resnet18-cifar-frozenbn-32px-b32": Case("resnet18", 32, 32, builder="fastunlearn",
                                             frozen_bn=True),
}
#: Not run by default: the pytest smoke test and a quick look at the script.
SMOKE_CASES: dict[str, Case] = {
    "smoke-resnet18-frozenbn-8px-b4": Case("resnet18", 8, 4, frozen_bn=True),
}
ALL_CASES = {**CASES, **SMOKE_CASES}


# --------------------------------------------------------------------------- setup -----------
def build_case(case: Case, device: torch.device) -> tuple[nn.Module, Tensor, Tensor]:
    """The case's model (seed 0, in the case's mode) and a random batch on ``device``."""
    torch.manual_seed(0)
    if case.builder == "fastunlearn":
        from fastunlearn.models import create_model

        model = create_model(case.model, num_classes=10, in_chans=3, img_size=case.size,
                             **case.kwargs)
    elif case.builder == "timm":
        import timm

        model = timm.create_model(case.model, pretrained=False, num_classes=10, **case.kwargs)
    else:
        raise ValueError(f"builder must be 'timm' or 'fastunlearn', got {case.builder!r}")
    model = model.to(device)
    if case.frozen_bn:
        model.train()
        bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not bns:
            raise ValueError(f"{case.model} has no BatchNorm layer to freeze")
        for m in bns:
            m.eval()
    else:
        model.eval()
    x = torch.randn(case.batch, 3, case.size, case.size, device=device)
    y = torch.randint(0, 10, (case.batch,), device=device)
    return model, x, y


def model_mode(model: nn.Module) -> str:
    """``eval``, ``train`` or ``train, k BatchNorm in eval``-style summary of the flags."""
    if not model.training:
        return "eval"
    frozen = sum(not m.training for m in model.modules())
    return "train" if not frozen else f"train ({frozen} modules in eval)"


def _modes(model: nn.Module) -> list[bool]:
    return [m.training for m in model.modules()]


def default_out(device: torch.device, threads: int) -> Path:
    """``benchmarks/results/fisher-protocol-<cpu or gpu>-<n>threads.csv``."""
    name = (slug(torch.cuda.get_device_name(device)) if device.type == "cuda"
            else f"{slug(cpu_model_name())}-{threads}threads")
    return Path(__file__).parent / "results" / f"fisher-protocol-{name}.csv"


def versions(*packages: str) -> str:
    out = [f"python={platform.python_version()}", f"torch={torch.__version__}"]
    for dist in ("timm", "fastunlearn", *packages):
        try:
            out.append(f"{dist}={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            continue
    return ";".join(out)


def _loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return ""


# --------------------------------------------------------------------------- timing ----------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], Any], device: torch.device) -> tuple[float, float, Any]:
    gc.collect()
    _sync(device)
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    _sync(device)
    return time.perf_counter() - t0, time.process_time() - c0, out


def make_fns(model: nn.Module, x: Tensor, y: Tensor, names: Sequence[str]
             ) -> tuple[dict[str, Callable[[], Any]], dict[str, str]]:
    """The baseline and the providers that can run here (and why the others cannot)."""
    fns: dict[str, Callable[[], Any]] = {BASELINE: lambda: providers.fwd_bwd(model, x, y)}
    skipped: dict[str, str] = {}
    for name in names:
        why = providers.available(name)
        if why is None:
            try:
                fns[name] = providers.make_provider(name, model, x, y)
            except providers.Unsupported as err:
                why = str(err)
        if why is not None:
            skipped[name] = why
    return fns, skipped


def run_rounds(fns: dict[str, Callable[[], Any]], model: nn.Module, device: torch.device,
               rounds: int, warmup: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``warmup + rounds`` interleaved rounds (order rotated each round); per timed round and
    function ``{round, provider, seconds, cpu_seconds, modes_kept, loadavg}``, and each
    function's last result."""
    names = list(fns)
    before = _modes(model)
    records: list[dict[str, Any]] = []
    results: dict[str, Any] = {}
    for r in range(warmup + rounds):
        k = r % len(names)
        load = _loadavg()
        for name in names[k:] + names[:k]:
            wall, cpu, results[name] = _timed(fns[name], device)
            kept = _modes(model) == before
            if not kept:  # put them back so the other providers see the case's model
                for m, flag in zip(model.modules(), before):
                    m.training = flag
            if r >= warmup:
                records.append({"round": r - warmup, "provider": name, "seconds": wall,
                                "cpu_seconds": cpu, "modes_kept": kept, "loadavg": load})
    return records, results


def check_errors(model: nn.Module, x: Tensor, y: Tensor, results: dict[str, Any]
                 ) -> dict[str, float]:
    """fastunlearn against the vmap reference, every other provider against fastunlearn."""
    fast = results.get("fastunlearn")
    if fast is None:
        fast = providers.fast_fisher_diagonal(model, x, y)
    ref = results.get("vmap")
    if ref is None:
        ref = providers.make_provider("vmap", model, x, y)()
    errs = {"fastunlearn": providers.rel_err(fast, ref)}
    for name, got in results.items():
        if name not in (BASELINE, "fastunlearn"):
            errs[name] = providers.rel_err(got, fast)
    return errs


def _r(v: float) -> float:
    return round(v, 4)


def make_rows(name: str, case: Case, records: list[dict[str, Any]], errs: dict[str, float],
              threads: int, device: torch.device, mode: str) -> list[dict[str, Any]]:
    """One CSV row per record: ratios over the baseline of the same round, and the case's
    median/min/max per provider repeated on each of its rows."""
    base = {rec["round"]: rec for rec in records if rec["provider"] == BASELINE}
    ratios: dict[str, list[float]] = {}
    cpu_ratios: dict[str, list[float]] = {}
    secs: dict[str, list[float]] = {}
    for rec in records:
        b = base[rec["round"]]
        rec["ratio"] = rec["seconds"] / b["seconds"]
        rec["cpu_ratio"] = rec["cpu_seconds"] / max(b["cpu_seconds"], 1e-9)
        ratios.setdefault(rec["provider"], []).append(rec["ratio"])
        cpu_ratios.setdefault(rec["provider"], []).append(rec["cpu_ratio"])
        secs.setdefault(rec["provider"], []).append(rec["seconds"])
    stamp = dt.datetime.now().isoformat(timespec="seconds")
    n_rounds = len(base)
    cpu_name = cpu_model_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    rows = []
    for rec in records:
        p = rec["provider"]
        b = base[rec["round"]]
        err = errs.get(p)
        rows.append({
            "suite": SUITE, "case": name, "provider": p, "round": rec["round"],
            "rounds": n_rounds, "seconds": _r(rec["seconds"]),
            "baseline_seconds": _r(b["seconds"]), "ratio": _r(rec["ratio"]),
            "cpu_seconds": _r(rec["cpu_seconds"]), "baseline_cpu_seconds": _r(b["cpu_seconds"]),
            "cpu_ratio": _r(rec["cpu_ratio"]),
            "median_ratio": _r(statistics.median(ratios[p])), "min_ratio": _r(min(ratios[p])),
            "max_ratio": _r(max(ratios[p])),
            "median_cpu_ratio": _r(statistics.median(cpu_ratios[p])),
            "min_cpu_ratio": _r(min(cpu_ratios[p])), "max_cpu_ratio": _r(max(cpu_ratios[p])),
            "median_seconds": _r(statistics.median(secs[p])),
            "rel_err": "" if err is None else f"{err:.1e}", "modes_kept": rec["modes_kept"],
            "model": case.model, "img_size": case.size, "batch": case.batch,
            "model_mode": mode, "threads": threads, "device": device.type, "cpu": cpu_name,
            "loadavg": rec["loadavg"],
            "versions": versions(*(providers.OPTIONAL[p][1:] if p in providers.OPTIONAL
                                   else ())),
            "time": stamp,
        })
    return rows


def append_csv(rows: Sequence[dict[str, Any]], path: Path) -> None:
    """Append ``rows`` to ``path`` (header written once; a file with other columns is an
    error, not silently mixed)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as fh:
            header = tuple(next(csv.reader(fh), ()))
        if header != FIELDS:
            raise SystemExit(f"{path} has other columns ({len(header)}); use another --out")
        new = False
    else:
        new = True
    with path.open("a", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            w.writeheader()
        w.writerows(rows)


def summary(rows: Sequence[dict[str, Any]]) -> str:
    """One line per (case, provider): median [min–max] wall and CPU ratios."""
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["provider"] != BASELINE):  # stable: baseline first
        seen.setdefault((r["case"], r["provider"]), r)
    return "".join(
        f"{c:34s} {p:12s} x{r['median_ratio']:6.3f} [{r['min_ratio']:.3f}–{r['max_ratio']:.3f}]"
        f"  cpu x{r['median_cpu_ratio']:6.3f} [{r['min_cpu_ratio']:.3f}–"
        f"{r['max_cpu_ratio']:.3f}]  {r['median_seconds']:8.4f} s  n={r['rounds']}"
        f"  err {r['rel_err'] or '-'}\n"
        for (c, p), r in seen.items())


# --------------------------------------------------------------------------- profile ---------
def profile_case(name: str, device: torch.device, iters: int = 3, top: int = 25) -> str:
    """torch.profiler of the baseline and of ``fast_fisher_diagonal`` on case ``name``: each
    one's top ops by self CPU time, and the ops whose self CPU time grows most."""
    from torch.profiler import ProfilerActivity, profile

    model, x, y = build_case(ALL_CASES[name], device)
    fns = {BASELINE: lambda: providers.fwd_bwd(model, x, y),
           "fastunlearn": lambda: providers.fast_fisher_diagonal(model, x, y)}
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda"
                                           else [])
    tables: dict[str, dict[str, tuple[float, int]]] = {}
    out = [f"profile of {name}: {iters} calls each after one warm-up; self CPU time (ms per "
           f"call); {torch.get_num_threads()} threads, {device.type}\n"]
    for key, fn in fns.items():
        fn()
        _sync(device)
        with profile(activities=activities) as prof:
            for _ in range(iters):
                fn()
            _sync(device)
        avg = prof.key_averages()
        tables[key] = {e.key: (e.self_cpu_time_total / 1e3 / iters, e.count // iters)
                       for e in avg}
        total = sum(v for v, _ in tables[key].values())
        out.append(f"\n== {key}: {total:.1f} ms self CPU per call; top {top} ops ==\n")
        for op, (ms, n) in sorted(tables[key].items(), key=lambda kv: -kv[1][0])[:top]:
            out.append(f"{op[:58]:58s} {ms:10.2f} ms {100 * ms / max(total, 1e-9):6.1f} %"
                       f"  x{n}\n")
    base, fast = tables[BASELINE], tables["fastunlearn"]
    extra = sum(v for v, _ in fast.values()) - sum(v for v, _ in base.values())
    out.append(f"\n== where the extra {extra:.1f} ms goes (fastunlearn − {BASELINE}, "
               f"self CPU per call) ==\n")
    diff = {op: fast.get(op, (0.0, 0))[0] - base.get(op, (0.0, 0))[0] for op in {*base, *fast}}
    for op, d in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[:top]:
        out.append(f"{op[:58]:58s} {d:+10.2f} ms  ({base.get(op, (0.0, 0))[0]:.2f} → "
                   f"{fast.get(op, (0.0, 0))[0]:.2f})\n")
    return "".join(out)


# --------------------------------------------------------------------------- main ------------
def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5, help="timed rounds per case (≥ 5)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=None,
                    help="CSV to append to (default results/fisher-protocol-<machine>.csv)")
    ap.add_argument("--cases", nargs="+", default=list(CASES), metavar="CASE",
                    help=f"any of {', '.join(ALL_CASES)} (default: all but smoke-*)")
    ap.add_argument("--providers", nargs="+", default=list(PROVIDERS), metavar="P",
                    help=f"any of {', '.join(PROVIDERS)}")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--no-check", action="store_true",
                    help="skip the rel. err check against the vmap reference")
    ap.add_argument("--profile", action="store_true",
                    help="profile the first case instead of timing")
    args = ap.parse_args(argv)
    bad = [c for c in args.cases if c not in ALL_CASES]
    if bad:
        ap.error(f"unknown case(s) {bad}; choose from {list(ALL_CASES)}")
    bad = [p for p in args.providers if p not in PROVIDERS]
    if bad:
        ap.error(f"unknown provider(s) {bad}; choose from {list(PROVIDERS)}")
    if args.rounds < 1 or args.warmup < 0 or args.threads < 1:
        ap.error("need --rounds ≥ 1, --warmup ≥ 0 and --threads ≥ 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch sees no CUDA device")
    return args


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the protocol (or the profile); return the CSV (or profile) path written."""
    args = parse_args(argv)
    device = torch.device(args.device)
    out = args.out or default_out(device, args.threads)
    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        if args.profile:
            text = profile_case(args.cases[0], device)
            path = out.with_name(f"{out.stem}-profile-{args.cases[0]}.txt")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            sys.stdout.write(text + f"-> {path}\n")
            return path
        if args.rounds < 5:
            sys.stdout.write(f"note: {args.rounds} round(s); the protocol asks for ≥ 5\n")
        failures: list[str] = []
        for name in args.cases:
            case = ALL_CASES[name]
            model, x, y = build_case(case, device)
            mode = model_mode(model)
            fns, skipped = make_fns(model, x, y, args.providers)
            records, results = run_rounds(fns, model, device, args.rounds, args.warmup)
            errs = {} if args.no_check else check_errors(model, x, y, results)
            rows = make_rows(name, case, records, errs, args.threads, device, mode)
            append_csv(rows, out)
            sys.stdout.write(f"# {name}: {case.model} {case.size}px B={case.batch}, {mode}\n")
            sys.stdout.write(summary(rows))
            for p, why in skipped.items():
                sys.stdout.write(f"{name:34s} {p:12s} skipped: {why}\n")
            failures += [f"{name}/{p}: rel err {e:.1e} > {TOLERANCE}"
                         for p, e in errs.items() if e > TOLERANCE]
            failures += sorted({f"{name}/{r['provider']}: changed a module's train/eval mode"
                                for r in rows if not r["modes_kept"]})
            del model, x, y, fns, results
        sys.stdout.write(f"-> {out}\n")
        if failures:
            raise SystemExit("checks failed: " + "; ".join(failures))
        return out
    finally:
        torch.set_num_threads(threads_before)


if __name__ == "__main__":
    main()
