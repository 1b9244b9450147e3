"""GPU regression check (``make gpu-check``): one command for a freshly lent GPU machine.

    python3 benchmarks/gpu_check.py [--dry-run] [--tolerance 0.10] [--venv .venv]

Steps, in order (``--dry-run`` prints them and runs nothing):

1. ``setup`` — create the venv if it is missing (``--system-site-packages``, so a CUDA torch
   already on the machine is reused) and ``pip install -e '.[dev]'``; if pip fails (an offline
   machine) but the venv already imports torch, fastunlearn, pytest and pytest-benchmark, the
   check goes on with a warning.
2. ``cuda`` — stop here unless torch sees a CUDA device (prints its name).
3. ``gpu-tests`` — every ``gpu``-marked test: ``pytest -m gpu tests`` (Triton Fisher kernel,
   one-launch masked SGD, compile, model-batched training).
4. ``bench:*`` — the kernel, compile and model-batched benchmark suites on CUDA
   (``pytest --benchmark-only benchmarks/bench_<suite>.py``; each suite asserts its own GPU
   targets), rows written to a scratch folder (``FASTUNLEARN_BENCH_RESULTS``).
5. ``compare`` — each new row's ``ratio`` against the last committed row (``git show
   HEAD:benchmarks/results/<gpu-name>.csv``) of the same suite, case and provider; a ratio more
   than ``--tolerance`` (10 %) above it is a regression (every suite's ratio is "time over its
   baseline's", lower is better). Rows with nothing committed yet are listed as new.
6. ``record`` — append the new rows to ``benchmarks/results/<gpu-name>.csv`` (commit it, with
   the device named in the message).

Exit status 0 only if every step passed and nothing regressed; the summary gives each step's
seconds. Budget: under 8 minutes on an H100-class GPU once the venv exists (``--budget-s``
warns past it). This file uses only the standard library: it runs before the venv exists.
"""

from __future__ import annotations

import argparse
import csv
import io
import os
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path("benchmarks") / "results"
#: The benchmark suites the check runs, in order (kernels, compile, model-batched training).
SUITES = ("masked_sgd", "fisher_fast", "ig", "compile", "batched")
TOLERANCE = 0.10
BUDGET_S = 8 * 60
#: Modules the venv must import for the check to run.
NEEDED = ("torch", "fastunlearn", "pytest", "pytest_benchmark")
CUDA_PROBE = ("import sys, torch; ok = torch.cuda.is_available(); "
              "print(torch.cuda.get_device_name(0) if ok else 'no CUDA device'); "
              "sys.exit(0 if ok else 1)")


@dataclass
class Step:
    """One command of the check. ``optional``: a failure only warns (see ``fallback``)."""

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    timeout_s: float = 900.0
    note: str = ""
    optional: bool = False

    def command(self) -> str:
        env = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.env.items())
        return (env + " " if env else "") + " ".join(shlex.quote(a) for a in self.argv)


def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def plan(venv: Path, scratch: Path, base_python: str = sys.executable) -> list[Step]:
    """The commands of a check, in order (the compare and record steps run in-process)."""
    py = str(venv_python(venv))
    steps = []
    if not venv_python(venv).exists():
        steps.append(Step("setup", [base_python, "-m", "venv", "--system-site-packages",
                                    str(venv)], timeout_s=300, note="the venv is missing"))
    steps.append(Step("setup", [py, "-m", "pip", "install", "-q", "-e", ".[dev]"],
                      timeout_s=1800, optional=True,
                      note="a failure is fine if the venv already has what the check needs"))
    steps.append(Step("cuda", [py, "-c", CUDA_PROBE], timeout_s=120))
    steps.append(Step("gpu-tests", [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                                    "-m", "gpu", "tests"], timeout_s=420))
    env = {"FASTUNLEARN_BENCH_RESULTS": str(scratch)}
    for suite in SUITES:
        steps.append(Step(f"bench:{suite}",
                          [py, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
                           "--benchmark-only", f"benchmarks/bench_{suite}.py"],
                          env=env, timeout_s=420))
    return steps


# ------------------------------------------------------------------------ comparison ---------


