"""``evaluate(model, split, original=..., retrained=...)`` → a flat metrics dict.

Every metric is defined in DESIGN §3 and in the module that computes it
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
    loss_attack_auc,
    mia_efficacy,
    per_sample_loss,
)

HEADLINE = ("forget_acc", "UA", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc")
COST_KEYS = ("rte_s", "rte_cold_s", "rte_warm_s", "peak_mem_mb")


@dataclass
class EvalConfig:
    """Options of :func:`evaluate`.

    ``max_samples``: at most this many members, non-members and forget targets (each, seeded
    by ``seed``) go into the membership-inference attacks; accuracies always use every
    sample. ``mia_attacks``: which attack classifiers to fit (``svc``, ``lr``). ``cka``: per-block
    linear CKA against the original on probes of ``cka_probe`` forget and retain samples.
    """

    batch_size: int = 512
    max_samples: int = 2000
    seed: int = 0
    mia: bool = True
    mia_attacks: tuple[str, ...] = ATTACKS
    cka: bool = True
    cka_probe: int = 256

    def __post_init__(self) -> None:
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {self.batch_size}")
        if int(self.max_samples) != self.max_samples or self.max_samples < 10:
            raise ValueError(f"max_samples must be an integer ≥ 10, got {self.max_samples}")
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


@dataclass
class ModelOutputs:
    """Everything :class:`Evaluator` derives from one model, computed once."""

    model: nn.Module
    logits: dict[str, Tensor]
    accuracy: dict[str, Any]
    per_class: list[float]
    confusion: Tensor
    mia: dict[str, dict[str, AttackResult]] | None = None
    loss_auc: float = math.nan
    activations: dict[str, dict[str, Tensor]] | None = None
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
        acc = accuracy_metrics(None, split, logits=logits)
        pred = logits["test"].argmax(1)
        c = split.data.num_classes
        out = ModelOutputs(
            model=model,
            logits=logits,
            accuracy=acc,
            per_class=per_class_accuracy(pred, split.test.labels, c),
            confusion=confusion_matrix(pred, split.test.labels, c),
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

    def membership(self, out: ModelOutputs) -> ModelOutputs:
        """Fill ``out.mia``: the attacks per feature (cached)."""
        if out.mia is not None:
            return out
        split, cfg = self.split, self.config
        forget_probs, forget_labels = out.probs("forget"), split.forget.labels
        if len(forget_labels) > cfg.max_samples:  # seeded subsample of the attack targets
            g = torch.Generator().manual_seed(cfg.seed + 1)
            pick = torch.randperm(len(forget_labels), generator=g)[: cfg.max_samples].sort().values
            forget_probs, forget_labels = forget_probs[pick], forget_labels[pick]
        out.mia = mia_efficacy(
            out.probs("retain"), split.retain.labels,
            out.probs("test"), split.test.labels,
            forget_probs, forget_labels,
            max_samples=cfg.max_samples, seed=cfg.seed, attacks=cfg.mia_attacks,
        )
        return out

    def loss_attack(self, out: ModelOutputs) -> ModelOutputs:
        """Fill ``out.loss_auc``: the loss-threshold attack, forget vs :meth:`heldout_mask`."""
        if math.isnan(out.loss_auc):
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

        if cfg.mia:
            self.membership(u)
            self._mia_keys(res, u)
        res["mia_loss_auc"] = self.loss_attack(u).loss_auc

        p_test = u.probs("test")
        ent_tf = entropy(p_test[self._fmask])
        ent_f = entropy(u.probs("forget"))
        res["entropy"] = _mean(ent_tf)
        res["entropy_norm"] = res["entropy"] / log_c
        res["entropy_forget"] = _mean(ent_f)
        res["entropy_forget_norm"] = res["entropy_forget"] / log_c

        if gold_model is not None:
            g = self.outputs(gold_model)
            if cfg.mia:
                self.membership(g)
            for k in HEADLINE:
                res[f"retrain_{k}"] = g.accuracy[k]
                res[f"gap_{k}"] = abs(res[k] - g.accuracy[k])
            if cfg.mia:
                res["retrain_mia_efficacy"] = _headline(g)
                res["gap_mia_efficacy"] = abs(res["mia_efficacy"] - res["retrain_mia_efficacy"])
                res["avg_gap"] = (res["gap_UA"] + res["gap_retain_acc"] + res["gap_test_acc"]
                                  + res["gap_mia_efficacy"]) / 4.0
            for suffix, pu, pg in (
                ("", u.probs("forget"), g.probs("forget")),
                ("_test_forget", p_test[self._fmask], g.probs("test")[self._fmask]),
                ("_test", p_test, g.probs("test")),
            ):
                js = js_divergence(pu, pg)
                res[f"js_to_retrain{suffix}"] = _mean(js)
                if not suffix:
                    res["js_dist_to_retrain"] = _mean(js.sqrt())
                res[f"kl_to_retrain{suffix}"] = _mean(kl_divergence(pg, pu))
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
            if cfg.cka:
                au, ao = self.activations(u), self.activations(o)
                for key, probe in (("layer_cka", "forget"), ("layer_cka_retain", "retain")):
                    res[key] = layer_cka(ao[probe], au[probe]) if probe in au else {}

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
        assert u.mia is not None
        res["mia_efficacy"] = _headline(u)
        for attack, per_feature in u.mia.items():
            res[f"mia_efficacy_{attack}"] = {f: r.efficacy for f, r in per_feature.items()}
        for attack, per_feature in u.mia.items():
            res[f"mia_attack_acc_{attack}"] = {f: r.attack_acc for f, r in per_feature.items()}


def _headline(out: ModelOutputs) -> float:
    assert out.mia is not None
    attack, feature = HEADLINE_ATTACK
    return out.mia[attack][feature].efficacy


def evaluate(
    model: nn.Module | Any,
    split: ForgetSplit,
    *,
    original: nn.Module | Any | None = None,
    retrained: nn.Module | Any | None = None,
    cost: Mapping[str, float] | Any | None = None,
    retrain_cost: Mapping[str, float] | Any | None = None,
    batch_size: int = 512,
    max_samples: int = 2000,
    seed: int = 0,
    mia: bool = True,
    cka: bool = True,
    cka_probe: int = 256,
) -> dict[str, Any]:
    """Judge ``model`` on ``split`` → a dict of metrics (see docs/evaluation.md).

    ``model`` (and ``retrained``) may be an ``UnlearnResult`` from :func:`fastunlearn.unlearn`:
    its ``rte_s`` / ``peak_mem_mb`` then appear in the result, and ``rte_ratio`` = ``rte_s`` /
    the retrain's ``rte_s``. ``cost`` / ``retrain_cost`` (mappings with ``rte_s`` …) override.

    Always: accuracies (``forget_acc``, ``UA``, ``retain_acc``, ``test_acc``,
    ``test_forget_acc``, ``test_retain_acc``, ``test_all_acc``, ``per_class_test_acc``),
    membership inference (``mia_efficacy`` = SVC on the true-class probability as in SalUn,
    ``mia_efficacy_svc`` / ``_lr`` per feature, ``mia_attack_acc_*``, ``mia_loss_auc``) and
    entropy (``entropy`` on test-forget, ``entropy_forget``, ``*_norm`` = / log C).
    With ``retrained`` (the gold model): ``retrain_<metric>``, ``gap_<metric>``, ``avg_gap``,
    ``js_to_retrain*`` (base 2), ``kl_to_retrain*`` (KL(retrain ‖ model), nats),
    ``confusion_drift_vs_retrain``. With ``original``: ``original_<metric>``,
    ``confusion_drift_vs_original``, ``collateral_damage_*``, ``layer_cka`` (forget probe) and
    ``layer_cka_retain``.
    """
    cfg = EvalConfig(batch_size=batch_size, max_samples=max_samples, seed=seed, mia=mia, cka=cka,
                     cka_probe=cka_probe)
    return Evaluator(split, cfg).evaluate(model, original=original, retrained=retrained,
                                          cost=cost, retrain_cost=retrain_cost)


__all__ = ["COST_KEYS", "FEATURES", "HEADLINE", "EvalConfig", "Evaluator", "ModelOutputs",
           "cost_of", "evaluate"]
