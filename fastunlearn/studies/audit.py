"""The forgetting audit: per-example privacy scores of unlearning methods from a
pool of shadow models, plus feature-level checks — one resumable run per (method, shadow).

**Shadow pool** (the efficient-LiRA layout). ``N`` (even) shadow models; every training example
is "in" for exactly ``N/2`` of them (a seeded random half per example, so each shadow trains on
about half of the training set). An audit forget set ``F`` is drawn once (``random:10%`` of the
training set, or every sample of a class). Shadow ``i``:

* ``original_i`` — trained on its half ``H_i``;
* ``retrain_i`` — the gold model: trained the same way on ``H_i \\ F``;
* ``retrain2_i`` — an independent second gold model (same data, another seed): the ceiling;
* per method, ``unlearned_i`` — the method applied to ``original_i`` with forget set
  ``F ∩ H_i`` and retain set ``H_i \\ F`` (its validation part is the split's ``val``).

Both pool models are keyed like the studies' pool and trained once; every method and audit
reuses them. The do-nothing row (``original``: ``unlearned_i = original_i``, cost 0) and the
ceiling row (``retrain``: ``unlearned_i = retrain2_i``, retrain vs an independent retrain) are
part of every audit. The ceiling is what a perfect method scores with this N: the challenge score
of two same-distribution pools is far below 1 (about 0.2 at N = 8-16, the threshold attacks pick
up noise in the tails) and KLoM of such pools is far above 0 with few models — read each row
against it.

**Scores** (definitions: docs/evaluation.md, functions: :mod:`fastunlearn.evaluate.audit`). φ is
the logit-scaled confidence (= the margin). For example ``x ∈ F`` the ``N/2`` shadows with
``x ∈ H_i`` give the unlearned φ (trained on ``x``, then forgot it) and the retrained φ (same
data without ``F``):

* ``forget_score`` — the NeurIPS-2023 challenge score from per-example ε of those two samples,
  times ``RA_u/RA_r × TA_u/TA_r`` (means over shadows);
* U-LiRA — each unlearned shadow in turn is the target; its forgotten examples (``F ∩ H_i``)
  and never-seen examples (``F \\ H_i``) are scored by the likelihood ratio of Gaussians fitted
  on the *other* unlearned shadows (trained-then-unlearned vs never-seen); AUC and TPR at
  1 % / 0.1 % FPR over the balanced set (0.5 = ideal);
* KLoM — per example, KL between the margin histograms under unlearned and retrained shadows on
  forget, retain and validation points; 95th percentile and median per split;
* linear probe (the first ``probe_shadows`` shadows) — a fresh linear head on frozen penultimate
  features: forget-class test accuracy it recovers (class forgetting) or its accuracy on the
  forgotten training examples (random forgetting), vs the retrained model's;
* relearn time — SGD steps on a small forget subset until it is back at the original's accuracy.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastunlearn._device import slug
from fastunlearn.studies.executors import _dispatch, progress_callbacks
from fastunlearn.studies.keys import (
    DO_NOTHING,
    RESULT_FILE,
    config_current,
    config_digest,
    digest,
    write_json_atomic,
)
from fastunlearn.studies.pool import (
    _dataset,
    _load_pool,
    _warm_up,
    pool_lock,
    pool_path,
    pool_ready,
)
from fastunlearn.studies.runlog import _run_log, machine
from fastunlearn.studies.selection import (
    Selection,
    is_hard,
    membership,
    memorization,
    resolve_hard_forget,
)

log = logging.getLogger(__name__)

CEILING = "retrain"
RESULT_NPZ = "phi.npz"
# Below this many shadows U-LiRA fits one global variance per side (LiRA's advice for few
# shadows): with leave-one-out, the target's own side has one sample fewer than the other, and
# per-example variances from 3-8 samples then bias the ratio toward the right answer even when
# the two sides have the same distribution (seen: AUC 0.58 for retrain-vs-retrain at N = 8).
GLOBAL_VARIANCE_BELOW = 64
# "beats doing nothing" needs both scores better than the unchanged original by this much
BEAT_MARGIN = 0.005
# seed offset of the independent second gold model of each shadow (the ceiling row)
SECOND_GOLD_SEED = 500
ROLES = ("original", "retrain", "retrain2")
#: ``lira``: shadows on random halves (is this example's trace gone, across data draws?);
#: ``challenge``: one original on all the data, the method's seeds vs retrain seeds
#: (google-deepmind/unlearning_evaluation ``main.py``: did this method, on this model, forget?)
PROTOCOLS = ("lira", "challenge")


@dataclass
class AuditConfig:
    """What ``fastunlearn audit`` / :func:`audit` runs. ``methods``: registered methods (the
    do-nothing ``original`` and the ``retrain`` ceiling are always added); ``forget``:
    ``random:10%`` (default), ``random:500``, ``class:NAME`` or a split spec mapping (your own
    split's forget indices: pass ``split=``/``model_fn=`` to :func:`audit`), or a hard set
    ``memorized:5%`` / ``mixed:600`` / ``worst:5%`` (chosen by ``select_models`` selection models
    that are never scored, :mod:`fastunlearn.studies.selection`); ``model``, ``epochs``, ``lr``,
    ``batch_size``, ``weight_decay``, ``schedule``, ``warmup_epochs``: the shadow models'
    training (default: the fast memorizing recipe — ``small_cnn_narrow``, 18 epochs, batch 64,
    a linear one-cycle schedule, no augmentation, ≥ 99.5 % train accuracy); ``shadows``: N (even,
    ≥ 8); ``protocol``: ``lira`` (shadows on random halves) or ``challenge`` (one original on
    all of the data, the method's seeds vs retrain seeds)."""

    methods: tuple[str, ...] = ("ft",)
    dataset: str = "fashion-mnist-10k"
    model: str = "small_cnn_narrow"
    forget: str | dict[str, Any] = "random:10%"
    # the fast memorizing shadow recipe (benchmarks/bench_pool.py: 3.7x faster per shadow than
    # small_cnn 30 epochs, train accuracy ≥ 99.5 %, same do-nothing U-LiRA on memorized:5%)
    epochs: int = 18
    lr: float = 0.05
    batch_size: int = 64
    weight_decay: float = 0.0
    schedule: str = "linear"
    warmup_epochs: float = 1.0
    shadows: int = 16
    seed: int = 0
    method_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    probe_shadows: int = 2
    relearn_size: int = 64
    select_models: int = 8
    protocol: str = "lira"
    klom_points: int = 300
    out: str | None = None
    pool: str | None = None
    executor: str = "local"
    workers: int = 1
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.methods, str):
            self.methods = (self.methods,)
        self.methods = tuple(self.methods)
        if not self.methods:
            raise ValueError("audit needs at least one method (--method NAME)")
        if int(self.shadows) != self.shadows or self.shadows < 8 or self.shadows % 2:
            raise ValueError(f"shadows must be an even number ≥ 8 (each example then has ≥ 4 "
                             f"models per side), got {self.shadows}")
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got "
                             f"{self.protocol!r}")
        if not 0 <= self.probe_shadows <= self.shadows:
            raise ValueError(f"probe_shadows must be in [0, shadows], got {self.probe_shadows}")
        from fastunlearn.unlearn import get_method

        for m in self.methods:
            if m not in (DO_NOTHING, CEILING):
                get_method(m)  # one-line ValueError naming the valid methods
        bad = sorted(set(self.method_options) - set(self.methods))
        if bad:
            raise ValueError(f"options given for {bad[0]!r}, which is not an audited method")

    @property
    def train(self) -> dict[str, Any]:
        out = {"epochs": int(self.epochs), "lr": float(self.lr),
               "batch_size": int(self.batch_size), "eval_every": 0}
        # recipes with fu.train's defaults keep the keys they had (their pools are reused)
        if self.weight_decay != 5e-4:
            out["weight_decay"] = float(self.weight_decay)
        if self.schedule != "cosine":
            out["schedule"] = str(self.schedule)
        if self.warmup_epochs:
            out["warmup_epochs"] = float(self.warmup_epochs)
        return out

    def all_methods(self) -> list[str]:
        rest = [m for m in self.methods if m not in (DO_NOTHING, CEILING)]
        return [DO_NOTHING, *rest, CEILING]