def read_rows(text: str) -> list[dict[str, str]]:
    """Rows of a results CSV given as text (empty text → no rows)."""
    if not text.strip():
        return []
    return list(csv.DictReader(io.StringIO(text)))


def _key(row: Mapping[str, str]) -> tuple[str, str, str, str]:
    return (row.get("suite") or "", row.get("case") or "", row.get("provider") or "",
            row.get("device") or "")


def _ratio(row: Mapping[str, str]) -> float | None:
    try:
        value = float(row.get("ratio") or "")
    except ValueError:
        return None
    return value if value > 0 else None


@dataclass
class Comparison:
    """One new row against the last committed row of its (suite, case, provider, device)."""

    key: tuple[str, str, str, str]
    new: float
    old: float | None

    @property
    def change(self) -> float | None:
        return None if self.old is None else self.new / self.old - 1

    def regressed(self, tolerance: float = TOLERANCE) -> bool:
        return self.change is not None and self.change > tolerance + 1e-9  # 3-decimal CSV

    def line(self, tolerance: float = TOLERANCE) -> str:
        suite, case, provider, _ = self.key
        name = f"{suite or '-'}/{case}/{provider}"
        if self.old is None:
            return f"  new        {name:60s} ratio {self.new:.3f} (nothing committed)"
        flag = "REGRESSED" if self.regressed(tolerance) else "ok"
        return (f"  {flag:10s} {name:60s} ratio {self.new:.3f} vs {self.old:.3f} "
                f"({self.change:+.1%})")


def compare(new_rows: Iterable[Mapping[str, str]], committed_rows: Iterable[Mapping[str, str]],
            ) -> list[Comparison]:
    """Each new row with a numeric ratio against the *last* committed row of the same key."""
    last: dict[tuple[str, str, str, str], float] = {}
    for row in committed_rows:
        ratio = _ratio(row)
        if ratio is not None:
            last[_key(row)] = ratio
    out = []
    for row in new_rows:
        ratio = _ratio(row)
        if ratio is not None:
            out.append(Comparison(_key(row), ratio, last.get(_key(row))))
    return out


def regressions(comparisons: Iterable[Comparison], tolerance: float = TOLERANCE) -> list[str]:
    """Lines naming every comparison whose ratio rose by more than ``tolerance``."""
    return [c.line(tolerance) for c in comparisons if c.regressed(tolerance)]


