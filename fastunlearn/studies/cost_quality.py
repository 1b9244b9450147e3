"""``cost-quality``: every method on one forget task — Avg-Gap to retrain against cost (RTE
ratio), the Pareto front, and a table sorted by Avg-Gap.

Options: none beyond :class:`~fastunlearn.studies.base.StudyConfig` (``forget`` picks the task,
``methods`` the methods; default: the fast ones).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from fastunlearn.studies.base import (
    StudyConfig,
    StudyContext,
    cell,
    default_forget,
    figure,
    md_table,
    register_study,
    relpath,
    savefig,
    summarise,
    task_runs,
)


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
                "retrained model) for its cost (wall time as a fraction of retraining)?")
class CostQuality:
    @staticmethod
    def plan(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
        forget = default_forget(config, data)
        return task_runs(config, dataset=config.dataset, model=config.model, forget=forget,
                         methods=config.method_list())

    @staticmethod
    def report(ctx: StudyContext) -> str:
        summary = summarise(ctx, ["method"])
        methods = [r for r in summary if r["method"] != "retrain"]
        methods.sort(key=lambda r: (not math.isfinite(r["avg_gap_mean"]), r["avg_gap_mean"]))
        pts = [(r["rte_ratio_mean"], r["avg_gap_mean"]) for r in methods]
        front = pareto_front(pts)
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
        ax.set_ylabel("Avg-Gap to retrain (points, lower is better)")
        forget = ctx.results[0]["run"]["forget"] if ctx.results else {}
        ax.set_title(f"{ctx.config.model} on {ctx.config.dataset}, forget {_forget_label(forget)}",
                     fontsize=9)
        ax.grid(alpha=0.3, which="both")
        png = savefig(fig, ctx.out / "pareto.png")

        head = ["method", "Avg-Gap", "UA", "RA", "TA", "MIA-Eff.", "JS to retrain", "RTE (s)",
                "× retrain", "Pareto"]
        body = []
        for r in methods:
            body.append([
                f"`{r['method']}`", cell(r, "avg_gap"), _ua(r), cell(r, "retain_acc"),
                cell(r, "test_acc"), cell(r, "mia_efficacy"), cell(r, "js_to_retrain", 4),
                cell(r, "rte_s", 1), cell(r, "rte_ratio", 3),
                "★" if r["method"] in on_front else "",
            ])
        gold = [r for r in summary if r["method"] == "retrain"]
        if gold:
            g = gold[0]
            body.append(["retrain (gold)", "0", _ua(g), cell(g, "retain_acc"), cell(g, "test_acc"),
                         cell(g, "mia_efficacy"), "0", cell(g, "rte_s", 1), "1", ""])
        text = ("## Results (sorted by Avg-Gap)\n\n" + md_table(head, body)
                + f"\n![Pareto front]({relpath(png, ctx)})\n\n")
        text += "## Answer\n\n" + _answer(methods, front, pts) + "\n"
        return text


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
            pts: list[tuple[float, float]]) -> str:
    if not methods or not front:
        return "No method produced a finite Avg-Gap and RTE ratio; nothing to compare.\n"
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