@dataclass
class AuditResult:
    out: Path
    rows: list[dict[str, Any]]
    counts: dict[str, int]
    wall_s: float
    report: Path


# ------------------------------------------------------------------------- the layout
@dataclass
class Task:
    """Everything a run needs to rebuild its shadow split (plain JSON data)."""

    dataset: str
    model: str
    forget: dict[str, Any]
    train: dict[str, Any]
    shadows: int
    seed: int
    protocol: str = "lira"

    def key_data(self) -> dict[str, Any]:
        out = asdict(self)
        if self.protocol == "lira":  # the keys of lira audits stay as they were
            del out["protocol"]
        return out

    @property
    def challenge(self) -> bool:
        return self.protocol == "challenge"

    def original_index(self, i: int) -> int:
        """The original run ``i`` starts from: its own shadow's, or (challenge) the one."""
        return 0 if self.challenge else i


_LAYOUT: dict[str, Any] = {}


def layout(task: Task) -> dict[str, Any]:
    """The dataset, the global forget set ``F`` (sorted train indices), the membership matrix
    and the fixed KLoM retain points (cached per process)."""
    key = digest(task.key_data())
    if _LAYOUT.get("key") == key:
        return _LAYOUT["value"]
    from fastunlearn.data import split_from_spec

    data = _dataset(task.dataset)
    full = split_from_spec(data, task.forget)
    n = len(data.train_labels)
    member = (torch.ones(task.shadows, n, dtype=torch.bool) if task.challenge
              else membership(n, task.shadows, task.seed))
    g = torch.Generator().manual_seed(task.seed + 104729)
    retain_all = full.retain_idx
    pick = torch.randperm(len(retain_all), generator=g)[:300].sort().values
    value = {"data": data, "full": full, "F": full.forget_idx, "member": member,
             "R": retain_all[pick], "V": full.val.indices}
    _LAYOUT.update(key=key, value=value)
    return value


