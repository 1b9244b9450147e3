"""``forget-scaling``: how unlearning quality changes with the size of the forget set.

Random forgetting of 1, 5, 10, 25 and 50 % of the training set and class forgetting of 1, 2
and 3 classes. Every forget set is its own task with its own gold retrain (the pool keys gold
models by forget spec) and its own retrain reference row, so each method is judged against
retraining *at that size*. The report has one table per kind (UA, RA, TA, MIA-Efficacy,
Avg-Gap, RTE ratio against the retrain values at each size), Avg-Gap and forget accuracy
against the forget-set size, and an answer derived from the numbers: per method whether
Avg-Gap grows or shrinks with the size (Spearman ρ over all runs), the worst size, and how
the retrained model's own forget accuracy moves.

Options (:class:`ForgetScalingOptions`; ``config.options`` / ``--option KEY=VALUE``):

- ``fractions``: fractions of the training set forgotten at random, each in (0, 1)
  (default ``(0.01, 0.05, 0.10, 0.25, 0.50)``; ``[]`` skips random forgetting). A list,
  one number, or a comma-separated string such as ``"1%,5%"`` or ``"0.01,0.05"``.
- ``class_counts``: numbers of classes forgotten together (default ``(1, 2, 3)``; ``[]``
  skips class forgetting); ``k`` forgets the first ``k`` classes of ``classes``.
- ``classes``: the class order for ``class_counts`` (names or indices; default the dataset's
  order, i.e. ``k`` forgets classes ``0 … k−1``).

``config.forget`` and ``config.models`` must stay unset (the study sweeps the forget set
itself; ``config.model`` is the architecture). Random forget sets are drawn with the run's
seed, so every seed forgets a different sample of the same size (``--seeds 3`` gives CIs).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
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
from fastunlearn.studies.config import StudyConfig
from fastunlearn.studies.options import StudyOptions, as_items, option
from fastunlearn.studies.registry import register_study
from fastunlearn.studies.tables import aggregate, md_table

DEFAULT_FRACTIONS = (0.01, 0.05, 0.10, 0.25, 0.50)
DEFAULT_CLASS_COUNTS = (1, 2, 3)
KINDS = ("random", "class")
# Columns of the tables (metric, header, decimals).
TABLE_METRICS = (("UA", "UA", 2), ("retain_acc", "RA", 2), ("test_acc", "TA", 2),
                 ("mia_efficacy", "MIA-Eff.", 2), ("avg_gap", "Avg-Gap", 2),
                 ("rte_ratio", "× retrain", 3))
SUMMARY_METRICS = ("forget_acc", "UA", "retain_acc", "test_acc", "test_forget_acc",
                   "mia_efficacy", "avg_gap", "js_to_retrain", "rte_s", "rte_ratio")
# Reference values of the gold retrain, present on every row of its task.
RETRAIN_COLUMNS = ("retrain_forget_acc", "retrain_UA", "retrain_retain_acc", "retrain_test_acc",
                   "retrain_mia_efficacy", "retrain_rte_s")


# ------------------------------------------------------------------------- options
@dataclass
class ForgetScalingOptions(StudyOptions):
    """``fractions``: fractions of the training set forgotten at random, each in (0, 1)
    (``"5%"`` is 0.05; ``()`` skips random forgetting); ``class_counts``: numbers of classes
    forgotten together (``()`` skips class forgetting); ``classes``: the class order for
    ``class_counts`` (names or indices; None: the dataset's order). Both lists are sorted
    and may not repeat a value; the class counts' upper bound is checked against the dataset."""

    study: ClassVar[str] = "forget-scaling"
    fractions: tuple[float, ...] = DEFAULT_FRACTIONS
    class_counts: tuple[int, ...] = DEFAULT_CLASS_COUNTS
    classes: tuple[str | int, ...] | None = option(None, "a list of class names or indices")

    def __post_init__(self) -> None:
        try:  # percentages first: "5%" is 0.05
            self.fractions = tuple(_percent(v) for v in as_items(self.fractions))
        except ValueError:
            pass  # the type check names the option
        super().__post_init__()
        self.require(all(0 < f < 1 for f in self.fractions), "fractions",
                     "numbers in (0, 1) or percentages like 5%")
        for name in ("fractions", "class_counts"):
            values = getattr(self, name)
            if len(set(values)) != len(values):
                raise ValueError(f"forget-scaling option {name} repeat a value: {list(values)}")
            setattr(self, name, tuple(sorted(values)))
        if not self.fractions and not self.class_counts:
            raise ValueError("forget-scaling needs at least one of fractions / class_counts")


def _percent(v: Any) -> Any:
    if isinstance(v, str) and v.strip().endswith("%"):
        try:
            return float(v.strip()[:-1]) / 100
        except ValueError:
            return v
    return v


def parse_classes(value: Sequence[Any], data: Any) -> list[str]:
    """Class names (or indices) → names of ``data``, each at most once."""
    names = [data.classes[data.class_index(v)] for v in value]
    if len(set(names)) != len(names):
        raise ValueError(f"forget-scaling classes lists a class twice: {names}")
    return names


def sweep(config: StudyConfig, data: Any) -> list[tuple[str, Any, dict[str, Any], str]]:
    """The forget sets of the study: ``(kind, size, forget spec, label)``, random first."""
    opts = ForgetScalingOptions.of(config)
    if config.forget is not None:
        raise ValueError("forget-scaling sweeps the forget set itself; leave forget unset and "
                         "use the options fractions / class_counts / classes")
    if config.models:
        raise ValueError("forget-scaling runs one architecture (model); models is for "
                         "cross-arch")
    fractions, counts = opts.fractions, opts.class_counts
    bad = [k for k in counts if not 1 <= k < data.num_classes]
    if bad:
        raise ValueError(f"forget-scaling option class_counts must be integers in "
                         f"[1, {data.num_classes - 1}], got {bad[0]!r}")
    order = parse_classes(opts.classes, data) if opts.classes is not None else list(data.classes)
    if counts and counts[-1] > len(order):
        raise ValueError(f"forget-scaling class_counts go up to {counts[-1]} but classes names "
                         f"only {len(order)}")
    tasks = [("random", f, {"type": "random", "fraction": f}, f"{100 * f:g} %")
             for f in fractions]
    tasks += [("class", k, {"type": "class", "classes": order[:k]},
               f"{_size_label('class', k)} ({', '.join(order[:k])})") for k in counts]
    return tasks


# --------------------------------------------------------------------------- study
@register_study("forget-scaling",
                "How does unlearning quality change with the size of the forget set (random "
                "1–50 % of the training set, 1–3 whole classes), each size against its own "
                "retrained model?", options=ForgetScalingOptions)
class ForgetScaling:
    @staticmethod
    def plan(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
        runs = []
        for kind, size, forget, label in sweep(config, data):
            runs += task_runs(config, dataset=config.dataset, model=config.model, forget=forget,
                              methods=config.method_list(),
                              tags={"kind": kind, "size": size, "label": label})
        return runs

    @staticmethod
    def report(ctx: StudyContext) -> str:
        summary = summarise(ctx, ["tag.kind", "tag.size", "method"], SUMMARY_METRICS)
        gold = retrain_reference(ctx.rows)
        methods = [m for m in ctx.config.method_list()
                   if any(r["method"] == m for r in summary)]
        kinds = [k for k in KINDS if any(r["tag.kind"] == k for r in summary)]
        labels = {(r["tag.kind"], r["tag.size"]): r.get("tag.label", "") for r in ctx.rows}

        text = ""
        for kind in kinds:
            text += f"## {_KIND_TITLE[kind]}\n\n" + _table(kind, summary, gold, methods,
                                                          labels) + "\n"
        gap_png = _plot(ctx, kinds, summary, gold, methods, "avg_gap",
                        "Avg-Gap to retrain (points, lower is better)", "avg_gap_vs_size.png")
        fa_png = _plot(ctx, kinds, summary, gold, methods, "forget_acc",
                       "forget accuracy (%)", "forget_acc_vs_size.png")
        text += (f"![Avg-Gap against forget-set size]({relpath(gap_png, ctx)})\n\n"
                 f"![Forget accuracy against forget-set size]({relpath(fa_png, ctx)})\n\n")
        text += "## Answer\n\n" + answer(ctx.rows, summary, gold, methods, kinds) + "\n"
        return text


_KIND_TITLE = {"random": "Random forgetting (size = % of the training set)",
               "class": "Class forgetting (size = number of classes)"}
_KIND_X = {"random": "forget set (% of the training set, log scale)",
           "class": "classes forgotten"}


def _size_label(kind: str, size: float) -> str:
    return f"{100 * size:g} %" if kind == "random" else f"{size:g} class" + ("es" if size != 1
                                                                              else "")


def retrain_reference(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean ± CI over seeds of the gold retrain's metrics per (kind, size), read from the
    ``retrain_*`` columns that every row of a task carries (so it works without retrain rows).
    Keys are the metric names without the ``retrain_`` prefix, e.g. ``forget_acc_mean``."""
    per_seed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        per_seed.setdefault((r["tag.kind"], r["tag.size"], r["seed"]), r)
    firsts = [{"tag.kind": k[0], "tag.size": k[1],
               **{c.removeprefix("retrain_"): r.get(c) for c in RETRAIN_COLUMNS}}
              for k, r in per_seed.items()]
    return aggregate(firsts, ["tag.kind", "tag.size"],
                            [c.removeprefix("retrain_") for c in RETRAIN_COLUMNS])


def _sizes(kind: str, summary: Sequence[dict[str, Any]]) -> list[Any]:
    return sorted({r["tag.size"] for r in summary if r["tag.kind"] == kind})


def _get(summary: Sequence[dict[str, Any]], kind: str, size: Any,
         method: str | None = None) -> dict[str, Any] | None:
    for r in summary:
        if r["tag.kind"] == kind and r["tag.size"] == size and (
                method is None or r.get("method") == method):
            return r
    return None


def _table(kind: str, summary: Sequence[dict[str, Any]], gold: Sequence[dict[str, Any]],
           methods: Sequence[str], labels: dict[tuple[str, Any], str]) -> str:
    head = ["size", "method", *(h for _, h, _ in TABLE_METRICS), "RTE (s)"]
    body = []
    for size in _sizes(kind, summary):
        g = _get(gold, kind, size)
        label = labels.get((kind, size)) or _size_label(kind, size)
        if g is not None:
            body.append([label, "retrain (gold)", cell(g, "UA"), cell(g, "retain_acc"),
                         cell(g, "test_acc"), cell(g, "mia_efficacy"), "0", "1",
                         cell(g, "rte_s", 1)])
        for m in methods:
            r = _get(summary, kind, size, m)
            if r is None:
                continue
            body.append([label, f"`{m}`", *(cell(r, k, nd) for k, _, nd in TABLE_METRICS),
                         cell(r, "rte_s", 1)])
    return md_table(head, body)


def _panels(n: int) -> tuple[Any, list[Any]]:
    fig, axes = figure(5.4 * n, 4.2, ncols=n, squeeze=False)
    return fig, list(axes[0])


def _yerr(halves: Sequence[float]) -> list[float] | None:
    """Error-bar half-widths (0 where unknown), or None when no CI is known (one seed)."""
    if not any(_finite(h) for h in halves):
        return None
    return [h if _finite(h) else 0.0 for h in halves]


def _plot(ctx: StudyContext, kinds: Sequence[str], summary: Sequence[dict[str, Any]],
          gold: Sequence[dict[str, Any]], methods: Sequence[str], metric: str, ylabel: str,
          name: str) -> Any:
    fig, axes = _panels(max(1, len(kinds)))
    for ax, kind in zip(axes, kinds):
        sizes = _sizes(kind, summary)
        xs = [100 * s if kind == "random" else s for s in sizes]
        for i, m in enumerate(methods):
            pts = [(x, _get(summary, kind, s, m)) for x, s in zip(xs, sizes)]
            pts = [(x, r) for x, r in pts if r is not None and math.isfinite(r[f"{metric}_mean"])]
            if pts:
                ax.errorbar([x for x, _ in pts], [r[f"{metric}_mean"] for _, r in pts],
                            yerr=_yerr([r[f"{metric}_ci95"] for _, r in pts]), marker="o",
                            color=f"C{i % 10}", capsize=3, label=m)
        if metric == "forget_acc":
            pts = [(x, _get(gold, kind, s)) for x, s in zip(xs, sizes)]
            pts = [(x, g) for x, g in pts if g is not None and math.isfinite(g["forget_acc_mean"])]
            if pts:
                ax.errorbar([x for x, _ in pts], [g["forget_acc_mean"] for _, g in pts],
                            yerr=_yerr([g["forget_acc_ci95"] for _, g in pts]), ls="--",
                            color="k", marker="s", ms=4, capsize=3, label="retrain (reference)")
        if kind == "random":
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.set_xticks(xs)
            ax.set_xticklabels([f"{x:g}" for x in xs])
            ax.xaxis.set_minor_formatter(NullFormatter())
        else:
            ax.set_xticks(xs)
        ax.set_xlabel(_KIND_X[kind])
        ax.set_ylabel(ylabel)
        ax.set_title(f"{kind} forgetting: {ctx.config.model} on {ctx.config.dataset}",
                     fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    return savefig(fig, ctx.out / name)


# -------------------------------------------------------------------------- answer
def trend(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float, str]:
    """Spearman ρ (and its p-value) of ``ys`` against ``xs`` over finite points, and a word:
    ``"grows"`` (ρ > 0), ``"shrinks"`` (ρ < 0) or ``"does not change"`` (ρ = 0, constant
    values, or fewer than two distinct sizes)."""
    from scipy import stats

    pts = [(float(x), float(y)) for x, y in zip(xs, ys)
           if y is not None and math.isfinite(float(y))]
    if len({x for x, _ in pts}) < 2 or len({y for _, y in pts}) < 2:
        return math.nan, math.nan, "does not change"
    rho, p = stats.spearmanr([x for x, _ in pts], [y for _, y in pts])
    rho, p = float(rho), float(p)
    word = "grows" if rho > 0 else "shrinks" if rho < 0 else "does not change"
    return rho, p, word


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def answer(rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]],
           gold: Sequence[dict[str, Any]], methods: Sequence[str], kinds: Sequence[str]) -> str:
    paragraphs = []
    for kind in kinds:
        sizes = _sizes(kind, summary)
        parts = []
        grows = []
        for m in methods:
            mine = [r for r in rows if r["tag.kind"] == kind and r["method"] == m
                    and _finite(r.get("avg_gap"))]
            if not mine:
                continue
            rho, p, word = trend([r["tag.size"] for r in mine], [r["avg_gap"] for r in mine])
            means = [(s, _get(summary, kind, s, m)) for s in sizes]
            means = [(s, r["avg_gap_mean"]) for s, r in means
                     if r is not None and _finite(r["avg_gap_mean"])]
            worst = max(means, key=lambda t: t[1])
            stat = f"Spearman ρ = {rho:+.2f}" + (f", p = {p:.2g}" if _finite(p) else "")
            if not _finite(rho):
                stat = "constant"
            parts.append(
                f"`{m}`: Avg-Gap {word} with the size ({stat}; {means[0][1]:.2f} at "
                f"{_size_label(kind, means[0][0])} → {means[-1][1]:.2f} at "
                f"{_size_label(kind, means[-1][0])}), worst at {_size_label(kind, worst[0])} "
                f"({worst[1]:.2f})"
            )
            grows.append(word == "grows")
        if not parts:
            paragraphs.append(f"**{kind.capitalize()} forgetting.** No method produced a finite "
                              "Avg-Gap; nothing to compare.")
            continue
        text = (f"**{kind.capitalize()} forgetting.** Avg-Gap grows with the forget-set size "
                f"for {sum(grows)} of {len(grows)} method(s). " + "; ".join(parts) + ".")
        text += " " + _gold_sentence(kind, rows, sizes, gold)
        paragraphs.append(text)
    return "\n\n".join(paragraphs) + "\n"


def _gold_sentence(kind: str, rows: Sequence[dict[str, Any]], sizes: Sequence[Any],
                   gold: Sequence[dict[str, Any]]) -> str:
    g = [(s, _get(gold, kind, s)) for s in sizes]
    g = [(s, r) for s, r in g if r is not None and _finite(r["forget_acc_mean"])]
    if not g:
        return ""
    fa = [r["forget_acc_mean"] for _, r in g]
    ta = [r["test_acc_mean"] for _, r in g]
    _, _, word = trend([s for s, _ in g], fa)
    word = {"grows": "rising", "shrinks": "falling", "does not change": "flat"}[word]
    text = (f"The retrained model's own forget accuracy goes from {fa[0]:.1f} % at "
            f"{_size_label(kind, g[0][0])} to {fa[-1]:.1f} % at {_size_label(kind, g[-1][0])} "
            f"({word}")
    if kind == "random":
        text += ")"
        diff = [a - b for a, b in zip(fa, ta) if _finite(a) and _finite(b)]
        if diff:
            text += (f", against a test accuracy of {ta[0]:.1f} → {ta[-1]:.1f} %: on average "
                     f"{abs(sum(diff) / len(diff)):.1f} points "
                     f"{'above' if sum(diff) >= 0 else 'below'} it (largest difference "
                     f"{max(diff, key=abs):+.1f}), so retraining still classifies forgotten "
                     "samples about as well as unseen ones — the target forget accuracy is that "
                     "level, not 0")
        off = _offsets(rows, kind)
        if off:
            text += ". Mean forget-accuracy offset of each method to retrain (negative = "
            text += "forgets more than retraining): " + ", ".join(
                f"`{m}` {v:+.1f}" for m, v in off.items())
    else:
        text += "; retraining never saw the forgotten classes)"
    return text + "."


def _offsets(rows: Sequence[dict[str, Any]], kind: str) -> dict[str, float]:
    """Mean signed forget-accuracy difference method − retrain per method over sizes and
    seeds."""
    diffs: dict[str, list[float]] = {}
    for r in rows:
        if r["tag.kind"] != kind or r["method"] == "retrain":
            continue
        a, b = r.get("forget_acc"), r.get("retrain_forget_acc")
        if _finite(a) and _finite(b):
            diffs.setdefault(r["method"], []).append(a - b)
    return {m: sum(v) / len(v) for m, v in diffs.items()}
