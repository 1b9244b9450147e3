"""``evaluate(model, split, original=..., retrained=...)`` → a flat metrics dict.

Every metric is defined in docs/evaluation.md and in the module that computes it
(:mod:`~fastunlearn.evaluate.accuracy`, :mod:`~fastunlearn.evaluate.mia`,
:mod:`~fastunlearn.evaluate.divergence`, :mod:`~fastunlearn.evaluate.drift`). An
:class:`Evaluator` computes each model's outputs once and caches them, so judging several
unlearned models against the same original and gold model (``fastunlearn report``) runs the
reference models only once.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.evaluate.accuracy import (
    accuracy_metrics,
    forget_mask_of_test,
    per_class_accuracy,
    split_logits,
)
from fastunlearn.evaluate.divergence import entropy, js_divergence, kl_divergence
from fastunlearn.evaluate.drift import (
    block_activations,
    collateral_damage,
    confusion_drift,
    confusion_matrix,
    layer_cka,
)
from fastunlearn.evaluate.mia import (
    ATTACKS,
    FEATURES,
    HEADLINE_ATTACK,
    AttackResult,
    efficacy_over_seeds,
    loss_attack_auc,
    mia_efficacy,
    per_sample_loss,
)
from fastunlearn.train import check_split_arg

HEADLINE = ("forget_acc", "UA", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc")
COST_KEYS = ("rte_s", "rte_cold_s", "rte_warm_s", "peak_mem_mb")
#: who the MIA's non-members are: ``reference`` — as the SalUn code: for class forgetting the
#: test images of the retained classes (``split.test_retain``), otherwise the whole test part;
#: ``test`` — always the whole test part (forgotten classes included; fastunlearn < 0.2)
MIA_NONMEMBERS = ("reference", "test")


@dataclass
class EvalConfig:
    """Options of :func:`evaluate`.

    ``max_samples``: at most this many members, non-members and forget targets (each, seeded
    by ``seed``) go into the membership-inference attacks; accuracies always use every
    sample. ``mia_attacks``: which attack classifiers to fit (``svc``, ``lr``). ``cka``: per-block
    linear CKA against the original on probes of ``cka_probe`` forget and retain samples.

    ``mia_seeds``: the headline ``mia_efficacy`` is the mean over this many attack seeds
    (``seed``, ``seed + 1`` …; each a fresh balanced member/non-member subsample), reported
    with ``mia_efficacy_std`` (sample standard deviation) and the per-seed values
    ``mia_efficacy_seeds``; the per-feature diagnostics use the first seed.
    ``mia_nonmembers``: see :data:`MIA_NONMEMBERS` (default ``"reference"``).
    ``linear_probe``: also report ``probe_forget_acc`` — what a fresh linear head on the
    frozen penultimate features recovers of the forget set (the forgotten classes' test images
    for class forgetting, the forget samples themselves otherwise; probe trained on ≤ 3000
    training samples, :func:`~fastunlearn.evaluate.audit.linear_probe`) — and, with a
    retrained model, ``retrain_probe_forget_acc``. A head-only edit leaves it at the
    original's; the output metrics cannot see that.
    """

    batch_size: int = 512
    max_samples: int = 4000
    seed: int = 0
    mia: bool = True
    mia_attacks: tuple[str, ...] = ATTACKS
    cka: bool = True
    cka_probe: int = 256
    mia_seeds: int = 5
    mia_nonmembers: str = "reference"
    linear_probe: bool = False

    def __post_init__(self) -> None:
        if not _is_int(self.batch_size) or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size!r}")
        if not _is_int(self.max_samples) or self.max_samples < 10:
            raise ValueError(f"max_samples must be an integer ≥ 10, got {self.max_samples!r}")
        if not _is_int(self.mia_seeds) or self.mia_seeds < 1:
            raise ValueError(f"mia_seeds must be a positive integer, got {self.mia_seeds!r}")
        if self.mia_nonmembers not in MIA_NONMEMBERS:
            raise ValueError(f"mia_nonmembers must be one of {MIA_NONMEMBERS}, got "
                             f"{self.mia_nonmembers!r}")
        if int(self.cka_probe) != self.cka_probe or self.cka_probe < 4:
            raise ValueError(f"cka_probe must be an integer ≥ 4, got {self.cka_probe}")
        self.mia_attacks = tuple(self.mia_attacks)
        bad = [a for a in self.mia_attacks if a not in ATTACKS]
        if bad or not self.mia_attacks:
            raise ValueError(
                f"mia_attacks must be a non-empty subset of {ATTACKS}, got {self.mia_attacks}"
            )
        if HEADLINE_ATTACK[0] not in self.mia_attacks:
            self.mia_attacks = (HEADLINE_ATTACK[0], *self.mia_attacks)


def _is_int(v: Any) -> bool:
    """A whole number (``2000`` or ``2000.0``), not a bool or a string."""
    return (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and int(v) == v)


@dataclass
class ModelOutputs:
    """Everything :class:`Evaluator` derives from one model, computed once. ``finite`` is
    False when any logit is NaN/inf (a diverged model: its accuracies are reported, the
    metrics that need probabilities are not computable)."""

    model: nn.Module
    logits: dict[str, Tensor]
    accuracy: dict[str, Any]
    per_class: list[float]
    confusion: Tensor
    mia: dict[str, dict[str, AttackResult]] | None = None
    mia_seed_values: list[float] | None = None
    loss_auc: float = math.nan
    activations: dict[str, dict[str, Tensor]] | None = None
    finite: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def probs(self, part: str) -> Tensor:
        return self.logits[part].double().softmax(1)


def _unwrap(obj: Any, what: str) -> tuple[nn.Module, dict[str, float]]:
    """A model, or an ``UnlearnResult``-like object with ``.model`` and ``.rte_s``."""
    if isinstance(obj, nn.Module):
        return obj, {}
    model = getattr(obj, "model", None)
    if isinstance(model, nn.Module):
        return model, cost_of(obj)
    raise TypeError(f"{what} must be an nn.Module or an UnlearnResult, got {type(obj).__name__}")


def cost_of(obj: Any) -> dict[str, float]:
    """The cost fields (``rte_s``, ``rte_cold_s``, ``rte_warm_s``, ``peak_mem_mb``) of an
    ``UnlearnResult``, a :class:`~fastunlearn.evaluate.runtime.RuntimeReport` or a mapping."""
    if obj is None:
        return {}
    src = obj if isinstance(obj, Mapping) else {k: getattr(obj, k, None) for k in COST_KEYS}
    if not isinstance(obj, Mapping) and hasattr(obj, "info"):
        src = {**{k: v for k, v in dict(obj.info).items() if k in COST_KEYS}, **src}
    out: dict[str, float] = {}
    for k in COST_KEYS:
        v = src.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out[k] = float(v)
    return out


def _mean(x: Tensor) -> float:
    return float(x.mean()) if x.numel() else math.nan


class Evaluator:
    """Judges models on one split; caches each model's outputs (by identity)."""

    def __init__(self, split: ForgetSplit, config: EvalConfig | None = None) -> None:
        check_split_arg(split, "Evaluator")
        if config is not None and not isinstance(config, EvalConfig):
            raise TypeError(f"config must be an EvalConfig, got {type(config).__name__}")
        self.split = split
        self.config = config or EvalConfig()
        self._cache: dict[int, ModelOutputs] = {}
        self._fmask = forget_mask_of_test(split)
        c = split.data.num_classes
        self.retain_classes = [i for i in range(c) if i not in set(split.forget_class_ids)]
        cfg = self.config
        self._probes = {
            "forget": split.forget.take(cfg.cka_probe, seed=cfg.seed),
            "retain": split.retain.take(cfg.cka_probe, seed=cfg.seed),
        }

    # ------------------------------------------------------------------------- outputs
    def outputs(self, model: nn.Module) -> ModelOutputs:
        """Logits on forget/retain/test, accuracies and the test confusion matrix (cached)."""
        key = id(model)
        hit = self._cache.get(key)
        if hit is not None and hit.model is model:
            return hit
        split = self.split
        logits = split_logits(model, split, batch_size=self.config.batch_size)
        c = split.data.num_classes
        width = {t.shape[1] for t in logits.values() if t.numel()}
        if width != {c}:
            raise ValueError(
                f"the model outputs {sorted(width)[0] if width else 0} classes, but the split's "
                f"dataset {split.data.name!r} has {c}; evaluate a model built for this dataset "
                "(fu.create_model(name, data))"
            )
        acc = accuracy_metrics(None, split, logits=logits)
        pred = logits["test"].argmax(1)
        out = ModelOutputs(
            model=model,
            logits=logits,
            accuracy=acc,
            per_class=per_class_accuracy(pred, split.test.labels, c),
            confusion=confusion_matrix(pred, split.test.labels, c),
            finite=all(bool(torch.isfinite(t).all()) for t in logits.values()),
        )
        self._cache[key] = out
        return out

    def release(self, model: nn.Module) -> None:
        """Forget the cached outputs of ``model`` (frees its activations)."""
        self._cache.pop(id(model), None)

    def heldout_mask(self) -> Tensor:
        """Test samples the loss attack compares the forget set with: the test samples of the
        forgotten classes for class forgetting, the whole test set otherwise."""
        if self.split.kind == "class" and bool(self._fmask.any()):
            return self._fmask
        return torch.ones_like(self._fmask)

    def nonmember_mask(self) -> Tensor:
        """Positions of ``split.test`` the membership attacks use as non-members: for class
        forgetting with ``mia_nonmembers="reference"`` the retained classes' test samples
        (``split.test_retain``, as the SalUn reference code), else the whole test part."""
        if self.config.mia_nonmembers == "reference" and self.split.kind == "class":
            return ~self._fmask
        return torch.ones_like(self._fmask)

    def membership(self, out: ModelOutputs) -> ModelOutputs:
        """Fill ``out.mia`` (the attacks per feature, first seed) and ``out.mia_seed_values``
        (the headline attack per seed); cached. Not computable for a non-finite model."""
        if out.mia is not None or not out.finite:
            return out
        split, cfg = self.split, self.config
        forget_probs, forget_labels = out.probs("forget"), split.forget.labels
        if len(forget_labels) > cfg.max_samples:  # seeded subsample of the attack targets
            g = torch.Generator().manual_seed(cfg.seed + 1)
            pick = torch.randperm(len(forget_labels), generator=g)[: cfg.max_samples].sort().values
            forget_probs, forget_labels = forget_probs[pick], forget_labels[pick]
        non = self.nonmember_mask()
        sets = (out.probs("retain"), split.retain.labels,
                out.probs("test")[non], split.test.labels[non],
                forget_probs, forget_labels)
        out.mia = mia_efficacy(*sets, max_samples=cfg.max_samples, seed=cfg.seed,
                               attacks=cfg.mia_attacks)
        attack, feature = HEADLINE_ATTACK
        first = out.mia[attack][feature].efficacy  # the same fit as seed ``cfg.seed`` below
        more = efficacy_over_seeds(*sets, seeds=range(cfg.seed + 1, cfg.seed + cfg.mia_seeds),
                                   max_samples=cfg.max_samples, attack=attack, feature=feature)
        out.mia_seed_values = [first, *more]
        return out

    def loss_attack(self, out: ModelOutputs) -> ModelOutputs:
        """Fill ``out.loss_auc``: the loss-threshold attack, forget vs :meth:`heldout_mask`."""
        if math.isnan(out.loss_auc) and out.finite:
            split, held = self.split, self.heldout_mask()
            out.loss_auc = loss_attack_auc(
                per_sample_loss(out.logits["forget"], split.forget.labels),
                per_sample_loss(out.logits["test"][held], split.test.labels[held]),
            )
        return out

    def activations(self, out: ModelOutputs) -> dict[str, dict[str, Tensor]]:
        """Block activations on the fixed forget and retain probes (cached)."""
        if out.activations is None:
            bs = min(256, self.config.batch_size)
            out.activations = {
                name: block_activations(out.model, part, batch_size=bs)
                for name, part in self._probes.items()
                if len(part)
            }
        return out.activations

    # ------------------------------------------------------------------------ evaluate
    def probe_recovery(self, out: ModelOutputs) -> float:
        """``probe_forget_acc`` of one model (cached with its outputs): see
        :class:`EvalConfig`."""
        if "probe_forget_acc" not in out.extra:
            from fastunlearn.evaluate.audit import linear_probe

            split, seed = self.split, self.config.seed
            if not out.finite:
                out.extra["probe_forget_acc"] = math.nan
            elif split.kind == "class":
                probe = linear_probe(out.model, split.full.take(3000, seed=seed), split.test,
                                     forget_classes=split.forget_class_ids, seed=seed)
                out.extra["probe_forget_acc"] = float(probe["forget_class_accuracy"])
            else:
                probe = linear_probe(out.model, split.retain.take(3000, seed=seed), split.forget,
                                     seed=seed)
                out.extra["probe_forget_acc"] = float(probe["accuracy"])
        return out.extra["probe_forget_acc"]

    def evaluate(
        self,
        model: nn.Module | Any,
        *,
        original: nn.Module | Any | None = None,
        retrained: nn.Module | Any | None = None,
        cost: Mapping[str, float] | Any | None = None,
        retrain_cost: Mapping[str, float] | Any | None = None,
    ) -> dict[str, Any]:
        """See :func:`evaluate`."""
        model, own_cost = _unwrap(model, "model")
        orig_model = _unwrap(original, "original")[0] if original is not None else None
        gold_model, gold_cost = (
            _unwrap(retrained, "retrained") if retrained is not None else (None, {})
        )
        cfg, split = self.config, self.split
        log_c = math.log(split.data.num_classes)

        u = self.outputs(model)
        res: dict[str, Any] = {k: v for k, v in u.accuracy.items() if k != "per_class_test_acc"}
        # a diverged model (NaN/inf outputs): accuracies only, the rest is not computable (NaN)
        res["diverged"] = not u.finite

        if cfg.mia:
            self.membership(u)
            self._mia_keys(res, u)
        res["mia_loss_auc"] = self.loss_attack(u).loss_auc

        p_test = u.probs("test")
        ent_tf = entropy(p_test[self._fmask])
        ent_f = entropy(u.probs("forget"))
        res["entropy"] = _mean(ent_tf) if u.finite else math.nan
        res["entropy_norm"] = res["entropy"] / log_c
        res["entropy_forget"] = _mean(ent_f) if u.finite else math.nan
        res["entropy_forget_norm"] = res["entropy_forget"] / log_c

        if cfg.linear_probe:
            res["probe_forget_acc"] = self.probe_recovery(u)
        if gold_model is not None:
            g = self.outputs(gold_model)
            if cfg.mia:
                self.membership(g)
            if cfg.linear_probe:
                res["retrain_probe_forget_acc"] = self.probe_recovery(g)
            for k in HEADLINE:
                res[f"retrain_{k}"] = g.accuracy[k]
                res[f"gap_{k}"] = abs(res[k] - g.accuracy[k])
            if cfg.mia:
                res["retrain_mia_efficacy"] = _headline(g)
                res["gap_mia_efficacy"] = abs(res["mia_efficacy"] - res["retrain_mia_efficacy"])
                res["avg_gap"] = (res["gap_UA"] + res["gap_retain_acc"] + res["gap_test_acc"]
                                  + res["gap_mia_efficacy"]) / 4.0
            both = u.finite and g.finite
            for suffix, pu, pg in (
                ("", u.probs("forget"), g.probs("forget")),
                ("_test_forget", p_test[self._fmask], g.probs("test")[self._fmask]),
                ("_test", p_test, g.probs("test")),
            ):
                js = js_divergence(pu, pg) if both else torch.full((1,), math.nan)
                res[f"js_to_retrain{suffix}"] = _mean(js)
                if not suffix:
                    res["js_dist_to_retrain"] = _mean(js.sqrt())
                res[f"kl_to_retrain{suffix}"] = (_mean(kl_divergence(pg, pu)) if both
                                                 else math.nan)
            res["confusion_drift_vs_retrain"] = confusion_drift(u.confusion, g.confusion)

        if orig_model is not None:
            o = self.outputs(orig_model)
            for k in HEADLINE:
                res[f"original_{k}"] = o.accuracy[k]
            if cfg.mia:
                self.membership(o)
                res["original_mia_efficacy"] = _headline(o)
            res["confusion_drift_vs_original"] = confusion_drift(u.confusion, o.confusion)
            dmg = collateral_damage(u.per_class, o.per_class, self.retain_classes)
            classes = split.data.classes
            res["collateral_damage_mean"] = dmg["mean"]
            res["collateral_damage_worst"] = dmg["worst"]
            res["collateral_damage_per_class"] = {
                classes[c]: v for c, v in dmg["per_class"].items()
            }
            if cfg.cka and u.finite and o.finite:
                au, ao = self.activations(u), self.activations(o)
                for key, probe in (("layer_cka", "forget"), ("layer_cka_retain", "retain")):
                    res[key] = layer_cka(ao[probe], au[probe]) if probe in au else {}
            elif cfg.cka:
                res["layer_cka"], res["layer_cka_retain"] = {}, {}

        costs = {**own_cost, **cost_of(cost)}
        res.update(costs)
        gold_costs = {**gold_cost, **cost_of(retrain_cost)}
        if "rte_s" in gold_costs:
            res["retrain_rte_s"] = gold_costs["rte_s"]
            if "rte_s" in costs and gold_costs["rte_s"] > 0:
                res["rte_ratio"] = costs["rte_s"] / gold_costs["rte_s"]
        res["per_class_test_acc"] = u.accuracy["per_class_test_acc"]
        return res

    def _mia_keys(self, res: dict[str, Any], u: ModelOutputs) -> None:
        res["mia_efficacy"] = _headline(u)
        seeds = u.mia_seed_values or []
        res["mia_efficacy_std"] = float(np.std(seeds, ddof=1)) if len(seeds) > 1 else math.nan
        res["mia_efficacy_seeds"] = list(seeds)
        attacks = self.config.mia_attacks
        for attack in attacks:
            per = (u.mia or {}).get(attack, {})
            res[f"mia_efficacy_{attack}"] = {
                f: per[f].efficacy if f in per else math.nan for f in FEATURES}
        for attack in attacks:
            per = (u.mia or {}).get(attack, {})
            res[f"mia_attack_acc_{attack}"] = {
                f: per[f].attack_acc if f in per else math.nan for f in FEATURES}