def shadow_split(task: Task, i: int) -> Any:
    """Shadow ``i``'s split: its training half as the train set, ``F ∩ H_i`` to forget; the
    dataset's validation and test parts unchanged."""
    from fastunlearn.data import forget_classes, forget_indices

    lay = layout(task)
    data = lay["data"]
    h = torch.nonzero(lay["member"][i]).flatten()
    sub = dataclasses.replace(data, train_images=data.train_images[h],
                              train_labels=data.train_labels[h])
    if task.forget.get("type") == "class":
        return forget_classes(sub, task.forget["classes"]), h
    pos = torch.nonzero(torch.isin(h, lay["F"])).flatten()
    return forget_indices(sub, pos), h


def pool_key(task: Task, i: int, role: str) -> str:
    what = {"dataset": task.dataset, "model": task.model, "train": task.train,
            "seed": task.seed, "shadows": task.shadows, "index": i, "role": role}
    if task.challenge:  # trained on all of the data: never a lira shadow
        what["protocol"] = "challenge"
        if role == "original":
            del what["shadows"]
    if role != "original":
        what["forget"] = task.forget
    return f"shadow-{role}-" + digest(what)


def build_shadow(job: dict[str, Any], pool_dir: str, device: str = "auto",
                 threads: int | None = None) -> dict[str, Any]:
    """Train shadow ``job["index"]``'s original or gold model into the pool (once, under the
    pool key's file lock)."""
    from fastunlearn.checkpoint import read_metadata

    if threads:
        torch.set_num_threads(threads)
    _warm_up()
    task, i, role = Task(**job["task"]), int(job["index"]), job["role"]
    pool = Path(pool_dir)
    key = pool_key(task, i, role)
    path = pool_path(pool, key)
    with pool_lock(pool, key):  # concurrent audits train each shadow once
        if pool_ready(pool, key):
            meta = read_metadata(path.with_suffix(".safetensors"))
            return {"key": key, "trained": False,
                    "train_s": meta.get("metrics", {}).get("rte_s", math.nan)}
        return _train_shadow(task, i, role, key, path, device)


def _train_shadow(task: Task, i: int, role: str, key: str, path: Path, device: str
                  ) -> dict[str, Any]:
    from fastunlearn._device import resolve_device
    from fastunlearn._timing import measure
    from fastunlearn.checkpoint import save_checkpoint
    from fastunlearn.models import create_model
    from fastunlearn.train import TrainConfig, train

    split, _ = shadow_split(task, i)
    part = split.full if role == "original" else split.retain
    seed = task.seed * 1000 + i + (SECOND_GOLD_SEED if role == "retrain2" else 0)
    tcfg = TrainConfig(**{**task.train, "seed": seed, "device": device, "progress": False})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model(task.model, split.data)
    with _run_log(path.parent):
        log.info("shadow %d %s: %s on %d samples", i, role, task.model, len(part))
        with measure(resolve_device(device)) as m:
            net = train(net, part, tcfg, eval_on={})
        log.info("trained in %.1f s", m.seconds)
    save_checkpoint(path, net, dataset=split.data,
                    forget=split.spec if role != "original" else None, seed=seed,
                    train_config=tcfg.to_dict(),
                    metrics={"rte_s": m.seconds, "peak_mem_mb": m.peak_mem_mb},
                    extra={"role": f"shadow-{role}", "pool_key": key, "shadow": i,
                           "machine": machine(device)})
    return {"key": key, "trained": True, "train_s": m.seconds}


