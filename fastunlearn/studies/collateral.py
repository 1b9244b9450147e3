"""``collateral``: which classes suffer when a given class is forgotten?

Every method forgets each class in turn (one forget task per class, each with its own gold
retrain as the reference row). For every run the report computes the per-class test accuracy
change against the original model (unlearned − original, in points; negative = the class lost
accuracy) and shows it as heatmaps — rows: the forgotten class, columns: every class, the
forgotten class's own cell hatched and left out of the colour scale — for the mean over
methods, for the retrained model (the collateral that retraining without the class causes by
itself) and, with at most six methods, for each method. Tables give collateral damage
(original − unlearned accuracy over retain classes: mean and worst class) and confusion drift
(½‖C_u − C_ref‖₁ / N on the test set, against the original and against the retrained model)
per method and per forgotten class. The answer names the (forgotten → suffering) pair with the
largest drop and the method with the smallest worst-case damage.

The original's per-class accuracy is recovered from the results (the original model is shared
by every task of a seed): retain class c has original accuracy ``per_class_test_acc[c] +
collateral_damage_per_class[c]``; a singly forgotten class has ``original_test_forget_acc``.

Options (:class:`CollateralOptions`; ``config.options``, ``--option KEY=VALUE``):

- ``classes``: the forget tasks — class names or indices, one task each, or ``"class:A,B"``
  entries for a task forgetting several classes together; a plain string is a comma-separated
  list of single classes (``--option classes=Coat,Shirt``). Default: a class spec given as
  ``forget`` (one task), else every class of the dataset (one retrain per class).
- ``tolerance``: a method "forgets" when its mean forget accuracy is within this many points
  of the retrained model's (default 5); the answer also names the least damaging of those.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from fastunlearn.studies.base import (
    StudyContext,
    cell,
    figure,
    relpath,
    savefig,
    summarise,
    task_runs,
)
from fastunlearn.studies.config import StudyConfig, parse_forget
from fastunlearn.studies.options import StudyOptions, option
from fastunlearn.studies.registry import register_study
from fastunlearn.studies.tables import aggregate, fmt, md_table, write_csv

log = logging.getLogger(__name__)

METRICS = ("forget_acc", "test_acc", "collateral_damage_mean", "collateral_damage_worst",
           "confusion_drift_vs_original", "confusion_drift_vs_retrain", "avg_gap")
MAX_PANELS = 6  # methods drawn one panel each when there are at most this many


# --------------------------------------------------------------------------- options
@dataclass
class CollateralOptions(StudyOptions):
    """``classes``: the forget tasks (class names or indices, one task each, or ``"class:A,B"``
    for a task forgetting several classes together; a plain string is a comma-separated list
    of single classes; None: a class ``forget`` spec, else every class). ``tolerance``: points
    of forget accuracy within the retrained model's that count as "forgets" (≥ 0)."""

    study: ClassVar[str] = "collateral"
    classes: tuple[str | int, ...] | None = option(None, "a list of class names or indices")
    tolerance: float = 5.0

    def __post_init__(self) -> None:
        if isinstance(self.classes, str) and self.classes.strip().lower().startswith("class:"):
            self.classes = (self.classes,)  # one task of several classes, not a list
        super().__post_init__()
        self.require(self.classes is None or len(self.classes) > 0, "classes",
                     "a non-empty list of classes to forget")
        self.require(self.tolerance >= 0, "tolerance", "a non-negative number of points")


