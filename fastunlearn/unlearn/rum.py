"""``rum``: RUM — Refined-Unlearning Meta-algorithm (Zhao et al., "What makes unlearning hard
and what to do about it", NeurIPS 2024).

Reference code: kairanzhao/RUM (``main_rum.py`` / ``main_rum_proxy.py`` drive
``main_forget.py --sequential`` once per memorization group; proxies in
``memorization_proxy/``).

Unlearning is harder for forget sets that mix examples of very different memorization; RUM
first *refines* the forget set into homogeneous groups, then *unlearns them in sequence*, each
with the method that suits it:

1. **Proxy.** Every forget example gets a memorization score from the trained model
   (``proxy``; higher = more memorised):

   * ``"confidence"`` — ``−p(y | x)``, the model's confidence in the true label, negated (the
     reference's C-proxy averages the confidence over the training epochs; only the final
     model is available here);
   * ``"holdout"`` — held-out retraining (``memorization_proxy/heldout_retrain.py``): a copy of
     the model is fine-tuned on held-out data (``split.val``; the reference uses the test
     set) for up to ``proxy_epochs`` epochs (SGD, momentum 0.9, wd 5e-4, stopping after
     ``proxy_patience`` epochs without a lower epoch loss, as the reference), and the score is
     the symmetric KL ``½(KL(p‖q) + KL(q‖p))`` between the original's and the fine-tuned
     copy's predictions (probabilities clamped at 1e-10): memorised examples are those whose
     prediction moves when the model sees other data;
   * ``"curvature"`` — input loss curvature (``memorization_proxy/loss_curvature.py``, after
     CURE): ``‖∇ₓℓ(x + z) − ∇ₓℓ(x)‖``, ``z = h · sign(∇ₓℓ) / ‖sign(∇ₓℓ)‖`` per example,
     ``h = curvature_h`` (0.01); the reference averages it over the training epochs, here
     it is the final model's.

2. **Refine.** The forget set, sorted by score, is cut into three equal-sized groups: low,
   mid and high memorization.
3. **Unlearn in sequence** (``order``, default low → mid → high as in the reference's
   ``main_rum_proxy.py``): group ``k`` is forgotten with ``methods[k]`` and the options in
   ``method_options[k]`` (any registered method, called through its registry entry), on the
   model the previous group left. Defaults: NegGrad+ for every group with the reference's
   per-group settings (:data:`REFERENCE_NEGGRAD_PLUS`) — β 0.99 / 5 epochs / lr 0.01,
   β 0.97 / 5 epochs / lr 0.01, β 0.97 / 10 epochs / lr 0.001 (the reference's ``--alpha`` is
   NegGrad+'s β).

   Each step sees a split of the same dataset whose forget set is the group and whose retain
   set is the *original retain set*: the other forget examples — those already forgotten and
   those still to come — are in neither part, so no step ever trains on data that must be
   forgotten. The reference's ``--sequential`` branches of ``main_forget.py`` disagree here: the
   group-index branch removes every group from the retain set (as here), the memorization and
   proxy branches remove one, two or three groups depending on the step's group name, so some
   steps train on forget examples of other groups. Validation data is the split's own.

Where this differs from the reference code:

* The reference picks its groups from the whole training set (the N most, N least and N
  median-closest memorised examples) to build benchmark forget sets; here the forget set is
  given and its tertiles by score are the groups.
* Proxies come from the final trained model (see above); the reference's C-proxy and
  curvature proxy accumulate over the training run, which a method receiving a trained model
  does not have.
* The held-out fine-tune uses ``split.val`` (the reference: the test set), learning rate
  ``proxy_lr`` = 0.05 (the reference: 0.1, its training lr; 0.05 is the training lr of the
  Fashion-MNIST / digits recipes here), batch ``batch_size``.
* The sub-methods run in one process on one model (the reference saves and reloads a
  checkpoint between steps); they get this config's ``seed``, ``device``, ``progress`` and
  ``compile`` unless their options say otherwise.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn._modes import eval_mode
from fastunlearn.data.base import DataPart
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.runner import StepRunner, run_epochs, steps_per_epoch
from fastunlearn.inference import predict_logits
from fastunlearn.unlearn._losses import check_nonneg, check_positive_int
from fastunlearn.unlearn._registry import get_method, register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split, method_device

__all__ = [
    "GROUPS", "REFERENCE_NEGGRAD_PLUS", "RUMConfig", "memorization_scores", "rum", "rum_groups",
]

GROUPS = ("low", "mid", "high")
_PROXIES = ("confidence", "holdout", "curvature")
_ORDERS = ("low_to_high", "high_to_low")
_COMMON = ("seed", "device", "progress", "compile")


def _default_methods() -> tuple[str, str, str]:
    return ("neggrad_plus", "neggrad_plus", "neggrad_plus")


#: the reference's per-group NegGrad+ settings (``main_rum_proxy.py``), used for a group whose
#: method is ``neggrad_plus`` when ``method_options`` is None
REFERENCE_NEGGRAD_PLUS = ({"beta": 0.99, "epochs": 5, "lr": 0.01},
                          {"beta": 0.97, "epochs": 5, "lr": 0.01},
                          {"beta": 0.97, "epochs": 10, "lr": 0.001})


@dataclass
class RUMConfig(UnlearnConfig):
    """RUM recipe: confidence proxy, tertiles low / mid / high unlearned in that order, NegGrad+
    on each with the reference's per-group settings (β 0.99 / 0.97 / 0.97, 5 / 5 / 10 epochs,
    lr 0.01 / 0.01 / 0.001). ``methods``: one registered method name per group (low, mid,
    high) or one name for all; ``method_options``: one option dict per group, or one dict for
    all, or None (= the reference's NegGrad+ settings for ``neggrad_plus`` groups, the
    method's defaults otherwise). ``batch_size`` is the proxy's; the held-out proxy
    fine-tunes for at most 30 epochs at lr 0.05."""

    method = "rum"
    epochs: int = 0
    proxy: str = "confidence"
    methods: tuple[str, ...] | str = field(default_factory=_default_methods)
    method_options: tuple[dict, ...] | dict | None = None
    order: str = "low_to_high"
    proxy_epochs: int = 30
    proxy_lr: float = 0.05
    proxy_patience: int = 4
    curvature_h: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.proxy not in _PROXIES:
            raise ValueError(f"rum: proxy must be one of {_PROXIES}, got {self.proxy!r}")
        if self.order not in _ORDERS:
            raise ValueError(f"rum: order must be one of {_ORDERS}, got {self.order!r}")
        if isinstance(self.methods, str):
            self.methods = (self.methods,) * len(GROUPS)
        self.methods = tuple(self.methods)
        if isinstance(self.method_options, dict):
            self.method_options = (self.method_options,) * len(GROUPS)
        if self.method_options is not None:
            self.method_options = tuple(dict(o or {}) for o in self.method_options)
        n_opts = len(GROUPS) if self.method_options is None else len(self.method_options)
        if len(self.methods) != len(GROUPS) or n_opts != len(GROUPS):
            raise ValueError(f"rum: methods and method_options need one entry per group "
                             f"{GROUPS}, got {len(self.methods)} and {n_opts}")
        for group, name in zip(GROUPS, self.methods):
            if not isinstance(name, str) or get_method(name).name == self.method:
                raise ValueError(f"rum: the {group} group needs another registered method, "
                                 f"got {name!r}")
        check_positive_int(self.method, "proxy_epochs", self.proxy_epochs)
        check_positive_int(self.method, "proxy_patience", self.proxy_patience)
        if not self.proxy_lr > 0:
            raise ValueError(f"rum: proxy_lr must be positive, got {self.proxy_lr}")
        check_nonneg(self.method, "curvature_h", self.curvature_h)
        for group in GROUPS:
            self.group_config(group)  # validates the method name and its options

    def group_config(self, group: str) -> UnlearnConfig:
        """The config of the method that unlearns ``group`` (``low``, ``mid`` or ``high``)."""
        k = GROUPS.index(group)
        name = self.methods[k]
        opts: dict[str, Any] = {c: getattr(self, c) for c in _COMMON}
        if self.method_options is not None:
            opts.update(self.method_options[k])
        elif get_method(name).name == "neggrad_plus":
            opts.update(REFERENCE_NEGGRAD_PLUS[k])
        entry = get_method(name)
        valid = {f.name for f in fields(entry.config_cls)}
        bad = sorted(set(opts) - valid)
        if bad:
            raise ValueError(f"rum: {group} group ({entry.name}) has no option {bad[0]!r}; "
                             f"options: {', '.join(sorted(valid))}")
        try:
            return entry.config_cls(**opts)
        except (TypeError, ValueError) as e:
            raise ValueError(f"rum: {group} group ({entry.name}): {e}") from e


class _GroupSplit(ForgetSplit):
    """A forget group of a parent split: forget = the group, retain = the parent's retain
    set (so the other forget examples are in neither part); val / test as the parent's."""

    def __init__(self, parent: ForgetSplit, group_idx: Tensor, group: str) -> None:
        spec = {**parent.spec, "rum_group": group, "group_size": int(group_idx.numel())}
        super().__init__(parent.data, group_idx, spec, list(parent.forget_class_ids),
                         val_fraction=parent.val_fraction, val_seed=parent.val_seed)
        self.retain_idx = parent.retain_idx.clone()


def _sym_kl(p: Tensor, q: Tensor) -> Tensor:
    p, q = p.clamp_min(1e-10), q.clamp_min(1e-10)
    return 0.5 * ((p * (p.log() - q.log())).sum(1) + (q * (q.log() - p.log())).sum(1))


def _holdout_finetune(model: nn.Module, val: DataPart, config: RUMConfig,
                      device: torch.device) -> nn.Module:
    if len(val) == 0:
        raise ValueError("rum: the holdout proxy needs a validation part (split.val is empty)")
    tuned = copy.deepcopy(model)
    params = [p for p in tuned.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=config.proxy_lr, momentum=0.9, weight_decay=5e-4)
    gen = torch.Generator().manual_seed(config.seed)
    runner = StepRunner(opt, config.proxy_lr,
                        config.proxy_epochs * steps_per_epoch(len(val), config.batch_size),
                        desc="rum holdout proxy", progress=False, check_finite=False)
    best, stale = float("inf"), 0
    epoch_loss = [0.0]

    def loss_fn(net: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        loss = F.cross_entropy(net(x).float(), y)
        epoch_loss[0] += float(loss.detach())
        return loss

    for _ in range(config.proxy_epochs):
        epoch_loss[0] = 0.0
        run_epochs(tuned, val, loss_fn, runner, 1, config.batch_size, gen, device)
        if epoch_loss[0] < best:
            best, stale = epoch_loss[0], 0
        else:
            stale += 1
            if stale >= config.proxy_patience:
                break
    runner.close()
    tuned.eval()
    return tuned


def _curvature(model: nn.Module, part: DataPart, h: float, batch_size: int,
               device: torch.device) -> Tensor:
    out = []
    with eval_mode(model), torch.enable_grad():
        for x, y in part.batches(batch_size, device=device):
            x = x.detach().requires_grad_(True)
            g0 = torch.autograd.grad(F.cross_entropy(model(x).float(), y, reduction="sum"), x)[0]
            z = torch.sign(g0) + 1e-7
            z = h * z / (z.flatten(1).norm(dim=1).view(-1, *([1] * (z.dim() - 1))) + 1e-7)
            xz = (x.detach() + z).requires_grad_(True)
            g1 = torch.autograd.grad(F.cross_entropy(model(xz).float(), y, reduction="sum"),
                                     xz)[0]
            out.append((g1 - g0).flatten(1).norm(dim=1).detach().cpu())
    return torch.cat(out) if out else torch.empty(0)


def memorization_scores(model: nn.Module, split: ForgetSplit, config: RUMConfig) -> Tensor:
    """One memorization score per forget example (float64, CPU, in ``split.forget`` order;
    higher = more memorised) from ``config.proxy``."""
    device = method_device(model, config)
    forget = split.forget
    if config.proxy == "confidence":
        logp = torch.log_softmax(predict_logits(model, forget).double(), 1)
        return -logp.gather(1, forget.labels.view(-1, 1)).squeeze(1).exp()
    if config.proxy == "holdout":
        tuned = _holdout_finetune(model, split.val, config, device)
        p = torch.softmax(predict_logits(model, forget).double(), 1)
        q = torch.softmax(predict_logits(tuned, forget).double(), 1)
        return _sym_kl(p, q)
    return _curvature(model, forget, config.curvature_h, config.batch_size, device).double()


def rum_groups(scores: Tensor, indices: Tensor) -> dict[str, Tensor]:
    """``{"low": …, "mid": …, "high": …}``: the training-set ``indices`` cut into three
    equal-sized groups (sizes differ by at most one) by ascending ``scores`` (stable)."""
    order = torch.sort(scores, stable=True).indices
    return {g: indices[part] for g, part in zip(GROUPS, torch.tensor_split(order, len(GROUPS)))}


@register_method(RUMConfig)
def rum(model: nn.Module, split: ForgetSplit, config: RUMConfig) -> UnlearnResult:
    """RUM: split the forget set by a memorization proxy, unlearn low → mid → high in turn."""
    check_split(split, "rum")
    scores = memorization_scores(model, split, config)
    groups = rum_groups(scores, split.forget.indices)
    sequence = GROUPS if config.order == "low_to_high" else tuple(reversed(GROUPS))
    info: dict[str, Any] = {"proxy": config.proxy, "order": config.order}
    per_group = []
    for group in sequence:
        idx = groups[group]
        pos = torch.isin(split.forget.indices, idx)
        entry = {"group": group, "method": config.methods[GROUPS.index(group)],
                 "size": int(idx.numel())}
        if idx.numel() == 0:
            entry["skipped"] = True
            per_group.append(entry)
            continue
        entry["score_min"] = float(scores[pos].min())
        entry["score_max"] = float(scores[pos].max())
        cfg = config.group_config(group)
        res = get_method(cfg.method).fn(model, _GroupSplit(split, idx, group), cfg)
        model = res.model
        entry["info"] = {k: v for k, v in res.info.items()
                         if isinstance(v, (int, float, str, bool))}
        per_group.append(entry)
        info[f"{group}_method"] = entry["method"]
        info[f"{group}_size"] = entry["size"]
    info["groups"] = per_group
    model.eval()
    return UnlearnResult(model, "rum", config, info=info)