# ------------------------------------------------------------------------- one run
def run_key(task: Task, method: str, config: dict[str, Any], i: int) -> str:
    return digest({"task": task.key_data(), "method": method, "config": config,
                          "index": i})


def _phi(model: torch.nn.Module, data: Any, part: str, idx: torch.Tensor) -> np.ndarray:
    from fastunlearn.data.base import DataPart
    from fastunlearn.evaluate.audit import logit_scaled_confidence
    from fastunlearn.inference import predict_logits

    view = DataPart(data, part, idx)
    logits = predict_logits(model, view)
    return np.asarray(logit_scaled_confidence(logits, view.labels), dtype=np.float64)


def _feature_checks(model: torch.nn.Module, original: torch.nn.Module, split: Any,
                    relearn_size: int, seed: int) -> dict[str, float]:
    """Linear probe and relearn time of ``model`` on its shadow split."""
    from fastunlearn.evaluate.audit import linear_probe, relearn_time
    from fastunlearn.inference import accuracy

    out: dict[str, float] = {}
    if split.kind == "class":
        train_part = split.full.take(3000, seed=seed)
        probe = linear_probe(model, train_part, split.test, forget_classes=split.forget_class_ids,
                             seed=seed)
        out["probe_forget_acc"] = float(probe["forget_class_accuracy"])
    else:
        probe = linear_probe(model, split.retain.take(3000, seed=seed), split.forget, seed=seed)
        out["probe_forget_acc"] = float(probe["accuracy"])
    out["probe_acc"] = float(probe["accuracy"]) if split.kind == "class" else math.nan
    sub = split.forget.take(relearn_size, seed=seed)
    target = accuracy(original, sub)
    rel = relearn_time(model, sub, target_acc=target, lr=0.01, batch_size=16, max_steps=200,
                       seed=seed)
    out["relearn_steps"] = float(rel["steps"])
    return out