def forget_tasks(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
    """The class-forgetting specs of the study (see the module docstring), validated."""
    from fastunlearn.data import forget_classes

    opts = CollateralOptions.of(config)
    if opts.classes is None:
        if config.forget is not None:
            spec = parse_forget(config.forget, data.classes)
            if spec["type"] != "class":
                raise ValueError(f"collateral studies class forgetting; forget={config.forget!r} "
                                 "is not a class spec (use class:NAME or --option classes=...)")
            items: list[Any] = ["class:" + ",".join(spec["classes"])]
        else:
            items = list(data.classes)
    else:
        items = list(opts.classes)
    tasks, seen = [], set()
    for item in items:
        text = str(item).strip()
        spec = parse_forget(text if text.lower().startswith("class:") else f"class:{text}",
                            data.classes)
        if spec["type"] != "class":
            raise ValueError(f"option classes: {item!r} is not a class spec")
        spec = forget_classes(data, spec["classes"]).spec  # canonical order; checks the task
        label = ",".join(spec["classes"])
        if label in seen:
            raise ValueError(f"option classes lists the task {label!r} twice")
        seen.add(label)
        tasks.append(spec)
    return tasks


# ------------------------------------------------------------------------------ study
@register_study("collateral",
                "When a class is forgotten, which other classes lose accuracy (per-class "
                "accuracy change and confusion drift), and which method does the least "
                "collateral damage?", options=CollateralOptions)
class Collateral:
    @staticmethod
    def plan(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
        runs = []
        tasks = forget_tasks(config, data)
        for spec in tasks:
            runs += task_runs(config, dataset=config.dataset, model=config.model, forget=spec,
                              methods=config.method_list(),
                              tags={"forgotten": ",".join(spec["classes"])})
        log.info("collateral: %d forget tasks × %d methods × %d seeds", len(tasks),
                 len(config.method_list()), config.seeds)
        return runs

    @staticmethod
    def report(ctx: StudyContext) -> str:
        classes = list(ctx.data.classes)
        tol = CollateralOptions.of(ctx.config).tolerance
        summarise(ctx, ["tag.forgotten", "method"], METRICS)
        by_method = aggregate(ctx.rows, ["method"], METRICS)
        write_csv(by_method, ctx.out / "summary_by_method.csv")
        tasks = list(dict.fromkeys(r["run"]["tags"]["forgotten"] for r in ctx.results))
        methods = list(dict.fromkeys(r["run"]["method"] for r in ctx.results
                                     if r["run"]["method"] != "retrain"))
        changes = class_changes(ctx.results, classes)
        mats = change_matrices(ctx.results, changes, tasks, classes)
        _write_changes(ctx.out / "per_class_change.csv", mats, tasks, classes)
        mean = _mean_matrix([mats[m] for m in methods], tasks, classes) if methods else None
        gold = mats.get("retrain")
        forgotten = {t: set(t.split(",")) for t in tasks}

        text = "## Collateral damage per method\n\n"
        text += (f"Mean ± 95 % CI over {len(tasks)} forget task(s) × {ctx.config.seeds} seed(s). "
                 "Collateral damage = original − unlearned test accuracy of a retain class "
                 "(points; positive = lost accuracy), mean over retain classes and worst class; "
                 "\"worst (max)\" is the largest worst-class damage of any task and seed. "
                 "Confusion drift = ½‖C_u − C_ref‖₁ / N on the test set.\n\n")
        head = ["method", "forget acc", "test acc", "collateral mean", "collateral worst",
                "worst (max)", "conf. drift vs orig.", "conf. drift vs retrain"]
        body = []
        order = sorted((r for r in by_method if r["method"] != "retrain"),
                       key=lambda r: _key(r["collateral_damage_worst_mean"]))
        order += [r for r in by_method if r["method"] == "retrain"]
        for r in order:
            name = "retrain (gold)" if r["method"] == "retrain" else f"`{r['method']}`"
            body.append([name, cell(r, "forget_acc"), cell(r, "test_acc"),
                         cell(r, "collateral_damage_mean"), cell(r, "collateral_damage_worst"),
                         fmt(_max_of(ctx.rows, r["method"], "collateral_damage_worst")),
                         cell(r, "confusion_drift_vs_original", 3),
                         cell(r, "confusion_drift_vs_retrain", 3)])
        text += md_table(head, body) + "\n"

        text += "## Per forgotten class\n\n"
        text += ("Accuracy change (unlearned − original, points) of the most-hurt other class, "
                 "mean over methods, beside what the retrained model does to the same class.\n\n")
        body = []
        for t in tasks:
            row = [f"`{t}`"]
            if mean is not None:
                c, v = _worst_cell(mean[t], forgotten[t])
                row += [f"`{c}`" if c else "none", fmt(v, nd=1),
                        fmt(gold[t][c], nd=1) if gold is not None and c else "—"]
            else:
                row += ["—", "—", "—"]
            if gold is not None:
                gc, gv = _worst_cell(gold[t], forgotten[t])
                row += [f"`{gc}` ({fmt(gv, nd=1)})" if gc else "none"]
            else:
                row += ["—"]
            body.append(row)
        text += md_table(["forgotten", "most-hurt class (methods)", "change (methods)",
                          "retrain on it", "retrain's most-hurt (change)"], body) + "\n"

        if mean is not None and len(classes) <= 12:
            text += ("### Mean accuracy change over methods (rows: forgotten; the forgotten "
                     "class's own cell in brackets)\n\n")
            body = [[f"`{t}`"] + [(f"[{fmt(mean[t][c], nd=1)}]" if c in forgotten[t]
                                   else fmt(mean[t][c], nd=1)) for c in classes] for t in tasks]
            text += md_table(["forgotten", *[f"`{c}`" for c in classes]], body) + "\n"

        panels = []
        if mean is not None:
            panels.append(("mean over methods", mean))
        if gold is not None:
            panels.append(("retrain (natural)", gold))
        if panels:
            png = _plot(ctx, panels, tasks, classes, forgotten, "collateral.png")
            text += f"![per-class accuracy change]({relpath(png, ctx)})\n\n"
        if 1 < len(methods) <= MAX_PANELS:
            png = _plot(ctx, [(m, mats[m]) for m in methods], tasks, classes, forgotten,
                        "collateral_methods.png")
            text += f"![per-class accuracy change per method]({relpath(png, ctx)})\n\n"
        text += ("The full per-class changes (method, forgotten, class, mean over seeds) are in "
                 "`per_class_change.csv`.\n\n")
        text += "## Answer\n\n" + _answer(by_method, mean, gold, tasks, forgotten, tol) + "\n"
        return text


# ------------------------------------------------------------------------- the numbers
def _per_class(metrics: Mapping[str, Any], classes: Sequence[str]) -> dict[str, float]:
    pc = metrics.get("per_class_test_acc", {})
    if isinstance(pc, Mapping):
        return {str(k): float(v) for k, v in pc.items()}
    return {c: float(v) for c, v in zip(classes, pc)}


def original_per_class(results: Sequence[Mapping[str, Any]], classes: Sequence[str],
                       ) -> dict[int, dict[str, float]]:
    """``{seed: {class: original test accuracy}}`` recovered from the results (mean of every
    estimate; they agree up to rounding, the original model being shared by a seed's tasks)."""
    est: dict[int, dict[str, list[float]]] = {}
    for res in results:
        m, seed = res["metrics"], res["run"]["seed"]
        pc = _per_class(m, classes)
        per = est.setdefault(seed, {})
        for c, dmg in (m.get("collateral_damage_per_class") or {}).items():
            if c in pc and _finite(dmg):
                per.setdefault(c, []).append(pc[c] + float(dmg))
        gone = res["run"]["forget"].get("classes", [])
        if len(gone) == 1 and _finite(m.get("original_test_forget_acc")):
            per.setdefault(gone[0], []).append(float(m["original_test_forget_acc"]))
    return {s: {c: sum(v) / len(v) for c, v in per.items()} for s, per in est.items()}


def class_changes(results: Sequence[Mapping[str, Any]], classes: Sequence[str],
                  ) -> list[dict[str, float]]:
    """Per result: ``{class: unlearned − original test accuracy}`` (NaN where the original's
    accuracy is unknown)."""
    orig = original_per_class(results, classes)
    out = []
    for res in results:
        pc = _per_class(res["metrics"], classes)
        o = orig.get(res["run"]["seed"], {})
        out.append({c: pc.get(c, math.nan) - o.get(c, math.nan) for c in classes})
    return out


def change_matrices(results: Sequence[Mapping[str, Any]], changes: Sequence[Mapping[str, float]],
                    tasks: Sequence[str], classes: Sequence[str],
                    ) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {forgotten task: {class: mean change over seeds}}}``."""
    acc: dict[str, dict[str, dict[str, list[float]]]] = {}
    for res, ch in zip(results, changes):
        t = res["run"]["tags"]["forgotten"]
        cells = acc.setdefault(res["run"]["method"], {}).setdefault(t, {})
        for c, v in ch.items():
            if _finite(v):
                cells.setdefault(c, []).append(v)
    return {m: {t: {c: _avg(per.get(t, {}).get(c, [])) for c in classes} for t in tasks}
            for m, per in acc.items()}


def _mean_matrix(mats: Sequence[Mapping[str, Mapping[str, float]]], tasks: Sequence[str],
                 classes: Sequence[str]) -> dict[str, dict[str, float]]:
    return {t: {c: _avg([m[t][c] for m in mats if _finite(m[t][c])]) for c in classes}
            for t in tasks}


def _worst_cell(row: Mapping[str, float], skip: set[str]) -> tuple[str | None, float]:
    """The class (outside ``skip``) that lost the most accuracy, or ``(None, nan)`` when none
    lost any."""
    cand = [(v, c) for c, v in row.items() if c not in skip and _finite(v)]
    if not cand or min(cand)[0] > -0.05:  # rounds to 0.0: float32 noise, not a loss
        return None, math.nan
    v, c = min(cand)
    return c, v


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _avg(vals: Sequence[float]) -> float:
    return sum(vals) / len(vals) if vals else math.nan


def _key(v: Any) -> tuple[bool, float]:
    return (not _finite(v), v if _finite(v) else 0.0)


def _max_of(rows: Sequence[Mapping[str, Any]], method: str, col: str) -> float:
    vals = [r[col] for r in rows if r["method"] == method and _finite(r.get(col))]
    return max(vals) if vals else math.nan


def _write_changes(path: Path, mats: Mapping[str, Mapping[str, Mapping[str, float]]],
                   tasks: Sequence[str], classes: Sequence[str]) -> None:
    rows = [{"method": m, "forgotten": t, "class": c, "change": mats[m][t][c],
             "is_forgotten": c in t.split(",")}
            for m in mats for t in tasks for c in classes]
    write_csv(rows, path)


# ------------------------------------------------------------------------------- plots
def _plot(ctx: StudyContext, panels: Sequence[tuple[str, Mapping[str, Mapping[str, float]]]],
          tasks: Sequence[str], classes: Sequence[str], forgotten: Mapping[str, set[str]],
          name: str) -> Path:
    import numpy as np
    from matplotlib.patches import Rectangle

    n = len(panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    cw, rh = 0.42 * len(classes) + 1.2, 0.36 * len(tasks) + 1.3
    fig, axes = figure(ncols * cw + 1.2, nrows * rh + 0.6, nrows=nrows, ncols=ncols,
                       squeeze=False)
    off = [mat[t][c] for _, mat in panels for t in tasks for c in classes
           if c not in forgotten[t] and _finite(mat[t][c])]
    vlim = max([abs(v) for v in off] + [1.0])
    annotate = len(classes) <= 12 and len(tasks) <= 12
    im = None
    for k, (title, mat) in enumerate(panels):
        ax = axes[k // ncols][k % ncols]
        arr = np.array([[mat[t][c] for c in classes] for t in tasks], dtype=float)
        shown = arr.copy()
        for i, t in enumerate(tasks):
            for j, c in enumerate(classes):
                if c in forgotten[t]:
                    shown[i, j] = np.nan
        im = ax.imshow(np.ma.masked_invalid(shown), cmap="RdBu", vmin=-vlim, vmax=vlim,
                       aspect="auto")
        for i, t in enumerate(tasks):
            for j, c in enumerate(classes):
                own = c in forgotten[t]
                if own:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, facecolor="#dddddd",
                                           edgecolor="black", hatch="///", lw=1.2))
                if annotate and math.isfinite(arr[i, j]):
                    ax.text(j, i, fmt(float(arr[i, j]), nd=0), ha="center", va="center",
                            fontsize=6 if own else 7, style="italic" if own else "normal",
                            color="white" if not own and abs(arr[i, j]) > 0.6 * vlim
                            else "black")
        ax.set_xticks(range(len(classes)), [_short(c) for c in classes], rotation=45,
                      ha="right", fontsize=7)
        ax.set_yticks(range(len(tasks)), [_short(t) for t in tasks], fontsize=7)
        ax.set_xlabel("class", fontsize=8)
        ax.set_ylabel("forgotten", fontsize=8)
        ax.set_title(title, fontsize=9)
    for k in range(n, nrows * ncols):
        axes[k // ncols][k % ncols].axis("off")
    if im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.8,
                     label="test accuracy change vs original (points)")
    fig.suptitle(f"Per-class accuracy change when a class is forgotten — {ctx.config.model} on "
                 f"{ctx.config.dataset} (hatched: the forgotten class itself)", fontsize=9)
    return savefig(fig, ctx.out / name)


def _short(name: str, n: int = 12) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


# ------------------------------------------------------------------------------ answer
def _answer(by_method: Sequence[Mapping[str, Any]], mean: Mapping[str, Mapping[str, float]] | None,
            gold: Mapping[str, Mapping[str, float]] | None, tasks: Sequence[str],
            forgotten: Mapping[str, set[str]], tol: float) -> str:
    parts = []
    if mean is not None:
        cells = [(v, t, c) for t in tasks for c, v in mean[t].items()
                 if c not in forgotten[t] and _finite(v)]
        if cells and min(cells)[0] > -0.05:
            parts.append("No class lost test accuracy on average over methods when another "
                         "class was forgotten.")
        elif cells:
            v, t, c = min(cells)
            g = gold[t][c] if gold is not None else math.nan
            parts.append(
                f"The largest collateral drop is `{t}` → `{c}`: forgetting `{t}` changes the "
                f"accuracy of `{c}` by {v:.1f} points on average over methods"
                + (f" (the retrained model: {fmt(g, nd=1)}, so {fmt(v - g, nd=1)} beyond what "
                   "retraining without the class causes)." if _finite(g) else "."))
            if gold is not None:
                excess = [(mean[t2][c2] - gold[t2][c2], t2, c2) for _, t2, c2 in cells
                          if _finite(gold[t2][c2])]
                if excess:
                    e, t2, c2 = min(excess)
                    if (t2, c2) != (t, c):
                        parts.append(f"Measured against retraining, the largest excess drop is "
                                     f"`{t2}` → `{c2}` ({fmt(e, nd=1)} points).")
    methods = [r for r in by_method if r["method"] != "retrain"
               and _finite(r.get("collateral_damage_worst_mean"))]
    gold_row = next((r for r in by_method if r["method"] == "retrain"), None)
    ref = gold_row.get("forget_acc_mean") if gold_row is not None else math.nan

    def forgets(r: Mapping[str, Any]) -> bool:
        fa = r.get("forget_acc_mean")
        return not _finite(ref) or (_finite(fa) and fa <= ref + tol)

    def rank(r: Mapping[str, Any]) -> tuple[float, bool, float]:
        # ties in worst-case damage (to 0.1 point) go to a method that forgets, then to the
        # lower forget accuracy
        fa = r.get("forget_acc_mean")
        return (round(r["collateral_damage_worst_mean"], 1), not forgets(r),
                fa if _finite(fa) else math.inf)

    if methods:
        best = min(methods, key=rank)
        tied = [r["method"] for r in methods if r is not best
                and round(r["collateral_damage_worst_mean"], 1) == rank(best)[0]]
        parts.append(
            f"The smallest worst-case damage is `{best['method']}`'s: its worst retain class "
            f"loses {fmt(best['collateral_damage_worst_mean'], nd=1)} points on average over tasks "
            f"and seeds (mean damage {fmt(best['collateral_damage_mean_mean'], nd=1)}, forget acc "
            f"{fmt(best['forget_acc_mean'], nd=1)} %)"
            + (" — tied with " + ", ".join(f"`{m}`" for m in tied) if tied else "")
            + (f"; the retrained model itself: "
               f"{fmt(gold_row['collateral_damage_worst_mean'], nd=1)}."
               if gold_row is not None and _finite(gold_row["collateral_damage_worst_mean"])
               else "."))
        if not forgets(best):
            doing = [r for r in methods if forgets(r)]
            if doing:
                b2 = min(doing, key=rank)
                parts.append(
                    f"But `{best['method']}` does not forget (forget acc more than {tol:g} "
                    f"points above the retrained model's {ref:.1f} %); among the methods "
                    f"that do, `{b2['method']}` has the smallest worst-case damage "
                    f"({fmt(b2['collateral_damage_worst_mean'], nd=1)} points).")
            else:
                parts.append(f"No method forgets (forget acc within {tol:g} points of the "
                             f"retrained model's {ref:.1f} %), so small damage here is "
                             "partly damage avoided by not unlearning.")
    if not parts:
        return "No finite per-class changes; nothing to compare.\n"
    return " ".join(parts) + "\n"
