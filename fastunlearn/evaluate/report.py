"""``fastunlearn report RUN_DIR``: judge every checkpoint of a run, write ``report.md`` (tables
and PNG figures) and ``metrics.json``.

A RUN_DIR is a directory holding fastunlearn checkpoints (``NAME.safetensors``, which carries
its metadata; the ``NAME.json`` sidecar beside it is for people) of one dataset, as written by
``fastunlearn demo``, ``train`` and ``unlearn``. Each checkpoint gets a role:

- **original** — sidecar ``"role": "original"``, else the file named ``original``/``orig``,
  else a checkpoint without a forget set and without an ``unlearn_config``;
- **retrain** (the gold model) — sidecar ``"role": "retrain"`` or an ``unlearn_config`` of
  method ``retrain``, else the file named ``retrain``/``retrained``/``gold``;
- **unlearned** — every other checkpoint.

At most one original and one retrain are allowed. The forget set comes from the sidecars of
the unlearned (or retrain) checkpoints, which must agree.

Names from files and metadata (models, methods, dataset, classes) are escaped in report.md
(``|`` cannot split a table cell, ``<``/``&`` are not HTML) and image links are
percent-encoded, so any file name renders as itself. Runtime (``rte_s``,
``peak_mem_mb``) comes from each sidecar's ``metrics`` (``fastunlearn unlearn`` writes it) or,
failing that, from ``results.json`` rows ``{"model": NAME, "time_s": …}`` (``fastunlearn demo``).
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import torch
from torch import nn

from fastunlearn._atomic import atomic_write_bytes, jsonable
from fastunlearn._device import machine_description  # noqa: F401 (one definition, re-exported)
from fastunlearn.data.base import ImageDataset
from fastunlearn.data.splits import ForgetSplit, split_from_spec
from fastunlearn.evaluate.core import EvalConfig, Evaluator, cost_of
from fastunlearn.evaluate.drift import penultimate_features
from fastunlearn.evaluate.mia import FEATURES, per_sample_loss

log = logging.getLogger(__name__)

ORIGINAL_NAMES = ("original", "orig")
RETRAIN_NAMES = ("retrain", "retrained", "gold")


@dataclass
class RunEntry:
    """One checkpoint of a run directory."""

    name: str
    path: Path
    role: str  # "original" | "retrain" | "unlearned"
    meta: dict[str, Any]
    model: nn.Module | None = None
    cost: dict[str, float] = field(default_factory=dict)

    @property
    def method(self) -> str:
        cfg = self.meta.get("unlearn_config") or {}
        return str(cfg.get("method") or self.name)

    @property
    def arch(self) -> str:
        return str((self.meta.get("model") or {}).get("name", "?"))


def _role(name: str, meta: dict[str, Any]) -> str:
    role = str(meta.get("role") or "").lower()
    method = str((meta.get("unlearn_config") or {}).get("method") or "").lower()
    if role in ("original", "retrain"):
        return role
    if method == "retrain":
        return "retrain"
    if role == "unlearned" or method:
        return "unlearned"
    stem = name.lower()
    if stem in ORIGINAL_NAMES:
        return "original"
    if stem in RETRAIN_NAMES:
        return "retrain"
    if meta.get("forget") is None:
        return "original"
    return "unlearned"


def discover_run(run_dir: str | Path) -> list[RunEntry]:
    """The checkpoints of ``run_dir`` with their roles (ValueError when there are none, or
    more than one original or retrain)."""
    from fastunlearn.checkpoint import CheckpointError, read_metadata

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory not found: {run_dir}")
    entries = []
    for weights in sorted(run_dir.glob("*.safetensors")):
        try:
            meta = read_metadata(weights)
        except CheckpointError as err:  # another tool's weights, or format 1 without sidecar
            log.warning("skipping %s: %s", weights.name, err)
            continue
        entries.append(RunEntry(weights.stem, weights, _role(weights.stem, meta), meta))
    if not entries:
        raise ValueError(f"{run_dir} holds no fastunlearn checkpoints (NAME.safetensors)")
    for role in ("original", "retrain"):
        names = [e.name for e in entries if e.role == role]
        if len(names) > 1:
            raise ValueError(f"{run_dir} has several {role} checkpoints ({', '.join(names)}); "
                             f"keep one, or set \"role\" in the sidecars")
    order = {"original": 0, "unlearned": 1, "retrain": 2}
    return sorted(entries, key=lambda e: (order[e.role], e.name))


def _forget_spec(entries: list[RunEntry]) -> dict[str, Any]:
    specs = [(e.name, e.meta.get("forget")) for e in entries if e.role != "original"]
    specs = [(n, s) for n, s in specs if s]
    if not specs:
        raise ValueError("no checkpoint in the run names its forget set (sidecar field 'forget'); "
                         "add an unlearned or retrain checkpoint")
    first_name, first = specs[0]
    for name, spec in specs[1:]:
        if spec != first:
            raise ValueError(f"forget sets differ: {first_name} has {first}, {name} has {spec}")
    return first


def _demo_times(run_dir: Path) -> dict[str, float]:
    path = run_dir / "results.json"
    if not path.exists():
        return {}
    try:
        rows = json.loads(path.read_text()).get("rows", [])
    except (json.JSONDecodeError, AttributeError):
        return {}
    return {str(r["model"]): float(r["time_s"]) for r in rows
            if isinstance(r, dict) and "model" in r and isinstance(r.get("time_s"), (int, float))}


# --------------------------------------------------------------------------------- tables
def _f(v: Any, nd: int = 2) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, (int, float)):
        return f"{v:.{nd}f}"
    return str(v)


_MD_SPECIAL = str.maketrans({c: "\\" + c for c in "\\`*[]|"})


def _md(text: Any) -> str:
    """``text`` as literal Markdown: one line, ``<>&`` as HTML entities, and the characters
    that would end a table cell or start markup (``| ` * [ ] \\``) backslash-escaped."""
    one_line = " ".join(str(text).splitlines())
    return html.escape(one_line, quote=False).translate(_MD_SPECIAL)


def _image(caption: str, fname: str) -> str:
    """A Markdown image whose target is percent-encoded (spaces, parentheses, ``#`` …)."""
    return f"![{_md(caption)}]({quote(fname)})"


def _table(header: list[str], rows: list[list[str]], align: list[str] | None = None) -> str:
    """A Markdown table; every cell is escaped (numbers pass through unchanged)."""
    align = align or ["---"] + ["---:"] * (len(header) - 1)
    lines = ["| " + " | ".join(map(_md, header)) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(map(_md, r)) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def _tables(entries: list[RunEntry], metrics: dict[str, dict[str, Any]], classes: list[str]) -> str:
    parts = []
    rows = []
    for e in entries:
        m = metrics[e.name]
        rows.append([f"{e.name}", e.role, _f(m["forget_acc"]), _f(m["UA"]), _f(m["retain_acc"]),
                     _f(m["test_acc"]), _f(m["test_forget_acc"]), _f(m.get("mia_efficacy")),
                     _f(m.get("avg_gap")), _f(m.get("rte_s"), 1), _f(m.get("rte_ratio"), 3)])
    parts.append("### Accuracy, forgetting and cost\n\n" + _table(
        ["model", "role", "FA %", "UA %", "RA %", "TA %", "test-forget %", "MIA-eff. %",
         "Avg-Gap", "RTE s", "× retrain"], rows, ["---", "---"] + ["---:"] * 9))
    parts.append(
        "FA/UA: accuracy on / 100 − accuracy on the forget set; RA: retain-train accuracy; TA: "
        "test accuracy on retain classes (class forgetting) or all test samples; MIA-eff.: % of "
        "forget samples an SVC attack on the true-class probability calls non-member (SalUn); "
        "Avg-Gap: mean |Δ| to the retrained model over UA, RA, TA, MIA-eff.; RTE: wall time of "
        "the method, × retrain: its ratio to the retrain's.\n")
    rows = []
    for e in entries:
        m = metrics[e.name]
        rows.append([e.name, _f(m.get("js_to_retrain"), 4), _f(m.get("js_to_retrain_test"), 4),
                     _f(m.get("kl_to_retrain"), 3), _f(m.get("entropy"), 3),
                     _f(m.get("entropy_norm"), 3), _f(m.get("confusion_drift_vs_original"), 4),
                     _f(m.get("confusion_drift_vs_retrain"), 4),
                     _f(m.get("collateral_damage_mean")), _f(m.get("collateral_damage_worst")),
                     _f(m.get("mia_loss_auc"), 3)])
    parts.append("### Distance to the retrained model, uncertainty and drift\n\n" + _table(
        ["model", "JS forget", "JS test", "KL forget", "entropy (nats)", "entropy / log C",
         "conf. drift vs orig.", "conf. drift vs retrain", "collateral mean (pp)",
         "collateral worst (pp)", "loss-attack AUC"], rows))
    parts.append(
        "JS: mean Jensen–Shannon divergence (base 2) between the model's and the retrained "
        "model's predictive distributions on the forget / test set; KL: KL(retrain ‖ model) in "
        "nats on the forget set; entropy: mean predictive entropy on test samples of the "
        "forgotten classes; confusion drift: ½‖C − C_ref‖₁ / N on the test set; collateral: "
        "original − model test accuracy per retain class (percentage points; mean and worst); "
        "loss-attack AUC: forget vs held-out samples by per-sample loss (0.5 = "
        "indistinguishable).\n")
    rows = []
    for e in entries:
        m = metrics[e.name]
        for attack in ("svc", "lr"):
            eff = m.get(f"mia_efficacy_{attack}")
            acc = m.get(f"mia_attack_acc_{attack}")
            if eff is None:
                continue
            rows.append([e.name, attack.upper()] +
                        [f"{_f(eff[f], 1)} ({_f(acc[f], 1)})" for f in FEATURES])
    if rows:
        parts.append("### Membership inference per feature\n\n" + _table(
            ["model", "attack", *FEATURES], rows, ["---", "---"] + ["---:"] * len(FEATURES)))
        parts.append("Each cell: MIA-efficacy % (held-out attack accuracy %, 50 = chance). "
                     "Attack trained on retain-train (member) vs test (non-member).\n")
    cka_rows = []
    blocks: list[str] = []
    for e in entries:
        cka = metrics[e.name].get("layer_cka") or {}
        for b in cka:
            if b not in blocks:
                blocks.append(b)
    for probe, key in (("forget", "layer_cka"), ("retain", "layer_cka_retain")):
        for e in entries:
            if e.role == "original":
                continue
            cka = metrics[e.name].get(key) or {}
            if cka:
                cka_rows.append([e.name, probe] + [_f(cka.get(b), 4) for b in blocks])
    if cka_rows:
        parts.append("### Linear CKA to the original, per block\n\n" + _table(
            ["model", "probe", *blocks], cka_rows, ["---", "---"] + ["---:"] * len(blocks)))
        parts.append("1.0 = the block's representation of the probe images is unchanged (up to "
                     "rotation and scale).\n")
    rows = []
    for i, c in enumerate(classes):
        rows.append([c] + [_f(list(metrics[e.name]["per_class_test_acc"].values())[i], 1)
                           for e in entries])
    header = ["class", *[e.name for e in entries]]
    parts.append("### Per-class test accuracy (%)\n\n" + _table(header, rows))
    return "\n".join(parts)


# --------------------------------------------------------------------------------- report
def write_report(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    data: ImageDataset | None = None,
    data_root: str | None = None,
    device: str | torch.device = "cpu",
    config: EvalConfig | None = None,
    plots: bool = True,
    tsne_retain: int = 400,
    tsne_forget: int = 200,
) -> Path:
    """Evaluate every checkpoint in ``run_dir`` and write ``report.md``, ``metrics.json`` and
    PNG figures into ``out_dir`` (default: ``run_dir``). Returns the path of ``report.md``."""
    from fastunlearn._device import resolve_device
    from fastunlearn.checkpoint import load_checkpoint
    from fastunlearn.data import load_dataset

    t0 = time.perf_counter()
    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir
    dev = resolve_device(device)
    cfg = config or EvalConfig()
    entries = discover_run(run_dir)
    names = {(e.meta.get("dataset") or {}).get("name") for e in entries}
    if len(names) != 1 or None in names:
        found = ", ".join(sorted(map(str, names)))
        raise ValueError(f"the checkpoints in {run_dir} must name one dataset, found {found}")
    dataset_name = names.pop()
    if data is None:
        data = load_dataset(dataset_name, **({"root": data_root} if data_root else {}))
    split = split_from_spec(data, _forget_spec(entries))
    demo_times = _demo_times(run_dir)
    for e in entries:
        e.model = load_checkpoint(e.path, device=dev).model
        e.cost = cost_of(e.meta.get("metrics") or {})
        if "rte_s" not in e.cost:
            key = e.method if e.method in demo_times else e.name
            if key in demo_times and e.role != "original":
                e.cost["rte_s"] = demo_times[key]
    orig = next((e for e in entries if e.role == "original"), None)
    gold = next((e for e in entries if e.role == "retrain"), None)

    ev = Evaluator(split, cfg)
    metrics: dict[str, dict[str, Any]] = {}
    for e in entries:
        log.info("evaluating %s (%s)", e.name, e.role)
        metrics[e.name] = ev.evaluate(
            e.model, original=orig.model if orig else None, retrained=gold.model if gold else None,
            cost=e.cost, retrain_cost=gold.cost if gold else None,
        )
        if e.role == "unlearned" and ev.outputs(e.model).activations is not None:
            ev.outputs(e.model).activations = None  # keep only the reference activations
    eval_s = time.perf_counter() - t0

    out_dir.mkdir(parents=True, exist_ok=True)
    figures: list[tuple[str, list[tuple[str, str]]]] = []
    if plots:
        figures = _make_figures(out_dir, entries, orig, gold, ev, split, cfg.seed,
                                tsne_retain, tsne_forget)
    total_s = time.perf_counter() - t0

    machine = machine_description(dev)
    forget_desc = split.describe()
    summary = {
        "run_dir": str(run_dir),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "dataset": dataset_name,
        "forget": split.spec if split.kind != "indices"
        else {"type": "indices", "count": len(split.forget)},
        "forget_description": forget_desc,
        "machine": machine,
        "eval_config": asdict(cfg),
        "evaluation_s": eval_s,
        "total_s": total_s,
        "models": {e.name: {"role": e.role, "method": e.method, "arch": e.arch,
                            "path": e.path.name, "metrics": metrics[e.name]} for e in entries},
    }
    atomic_write_bytes(out_dir / "metrics.json",
                       (json.dumps(jsonable(summary), indent=2) + "\n").encode())

    lines = [
        f"# Unlearning report: {_md(run_dir.name)}",
        "",
        f"- Dataset: **{_md(dataset_name)}** ({len(split.data.train_labels)} train / "
        f"{len(split.data.test_labels)} test images, {data.num_classes} classes)",
        f"- Forget set: **{_md(forget_desc)}**",
        "- Models: " + ", ".join(_md(f"{e.path.name} ({e.role}, {e.arch}"
                                     + (f", method {e.method}" if e.role == "unlearned" else "")
                                     + ")") for e in entries),
        f"- Evaluation: {eval_s:.1f} s, figures {total_s - eval_s:.1f} s on {machine}; "
        f"MIA on ≤ {cfg.max_samples} samples per set (seed {cfg.seed}), CKA probes of "
        f"{cfg.cka_probe} forget and retain images",
        "- Metric definitions: docs/evaluation.md; all numbers also in `metrics.json`.",
        "",
        _tables(entries, metrics, list(data.classes)),
    ]
    if figures:
        lines.append("## Figures\n")
        for heading, imgs in figures:
            lines.append(f"### {_md(heading)}\n")
            for caption, fname in imgs:
                lines.append(_image(caption, fname) + "\n")
    report = out_dir / "report.md"
    atomic_write_bytes(report, "\n".join(lines).encode())
    return report


def _make_figures(out_dir: Path, entries: list[RunEntry], orig: RunEntry | None,
                  gold: RunEntry | None, ev: Evaluator, split: ForgetSplit, seed: int,
                  tsne_retain: int, tsne_forget: int) -> list[tuple[str, list[tuple[str, str]]]]:
    from fastunlearn.evaluate import plots

    data = split.data
    classes = list(data.classes)
    subjects = [e for e in entries if e.role == "unlearned"] or ([gold] if gold else [orig])
    retain_s = split.retain.take(tsne_retain, seed=seed)
    forget_s = split.forget.take(tsne_forget, seed=seed)
    tsne_labels = torch.cat([retain_s.labels, forget_s.labels]).numpy()
    tsne_forget_mask = np.r_[np.zeros(len(retain_s), bool), np.ones(len(forget_s), bool)]
    emb_cache: dict[str, tuple[np.ndarray, str]] = {}

    def embed(e: RunEntry) -> tuple[np.ndarray, str]:
        if e.name not in emb_cache:
            assert e.model is not None
            try:
                feats = torch.cat([penultimate_features(e.model, retain_s),
                                   penultimate_features(e.model, forget_s)])
                what = "penultimate features"
            except ValueError:  # e.g. an ensemble: no single penultimate layer
                out = ev.outputs(e.model)
                feats = torch.cat([out.logits["retain"][_positions(split.retain, retain_s)],
                                   out.logits["forget"][_positions(split.forget, forget_s)]])
                what = "logits"
            emb_cache[e.name] = (plots.tsne_2d(feats.numpy(), seed=seed), what)
        return emb_cache[e.name]

    held = ev.heldout_mask()
    heldout_name = "test-forget" if split.kind == "class" and not bool(held.all()) else "test"
    test_labels = split.test.labels
    figures = []
    for subj in subjects:
        panel = [e for e in (orig, subj, gold) if e is not None]
        panel = list({id(e): e for e in panel}.values())
        methods = [e.name for e in panel]
        forget_txt = split.describe()
        slug = subj.name

        def title(what: str, subj: RunEntry = subj, methods: list[str] = methods,
                  forget_txt: str = forget_txt) -> str:
            return plots.figure_title(what, subj.arch, data.name, methods, forget_txt)

        imgs = []
        series = {e.name: ev.outputs(e.model).per_class for e in panel}
        p = plots.plot_per_class_accuracy(out_dir / f"per_class_{slug}.png", classes, series,
                                          title=title("Per-class test accuracy"),
                                          forget_classes=split.forget_class_ids)
        imgs.append(("per-class accuracy", p.name))
        mats = {e.name: ev.outputs(e.model).confusion.numpy() for e in panel}
        p = plots.plot_confusion_matrices(out_dir / f"confusion_{slug}.png", classes, mats,
                                          title=title("Test confusion matrices"))
        imgs.append(("confusion matrices", p.name))
        embs = {e.name: embed(e) for e in panel}
        what = "logits" if any(w == "logits" for _, w in embs.values()) else "penultimate features"
        p = plots.plot_tsne(out_dir / f"tsne_{slug}.png", {k: v[0] for k, v in embs.items()},
                            tsne_labels, tsne_forget_mask, classes, title=title("t-SNE"),
                            feature_name=what)
        imgs.append(("t-SNE", p.name))
        hist = {}
        for e in panel:
            out = ev.loss_attack(ev.outputs(e.model))
            hist[e.name] = (per_sample_loss(out.logits["forget"], split.forget.labels).numpy(),
                            per_sample_loss(out.logits["test"][held], test_labels[held]).numpy(),
                            out.loss_auc)
        p = plots.plot_mia_histograms(out_dir / f"mia_{slug}.png", hist,
                                      title=title("Loss-attack scores"), heldout_name=heldout_name)
        imgs.append(("MIA score histograms", p.name))
        figures.append((f"{subj.name} ({subj.role})", imgs))
    return figures


def _positions(parent: Any, sub: Any) -> torch.Tensor:
    """Positions within ``parent`` (a view with sorted indices, e.g. ``split.retain``) of the
    samples of its sub-view ``sub``."""
    return torch.searchsorted(parent.indices, sub.indices)