def execute_audit_run(run: dict[str, Any], out_dir: str, pool_dir: str, device: str = "auto",
                      threads: int | None = None) -> dict[str, Any]:
    """Unlearn shadow ``run["index"]`` with ``run["method"]`` and record φ on the forget set,
    the KLoM retain/validation points, accuracies and (first shadows) the feature checks."""
    from fastunlearn._device import resolve_device
    from fastunlearn.evaluate.accuracy import accuracy_metrics
    from fastunlearn.unlearn import make_config, unlearn

    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(out_dir) / "runs" / run["key"]
    done = _read_run(run_dir, run["key"], run.get("config_digest"))
    if done is not None:
        return {**done, "skipped": True}
    _warm_up()
    t0 = time.perf_counter()
    task, i, method = Task(**run["task"]), int(run["index"]), run["method"]
    pool = Path(pool_dir)
    with _run_log(run_dir):
        split, _ = shadow_split(task, i)
        original, _ = _load_pool(pool, pool_key(task, task.original_index(i), "original"))
        gold, gold_meta = _load_pool(pool, pool_key(task, i, "retrain"))
        info: dict[str, Any] = {}
        if method == DO_NOTHING:
            model, rte = original, 0.0
        elif method == CEILING:
            model, meta2 = _load_pool(pool, pool_key(task, i, "retrain2"))
            rte = float(meta2.get("metrics", {}).get("rte_s", math.nan))
        else:
            # pool models load onto the CPU: "auto" here means the best device of the machine
            opts = {"seed": task.seed * 1000 + i, "device": str(resolve_device(device)),
                    "progress": False, **run["config"]}
            if method == "auto":  # its budget: a fraction of the shadow recipe's epochs
                opts.setdefault("retrain_epochs", int(task.train["epochs"]))
            cfg = make_config(method, **opts)
            res = unlearn(original, split, cfg)
            model, rte = res.model, res.rte_s
            info = {k: v for k, v in res.info.items() if isinstance(v, (int, float, str, bool))}
        lay = layout(task)
        data = lay["data"]
        acc = accuracy_metrics(model, split)
        metrics = {"retain_acc": acc["retain_acc"], "test_acc": acc["test_acc"],
                   "forget_acc": acc["forget_acc"], "rte_s": rte}
        arrays = {"forget": _phi(model, data, "train", lay["F"]),
                  "retain": _phi(model, data, "train", lay["R"]),
                  "val": _phi(model, data, "test", lay["V"])}
        if i < run["probe_shadows"]:
            metrics.update(_feature_checks(model, original, split, run["relearn_size"],
                                           task.seed + i))
        if method == CEILING:  # the gold models' own numbers, which every row is scored against
            gacc = accuracy_metrics(gold, split)
            metrics["gold"] = {"retain_acc": gacc["retain_acc"], "test_acc": gacc["test_acc"],
                               "rte_s": float(gold_meta.get("metrics", {}).get("rte_s",
                                                                               math.nan))}
            arrays.update(gold_forget=_phi(gold, data, "train", lay["F"]),
                          gold_retain=_phi(gold, data, "train", lay["R"]),
                          gold_val=_phi(gold, data, "test", lay["V"]))
        result = {"key": run["key"], "config_digest": run.get("config_digest"),
                  "method": method, "index": i, "metrics": metrics,
                  "info": info, "wall_s": time.perf_counter() - t0,
                  "machine": machine(device)}
        _write_npz(run_dir / RESULT_NPZ, arrays)
        write_json_atomic(run_dir / RESULT_FILE, result)
        log.info("audit run %s shadow %d done in %.1f s", method, i, result["wall_s"])
    return {**result, "skipped": False}


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import io

    from fastunlearn._atomic import atomic_write_bytes

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _read_run(run_dir: Path, key: str, cdigest: str | None = None) -> dict[str, Any] | None:
    """A finished run (its JSON names ``key``, was run with the method config ``cdigest``
    (:func:`~fastunlearn.studies.keys.config_digest`; None: not checked) and its arrays load),
    else None (redo)."""
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        res = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        log.warning("ignoring unreadable %s (%s); the run will be redone", path, err)
        return None
    if not (isinstance(res, dict) and res.get("key") == key
            and isinstance(res.get("metrics"), dict) and "method" in res and "index" in res):
        return None
    if not config_current(res, key, cdigest):
        return None
    try:
        with np.load(run_dir / RESULT_NPZ) as z:
            need = {"forget", "retain", "val"}
            if res["method"] == CEILING:
                need |= {"gold_forget", "gold_retain", "gold_val"}
            if not need <= set(z.files) or (res["method"] == CEILING
                                           and "gold" not in res["metrics"]):
                return None
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable arrays in %s (%s); the run will be redone", run_dir, err)
        return None
    return res


def _load_arrays(run_dir: Path) -> dict[str, np.ndarray]:
    with np.load(run_dir / RESULT_NPZ) as z:
        return {k: z[k] for k in z.files}


