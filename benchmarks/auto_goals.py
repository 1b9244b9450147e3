"""How ``auto`` stands against its goals, from finished audits that include it (one per forget
set): each goal with the measured value, the target and the margin — misses included.

    .venv/bin/python benchmarks/auto_goals.py runs/audit/fm10k-memorized-5 \\
        runs/audit/fm10k-mixed-600 runs/audit/fm10k-random-10 runs/audit/fm10k-class-coat

Goals (sample sets): U-LiRA AUC within 0.03 of the ceiling's; forget score ≥ 0.8 × the
ceiling's; RA and TA within 1 point of the retrained models'; RTE ≤ 5 % of a retrain; better
than each rival on both audit scores (higher forget score, U-LiRA AUC nearer the ceiling's).
Class sets: U-LiRA within 0.02 of the ceiling's and linear-probe recovery within 2 points of
the retrained models'. ``random:`` sets: no worse than doing nothing on either audit score
(auto's value inside or beyond do-nothing's 95 % interval).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RIVALS = ("salun", "scrub", "ssd", "ct", "rum", "sfr_on")


def _rows(audit_dir: Path) -> tuple[dict, dict[str, dict]]:
    payload = json.loads((audit_dir / "audit.json").read_text())
    return payload, {r["method"]: r for r in payload["rows"]}


def goals(audit_dir: Path) -> list[tuple[str, str, str, str, bool]]:
    """``(goal, auto's value, target, margin, met)`` rows for one audit."""
    payload, rows = _rows(audit_dir)
    a, ceil, nothing = rows["auto"], rows["retrain"], rows["original"]
    gold = next((r for r in payload["rows"] if r["method"] == "retrain"), {})
    spec = payload["config"]["forget"]
    out: list[tuple[str, str, str, str, bool]] = []
    d_auc = abs(a["ulira_auc"] - ceil["ulira_auc"])
    if spec.startswith("class:"):
        out.append(("U-LiRA AUC within 0.02 of the ceiling", f"{a['ulira_auc']:.3f}",
                    f"{ceil['ulira_auc']:.3f} ± 0.02", f"{d_auc - 0.02:+.3f}", d_auc <= 0.02))
        dp = abs(a["probe_forget_acc"] - gold["probe_forget_acc"])
        out.append(("probe recovery within 2 points of the retrain's",
                    f"{a['probe_forget_acc']:.1f} %", f"{gold['probe_forget_acc']:.1f} ± 2",
                    f"{dp - 2:+.1f}", dp <= 2))
    elif spec.startswith("random:"):
        out.append(("forget score no worse than doing nothing", f"{a['forget_score']:.3f}",
                    f"≥ {nothing['forget_score_lo']:.3f} (do-nothing's CI low)",
                    f"{a['forget_score'] - nothing['forget_score_lo']:+.3f}",
                    a["forget_score"] >= nothing["forget_score_lo"]))
        out.append(("U-LiRA AUC no worse than doing nothing", f"{a['ulira_auc']:.3f}",
                    f"≤ {nothing['ulira_auc_hi']:.3f} (do-nothing's CI high)",
                    f"{nothing['ulira_auc_hi'] - a['ulira_auc']:+.3f}",
                    a["ulira_auc"] <= nothing["ulira_auc_hi"]))
    else:
        out.append(("U-LiRA AUC within 0.03 of the ceiling", f"{a['ulira_auc']:.3f}",
                    f"{ceil['ulira_auc']:.3f} ± 0.03", f"{d_auc - 0.03:+.3f}", d_auc <= 0.03))
        target = 0.8 * ceil["forget_score"]
        out.append(("forget score ≥ 0.8 × the ceiling's", f"{a['forget_score']:.3f}",
                    f"≥ {target:.3f}", f"{a['forget_score'] - target:+.3f}",
                    a["forget_score"] >= target))
        for rival in RIVALS:
            r = rows.get(rival)
            if r is None:
                continue
            better_fs = a["forget_score"] > r["forget_score"]
            better_auc = d_auc < abs(r["ulira_auc"] - ceil["ulira_auc"])
            out.append((f"beats `{rival}` (default) on both scores",
                        f"{a['forget_score']:.3f} / {a['ulira_auc']:.3f}",
                        f"> {r['forget_score']:.3f} / nearer than {r['ulira_auc']:.3f}",
                        ("forget score " + ("✓" if better_fs else "✗") + ", AUC "
                         + ("✓" if better_auc else "✗")), better_fs and better_auc))
    g = ceil.get("gold") or {}
    ra_ref = g.get("retain_acc", ceil["retain_acc"])
    ta_ref = g.get("test_acc", ceil["test_acc"])
    for name, key, ref in (("RA", "retain_acc", ra_ref), ("TA", "test_acc", ta_ref)):
        diff = a[key] - ref
        out.append((f"{name} within 1 point of the retrain's", f"{a[key]:.2f} %",
                    f"{ref:.2f} ± 1", f"{abs(diff) - 1:+.2f}", abs(diff) <= 1))
    ratio = a["rte_s"] / ceil["rte_s"]
    out.append(("≤ 5 % of a retrain's time", f"{ratio:.3f} ×", "≤ 0.050 ×",
                f"{ratio - 0.05:+.3f}", ratio <= 0.05))
    return out


def table(audit_dir: Path) -> str:
    payload, _ = _rows(audit_dir)
    lines = [f"#### `{payload['config']['forget']}` (N = {payload['task']['shadows']})", "",
             "| goal | auto | target | margin | met |", "|---|---|---|---|---|"]
    for goal, value, target, margin, met in goals(audit_dir):
        lines.append(f"| {goal} | {value} | {target} | {margin} | {'yes' if met else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("audits", nargs="+", type=Path, help="finished audit directories")
    args = ap.parse_args()
    print("\n\n".join(table(d) for d in args.audits))


if __name__ == "__main__":
    main()