def _headline(out: ModelOutputs) -> float:
    """The headline MIA-Efficacy: mean over the attack seeds (NaN when not computable)."""
    if not out.mia_seed_values:
        return math.nan
    return float(np.mean(out.mia_seed_values))


def evaluate(
    model: nn.Module | Any,
    split: ForgetSplit,
    *,
    original: nn.Module | Any | None = None,
    retrained: nn.Module | Any | None = None,
    cost: Mapping[str, float] | Any | None = None,
    retrain_cost: Mapping[str, float] | Any | None = None,
    batch_size: int = 512,
    max_samples: int = 4000,
    seed: int = 0,
    mia: bool = True,
    cka: bool = True,
    cka_probe: int = 256,
    mia_seeds: int = 5,
    mia_nonmembers: str = "reference",
) -> dict[str, Any]:
    """Judge ``model`` on ``split`` → a dict of metrics (see docs/evaluation.md).

    ``model`` (and ``retrained``) may be an ``UnlearnResult`` from :func:`fastunlearn.unlearn`:
    its ``rte_s`` / ``peak_mem_mb`` then appear in the result, and ``rte_ratio`` = ``rte_s`` /
    the retrain's ``rte_s``. ``cost`` / ``retrain_cost`` (mappings with ``rte_s`` …) override.

    Always: accuracies (``forget_acc``, ``UA``, ``retain_acc``, ``test_acc``,
    ``test_forget_acc``, ``test_retain_acc``, ``test_all_acc``, ``per_class_test_acc``),
    membership inference (``mia_efficacy`` = SVC on the true-class probability as in SalUn,
    the mean over ``mia_seeds`` attack seeds, with ``mia_efficacy_std`` and
    ``mia_efficacy_seeds``; ``mia_efficacy_svc`` / ``_lr`` per feature, ``mia_attack_acc_*``,
    ``mia_loss_auc``) and entropy (``entropy`` on test-forget, ``entropy_forget``, ``*_norm`` =
    / log C). ``diverged`` is True when the model's outputs are not finite: its accuracies are
    reported and every metric that needs probabilities is NaN.
    With ``retrained`` (the gold model): ``retrain_<metric>``, ``gap_<metric>``, ``avg_gap``,
    ``js_to_retrain*`` (base 2), ``kl_to_retrain*`` (KL(retrain ‖ model), nats),
    ``confusion_drift_vs_retrain``. With ``original``: ``original_<metric>``,
    ``confusion_drift_vs_original``, ``collateral_damage_*``, ``layer_cka`` (forget probe) and
    ``layer_cka_retain``.
    """
    cfg = EvalConfig(batch_size=batch_size, max_samples=max_samples, seed=seed, mia=mia, cka=cka,
                     cka_probe=cka_probe, mia_seeds=mia_seeds, mia_nonmembers=mia_nonmembers)
    return Evaluator(split, cfg).evaluate(model, original=original, retrained=retrained,
                                          cost=cost, retrain_cost=retrain_cost)


__all__ = ["COST_KEYS", "FEATURES", "HEADLINE", "MIA_NONMEMBERS", "EvalConfig", "Evaluator",
           "ModelOutputs", "cost_of", "evaluate"]