# ------------------------------------------------------------------------- scores
def balanced_sides(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(in, out)`` masks ``[models, examples]`` with the same number of models per example
    on both sides: the larger side of each column drops its last model.

    Leaving the target out of a pool where every example is "in" for exactly half of the models
    leaves its own side one model short; Gaussians fitted to n and n + 1 samples then bias the
    likelihood ratio (the expected squared error of a fitted mean is σ²(1 + 1/n), so the side
    with fewer models looks less likely): retrain-vs-retrain gave AUC 0.44 at N = 8 before.
    Which model is dropped does not depend on its values, so the balance adds no bias."""
    m_in, m_out = mask.astype(bool), ~mask.astype(bool)
    n_in, n_out = m_in.sum(0), m_out.sum(0)

    def drop_last(side: np.ndarray, extra: np.ndarray) -> np.ndarray:
        rank_from_end = np.cumsum(side[::-1], axis=0)[::-1]  # 1 = the side's last model
        return side & ~((rank_from_end <= extra[None, :]) & side)

    return (drop_last(m_in, np.maximum(n_in - n_out, 0)),
            drop_last(m_out, np.maximum(n_out - n_in, 0)))


def ulira_by_target(phi: np.ndarray, member: np.ndarray
                    ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """U-LiRA with every model as the target once: ``phi[N, n]`` (a method's φ on ``n`` forget
    examples under ``N`` shadows), ``member[N, n]`` (the shadows that trained on each). Per
    target, its forgotten (``member``) and never-seen examples are scored by the likelihood
    ratio of Gaussians fitted on the other shadows' balanced in/out sides. Returns the
    per-target ``(forgotten scores, never-seen scores)`` lists."""
    from fastunlearn.evaluate import audit as A

    shadows = phi.shape[0]
    pos, neg = [], []
    for i in range(shadows):
        others = np.arange(shadows) != i
        vals, mask = phi[others], member[others]
        in_side, out_side = balanced_sides(mask)
        in_conf = np.where(in_side, vals, np.nan)
        out_conf = np.where(out_side, vals, np.nan)
        s = np.asarray(A.ulira_scores(phi[i], in_conf, out_conf,
                                      fixed_variance=shadows < GLOBAL_VARIANCE_BELOW),
                       dtype=np.float64)
        pos.append(s[member[i]])
        neg.append(s[~member[i]])
    return pos, neg


def method_scores(task: Task, phis: list[dict[str, np.ndarray]], gold: list[dict[str, np.ndarray]],
                  metrics: list[dict[str, Any]], gold_metrics: list[dict[str, Any]],
                  ) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Every audit score of one method from its ``N`` runs (``phis[i]``) and the retrain
    ceiling's (``gold[i]``). Returns ``(summary, per-example arrays)``."""
    from fastunlearn.evaluate import audit as A

    lay = layout(task)
    # lira: each example is in exactly N/2 shadows; challenge: every model trained on all
    n_half = task.shadows if task.challenge else task.shadows // 2
    member_f = lay["member"][:, lay["F"]].numpy()  # [N, |F|]
    member_r = lay["member"][:, lay["R"]].numpy()
    u_f = np.stack([p["forget"] for p in phis])
    r_f = np.stack([p["forget"] for p in gold])

    def in_models(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
        # exactly n_half True per column → [n_half, n] (the models that trained on each example)
        return values.T[mask.T].reshape(mask.shape[1], n_half).T

    uf_in, rf_in = in_models(u_f, member_f), in_models(r_f, member_f)
    eps = A.epsilon_scores(uf_in, rf_in)
    raw = float(A.forget_score(eps, n_half))
    ra_u = float(np.mean([m["retain_acc"] for m in metrics]))
    ra_r = float(np.mean([m["retain_acc"] for m in gold_metrics]))
    ta_u = float(np.mean([m["test_acc"] for m in metrics]))
    ta_r = float(np.mean([m["test_acc"] for m in gold_metrics]))
    final = float(A.final_score(raw, ra_u, ra_r, ta_u, ta_r))

    if task.challenge:  # no never-seen forget examples: U-LiRA does not apply
        pos, neg = [], []
        pos_all = neg_all = np.zeros(0)
        ul = {"auc": math.nan, "tpr_at_1pct_fpr": math.nan, "tpr_at_0.1pct_fpr": math.nan,
              "fpr": np.zeros(0), "tpr": np.zeros(0)}
    else:
        pos, neg = ulira_by_target(u_f, member_f)
        pos_all, neg_all = np.concatenate(pos), np.concatenate(neg)
        ul = A.ulira_attack(pos_all, neg_all)
    # 95 % bootstrap intervals: the forget score over forget examples (the penalty factor of
    # the final score is fixed), the U-LiRA AUC over target shadows
    lo, hi = A.forget_score_ci(eps, n_half)
    factor = float(A.final_score(1.0, ra_u, ra_r, ta_u, ta_r))
    auc_lo, auc_hi = A.auc_ci_over_groups(pos, neg) if pos else (math.nan, math.nan)

    u_r = np.stack([p["retain"] for p in phis])
    r_r = np.stack([p["retain"] for p in gold])
    u_v = np.stack([p["val"] for p in phis])
    r_v = np.stack([p["val"] for p in gold])
    klom = {"forget": A.klom(uf_in, rf_in),
            "retain": A.klom(in_models(u_r, member_r), in_models(r_r, member_r)),
            "val": A.klom(u_v, r_v)}
    summary: dict[str, Any] = {
        "forget_score": final, "forget_score_raw": raw,
        "forget_score_lo": lo * factor, "forget_score_hi": hi * factor,
        "ulira_auc": float(ul["auc"]), "ulira_auc_lo": auc_lo, "ulira_auc_hi": auc_hi,
        "ulira_tpr_1": float(ul["tpr_at_1pct_fpr"]),
        "ulira_tpr_01": float(ul["tpr_at_0.1pct_fpr"]),
        "retain_acc": ra_u, "test_acc": ta_u,
        "forget_acc": float(np.mean([m["forget_acc"] for m in metrics])),
        "rte_s": float(np.mean([m["rte_s"] for m in metrics])),
    }
    for split_name, values in klom.items():
        s = A.klom_summary(values)
        summary[f"klom_{split_name}_p95"] = float(s["p95"])
        summary[f"klom_{split_name}_median"] = float(s["median"])
    for k in ("probe_forget_acc", "relearn_steps"):
        vals = [m[k] for m in metrics if k in m]
        summary[k] = float(np.mean(vals)) if vals else math.nan
    arrays = {"epsilon": eps, "ulira_forgotten": pos_all, "ulira_never_seen": neg_all,
              "ulira_fpr": np.asarray(ul["fpr"]), "ulira_tpr": np.asarray(ul["tpr"]),
              **{f"klom_{k}": v for k, v in klom.items()}}
    return summary, arrays


# ------------------------------------------------------------------------- driver
def audit(config: AuditConfig | None = None, *, split: Any = None, model_fn: Any = None,
          **kwargs: Any) -> AuditResult:
    """Run (or resume) an audit and write ``audit.json``, ``audit.npz``, ``results.csv``,
    ``report.md`` and plots into ``config.out``. Keyword arguments build the config.

    Your own data and model: ``split=`` (a :class:`~fastunlearn.data.ForgetSplit`, e.g. from
    ``ForgetSplit.from_datasets``) and ``model_fn=`` (zero arguments → a fresh model) replace
    ``dataset``, ``model`` and ``forget``: the shadows are trained from ``model_fn`` on halves
    of your training data (:mod:`fastunlearn.studies.user`; local executor)."""
    from tqdm.auto import tqdm

    from fastunlearn.data import load_dataset
    from fastunlearn.studies.config import forget_label, parse_forget

    if config is None:
        config = AuditConfig(**kwargs)
    elif kwargs:
        config = dataclasses.replace(config, **kwargs)
    if split is not None:
        from fastunlearn.studies.user import user_task

        config = dataclasses.replace(config, **user_task(split, model_fn, config.executor,
                                                         "audit"))
    elif model_fn is not None:
        raise ValueError("model_fn= goes with split= (your own data); for a built-in dataset "
                         "pass model=NAME")
    t0 = time.perf_counter()
    data = load_dataset(config.dataset)
    forget = parse_forget(config.forget, data.classes)
    if forget["type"] == "random" and "seed" not in forget:
        forget["seed"] = config.seed
    out = Path(config.out or f"runs/audit/{slug(config.dataset)}-"
                              f"{slug(forget_label(config.forget))}")
    pool = Path(config.pool) if config.pool else out.parent / "pool"
    threads = config.threads
    if threads is None and config.executor == "process":
        import os

        threads = max(1, (os.cpu_count() or 1) // config.workers)
    selection = None
    if is_hard(forget):  # chosen by selection models that are never scored (no winner's curse)
        selection = Selection(config.dataset, config.model, config.train, int(config.seed),
                              int(config.select_models))
        forget = resolve_hard_forget(forget, selection, pool, executor=config.executor,
                                     workers=config.workers, device=config.device,
                                     threads=threads, progress=config.progress)
    task = Task(config.dataset, config.model, forget, config.train, int(config.shadows),
                int(config.seed), config.protocol)
    out.mkdir(parents=True, exist_ok=True)
    pool.mkdir(parents=True, exist_ok=True)
    methods = config.all_methods()
    runs = []
    for m in methods:
        cfg = dict(config.method_options.get(m, {}))
        cdigest = config_digest(m, cfg)  # a changed default redoes the method's runs
        for i in range(task.shadows):
            runs.append({"key": run_key(task, m, cfg, i), "task": task.key_data(), "method": m,
                         "config": cfg, "config_digest": cdigest, "index": i,
                         "probe_shadows": config.probe_shadows,
                         "relearn_size": config.relearn_size})
    todo = [r for r in runs
            if _read_run(out / "runs" / r["key"], r["key"], r["config_digest"]) is None]
    pool_models = [(i, role) for i in range(task.shadows) for role in ROLES
                   if not (task.challenge and role == "original" and i > 0)]
    jobs = [{"task": task.key_data(), "index": i, "role": role} for i, role in pool_models
            if not pool_ready(pool, pool_key(task, i, role))]
    counts = {"runs": len(runs), "skipped": len(runs) - len(todo), "ran": 0,
              "pool_trained": 0, "pool_reused": len(pool_models) - len(jobs)}
    bar = tqdm(total=len(jobs) + len(todo), desc=f"audit {out.name}", unit="job",
               disable=not config.progress)

    pool_done, run_done = progress_callbacks(
        bar, counts, lambda res: f"{res['method']} #{res['index']}")

    resources = {"cpus": 1, "gpus": 0}
    try:
        _dispatch(build_shadow, [(j, str(pool), config.device, threads) for j in jobs],
                         config.executor, config.workers, resources, pool_done)
        _dispatch(execute_audit_run,
                         [(r, str(out), str(pool), config.device, threads) for r in todo],
                         config.executor, config.workers, resources, run_done)
    finally:
        bar.close()

    by_method: dict[str, list[tuple[dict[str, Any], dict[str, np.ndarray]]]] = {}
    for r in runs:
        run_dir = out / "runs" / r["key"]
        res = _read_run(run_dir, r["key"], r["config_digest"])
        if res is None:  # pragma: no cover - a run that returned without writing its result
            raise RuntimeError(f"audit run {r['method']} #{r['index']} has no result")
        by_method.setdefault(r["method"], []).append((res, _load_arrays(run_dir)))
    gold = [{k: a[f"gold_{k}"] for k in ("forget", "retain", "val")}
            for _, a in by_method[CEILING]]
    gold_metrics = [r["metrics"]["gold"] for r, _ in by_method[CEILING]]
    rows, arrays = [], {}
    for m in methods:
        entries = by_method[m]
        summary, arr = method_scores(task, [a for _, a in entries], gold,
                                     [r["metrics"] for r, _ in entries], gold_metrics)
        rows.append({"method": m, **summary})
        arrays.update({f"{m}/{k}": v for k, v in arr.items()})
    _mark_do_nothing(rows)
    # memorization of the forget examples measured on the scoring shadows themselves (the
    # do-nothing runs), beside the selection models' estimate the set was chosen by
    from fastunlearn.evaluate.memorization import memorization_scores

    lay = layout(task)
    member_f = lay["member"][:, lay["F"]].numpy()
    orig_f = np.stack([a["forget"] for _, a in by_method[DO_NOTHING]])
    if not task.challenge:  # every challenge model trained on every example: no "out" side
        arrays["memorization/forget_scoring"] = memorization_scores(orig_f, member_f)
    if selection is not None and forget["selected"]["by"] == "memorization":
        arrays["memorization/selection"] = memorization(selection, pool)["scores"]
    wall = time.perf_counter() - t0
    from fastunlearn.studies.audit_report import write_audit_report

    report = write_audit_report(out, rows, arrays, config=config, task=task, counts=counts,
                                wall_s=wall, machine=machine(config.device))
    return AuditResult(out=out, rows=rows, counts=counts, wall_s=wall, report=report)


def _mark_do_nothing(rows: list[dict[str, Any]]) -> None:
    """``beats_do_nothing``: a forget score higher, and a U-LiRA AUC closer to 0.5, than the
    unchanged original's — each by more than ``BEAT_MARGIN``."""
    base = next(r for r in rows if r["method"] == DO_NOTHING)
    for r in rows:
        if r["method"] == DO_NOTHING:
            r["beats_do_nothing"] = None
            continue
        closer = (abs(r["ulira_auc"] - 0.5) < abs(base["ulira_auc"] - 0.5) - BEAT_MARGIN
                  if math.isfinite(base["ulira_auc"]) else True)  # challenge: no U-LiRA
        r["beats_do_nothing"] = bool(
            r["forget_score"] > base["forget_score"] + BEAT_MARGIN and closer)


def load_audit(out: str | Path) -> dict[str, Any]:
    return json.loads((Path(out) / "audit.json").read_text())


__all__ = ["AuditConfig", "AuditResult", "audit", "load_audit", "membership", "method_scores"]
