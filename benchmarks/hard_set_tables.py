"""Markdown tables of finished audits (one per forget set): the audit's scores with their 95 %
bootstrap intervals beside forget/retain/test accuracy and cost, and which rows pass the
"clearly failing" bar for doing nothing (U-LiRA AUC ≥ 0.85, forget score ≤ half the ceiling's).

    .venv/bin/python benchmarks/hard_set_tables.py runs/audit/fm10k-memorized-5 \\
        runs/audit/fm10k-mixed-600 [--out docs/hard_sets_tables.md]

× retrain divides a row's mean RTE by the ceiling row's (the mean training time of the
shadows' second gold models, same pool, same machine).
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path


def _f(v: float | None, nd: int) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.{nd}f}"


def _size(forget: dict) -> str:
    if forget.get("ids"):
        return f"{len(forget['ids'])} examples"
    if forget.get("type") == "class":
        return "every example of the class"
    if forget.get("fraction"):
        return f"{forget['fraction']:.0%} of the training set, drawn with seed {forget['seed']}"
    return f"{forget.get('count')} examples"


def table(audit_dir: Path) -> str:
    payload = json.loads((audit_dir / "audit.json").read_text())
    rows = payload["rows"]
    ceiling = next(r for r in rows if r["method"] == "retrain")
    nothing = next(r for r in rows if r["method"] == "original")
    task, cfg = payload["task"], payload["config"]
    forget = task["forget"]
    name = cfg["forget"] if isinstance(cfg["forget"], str) else "given ids"
    lines = [
        f"#### `{name}` — {_size(forget)}, N = {task['shadows']} "
        f"({cfg['model']}, {cfg['epochs']} epochs; protocol {cfg.get('protocol', 'lira')})",
        "",
        f"Machine: {payload['machine']}; wall time of the last (resumed) invocation "
        f"{payload['wall_s'] / 60:.0f} min.",
        "",
        "| method | forget score ↑ [95 % CI] | U-LiRA AUC [95 % CI] | TPR@1% | probe % | FA % | "
        "RA % | TA % | RTE s | × retrain | beats do-nothing |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for r in rows:
        label = {"original": "original (do nothing)",
                 "retrain": "retrain vs retrain (ceiling)"}.get(r["method"], f"`{r['method']}`")
        beats = r.get("beats_do_nothing")
        mark = "" if beats is None or r["method"] == "retrain" else ("✓" if beats else "✗")
        ratio = r["rte_s"] / ceiling["rte_s"] if ceiling["rte_s"] else math.nan
        lines.append(
            f"| {label} | {_f(r['forget_score'], 3)} [{_f(r['forget_score_lo'], 3)}, "
            f"{_f(r['forget_score_hi'], 3)}] | {_f(r['ulira_auc'], 3)} "
            f"[{_f(r['ulira_auc_lo'], 3)}, {_f(r['ulira_auc_hi'], 3)}] | "
            f"{_f(r['ulira_tpr_1'], 3)} | {_f(r.get('probe_forget_acc'), 1)} | "
            f"{_f(r['forget_acc'], 1)} | {_f(r['retain_acc'], 2)} | {_f(r['test_acc'], 2)} | "
            f"{_f(r['rte_s'], 1)} | {_f(ratio, 3)} | {mark} |")
    fails = (nothing["ulira_auc"] >= 0.85
             and nothing["forget_score"] <= 0.5 * ceiling["forget_score"])
    lines += ["", f"Do nothing: U-LiRA AUC {nothing['ulira_auc']:.3f}, forget score "
                  f"{nothing['forget_score']:.3f} against the ceiling's "
                  f"{ceiling['forget_score']:.3f} — "
                  + ("clearly failing (AUC ≥ 0.85 and ≤ half the ceiling's score)." if fails
                     else "not clearly failing by that bar."), ""]
    passing = [r["method"] for r in rows if r.get("beats_do_nothing")
               and r["method"] not in ("retrain", "original")]
    lines += ["Beat doing nothing on both scores: "
              + (", ".join(f"`{m}`" for m in passing) if passing else "none") + ".", ""]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("audits", nargs="+", type=Path)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    text = "\n".join(table(d) for d in args.audits)
    if args.out:
        args.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
