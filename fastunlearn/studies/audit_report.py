"""``audit.json``, ``audit.npz``, ``results.csv``, ``report.md`` and the plots of an audit."""

from __future__ import annotations

import io
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from fastunlearn._atomic import atomic_write_bytes
from fastunlearn.studies.config import forget_label
from fastunlearn.studies.keys import DO_NOTHING, write_json_atomic
from fastunlearn.studies.tables import fmt, md_table, write_csv

COLUMNS = (
    ("forget_score", "forget score ↑", 3),
    ("ulira_auc", "U-LiRA AUC (0.5 ideal)", 3),
    ("ulira_tpr_1", "TPR@1%FPR", 3),
    ("klom_forget_p95", "KLoM forget p95 ↓", 2),
    ("klom_retain_p95", "KLoM retain p95 ↓", 2),
    ("klom_val_p95", "KLoM val p95 ↓", 2),
    ("probe_forget_acc", "probe forget acc %", 1),
    ("relearn_steps", "relearn steps", 0),
    ("forget_acc", "FA %", 2),
    ("retain_acc", "RA %", 2),
    ("test_acc", "TA %", 2),
    ("rte_s", "RTE s", 2),
)


def audit_table(rows: list[dict[str, Any]]) -> str:
    """The markdown table of an audit: one row per method, do-nothing first, ceiling last;
    ✗ marks a method that does not beat doing nothing."""
    head = ["method", *[c[1] for c in COLUMNS], "beats do-nothing"]
    body = []
    for r in rows:
        name = {DO_NOTHING: "original (do nothing)", "retrain": "retrain (ceiling)"}.get(
            r["method"], f"`{r['method']}`")
        beats = r.get("beats_do_nothing")
        mark = "" if beats is None else ("✓" if beats else "✗")
        body.append([name, *[fmt(r.get(k), nd=nd) for k, _, nd in COLUMNS], mark])
    return md_table(head, body, align=["---", *["---:"] * len(COLUMNS), ":---:"])


def write_audit_report(out: Path, rows: list[dict[str, Any]], arrays: dict[str, np.ndarray], *,
                       config: Any, task: Any, counts: dict[str, int], wall_s: float,
                       machine: str) -> Path:
    from dataclasses import asdict

    from fastunlearn.evaluate import audit_plots as P

    out = Path(out)
    buf = io.BytesIO()
    np.savez_compressed(buf, **{k.replace("/", "__"): v for k, v in arrays.items()})
    atomic_write_bytes(out / "audit.npz", buf.getvalue())
    payload = {"rows": rows, "config": asdict(config), "task": task.key_data(), "counts": counts,
               "wall_s": wall_s, "machine": machine,
               "arrays": "audit.npz (keys METHOD__epsilon, __ulira_forgotten, "
                         "__ulira_never_seen, __klom_forget/retain/val)"}
    write_json_atomic(out / "audit.json", payload)
    write_csv(rows, out / "results.csv")

    methods = [r["method"] for r in rows]
    eps = {m: arrays[f"{m}/epsilon"] for m in methods}
    P.plot_epsilon_histogram(eps, out / "epsilon.png")
    challenge = task.challenge
    if not challenge:
        P.plot_ulira_roc({m: (arrays[f"{m}/ulira_fpr"], arrays[f"{m}/ulira_tpr"])
                          for m in methods}, out / "ulira_roc.png")
    P.plot_klom_cdfs({m: {s: arrays[f"{m}/klom_{s}"] for s in ("forget", "retain", "val")}
                      for m in methods}, out / "klom_cdf.png")
    probe = {m: r["probe_forget_acc"] for m, r in zip(methods, rows)
             if isinstance(r.get("probe_forget_acc"), float)
             and math.isfinite(r["probe_forget_acc"])}
    if probe:
        P.plot_probe_bars(probe, out / "probe.png")

    kind = task.forget.get("type")
    sel = task.forget.get("selected")
    forget_txt = (f"class {', '.join(task.forget['classes'])}" if kind == "class"
                  else f"`{forget_label(sel)}` ({len(task.forget['ids'])} training samples)"
                  if sel else f"{len(task.forget['ids'])} given training samples"
                  if kind == "indices" else config.forget)
    not_beating = [r["method"] for r in rows if r.get("beats_do_nothing") is False
                   and r["method"] != "retrain"]
    lines = [
        f"# Forgetting audit: {config.dataset}, {config.model}, forget {forget_txt}",
        "",
        (f"Protocol `challenge`: one original trained on all of the training set; {task.shadows} "
         "unlearning runs from it that differ only in the method's seed, against "
         f"{task.shadows} retrains without the forget set ({config.epochs} epochs, lr "
         f"{config.lr}, batch {config.batch_size}); U-LiRA does not apply (every model saw "
         "every forget example). Definitions: docs/audit.md." if challenge else
         f"{task.shadows} shadow models, each trained on a seeded random half of the training "
         f"set ({config.epochs} epochs, lr {config.lr}, batch {config.batch_size}); per shadow "
         "the method forgets the audit forget set's examples in its half. Definitions: "
         "docs/evaluation.md (per-example audit)."),
        "",
        f"Machine: {machine}. Wall time of this audit: {wall_s:.0f} s "
        f"({counts['ran']} runs ran, {counts['skipped']} reused, {counts['pool_trained']} shadow "
        f"models trained, {counts['pool_reused']} reused).",
        "",
        *_selection_lines(task, arrays),
        audit_table(rows),
        "Forget score: NeurIPS-2023 challenge score (higher = closer to retraining, × utility "
        "ratios). U-LiRA: attack AUC on forgotten vs never-seen examples (0.5 = ideal). KLoM: "
        "per-example KL of margin distributions to the retrained shadows (0 = ideal). Probe: "
        + ("forget-class test accuracy a fresh linear head recovers from frozen features."
           if kind == "class" else
           "accuracy of a fresh linear head (fit on retain features) on the forgotten examples.")
        + " Relearn: SGD steps on a small forget subset back to the original's accuracy.",
        "",
        ("Methods that do not beat doing nothing (higher forget score *and* U-LiRA AUC closer "
         "to 0.5 than the unchanged original): " + ", ".join(f"`{m}`" for m in not_beating) + "."
         ) if not_beating else "Every method beats doing nothing on both scores.",
        "",
        "![ε histogram](epsilon.png)",
        "",
        *([] if challenge else ["![U-LiRA ROC](ulira_roc.png)", ""]),
        "![KLoM CDFs](klom_cdf.png)",
        "",
    ]
    if probe:
        lines += ["![linear probe](probe.png)", ""]
    report = out / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    return report


def _selection_lines(task: Any, arrays: dict[str, np.ndarray]) -> list[str]:
    """How a hard forget set was chosen, and its memorization as the scoring shadows see it."""
    sel = task.forget.get("selected")
    mem = arrays.get("memorization/forget_scoring")
    lines = []
    if sel:
        how = (f"{sel['selection_models']} selection models on random halves (seed "
               f"{sel['selection_seed']}), by Feldman–Zhang memorization"
               if sel.get("by") == "memorization" else
               f"the worst-case search on one selection model (seed {sel['selection_seed']})")
        lines.append(f"Forget set chosen by {how}; none of them is an audit shadow.")
    if mem is not None and np.isfinite(mem).any():
        lines.append(f"Memorization of the forget set measured on the audit's own originals "
                     f"(mean φ in − mean φ out): {float(np.nanmean(mem)):.2f}.")
    return [" ".join(lines), ""] if lines else []


def read_rows(out: str | Path) -> list[dict[str, Any]]:
    return json.loads((Path(out) / "audit.json").read_text())["rows"]
