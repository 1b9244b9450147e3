"""Report figures: per-class accuracy bars, confusion matrices, t-SNE of penultimate features,
membership-inference score histograms.

matplotlib is imported lazily and used through its object-oriented API (``Figure`` with the
Agg canvas), so nothing here changes the user's pyplot backend or needs a display. Every
figure has labelled axes and a title; callers pass a title that names the model architecture,
the method(s) and the forget set (see :func:`figure_title`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DPI = 110


def figure_title(what: str, arch: str, dataset: str, methods: Sequence[str], forget: str) -> str:
    """``"<what> — <arch> on <dataset> · <methods> · forget <forget>"``."""
    return f"{what} — {arch} on {dataset} · {' vs '.join(methods)} · forget {forget}"


def _figure(width: float, height: float):  # noqa: ANN202 - matplotlib Figure
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=DPI)
    return path


def _short(name: str, n: int = 12) -> str:
    return name if len(name) <= n else name[: n - 1] + "…"


def plot_per_class_accuracy(
    path: str | Path,
    classes: Sequence[str],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    forget_classes: Sequence[int] = (),
) -> Path:
    """Grouped bars: test accuracy per class for each model in ``series`` (label → values);
    forgotten classes get a shaded background and a red tick label."""
    c, k = len(classes), len(series)
    fig = _figure(min(16.0, max(7.0, 0.3 * c * max(1, k) + 1.5)), 4.6)
    ax = fig.add_subplot()
    width = 0.8 / max(1, k)
    x = np.arange(c)
    for fc in forget_classes:
        ax.axvspan(fc - 0.45, fc + 0.45, color="#f4cccc", zorder=0)
    colors = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]
    for i, (label, vals) in enumerate(series.items()):
        v = np.array([np.nan if val is None else val for val in vals], dtype=float)
        ax.bar(x - 0.4 + width * (i + 0.5), np.nan_to_num(v), width, label=label,
               color=colors[i % len(colors)], zorder=2)
    tilt = c > 6
    ax.set_xticks(x, [_short(n) for n in classes], rotation=30 if tilt else 0,
                  ha="right" if tilt else "center")
    for fc in forget_classes:
        ax.get_xticklabels()[fc].set_color("#b00000")
    ax.set_xlabel("class (forgotten classes shaded)" if forget_classes else "class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3, zorder=1)
    ax.legend(loc="lower left", fontsize=9, framealpha=0.9)
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def plot_confusion_matrices(
    path: str | Path,
    classes: Sequence[str],
    matrices: Mapping[str, Any],
    *,
    title: str,
) -> Path:
    """One panel per model: the test confusion matrix, each row normalised to % of that
    true class."""
    n = len(matrices)
    c = len(classes)
    side = max(3.8, 0.42 * c + 1.5)
    fig = _figure(side * n + 0.8, side + 0.9)
    axes = fig.subplots(1, n, squeeze=False)[0]
    im = None
    for ax, (label, mat) in zip(axes, matrices.items()):
        m = np.asarray(mat, dtype=float)
        rows = m.sum(1, keepdims=True)
        pct = np.divide(100.0 * m, rows, out=np.zeros_like(m), where=rows > 0)
        im = ax.imshow(pct, cmap="Blues", vmin=0, vmax=100)
        if c <= 12:
            for i in range(c):
                for j in range(c):
                    if pct[i, j] >= 1.0:
                        ax.text(j, i, f"{pct[i, j]:.0f}", ha="center", va="center", fontsize=7,
                                color="white" if pct[i, j] > 60 else "black")
        names = [_short(s, 11) for s in classes]
        ax.set_xticks(range(c), names, rotation=60, ha="right", fontsize=8)
        ax.set_yticks(range(c), names, fontsize=8)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(label, fontsize=10)
    if im is not None:
        fig.colorbar(im, ax=list(axes), shrink=0.8, label="% of true class")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def tsne_2d(features: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """2-D t-SNE embedding (scikit-learn, PCA init, seeded) of ``features`` ``[n, d]``."""
    from sklearn.manifold import TSNE

    x = np.asarray(features, dtype=np.float64)
    x = x - x.mean(0)
    scale = x.std()
    if scale > 0:
        x = x / scale
    perplexity = float(min(30.0, max(2.0, (len(x) - 1) / 3)))
    return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed,
                learning_rate="auto").fit_transform(x)


def plot_tsne(
    path: str | Path,
    embeddings: Mapping[str, np.ndarray],
    labels: np.ndarray,
    is_forget: np.ndarray,
    classes: Sequence[str],
    *,
    title: str,
    feature_name: str = "penultimate features",
) -> Path:
    """One panel per model: the t-SNE of the same samples, retain samples as dots coloured by
    class, forget samples as black-edged crosses."""
    n = len(embeddings)
    fig = _figure(4.4 * n + 1.6, 4.8)
    axes = fig.subplots(1, n, squeeze=False)[0]
    labels = np.asarray(labels)
    is_forget = np.asarray(is_forget, dtype=bool)
    cmap_name = "tab10" if len(classes) <= 10 else "tab20"
    import matplotlib

    cmap = matplotlib.colormaps[cmap_name]
    for ax, (label, emb) in zip(axes, embeddings.items()):
        emb = np.asarray(emb)
        r, f = ~is_forget, is_forget
        ax.scatter(emb[r, 0], emb[r, 1], c=[cmap(int(y) % cmap.N) for y in labels[r]], s=7,
                   alpha=0.7, linewidths=0)
        ax.scatter(emb[f, 0], emb[f, 1], c=[cmap(int(y) % cmap.N) for y in labels[f]], s=26,
                   marker="X", edgecolors="black", linewidths=0.6)
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_title(label, fontsize=10)
        ax.tick_params(labelsize=7)
    from matplotlib.lines import Line2D

    present = sorted(set(int(y) for y in labels))
    handles = [Line2D([], [], marker="o", ls="", color=cmap(y % cmap.N), label=_short(classes[y]))
               for y in present]
    handles.append(Line2D([], [], marker="X", ls="", color="white", markeredgecolor="black",
                          label="forget sample"))
    fig.legend(handles=handles, loc="outside right center", fontsize=8, title="class")
    fig.suptitle(f"{title}\nt-SNE of {feature_name}: {int(r.sum())} retain + {int(f.sum())} "
                 "forget training images", fontsize=10)
    return _save(fig, path)


def plot_mia_histograms(
    path: str | Path,
    series: Mapping[str, tuple[np.ndarray, np.ndarray, float]],
    *,
    title: str,
    heldout_name: str = "test",
) -> Path:
    """One panel per model: histograms of the loss-attack score (per-sample cross-entropy,
    log-spaced bins) on the forget set vs held-out test samples, with the attack's ROC AUC."""
    n = len(series)
    fig = _figure(4.4 * n + 0.4, 4.2)
    axes = fig.subplots(1, n, squeeze=False)[0]
    floor = 1e-7
    all_vals = np.concatenate([np.concatenate([np.asarray(a), np.asarray(b)])
                               for a, b, _ in series.values()])
    all_vals = np.clip(all_vals, floor, None)
    lo = max(floor, float(np.min(all_vals)))
    hi = max(lo * 10, float(np.max(all_vals)))
    bins = np.logspace(math.log10(lo), math.log10(hi), 40)
    for ax, (label, (forget_loss, heldout_loss, auc)) in zip(axes, series.items()):
        ax.hist(np.clip(heldout_loss, floor, None), bins=bins, density=False, alpha=0.55,
                label=f"{heldout_name} (non-member)", color="#4c72b0",
                weights=np.full(len(heldout_loss), 100.0 / max(1, len(heldout_loss))))
        ax.hist(np.clip(forget_loss, floor, None), bins=bins, density=False, alpha=0.55,
                label="forget", color="#c44e52",
                weights=np.full(len(forget_loss), 100.0 / max(1, len(forget_loss))))
        ax.set_xscale("log")
        ax.set_xlabel(f"per-sample cross-entropy loss (log scale, clipped at {floor:g})")
        ax.set_ylabel("% of samples")
        ax.set_title(f"{label} · loss-attack AUC {auc:.3f}", fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
