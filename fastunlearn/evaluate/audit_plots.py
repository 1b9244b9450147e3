"""Figures of the per-example audit (:mod:`fastunlearn.evaluate.audit`): ε histograms, U-LiRA
ROC curves on log-log axes, KLoM CDFs per split and linear-probe bars.

Like :mod:`fastunlearn.evaluate.plots`, matplotlib is imported lazily and used through
``Figure`` with the Agg canvas, so the user's pyplot backend is never touched. Each function
writes one PNG (parent folders are created) and returns its path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from fastunlearn.evaluate.audit import BUCKET_SIZE, EPSILON_CAP
from fastunlearn.evaluate.plots import _figure, _save

COLORS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3",
          "#8c8c8c"]
SPLIT_ORDER = ("forget", "retain", "val")
"""Panels of :func:`plot_klom_cdfs` come in this order; other split names follow."""


def _color(i: int) -> str:
    return COLORS[i % len(COLORS)]


def plot_epsilon_histogram(
    eps_by_method: Mapping[str, np.ndarray], path: str | Path, *,
    title: str = "Per-example ε (NeurIPS-2023 forget score)",
) -> Path:
    """Step histograms of per-example ε, one per method, in the 0.5-wide buckets of the
    forget score; ε ≥ the cap (:data:`EPSILON_CAP`, including ∞) is drawn in one last
    bucket labelled "≥ cap"."""
    fig = _figure(7.0, 4.2)
    ax = fig.add_subplot()
    finite = [np.asarray(e, float)[np.asarray(e, float) < EPSILON_CAP]
              for e in eps_by_method.values()]
    top = max([float(f.max()) for f in finite if f.size] + [BUCKET_SIZE])
    edges = np.arange(0.0, top + 2 * BUCKET_SIZE, BUCKET_SIZE)
    over = edges[-1] + BUCKET_SIZE
    for i, (name, eps) in enumerate(eps_by_method.items()):
        e = np.asarray(eps, dtype=float)
        e = e[~np.isnan(e)]
        shown = np.where(e >= EPSILON_CAP, edges[-1] + BUCKET_SIZE / 2, e)
        ax.hist(shown, bins=np.append(edges, over), histtype="step", linewidth=1.8,
                color=_color(i), label=f"{name} (n={e.size})")
    ticks = list(edges[:-1][:: max(1, len(edges) // 10)])
    ax.axvline(edges[-1], color="#888888", linewidth=0.8, linestyle=":")
    ax.set_xticks(ticks + [edges[-1] + BUCKET_SIZE / 2],
                  [f"{t:g}" for t in ticks] + [f"≥{EPSILON_CAP:g}"])
    ax.set_xlabel("ε per forget example (0.5-wide buckets)")
    ax.set_ylabel("examples")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=9)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_ulira_roc(
    rocs: Mapping[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
    title: str = "U-LiRA: forgotten vs never-seen examples",
) -> Path:
    """ROC curves ``label → (fpr, tpr)`` of the U-LiRA attack on log-log axes (the low-FPR
    regime that matters for privacy), with the chance diagonal. The legend gives each
    curve's AUC (trapezoidal, linear axes)."""
    fig = _figure(5.6, 5.0)
    ax = fig.add_subplot()
    lows = []
    for i, (name, (fpr, tpr)) in enumerate(rocs.items()):
        f, t = np.asarray(fpr, dtype=float), np.asarray(tpr, dtype=float)
        auc = float(np.sum(np.diff(f) * (t[1:] + t[:-1]) / 2)) if f.size > 1 else float("nan")
        keep = (f > 0) & (t > 0)
        if keep.any():
            lows.append(float(min(f[keep].min(), t[keep].min())))
        ax.plot(f[keep], t[keep], color=_color(i), linewidth=1.8, label=f"{name} (AUC {auc:.3f})")
    low = min(lows + [1e-3]) / 2
    ax.plot([low, 1], [low, 1], color="#555555", linestyle="--", linewidth=1, label="chance")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(low, 1)
    ax.set_ylim(low, 1)
    ax.set_xlabel("false positive rate (never-seen called forgotten)")
    ax.set_ylabel("true positive rate (forgotten detected)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=9, loc="lower right")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_klom_cdfs(
    klom_by_method: Mapping[str, Mapping[str, np.ndarray]], path: str | Path, *,
    title: str = "KLoM per example (unlearned vs retrained margins)",
) -> Path:
    """Empirical CDFs of per-example KLoM, one panel per split (forget / retain / val, then
    any other split names), one curve per method; the dotted line marks the 95th
    percentile the paper reports."""
    splits = [s for s in SPLIT_ORDER if any(s in v for v in klom_by_method.values())]
    splits += sorted({s for v in klom_by_method.values() for s in v} - set(splits))
    fig = _figure(4.2 * max(1, len(splits)) + 0.5, 4.0)
    axes = fig.subplots(1, max(1, len(splits)), squeeze=False)[0]
    for ax, split in zip(axes, splits):
        for i, (name, by_split) in enumerate(klom_by_method.items()):
            if split not in by_split:
                continue
            v = np.sort(np.asarray(by_split[split], dtype=float).reshape(-1))
            v = v[~np.isnan(v)]
            if not v.size:
                continue
            ax.step(v, np.arange(1, v.size + 1) / v.size, where="post", color=_color(i),
                    linewidth=1.8, label=name)
            ax.axvline(float(np.percentile(v, 95)), color=_color(i), linestyle=":", linewidth=1)
        ax.set_xlabel("KLoM (nats)")
        ax.set_ylabel("fraction of examples ≤ x")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{split} points", fontsize=10)
    axes[0].legend(fontsize=9, loc="lower right")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def plot_probe_bars(
    probe_by_model: Mapping[str, float], path: str | Path, *,
    title: str = "Linear probe on frozen features: forget-class accuracy recovered",
) -> Path:
    """One bar per model: the forget-class accuracy (%) a fresh linear head recovers from its
    frozen penultimate features (:func:`~fastunlearn.evaluate.audit.linear_probe`)."""
    names = list(probe_by_model)
    vals = np.array([float(probe_by_model[n]) for n in names], dtype=float)
    fig = _figure(max(4.5, 1.1 * len(names) + 2.0), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(names))
    ax.bar(x, np.nan_to_num(vals), color=[_color(i) for i in range(len(names))], zorder=2)
    for xi, v in zip(x, vals):
        ax.text(xi, (0 if np.isnan(v) else v) + 1.5, "n/a" if np.isnan(v) else f"{v:.1f}",
                ha="center", fontsize=9)
    ax.set_xticks(x, names, rotation=20 if len(names) > 4 else 0,
                  ha="right" if len(names) > 4 else "center")
    ax.set_ylabel("probe accuracy on forget classes (%)")
    ax.set_ylim(0, 108)
    ax.grid(axis="y", alpha=0.3, zorder=1)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)
