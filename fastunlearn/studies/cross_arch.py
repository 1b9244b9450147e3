"""``cross-arch``: the same forget task on several architectures — which are harder to unlearn?

Every model in ``config.models`` (default :data:`DEFAULT_MODELS`: two small CNNs, ResNet-18,
MobileNetV2, ViT-Tiny and MobileViT, all adapted by
:func:`~fastunlearn.models.create_model` to the dataset's image size) gets its own original
and gold retrain and runs every method × seed on one forget task (``config.forget``, default
the first class). The report has model × method tables of Avg-Gap and RTE ratio (mean ± 95 %
CI over seeds), a per-model summary (mean Avg-Gap over methods, best method, retrain
accuracy, parameters), a grouped bar plot, and an answer derived from the numbers: the
hardest (highest mean Avg-Gap) and easiest architecture and whether the method ranking
changes between architectures (Kendall τ between every two models' rankings by Avg-Gap).

Options: none beyond :class:`~fastunlearn.studies.base.StudyConfig` (``models`` picks the
architectures, ``forget`` the task, ``methods`` the methods; ``model`` is not used). The
default models are meant for a GPU: on a 2-core CPU ViT-Tiny trains at about 56 img/s on
28×28 images.
"""

from __future__ import annotations

import itertools
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
from fastunlearn.studies.config import StudyConfig, default_forget
from fastunlearn.studies.options import StudyOptions
from fastunlearn.studies.registry import register_study
from fastunlearn.studies.tables import fmt, md_table, mean_ci

DEFAULT_MODELS = ("small_cnn", "lenet5", "resnet18", "mobilenetv2", "vit_tiny", "mobilevit")
# Registered models that are not single plain classifiers.
NOT_FOR_CROSS_ARCH = ("sisa_ensemble",)
SUMMARY_METRICS = ("avg_gap", "rte_ratio", "rte_s", "forget_acc", "retain_acc", "test_acc",
                   "mia_efficacy", "js_to_retrain")


def model_list(config: StudyConfig) -> tuple[str, ...]:
    """``config.models`` (or the defaults), checked against the model registry."""
    from fastunlearn.models import list_models

    models = tuple(config.models) or DEFAULT_MODELS
    known = list_models()
    for m in models:
        if m not in known:
            raise ValueError(f"unknown model {m!r}; known: {', '.join(known)}")
        if m in NOT_FOR_CROSS_ARCH:
            raise ValueError(f"model {m!r} is an ensemble, not an architecture for cross-arch")
    if len(set(models)) != len(models):
        raise ValueError(f"cross-arch models list a model twice: {list(models)}")
    return models


@dataclass
class CrossArchOptions(StudyOptions):
    """cross-arch takes no options: ``models``, ``forget`` and ``methods`` say what to run."""

    study: ClassVar[str] = "cross-arch"


@register_study("cross-arch",
                "Which architectures are harder to unlearn: the same forget task on small CNNs, "
                "ResNet-18, MobileNetV2, ViT-Tiny and MobileViT — Avg-Gap to each model's own "
                "retrain, and the cost (RTE ratio)?", options=CrossArchOptions)
