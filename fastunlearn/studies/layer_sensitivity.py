"""``layer-sensitivity``: where in the network does unlearning happen?

Every method unlearns one forget task (``forget``, default the first class) several times: with
every weight trainable (``all``), with only one block trainable (``only:BLOCK``, for each block)
and with the first ``k`` blocks frozen (``freeze_first:k``, k = 1 … blocks − 1). Blocks are
:func:`fastunlearn.studies.pool.model_blocks` — the probe blocks of the CKA drift metric plus
``head`` (the final linear layer), in forward order. The gold retrain is the reference row,
once per seed. The report gives forget / retain / test accuracy per (method, variant), plots
them against the trainable block and against ``k``, shows the per-layer CKA drift (1 − linear
CKA between original and unlearned activations on the forget probe) of every method with all
weights trainable, checks that frozen blocks upstream of the trainable one did not drift, and
answers which single block gets closest to full unlearning and how many blocks can be frozen.

"Forgetting" is measured as the forget-set accuracy's distance to the retrained model's
(``gap_forget_acc``); for class forgetting the retrained model scores ≈ 0, so this is the
forget accuracy itself.

Options (:class:`LayerSensitivityOptions`; ``config.options``, ``--option KEY=VALUE``):

- ``modes``: which variants besides ``all``: a subset of ``("only", "freeze_first")``
  (default both).
- ``blocks``: the blocks of the ``only`` mode (default: every block with parameters).
- ``freeze_first``: the values of ``k`` (default ``1 … blocks − 1``; a ``k`` whose k-th block
  has no parameters is skipped: it freezes nothing more than ``k − 1``).
- ``tolerance``: points of accuracy that count as "kept" / "degraded" in the answer (default 5).

Methods that never touch the frozen-out weights cannot run under some variants: ``zero_shot``
(feature-space impressions) only updates the head, so it is not a default method here.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
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
from fastunlearn.studies.config import FAST_METHODS, StudyConfig, default_forget
from fastunlearn.studies.options import StudyOptions, option
from fastunlearn.studies.registry import register_study
from fastunlearn.studies.tables import md_table

log = logging.getLogger(__name__)

MODES = ("only", "freeze_first")
TABLE_METRICS = ("forget_acc", "gap_forget_acc", "retain_acc", "test_acc", "avg_gap",
                 "mia_efficacy", "rte_s", "original_forget_acc", "retrain_forget_acc")
# zero_shot (feature space) only ever updates the head: freezing the head leaves it nothing.
DEFAULT_METHODS = tuple(m for m in FAST_METHODS if m != "zero_shot")


# --------------------------------------------------------------------------- options
@dataclass
class LayerSensitivityOptions(StudyOptions):
    """``modes``: the variants besides ``all``, a non-empty subset of :data:`MODES`;
    ``blocks``: the blocks of the ``only`` mode (None: every block with parameters);
    ``freeze_first``: the values of ``k`` (None: ``1 … blocks − 1``); ``tolerance``: points of
    accuracy that count as "kept" / "degraded" (≥ 0). Block names and ``k`` are checked against
    the model by :func:`parse_options`."""

    study: ClassVar[str] = "layer-sensitivity"
    modes: tuple[str, ...] = MODES
    blocks: tuple[str, ...] | None = option(None, "a list of block names")
    freeze_first: tuple[int, ...] | None = None
    tolerance: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.require(bool(self.modes) and set(self.modes) <= set(MODES), "modes",
                     f"a non-empty subset of {', '.join(MODES)}")
        self.modes = tuple(m for m in MODES if m in self.modes)
        if self.blocks is not None and len(set(self.blocks)) != len(self.blocks):
            raise ValueError(f"layer-sensitivity option blocks lists a block twice: "
                             f"{list(self.blocks)}")
        self.require(self.tolerance >= 0, "tolerance", "a non-negative number of points")


def parse_options(options: Mapping[str, Any] | LayerSensitivityOptions,
                  blocks: Mapping[str, Any]) -> dict[str, Any]:
    """Validated options resolved against the model: ``{"modes", "blocks", "freeze_first",
    "tolerance"}``.

    ``blocks`` maps every block name (forward order) to its parameter count."""
    opts = LayerSensitivityOptions.parse(options)
    names = list(blocks)
    only = list(opts.blocks) if opts.blocks is not None else [b for b in names if blocks[b] > 0]
    for b in only:
        if b not in blocks:
            raise ValueError(f"model has no block {b!r}; blocks: {', '.join(names)}")
        if blocks[b] == 0:
            raise ValueError(f"block {b!r} has no parameters; it cannot be the only trainable "
                             "block")
    only = sorted(only, key=names.index)
    if opts.freeze_first is None:
        ks = [k for k in range(1, len(names)) if blocks[names[k - 1]] > 0]
    else:
        ks = list(opts.freeze_first)
    if any(not 1 <= k < len(names) for k in ks) or len(set(ks)) != len(ks):
        raise ValueError(f"layer-sensitivity option freeze_first must be distinct integers in "
                         f"[1, {len(names) - 1}], got {ks!r}")
    return {"modes": opts.modes, "blocks": only, "freeze_first": sorted(ks),
            "tolerance": opts.tolerance}


def block_params(config: StudyConfig, data: Any) -> dict[str, int]:
    """``{block: parameter count}`` of ``config.model`` on ``data``, in forward order."""
    from fastunlearn.models import create_model
    from fastunlearn.studies.pool import model_blocks

    net = create_model(config.model, data)
    return {n: sum(p.numel() for p in b.parameters()) for n, b in model_blocks(net).items()}


def _trainable(net: Any, variant: Mapping[str, Any]) -> int:
    """Weights left trainable by ``variant`` (applied to a fresh copy of ``net``)."""
    import copy

    from fastunlearn.studies.pool import apply_variant

    net = copy.deepcopy(net)
    apply_variant(net, variant)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


# ------------------------------------------------------------------------------ study
@register_study("layer-sensitivity",
                "Where does unlearning happen: how well does each method forget when only one "
                "block (or all but the first k blocks) may change, and how far does each layer "
                "drift from the original?", default_methods=DEFAULT_METHODS,
                options=LayerSensitivityOptions)
class LayerSensitivity:
    @staticmethod
    def plan(config: StudyConfig, data: Any) -> list[dict[str, Any]]:
        from fastunlearn.models import create_model

        forget = default_forget(config, data)
        params = block_params(config, data)
        opts = parse_options(config.options, params)
        net = create_model(config.model, data)
        total = sum(p.numel() for p in net.parameters())
        names = list(params)
        variants: list[tuple[dict[str, Any], dict[str, Any]]] = [
            ({}, {"variant": "all", "mode": "all", "block": "", "k": 0})]
        if "only" in opts["modes"]:
            variants += [({"only": b}, {"variant": f"only:{b}", "mode": "only", "block": b,
                                        "k": names.index(b)}) for b in opts["blocks"]]
        if "freeze_first" in opts["modes"]:
            variants += [({"freeze_first": k}, {"variant": f"freeze_first:{k}",
                                                "mode": "freeze_first", "block": names[k - 1],
                                                "k": k}) for k in opts["freeze_first"]]
        methods = config.method_list()
        runs: list[dict[str, Any]] = []
        for i, (variant, tags) in enumerate(variants):
            tags = {**tags, "trainable_params": _trainable(net, variant),
                    "total_params": total}
            runs += task_runs(config, dataset=config.dataset, model=config.model, forget=forget,
                              methods=methods, variant=variant, tags=tags,
                              with_retrain=config.include_retrain and i == 0)
        for r in runs:  # the retrain row is the reference, not the all-trainable variant
            if r["method"] == "retrain":
                r["tags"] = {"variant": "retrain", "mode": "reference", "block": "", "k": 0,
                             "trainable_params": total, "total_params": total}
        log.info("layer-sensitivity: %d variants × %d methods × %d seeds", len(variants),
                 len(methods), config.seeds)
        return runs

    @staticmethod
    def report(ctx: StudyContext) -> str:
        params = block_params(ctx.config, ctx.data)
        names = list(params)
        tol = parse_options(ctx.config.options, params)["tolerance"]
        cka_cols = _columns(ctx.rows, "layer_cka.")
        summary = summarise(ctx, ["method", "tag.variant", "tag.mode", "tag.block", "tag.k",
                                  "tag.trainable_params", "tag.total_params"],
                            [*TABLE_METRICS, *cka_cols, *_columns(ctx.rows, "layer_cka_retain.")])
        methods = list(dict.fromkeys(r["method"] for r in summary if r["method"] != "retrain"))
        by = {(r["method"], r["tag.variant"]): r for r in summary}
        gold = by.get(("retrain", "retrain"))
        retrain_fa = _mean_of(ctx.rows, "retrain_forget_acc")
        retrain_ra = _mean_of(ctx.rows, "retrain_retain_acc")

        text = "## Results per method and variant\n\n"
        text += (f"Forget task: {_forget_label(ctx)}; blocks in forward order: "
                 + ", ".join(f"`{n}` ({params[n]:,} params)" for n in names)
                 + f". The retrained model scores forget acc {retrain_fa:.2f} %, retain acc "
                 f"{retrain_ra:.2f} %. \"gap FA\" is |forget acc − retrain's|.\n\n")
        head = ["method", "variant", "trainable", "forget acc", "gap FA", "retain acc",
                "test acc", "Avg-Gap", "RTE (s)"]
        body = []
        for r in summary:
            if r["method"] == "retrain":
                continue
            frac = r["tag.trainable_params"] / max(1, r["tag.total_params"])
            body.append([f"`{r['method']}`", f"`{r['tag.variant']}`", f"{100 * frac:.1f} %",
                         cell(r, "forget_acc"), cell(r, "gap_forget_acc"), cell(r, "retain_acc"),
                         cell(r, "test_acc"), cell(r, "avg_gap"), cell(r, "rte_s", 2)])
        if gold is not None:
            body.append(["retrain (gold)", "—", "100 %", cell(gold, "forget_acc"), "0",
                         cell(gold, "retain_acc"), cell(gold, "test_acc"), "0",
                         cell(gold, "rte_s", 2)])
        text += md_table(head, body) + "\n"

        only = [b for b in names if any((m, f"only:{b}") in by for m in methods)]
        ks = sorted({int(r["tag.k"]) for r in summary if r["tag.mode"] == "freeze_first"})
        if only:
            png = _plot_curve(ctx, by, methods, [f"only:{b}" for b in only], only,
                              "only this block trainable (forward order)", "only.png",
                              retrain_fa, retrain_ra, dashed_all=True)
            text += f"![accuracy vs trainable block]({relpath(png, ctx)})\n\n"
        if ks:
            labels = ["0\n(all)"] + [f"{k}\n≤{names[k - 1]}" for k in ks]
            png = _plot_curve(ctx, by, methods, ["all"] + [f"freeze_first:{k}" for k in ks],
                              labels, "first k blocks frozen (≤ last frozen block)",
                              "freeze_first.png", retrain_fa, retrain_ra, dashed_all=False)
            text += f"![accuracy vs blocks frozen]({relpath(png, ctx)})\n\n"

        text += _cka_section(ctx, by, methods, cka_cols)
        text += "## Answer\n\n" + _answer(by, methods, only, ks, params, tol) + "\n"
        return text


# ----------------------------------------------------------------------------- report
def _columns(rows: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    cols: list[str] = []
    for r in rows:
        cols.extend(c for c in r if c.startswith(prefix) and c not in cols)
    return cols


def _mean_of(rows: Sequence[Mapping[str, Any]], col: str) -> float:
    vals = [r[col] for r in rows if isinstance(r.get(col), (int, float))]
    return sum(vals) / len(vals) if vals else math.nan


def _forget_label(ctx: StudyContext) -> str:
    spec = ctx.results[0]["run"]["forget"] if ctx.results else {}
    if spec.get("type") == "class":
        return "class " + ", ".join(f"`{c}`" for c in spec["classes"])
    if "fraction" in spec:
        return f"random {100 * spec['fraction']:g} % of the training set"
    return f"random {spec.get('count')} samples"


def _get(by: Mapping[tuple[str, str], Mapping[str, Any]], method: str, variant: str,
         metric: str) -> float:
    r = by.get((method, variant))
    return float(r.get(f"{metric}_mean", math.nan)) if r is not None else math.nan


def _half(by: Mapping[tuple[str, str], Mapping[str, Any]], method: str, variant: str,
          metric: str) -> float:
    r = by.get((method, variant))
    h = r.get(f"{metric}_ci95", math.nan) if r is not None else math.nan
    return h if isinstance(h, float) and math.isfinite(h) else 0.0


def _subplots(ncols: int, width: float, height: float) -> tuple[Any, Any]:
    fig, axes = figure(width, height, ncols=ncols, squeeze=False)
    return fig, axes[0]


def _plot_curve(ctx: StudyContext, by: Mapping[tuple[str, str], Mapping[str, Any]],
                methods: Sequence[str], variants: Sequence[str], labels: Sequence[str],
                xlabel: str, name: str, retrain_fa: float, retrain_ra: float, *,
                dashed_all: bool) -> Any:
    fig, axes = _subplots(2, 11, 4.2)
    x = list(range(len(variants)))
    for ax, metric, title, ref in ((axes[0], "forget_acc", "forget accuracy (%)", retrain_fa),
                                   (axes[1], "retain_acc", "retain accuracy (%)", retrain_ra)):
        for i, m in enumerate(methods):
            color = f"C{i % 10}"
            ys = [_get(by, m, v, metric) for v in variants]
            err = [_half(by, m, v, metric) for v in variants]
            ax.errorbar(x, ys, yerr=err, marker="o", ms=4, capsize=2, color=color, label=m)
            if dashed_all:
                ax.axhline(_get(by, m, "all", metric), ls="--", lw=1, color=color, alpha=0.8)
        if math.isfinite(ref):
            ax.axhline(ref, ls=":", lw=1.2, color="black", label="retrain")
        ax.set_xticks(x, labels, fontsize=8)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    extra = " (dashed: all weights trainable)" if dashed_all else ""
    fig.suptitle(f"{ctx.config.model} on {ctx.config.dataset}, forget "
                 f"{_forget_label(ctx).replace('`', '')}{extra}", fontsize=9)
    axes[1].legend(fontsize=7, loc="best")
    return savefig(fig, ctx.out / name)


def _cka_section(ctx: StudyContext, by: Mapping[tuple[str, str], Mapping[str, Any]],
                 methods: Sequence[str], cka_cols: Sequence[str]) -> str:
    if not cka_cols:
        return "## Layer drift\n\nCKA was switched off (`cka=False`); no layer drift.\n\n"
    layers = [c.removeprefix("layer_cka.") for c in cka_cols]
    drift = [[1 - _get(by, m, "all", c) for c in cka_cols] for m in methods]
    text = ("## Layer drift (all weights trainable)\n\nDrift = 1 − linear CKA between the "
            "original's and the unlearned model's activations on the forget probe, per block "
            "(0: unchanged representation).\n\n")
    body = [[f"`{m}`"] + [f"{d:.3f}" if math.isfinite(d) else "—" for d in row]
            for m, row in zip(methods, drift)]
    text += md_table(["method", *[f"`{n}`" for n in layers]], body) + "\n"
    import numpy as np

    fig, axes = _subplots(1, max(5.0, 0.9 * len(layers) + 2.5), max(2.5, 0.4 * len(methods) + 1.5))
    ax = axes[0]
    arr = np.array(drift, dtype=float).reshape(len(methods), len(layers))
    finite = arr[np.isfinite(arr)]
    im = ax.imshow(arr, cmap="magma_r", vmin=0, vmax=max(1e-6, float(finite.max()))
                   if finite.size else 1, aspect="auto")
    nd = 3 if finite.size and finite.max() < 0.1 else 2
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            if math.isfinite(arr[i, j]):
                ax.text(j, i, f"{arr[i, j]:.{nd}f}", ha="center", va="center", fontsize=7,
                        color="white" if finite.size and arr[i, j] > 0.6 * finite.max()
                        else "black")
    ax.set_xticks(range(len(layers)), layers, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(methods)), methods, fontsize=8)
    ax.set_xlabel("block (forward order)")
    ax.set_title(f"1 − CKA to the original, {ctx.config.model} on {ctx.config.dataset}",
                 fontsize=9)
    fig.colorbar(im, ax=ax, label="drift (1 − CKA)")
    png = savefig(fig, ctx.out / "cka_drift.png")
    text += f"![CKA drift per layer]({relpath(png, ctx)})\n\n"
    # Frozen upstream blocks must not move: under only:BLOCK every earlier block is frozen.
    upstream = []
    for m in methods:
        for (mm, v), r in by.items():
            if mm != m or not v.startswith("only:"):
                continue
            b = v.removeprefix("only:")
            if b not in layers:
                continue
            for layer in layers[: layers.index(b)]:
                val = r.get(f"layer_cka.{layer}_mean", math.nan)
                if isinstance(val, float) and math.isfinite(val):
                    upstream.append((1 - val, m, b, layer))
    if upstream:
        worst = max(upstream)
        text += (f"Check: with only one block trainable, the blocks before it are frozen; their "
                 f"largest drift is {worst[0]:.2e} (`{worst[1]}`, only `{worst[2]}` trainable, "
                 f"block `{worst[3]}`) — "
                 + ("≈ 0 as it must be.\n\n" if worst[0] < 1e-3 else
                    "not ≈ 0: something upstream changed (e.g. BatchNorm running statistics "
                    "updated in train mode).\n\n"))
    return text


def _answer(by: Mapping[tuple[str, str], Mapping[str, Any]], methods: Sequence[str],
            only: Sequence[str], ks: Sequence[int], params: Mapping[str, int],
            tol: float) -> str:
    """Single-block and frozen-prefix verdicts. Only methods that forget with every weight
    trainable (their forget-acc gap to retrain at least ``tol`` points below the original
    model's) are judged; ties in the forget-acc gap (to 0.1 point) go to the smaller block."""
    if not methods:
        return "No method rows; nothing to compare.\n"
    names = list(params)
    judged, idle = [], []
    for m in methods:
        g_all = _get(by, m, "all", "gap_forget_acc")
        g_orig = abs(_get(by, m, "all", "original_forget_acc")
                     - _get(by, m, "all", "retrain_forget_acc"))
        if not math.isfinite(g_all):
            continue
        (judged if not math.isfinite(g_orig) or g_all <= g_orig - tol else idle).append(m)
    parts = []
    if idle:
        parts.append(
            "Not judged: " + ", ".join(f"`{m}`" for m in idle) + " — even with every weight "
            f"trainable their forget-acc gap to retrain shrinks by less than {tol:g} points "
            "from the original model's, so there is no forgetting for a variant to lose.")
    if not judged:
        return " ".join(parts or ["No method has a finite forget accuracy."]) + "\n"
    if only:
        lines, picks = [], {}
        for m in judged:
            g_all, r_all = _get(by, m, "all", "gap_forget_acc"), _get(by, m, "all", "retain_acc")
            cand = [(b, _get(by, m, f"only:{b}", "gap_forget_acc"),
                     _get(by, m, f"only:{b}", "retain_acc")) for b in only]
            cand = [c for c in cand if math.isfinite(c[1])]
            if not cand:
                continue
            kept = [c for c in cand if c[2] >= r_all - tol]
            b, g, r = min(kept or cand, key=lambda c: (round(c[1], 1), params[c[0]]))
            picks[m] = b
            lines.append(f"`{m}`: `{b}` (gap {g:.1f} vs {g_all:.1f} with all weights, retain "
                         f"{r:.1f} vs {r_all:.1f})" + ("" if kept else
                                                       f" — no single block kept retain acc "
                                                       f"within {tol:g} points"))
        excess, retain = {}, {}
        for b in only:
            vals = [_get(by, m, f"only:{b}", "gap_forget_acc")
                    - _get(by, m, "all", "gap_forget_acc") for m in judged]
            vals = [v for v in vals if math.isfinite(v)]
            if vals:
                excess[b] = sum(vals) / len(vals)
            drop = [_get(by, m, f"only:{b}", "retain_acc") - _get(by, m, "all", "retain_acc")
                    for m in judged]
            drop = [v for v in drop if math.isfinite(v)]
            retain[b] = sum(drop) / len(drop) if drop else math.nan
        if lines:
            text = ("**Single trainable block.** Per method, the block that alone gets closest "
                    "to the all-trainable forgetting (smallest forget-acc gap to retrain) while "
                    f"keeping retain accuracy within {tol:g} points: " + "; ".join(lines) + ".")
            if excess:
                best = min(excess, key=lambda b: (round(excess[b], 1), params[b]))
                text += (f" Averaged over these methods, training only `{best}` "
                         f"({params[best]:,} weights) comes closest: its forget-acc gap is "
                         f"{excess[best]:+.1f} points from the all-trainable one, retain "
                         f"accuracy {retain[best]:+.1f} (other blocks' gap: "
                         + ", ".join(f"`{b}` {v:+.1f}" for b, v in excess.items() if b != best)
                         + f"); it is the pick of {sum(p == best for p in picks.values())} of "
                         f"{len(picks)} method(s).")
            parts.append(text)
    if ks:
        lines, safe_all = [], []
        for m in judged:
            g0 = _get(by, m, "all", "gap_forget_acc")
            safe, broke = 0, None
            for k in ks:
                g = _get(by, m, f"freeze_first:{k}", "gap_forget_acc")
                if not math.isfinite(g):
                    continue
                if g > g0 + tol:
                    broke = (k, g)
                    break
                safe = k
            safe_all.append(safe)
            lines.append(f"`{m}`: {safe}" + (
                f" (freezing {broke[0]} — through `{names[broke[0] - 1]}` — raises the gap "
                f"from {g0:.1f} to {broke[1]:.1f})" if broke else
                f" (every tested k stays within {tol:g} points)"))
        parts.append(
            f"**Frozen prefix.** Blocks that can be frozen (the first k of {len(names)}) "
            f"before forgetting degrades by more than {tol:g} points of forget-acc gap: "
            + "; ".join(lines) + f". For all of these methods at once: {min(safe_all)} "
            f"block(s), of the tested k ∈ {{{', '.join(map(str, ks))}}}.")
    if not only and not ks:
        parts.append("Only the all-trainable variant ran; nothing to compare.")
    return "\n\n".join(parts) + "\n"