def committed_text(relpath: Path, root: Path = ROOT) -> str:
    """The file at ``HEAD`` (empty if git, the commit or the file is missing)."""
    try:
        done = subprocess.run(["git", "show", f"HEAD:{relpath.as_posix()}"], cwd=root,
                              capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return ""
    return done.stdout if done.returncode == 0 else ""


def append_rows(path: Path, rows: Sequence[Mapping[str, str]], fields: Sequence[str]) -> None:
    """Append ``rows`` to ``path`` with the columns ``fields``; a file with another header is
    rewritten once with ``fields`` (missing columns empty), as benchmarks/conftest.py does."""
    path.parent.mkdir(parents=True, exist_ok=True)
    old: list[dict[str, str]] = []
    if path.exists() and path.stat().st_size:
        with path.open(newline="") as fh:
            reader = csv.DictReader(fh)
            same = tuple(reader.fieldnames or ()) == tuple(fields)
            old = [] if same else list(reader)
        mode = "a" if same else "w"
    else:
        mode = "w"
    with path.open(mode, newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        if mode == "w":
            writer.writeheader()
            writer.writerows(old)
        writer.writerows(rows)


# ------------------------------------------------------------------------------ run ----------


def _venv_ready(venv: Path) -> bool:
    py = venv_python(venv)
    if not py.exists():
        return False
    probe = "; ".join(f"import {m}" for m in NEEDED)
    try:
        return subprocess.run([str(py), "-c", probe], cwd=ROOT, capture_output=True,
                              timeout=300).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def run_step(step: Step) -> tuple[bool, float]:
    print(f"\n=== {step.name}: {step.command()}", flush=True)
    env = {**os.environ, **step.env}
    t0 = time.perf_counter()
    try:
        ok = subprocess.run(step.argv, cwd=ROOT, env=env, timeout=step.timeout_s).returncode == 0
    except subprocess.TimeoutExpired:
        print(f"=== {step.name}: timed out after {step.timeout_s:.0f} s", flush=True)
        ok = False
    except OSError as err:
        print(f"=== {step.name}: cannot run ({err})", flush=True)
        ok = False
    return ok, time.perf_counter() - t0


def print_plan(steps: Sequence[Step], tolerance: float) -> None:
    print("gpu-check plan (dry run: nothing is run)")
    n = 0
    for n, step in enumerate(steps, 1):
        note = f"   # {step.note}" if step.note else ""
        print(f"{n:3d}. {step.name:18s} {step.command()}{note}")
    res = RESULTS / "<gpu-name>.csv"
    print(f"{n + 1:3d}. {'compare':18s} each new ratio vs the last committed row per (suite, "
          f"case, provider) in git HEAD:{res}; fail if > {1 + tolerance:.2f}x")
    print(f"{n + 2:3d}. {'record':18s} append the new rows to {res}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="list the steps, run nothing")
    parser.add_argument("--tolerance", type=float, default=TOLERANCE,
                        help="allowed rise of a ratio over the committed one (default 0.10)")
    parser.add_argument("--venv", type=Path, default=ROOT / ".venv", help="venv to use/create")
    parser.add_argument("--budget-s", type=float, default=BUDGET_S,
                        help="warn when the check (after setup) takes longer")
    args = parser.parse_args(argv)
    venv = args.venv if args.venv.is_absolute() else ROOT / args.venv
    if args.dry_run:
        print_plan(plan(venv, Path(tempfile.gettempdir()) / "gpu-check-XXXX"), args.tolerance)
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        return _run(plan(venv, Path(tmp)), Path(tmp), venv, args.tolerance, args.budget_s)


def _run(steps: Sequence[Step], scratch: Path, venv: Path, tolerance: float,
         budget_s: float) -> int:
    summary: list[tuple[str, str, float]] = []
    failed = False
    t_after_setup: float | None = None
    for step in steps:
        if step.name != "setup" and t_after_setup is None:
            t_after_setup = time.perf_counter()
        ok, seconds = run_step(step)
        if not ok and step.optional:
            if _venv_ready(venv):
                print(f"=== {step.name}: failed, but the venv has {', '.join(NEEDED)}; "
                      "going on", flush=True)
                summary.append((step.name, "warn", seconds))
                continue
        summary.append((step.name, "ok" if ok else "FAILED", seconds))
        if not ok:
            failed = True
            if step.name in ("setup", "cuda"):
                break  # nothing else can run
    csvs = sorted(scratch.glob("*.csv"))
    lines: list[str] = []
    for path in csvs:
        rel = RESULTS / path.name
        text = path.read_text()
        new = read_rows(text)
        comparisons = compare(new, read_rows(committed_text(rel)))
        print(f"\n=== compare: {len(comparisons)} ratios in {path.name} vs git HEAD:{rel}")
        for c in comparisons:
            print(c.line(tolerance))
        lines += regressions(comparisons, tolerance)
        fields = next(csv.reader(io.StringIO(text)))
        append_rows(ROOT / rel, new, fields)
        print(f"=== record: {len(new)} rows appended to {rel}")
    if not csvs and not failed:
        print("=== compare: the suites wrote no rows")
        failed = True
    print("\n=== gpu-check summary")
    for name, status, seconds in summary:
        print(f"  {name:20s} {status:7s} {seconds:7.1f} s")
    if t_after_setup is not None:
        spent = time.perf_counter() - t_after_setup
        over = f" — over the {budget_s:.0f} s budget" if spent > budget_s else ""
        print(f"  {'(after setup)':20s} {'':7s} {spent:7.1f} s{over}")
    if lines:
        print(f"=== {len(lines)} ratio(s) regressed by more than {tolerance:.0%}:")
        print("\n".join(lines))
    return 1 if failed or lines else 0


if __name__ == "__main__":
    sys.exit(main())