class CrossArch:
    @staticmethod
    def plan(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
        CrossArchOptions.of(config)  # none: models / forget / methods say what to run
        models = model_list(config)
        # The report header names config.models; record the defaults when they were used.
        config.models = models
        forget = default_forget(config, data)
        runs = []
        for m in models:
            runs += task_runs(config, dataset=config.dataset, model=m, forget=forget,
                              methods=config.method_list(), tags={"arch": m})
        return runs

    @staticmethod
    def report(ctx: StudyContext) -> str:
        summary = summarise(ctx, ["model", "method"], SUMMARY_METRICS)
        models = [m for m in ctx.config.models if any(r["model"] == m for r in summary)]
        methods = [m for m in ctx.config.method_list() if any(r["method"] == m for r in summary)]
        table = {(r["model"], r["method"]): r for r in summary}
        per_model = model_summary(ctx.rows, summary, models, methods)
        params = {m: _param_count(m, ctx.data) for m in models}

        head = ["model", *(f"`{m}`" for m in methods)]
        text = "## Avg-Gap to each model's retrain (points, lower is better)\n\n"
        text += md_table(head, [[f"`{a}`", *(cell(table.get((a, m), {}), "avg_gap")
                                             for m in methods)] for a in models])
        text += "\n## RTE ratio (method wall time / the model's retrain time)\n\n"
        text += md_table(head, [[f"`{a}`", *(cell(table.get((a, m), {}), "rte_ratio", 3)
                                             for m in methods)] for a in models])
        text += "\n## Per model\n\n"
        body = []
        for a in models:
            s = per_model[a]
            body.append([
                f"`{a}`", _count(params[a]),
                fmt(s["gap_mean"], s["gap_ci95"]),
                f"`{s['best']}` ({s['best_gap']:.2f})" if s["best"] else "—",
                fmt(s["rte_mean"], math.nan, 3),
                fmt(s["orig_test_mean"], s["orig_test_ci95"], 1),
                fmt(s["gold_test_mean"], s["gold_test_ci95"], 1),
                fmt(s["gold_s_mean"], s["gold_s_ci95"], 1),
            ])
        text += md_table(["model", "params", "mean Avg-Gap over methods", "best method",
                          "mean RTE ratio", "original TA", "retrain TA", "retrain time (s)"],
                         body)
        png = _plot(ctx, models, methods, table)
        text += f"\n![Avg-Gap and RTE ratio per model]({relpath(png, ctx)})\n\n"
        text += "## Answer\n\n" + answer(per_model, models, methods, table,
                                         chance=chance_accuracy(ctx)) + "\n"
        return text


def chance_accuracy(ctx: StudyContext) -> float:
    """Test accuracy (%) of guessing uniformly among the classes TA is measured on (the retain
    classes for class forgetting)."""
    spec = ctx.results[0]["run"]["forget"] if ctx.results else {}
    n = ctx.data.num_classes - (len(spec.get("classes", [])) if spec.get("type") == "class"
                                else 0)
    return 100.0 / max(1, n)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _count(n: int) -> str:
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _param_count(name: str, data: Any) -> int:
    from fastunlearn.models import create_model

    return sum(p.numel() for p in create_model(name, data).parameters())


def model_summary(rows: Sequence[dict[str, Any]], summary: Sequence[dict[str, Any]],
                  models: Sequence[str], methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per model: mean Avg-Gap over methods (mean ± CI over seeds of the per-seed mean over
    methods), the best method, mean RTE ratio over methods, and the original's and retrain's
    test accuracy and the retrain's training time (mean ± CI over seeds)."""
    out: dict[str, dict[str, Any]] = {}
    for a in models:
        mine = [r for r in rows if r["model"] == a]
        by_seed: dict[int, list[float]] = {}
        firsts: dict[int, dict[str, Any]] = {}
        for r in mine:
            firsts.setdefault(r["seed"], r)
            if r["method"] in methods and _finite(r.get("avg_gap")):
                by_seed.setdefault(r["seed"], []).append(r["avg_gap"])
        gap, gap_ci, _ = mean_ci([sum(v) / len(v) for v in by_seed.values()])
        ranked = sorted((s["avg_gap_mean"], s["method"]) for s in summary
                         if s["model"] == a and s["method"] in methods
                         and _finite(s["avg_gap_mean"]))
        rte = [s["rte_ratio_mean"] for s in summary if s["model"] == a
               and s["method"] in methods and _finite(s["rte_ratio_mean"])]
        entry: dict[str, Any] = {
            "gap_mean": gap, "gap_ci95": gap_ci,
            "best": ranked[0][1] if ranked else None,
            "best_gap": ranked[0][0] if ranked else math.nan,
            "rte_mean": sum(rte) / len(rte) if rte else math.nan,
        }
        for key, col in (("orig_test", "original_test_acc"), ("gold_test", "retrain_test_acc"),
                         ("gold_s", "retrain_rte_s")):
            m, h, _ = mean_ci([r.get(col) for r in firsts.values()
                                      if _finite(r.get(col))])
            entry[f"{key}_mean"], entry[f"{key}_ci95"] = m, h
        out[a] = entry
    return out


def _plot(ctx: StudyContext, models: Sequence[str], methods: Sequence[str],
          table: dict[tuple[str, str], dict[str, Any]]) -> Any:
    width = max(6.4, 1.1 * len(models) * max(1, len(methods)) ** 0.5 + 2)
    fig, axes = figure(width, 7.0, nrows=2, sharex=True)
    bar = 0.8 / max(1, len(methods))
    for ax, metric, label in ((axes[0], "avg_gap", "Avg-Gap to retrain (points)"),
                              (axes[1], "rte_ratio", "RTE ratio (× retrain, log)")):
        for j, m in enumerate(methods):
            xs, ys, errs = [], [], []
            for i, a in enumerate(models):
                r = table.get((a, m))
                if r is None or not _finite(r[f"{metric}_mean"]):
                    continue
                xs.append(i - 0.4 + bar * (j + 0.5))
                ys.append(r[f"{metric}_mean"])
                errs.append(r[f"{metric}_ci95"])
            yerr = [e if _finite(e) else 0.0 for e in errs] if any(map(_finite, errs)) else None
            ax.bar(xs, ys, bar, yerr=yerr, capsize=2, color=f"C{j % 10}", label=m)
        if metric == "rte_ratio":
            ax.set_yscale("log")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3, axis="y", which="both")
    axes[0].legend(fontsize=7, ncol=min(len(methods), 6))
    axes[0].set_title(f"{ctx.config.dataset}, forget {_forget_label(ctx)}", fontsize=9)
    axes[1].set_xticks(range(len(models)))
    axes[1].set_xticklabels(models, rotation=20)
    return savefig(fig, ctx.out / "cross_arch.png")


def _forget_label(ctx: StudyContext) -> str:
    spec = ctx.results[0]["run"]["forget"] if ctx.results else {}
    if spec.get("type") == "class":
        return "class " + ", ".join(spec["classes"])
    if "fraction" in spec:
        return f"random {100 * spec['fraction']:g} %"
    return f"random {spec.get('count')} samples"


def ranking_agreement(models: Sequence[str], methods: Sequence[str],
                      table: dict[tuple[str, str], dict[str, Any]],
                      ) -> list[tuple[str, str, float, int]]:
    """Kendall τ between every two models' Avg-Gap values over the methods both have finite
    values for: ``(model_a, model_b, tau, n_methods)``; τ is NaN with fewer than two methods
    or when one model's values are all equal."""
    from scipy import stats

    out = []
    for a, b in itertools.combinations(models, 2):
        common = [m for m in methods
                  if _finite(table.get((a, m), {}).get("avg_gap_mean", math.nan))
                  and _finite(table.get((b, m), {}).get("avg_gap_mean", math.nan))]
        xa = [table[(a, m)]["avg_gap_mean"] for m in common]
        xb = [table[(b, m)]["avg_gap_mean"] for m in common]
        tau = math.nan
        if len(common) >= 2 and len(set(xa)) > 1 and len(set(xb)) > 1:
            tau = float(stats.kendalltau(xa, xb)[0])
        out.append((a, b, tau, len(common)))
    return out


def answer(per_model: dict[str, dict[str, Any]], models: Sequence[str], methods: Sequence[str],
           table: dict[tuple[str, str], dict[str, Any]], chance: float = math.nan) -> str:
    """The answer paragraph; models whose retrain is below twice the ``chance`` accuracy get
    a warning (an untrained reference makes every gap small)."""
    ok = [a for a in models if _finite(per_model[a]["gap_mean"])]
    if not ok:
        return "No model produced a finite Avg-Gap; nothing to compare.\n"
    ok.sort(key=lambda a: per_model[a]["gap_mean"])
    hard, easy = ok[-1], ok[0]
    ph, pe = per_model[hard], per_model[easy]
    parts = [
        f"Hardest to unlearn: `{hard}` (mean Avg-Gap {ph['gap_mean']:.2f} points over "
        f"{len(methods)} method(s); its retrain reaches {ph['gold_test_mean']:.1f} % test "
        f"accuracy). Easiest: `{easy}` ({pe['gap_mean']:.2f}; retrain "
        f"{pe['gold_test_mean']:.1f} %). Order from easiest to hardest: "
        + " < ".join(f"`{a}` ({per_model[a]['gap_mean']:.2f})" for a in ok) + ".",
    ]
    rte = [a for a in models if _finite(per_model[a]["rte_mean"])]
    if rte:
        dear = max(rte, key=lambda a: per_model[a]["rte_mean"])
        cheap = min(rte, key=lambda a: per_model[a]["rte_mean"])
        parts.append(f"Relative to its own retrain, unlearning costs most on `{dear}` (mean RTE "
                     f"ratio {per_model[dear]['rte_mean']:.3f}) and least on `{cheap}` "
                     f"({per_model[cheap]['rte_mean']:.3f}).")
    bests = {a: per_model[a]["best"] for a in ok if per_model[a]["best"]}
    if len(methods) < 2:
        parts.append("With one method there is no method ranking to compare between "
                     "architectures.")
    else:
        winners = sorted(set(bests.values()))
        if len(winners) == 1:
            parts.append(f"The best method is the same on every architecture: `{winners[0]}`.")
        else:
            parts.append("The best method changes with the architecture: "
                         + ", ".join(f"`{a}` → `{m}`" for a, m in bests.items()) + ".")
        agree = [t for t in ranking_agreement(ok, methods, table) if _finite(t[2])]
        if agree:
            mean_tau = sum(t[2] for t in agree) / len(agree)
            worst = min(agree, key=lambda t: t[2])
            verdict = ("identical" if all(t[2] == 1 for t in agree)
                       else "mostly preserved" if mean_tau > 0 else "not preserved")
            parts.append(
                f"Method rankings by Avg-Gap are {verdict} across architectures: mean Kendall "
                f"τ = {mean_tau:+.2f} over {len(agree)} model pair(s); the least similar pair "
                f"is `{worst[0]}` vs `{worst[1]}` (τ = {worst[2]:+.2f} over {worst[3]} "
                "methods)."
            )
    weak = [a for a in ok if _finite(chance)
            and _finite(per_model[a].get("gold_test_mean", math.nan))
            and per_model[a]["gold_test_mean"] < 2 * chance]
    if weak:
        many = len(weak) > 1
        parts.append(
            f"Caution: the retrained model{'s' if many else ''} of "
            + ", ".join(f"`{a}`" for a in weak)
            + f" {'are' if many else 'is'} below twice the chance accuracy (chance = "
            f"{chance:.1f} %), so {'their' if many else 'its'} gaps compare barely trained "
            "models; train longer (more epochs) before reading them.")
    return " ".join(parts) + "\n"
