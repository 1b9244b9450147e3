"""``cost-quality``: every method on one forget task — Avg-Gap to retrain against cost (RTE
ratio), the Pareto front, and a table sorted by Avg-Gap.

Every table has a do-nothing row (the unchanged original, cost 0); methods whose quality is
not better than it are marked ✗.

Options (:class:`CostQualityOptions`; ``config.options`` / ``--option KEY=VALUE``) beyond
:class:`~fastunlearn.studies.base.StudyConfig` (``forget`` picks the task, ``methods`` the
methods; default: the fast ones):

* ``shadows`` (0): with N > 0, also run the per-example audit (:mod:`fastunlearn.studies.audit`)
  of every method with N shadow models (same dataset, model, forget spec, epochs and method
  options; its pool beside the study's) and add the challenge forget score, U-LiRA AUC and
  linear-probe recovery as columns;
* ``quality`` (``avg_gap``): the Pareto plot's quality axis — ``avg_gap``, ``forget_score``
  (plotted as 1 − score), ``ulira`` (|AUC − 0.5|) or ``probe`` (|probe − retrain's probe|); the
  audit axes need ``shadows``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from fastunlearn.studies.base import (
    HEADLINE_METRICS,
    StudyContext,
    cell,
    figure,
    relpath,
    savefig,
    summarise,
    task_runs,
)
from fastunlearn.studies.config import COST_QUALITY_METHODS, StudyConfig, default_forget
from fastunlearn.studies.keys import DO_NOTHING, make_run
from fastunlearn.studies.options import StudyOptions
from fastunlearn.studies.registry import register_study
from fastunlearn.studies.tables import md_table

# quality axis → (column of the summary row, label, value to minimise)
QUALITY = {
    "avg_gap": ("avg_gap_mean", "Avg-Gap to retrain (points, lower is better)"),
    "forget_score": ("forget_score", "1 − forget score (NeurIPS-2023; lower is better)"),
    "ulira": ("ulira_auc", "|U-LiRA AUC − 0.5| (lower is better)"),
    "probe": ("probe_forget_acc", "|probe recovery − retrain's| (points, lower is better)"),
}


@dataclass
class CostQualityOptions(StudyOptions):
    """``shadows``: 0, or N ≥ 8 (even) shadow models for the per-example audit columns;
    ``quality``: the Pareto plot's quality axis, a key of :data:`QUALITY` (all but
    ``avg_gap`` need ``shadows``)."""

    study: ClassVar[str] = "cost-quality"
    shadows: int = 0
    quality: str = "avg_gap"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(self.shadows == 0 or (self.shadows >= 8 and self.shadows % 2 == 0),
                     "shadows", "0 (no audit) or an even number ≥ 8")
        self.require(self.quality in QUALITY, "quality", f"one of {', '.join(QUALITY)}")
        if self.quality != "avg_gap" and not self.shadows:
            raise ValueError(f"cost-quality option quality={self.quality} needs the audit: add "
                             "--option shadows=16")


def _quality(r: dict[str, Any], quality: str, gold: dict[str, Any] | None) -> float:
    v = r.get(QUALITY[quality][0], math.nan)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        return math.nan
    if quality == "forget_score":
        return 1.0 - v
    if quality == "ulira":
        return abs(v - 0.5)
    if quality == "probe":
        ref = (gold or {}).get("probe_forget_acc", math.nan)
        return abs(v - ref) if math.isfinite(ref) else math.nan
    return v


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points not dominated when both coordinates are minimised (a point is
    dominated when another is ≤ in both and < in one), sorted by the first coordinate."""
    idx = [i for i, (x, y) in enumerate(points) if math.isfinite(x) and math.isfinite(y)]
    front = []
    for i in idx:
        xi, yi = points[i]
        dominated = any(
            (points[j][0] <= xi and points[j][1] <= yi)
            and (points[j][0] < xi or points[j][1] < yi)
            for j in idx if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], points[i][1]))


@register_study("cost-quality",
                "Which method gives the best forgetting quality (smallest Avg-Gap to the "
                "retrained model) for its cost (wall time as a fraction of retraining)?",
                options=CostQualityOptions,
                # probe recovery beside Avg-Gap: the column a head-only edit cannot win
                eval_options={"linear_probe": True})
