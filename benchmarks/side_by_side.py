"""Every method side by side on Fashion-MNIST (issue 16): the 3-seed cost-quality tables with
the per-example audit's columns next to them, written to ``docs/side_by_side.md``.

Inputs (produced by the commands in the doc's header, nothing is recomputed here):

* ``runs/studies/cq-fm10k-<setting>/summary.csv`` — ``fastunlearn study cost-quality
  --dataset fashion-mnist-10k --epochs 30 --seeds 3`` (mean and 95 % Student-t half-width over
  the 3 seeds: each seed has its own original, gold retrain and method run);
* ``runs/audit/fmnist10k-<setting>/audit.json`` — ``fastunlearn audit`` with N = 16 shadow
  models on the same dataset, model and training recipe (challenge forget score, U-LiRA AUC,
  linear-probe recovery of the forget set).

    .venv/bin/python benchmarks/side_by_side.py [--out docs/side_by_side.md]

A method the audit has not run shows "—" in the audit columns.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
from pathlib import Path

SETTINGS = {  # setting: (title, study dir, audit dir)
    "random": ("random 10 % of the training set", "runs/studies/cq-fm10k-random",
               "runs/audit/fmnist10k-random"),
    "class": ('class "Coat"', "runs/studies/cq-fm10k-class-coat",
              "runs/audit/fmnist10k-class-coat"),
}


def _f(v: str | float | None, nd: int = 2) -> float:
    try:
        x = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return x


def _pm(mean: float, half: float, nd: int = 2) -> str:
    if not math.isfinite(mean):
        return "—"
    text = f"{mean:.{nd}f}".lstrip("-") if float(f"{mean:.{nd}f}") == 0 else f"{mean:.{nd}f}"
    return f"{text} ± {half:.{nd}f}" if math.isfinite(half) else text


def _num(v: float | None, nd: int) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def _ci(row: dict, key: str, nd: int) -> str:
    """``value [lo–hi]`` (the audit's 95 % bootstrap interval), or the value alone."""
    v, lo, hi = row.get(key), row.get(f"{key}_lo"), row.get(f"{key}_hi")
    text = _num(v, nd)
    if text != "—" and isinstance(lo, (int, float)) and isinstance(hi, (int, float)):
        text += f" [{lo:.{nd}f}–{hi:.{nd}f}]"
    return text


def table(study_dir: Path, audit_dir: Path) -> tuple[str, dict]:
    with (study_dir / "summary.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    audit = {}
    path = audit_dir / "audit.json"
    if path.exists():
        audit = {r["method"]: r for r in json.loads(path.read_text())["rows"]}
    order = sorted(rows, key=lambda r: (r["method"] != "retrain", _f(r.get("avg_gap_mean"))))
    head = ["method", "seeds", "Avg-Gap", "forget acc", "RA", "TA", "MIA-Eff.",
            "× retrain", "forget score", "U-LiRA AUC", "probe %"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in order:
        m = r["method"]
        a = audit.get(m, {})
        lines.append("| " + " | ".join([
            f"`{m}`", r.get("n", ""),
            _pm(_f(r.get("avg_gap_mean")), _f(r.get("avg_gap_ci95"))),
            _pm(_f(r.get("forget_acc_mean")), _f(r.get("forget_acc_ci95")), 1),
            _pm(_f(r.get("retain_acc_mean")), _f(r.get("retain_acc_ci95")), 1),
            _pm(_f(r.get("test_acc_mean")), _f(r.get("test_acc_ci95")), 1),
            _pm(_f(r.get("mia_efficacy_mean")), _f(r.get("mia_efficacy_ci95")), 1),
            _pm(_f(r.get("rte_ratio_mean")), _f(r.get("rte_ratio_ci95")), 3),
            _ci(a, "forget_score", 3), _ci(a, "ulira_auc", 3),
            _num(a.get("probe_forget_acc"), 1),
        ]) + " |")
    return "\n".join(lines) + "\n", {"methods": len(rows), "audited": len(audit)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="docs/side_by_side.md")
    ap.add_argument("--header", default="", help="markdown put above the tables")
    args = ap.parse_args(argv)
    parts = [args.header] if args.header else []
    for title, study, aud in SETTINGS.values():
        text, _ = table(Path(study), Path(aud))
        parts.append(f"### Forgetting {title}\n\n{text}")
    Path(args.out).write_text("\n\n".join(p.rstrip("\n") for p in parts) + "\n")


if __name__ == "__main__":
    main()