class CostQuality:
    @staticmethod
    def plan(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
        CostQualityOptions.of(config)
        forget = default_forget(config, data)
        runs = task_runs(config, dataset=config.dataset, model=config.model, forget=forget,
                         methods=_methods(config, forget))
        for seed in range(config.seeds):  # the do-nothing row
            runs.append(make_run(dataset=config.dataset, model=config.model, forget=forget,
                                 method=DO_NOTHING, train=config.train_config(), seed=seed))
        return runs

    @staticmethod
    def report(ctx: StudyContext) -> str:
        opts = CostQualityOptions.of(ctx.config)
        shadows, quality = opts.shadows, opts.quality
        summary = summarise(ctx, ["method"], (*HEADLINE_METRICS, "probe_forget_acc"))
        audit_rows = _audit(ctx, shadows) if shadows else {}
        for r in summary:
            r.update({k: v for k, v in audit_rows.get(r["method"], {}).items()
                      if k != "method"})
        gold_row = next((r for r in summary if r["method"] == "retrain"), None)
        nothing = next((r for r in summary if r["method"] == DO_NOTHING), None)
        methods = [r for r in summary if r["method"] not in ("retrain", DO_NOTHING)]
        for r in methods:
            r["_q"] = _quality(r, quality, gold_row)
        methods.sort(key=lambda r: (not math.isfinite(r["_q"]), r["_q"]))
        pts = [(r["rte_ratio_mean"], r["_q"]) for r in methods]
        front = pareto_front(pts)
        q_nothing = _quality(nothing, quality, gold_row) if nothing else math.nan
        for r in methods:
            paired = (_paired_beats(ctx.rows, r["method"]) if quality == "avg_gap"
                      else None)
            r["_beats"] = paired if paired is not None else (
                math.isfinite(r["_q"]) and math.isfinite(q_nothing) and r["_q"] < q_nothing)
        on_front = {methods[i]["method"] for i in front}

        fig, ax = figure()
        for i, r in enumerate(methods):
            x, y = pts[i]
            if not (math.isfinite(x) and math.isfinite(y)):
                continue
            star = r["method"] in on_front
            ax.errorbar(x, y, yerr=_err(r["avg_gap_ci95"]), fmt="o" if star else "s",
                        color="C3" if star else "C0", ms=7 if star else 5, capsize=3)
            ax.annotate(r["method"], (x, y), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        if front:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="C3",
                    lw=1, label="Pareto front")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_xscale("log")
        ax.set_xlabel("RTE ratio (method wall time / retrain time, log)")
        if math.isfinite(q_nothing):
            ax.axhline(q_nothing, color="0.4", ls=":", lw=1,
                       label="do nothing (original, cost 0)")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_ylabel(QUALITY[quality][1])
        forget = ctx.results[0]["run"]["forget"] if ctx.results else {}
        ax.set_title(f"{ctx.config.model} on {ctx.config.dataset}, forget {_forget_label(forget)}",
                     fontsize=9)
        ax.grid(alpha=0.3, which="both")
        png = savefig(fig, ctx.out / "pareto.png")

        audit_head = (["forget score", "U-LiRA AUC", "audit probe %"] if shadows else [])
        head = ["method", "Avg-Gap", "UA", "RA", "TA", "MIA-Eff.", "JS to retrain", "probe %",
                *audit_head,
                "RTE (s)", "× retrain", "Pareto", "beats do-nothing"]

        def audit_cells(r: dict[str, Any]) -> list[str]:
            if not shadows:
                return []
            return [_num(r.get("forget_score"), 3), _num(r.get("ulira_auc"), 3),
                    _num(r.get("probe_forget_acc"), 1)]

        body = []
        for r in methods:
            body.append([
                f"`{r['method']}`", cell(r, "avg_gap"), _ua(r), cell(r, "retain_acc"),
                cell(r, "test_acc"), cell(r, "mia_efficacy"), cell(r, "js_to_retrain", 4),
                cell(r, "probe_forget_acc", 1), *audit_cells(r), cell(r, "rte_s", 1),
                cell(r, "rte_ratio", 3),
                "★" if r["method"] in on_front else "", "✓" if r["_beats"] else "✗",
            ])
        if nothing:
            n = nothing
            body.append(["original (do nothing)", cell(n, "avg_gap"), _ua(n),
                         cell(n, "retain_acc"), cell(n, "test_acc"), cell(n, "mia_efficacy"),
                         cell(n, "js_to_retrain", 4), cell(n, "probe_forget_acc", 1),
                         *audit_cells(n), "0", "0", "", ""])
        if gold_row:
            g = gold_row
            body.append(["retrain (gold)", "0", _ua(g), cell(g, "retain_acc"), cell(g, "test_acc"),
                         cell(g, "mia_efficacy"), "0", cell(g, "probe_forget_acc", 1),
                         *audit_cells(g), cell(g, "rte_s", 1), "1",
                         "", ""])
        text = (f"## Results (sorted by {QUALITY[quality][1].split(' (')[0]})\n\n"
                + md_table(head, body) + f"\n![Pareto front]({relpath(png, ctx)})\n\n")
        if shadows:
            text += (f"Audit columns: {shadows} shadow models per method (forget score: "
                     "NeurIPS-2023 challenge score, higher is better; U-LiRA AUC: 0.5 is ideal; "
                     "probe: forget accuracy a fresh linear head recovers from frozen features). "
                     "The retrain row of the audit is retrain vs an independent retrain — the "
                     "best a method can score with this N. Full audit: `audit/report.md`.\n\n")
        losers = [r["method"] for r in methods if not r["_beats"]]
        paired = quality == "avg_gap" and ctx.config.seeds > 1
        if nothing and losers:
            text += ("Not better than doing nothing on this quality axis"
                     + (" (the 95 % CI of the per-seed Avg-Gap improvement over the do-nothing "
                        "row, same original and gold model, does not lie above 0)"
                        if paired else "") + ": "
                     + ", ".join(f"`{m}`" for m in losers) + ".\n\n")
        text += ("probe %: what a fresh linear head on the frozen penultimate features "
                 "recovers of the forget set (the forgotten classes' test images for class "
                 "forgetting) — the retrain's is the level to match; a head-only edit keeps the "
                 "original's.\n\n")
        text += "## Answer\n\n" + _answer(methods, front, pts, QUALITY[quality][1])
        text += _probe_caveat(methods, gold_row, nothing) + "\n"
        return text


def _methods(config: StudyConfig, forget: dict[str, Any]) -> tuple[str, ...]:
    """``--methods``, else :data:`COST_QUALITY_METHODS` (the class-only ones only for class
    forgetting)."""
    if config.methods:
        return tuple(config.methods)
    class_only = ("zero_shot", "delete")
    return tuple(m for m in COST_QUALITY_METHODS
                 if forget.get("type") == "class" or m not in class_only)


def _paired_beats(rows: Sequence[dict[str, Any]], method: str) -> bool | None:
    """With ≥ 2 seeds: does ``method`` beat doing nothing on Avg-Gap, paired by seed (the same
    original and gold model) — the 95 % CI of the per-seed improvement lies above 0? None with
    fewer seeds (the caller then compares the means)."""
    from fastunlearn.studies.tables import mean_ci

    gap: dict[tuple[str, Any], float] = {}
    for r in rows:
        try:
            gap[(r["method"], r.get("seed"))] = float(r["avg_gap"])
        except (KeyError, TypeError, ValueError):
            continue
    seeds = [s for (m, s) in gap if m == method and (DO_NOTHING, s) in gap]
    diffs = [gap[(DO_NOTHING, s)] - gap[(method, s)] for s in seeds]
    diffs = [d for d in diffs if math.isfinite(d)]
    if len(diffs) < 2:
        return None
    mean, half, _ = mean_ci(diffs)
    return bool(mean - half > 0)


def _audit(ctx: StudyContext, shadows: int) -> dict[str, dict[str, Any]]:
    """Run the per-example audit of the study's methods; ``{method: audit row}`` (the audit's
    ``retrain`` row is retrain vs an independent retrain)."""
    from fastunlearn.studies.audit import AuditConfig, audit
    from fastunlearn.studies.config import parse_forget

    cfg = ctx.config
    forget = cfg.forget or f"class:{ctx.data.classes[0]}"
    methods = _methods(cfg, parse_forget(forget, ctx.data.classes))
    pool = cfg.pool or str(ctx.out.parent / "pool")
    res = audit(AuditConfig(
        methods=methods, dataset=cfg.dataset, model=cfg.model, forget=forget,
        # the study's own recipe (fu.train's defaults), not the audit's fast shadow recipe
        epochs=cfg.epochs, batch_size=cfg.batch_size or 128, lr=0.05, weight_decay=5e-4,
        schedule="cosine", warmup_epochs=0.0, shadows=shadows,
        method_options={m: cfg.method_config(m) for m in methods if cfg.method_config(m)},
        out=str(ctx.out / "audit"), pool=pool, executor=cfg.executor, workers=cfg.workers,
        device=cfg.device, threads=cfg.threads, progress=cfg.progress))
    return {r["method"]: r for r in res.rows}


def _num(v: Any, nd: int) -> str:
    return f"{v:.{nd}f}" if isinstance(v, (int, float)) and math.isfinite(v) else "—"


def _err(half: float) -> float | None:
    return half if math.isfinite(half) else None


def _ua(r: dict[str, Any]) -> str:
    mean = r.get("forget_acc_mean", math.nan)
    return cell({"x_mean": 100 - mean if math.isfinite(mean) else math.nan,
                 "x_ci95": r.get("forget_acc_ci95", math.nan)}, "x")


def _forget_label(spec: dict[str, Any]) -> str:
    if spec.get("type") == "class":
        return "class " + ", ".join(spec["classes"])
    if "fraction" in spec:
        return f"random {100 * spec['fraction']:g} %"
    return f"random {spec.get('count')} samples"


def _answer(methods: list[dict[str, Any]], front: list[int],
            pts: list[tuple[float, float]], quality: str = QUALITY["avg_gap"][1]) -> str:
    if not methods or not front:
        return "No method produced a finite quality and RTE ratio; nothing to compare.\n"
    if not quality.startswith("Avg-Gap"):
        best = methods[0]
        return (f"On the quality axis {quality}, the best is `{best['method']}` "
                f"({best['_q']:.3f} at {best['rte_ratio_mean']:.3f}× the retrain time); the "
                "Pareto front is " + ", ".join(f"`{methods[i]['method']}` ({pts[i][1]:.3f} at "
                                               f"{pts[i][0]:.3f}×)" for i in front) + ".\n")
    best = methods[0]
    cheapest = min(front, key=lambda i: pts[i][0])
    parts = [
        f"The closest to retraining is `{best['method']}` (Avg-Gap "
        f"{best['avg_gap_mean']:.2f} points at {best['rte_ratio_mean']:.3f}× the retrain time).",
        "The Pareto front (no other method is both cheaper and closer) is "
        + ", ".join(f"`{methods[i]['method']}` ({pts[i][1]:.2f} at {pts[i][0]:.3f}×)"
                    for i in front) + ".",
    ]
    if len(front) == 1 and len(methods) > 1:
        runner_up = methods[1]
        parts.append(
            f"It dominates every other method: the next closest, `{runner_up['method']}`, "
            f"has Avg-Gap {runner_up['avg_gap_mean']:.2f} at "
            f"{runner_up['rte_ratio_mean']:.3f}× the retrain time."
        )
    if methods[cheapest]["method"] != best["method"]:
        parts.append(
            f"The cheapest front method, `{methods[cheapest]['method']}`, is "
            f"{pts[front[-1]][0] / max(pts[cheapest][0], 1e-12):.0f}× cheaper than the most "
            f"expensive one on the front and costs {pts[cheapest][1] - best['avg_gap_mean']:.2f} "
            "points of Avg-Gap more than the best."
        )
    within = [r for r in methods if r["avg_gap_mean"] <= best["avg_gap_mean"] + 1.0]
    if within:
        c = min(within, key=lambda r: r["rte_ratio_mean"])
        parts.append(f"Within 1 point of the best Avg-Gap, the cheapest is `{c['method']}` "
                     f"({c['rte_ratio_mean']:.3f}× retrain).")
    return " ".join(parts) + "\n"


#: probe recovery this many points above the retrain's counts as "the features still carry
#: the forget set"
PROBE_SLACK = 5.0


def _probe_caveat(methods: list[dict[str, Any]], gold: dict[str, Any] | None,
                  nothing: dict[str, Any] | None) -> str:
    """What Avg-Gap misses, said plainly: when the best method's features still give the
    forget set away to a linear probe (≥ :data:`PROBE_SLACK` points above the retrain's),
    name it and the best method whose probe is within the slack."""
    ref = (gold or {}).get("probe_forget_acc_mean", math.nan)
    if not methods or not math.isfinite(ref):
        return ""
    best = methods[0]
    p = best.get("probe_forget_acc_mean", math.nan)
    if not math.isfinite(p) or p <= ref + PROBE_SLACK:
        return ""
    orig = (nothing or {}).get("probe_forget_acc_mean", math.nan)
    text = (f"\nBut Avg-Gap compares outputs only: a linear probe on `{best['method']}`'s "
            f"features still recovers {p:.1f} % of the forget set (retrain: {ref:.1f} %"
            + (f", original: {orig:.1f} %" if math.isfinite(orig) else "")
            + ") — the forgotten information is still in the representation, and a head-only "
            "edit would look just like this.")
    honest = [r for r in methods
              if r.get("probe_forget_acc_mean", math.inf) <= ref + PROBE_SLACK]
    if honest:
        h = honest[0]
        text += (f" Among methods whose probe is within {PROBE_SLACK:.0f} points of the "
                 f"retrain's, the closest on Avg-Gap is `{h['method']}` (Avg-Gap "
                 f"{h['avg_gap_mean']:.2f} at {h['rte_ratio_mean']:.3f}× the retrain time, "
                 f"probe {h['probe_forget_acc_mean']:.1f} %).")
    else:
        text += (f" No method's probe comes within {PROBE_SLACK:.0f} points of the "
                 "retrain's.")
    return text + "\n"
