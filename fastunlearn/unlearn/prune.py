"""``prune``: magnitude pruning, then any registered unlearning method on the sparse model
("prune first, then unlearn", Jia et al., NeurIPS 2023).

1. **Mask.** The weights of every ``Conv1d/2d/3d`` and ``Linear`` layer (biases and norms are
   never pruned) are ranked by magnitude — over all layers together (``scope="global"``) or
   per layer (``"layer"``) — and the smallest ``sparsity`` fraction is pruned:

   * ``kind="omp"`` — one-shot magnitude pruning of the trained weights;
   * ``kind="imp"`` — iterative magnitude pruning in ``imp_rounds`` rounds, round ``k``
     reaching sparsity ``1 − (1 − s)^{k/K}``; after each round the surviving weights are
     rewound to the trained model's values (``rewind=True``, lottery-ticket style rewinding
     to the only checkpoint an unlearning request has) and fine-tuned for ``epochs`` epochs
     (SGD, ``lr``, ``batch_size``) on the **retain** set — the forget set is never used.

2. **Unlearn.** The method named by ``base`` runs with ``base_options`` (its own config fields;
   ``seed``, ``device``, ``progress`` and ``compile`` are passed down) through the method
   registry, while the mask is held by :mod:`torch.nn.utils.prune` re-parametrisation
   (``w = w_orig ⊙ m``): no optimiser, noise or dampening step can revive a pruned weight.

3. **Keep the mask.** The mask is then made permanent: pruned weights are exact zeros in the
   returned (ordinary, checkpointable) model. ``result.info`` has the achieved ``sparsity``
   and the base method's info prefixed ``base_``.

A base method that builds a new model (``retrain``) gets the mask applied to its result.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._registry import get_method, make_config, register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split

log = logging.getLogger(__name__)

__all__ = ["PRUNABLE", "PruneConfig", "apply_masks", "magnitude_masks", "make_permanent",
           "prune", "sparsity_of"]

PRUNABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_KINDS = ("omp", "imp")
_SCOPES = ("global", "layer")


def _weight(module: nn.Module) -> Tensor:
    """The effective weight (``w_orig ⊙ mask`` while pruning is active)."""
    return module.weight


def prunable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """``{module name: module}`` of every conv / linear layer, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}


def magnitude_masks(model: nn.Module, sparsity: float, scope: str = "global") -> dict[str, Tensor]:
    """Keep-masks (bool, True = kept) pruning the smallest-magnitude ``sparsity`` fraction of
    conv / linear weights, over all layers (``"global"``) or per layer (``"layer"``). Weights
    already exactly zero rank below every non-zero one, so pruned weights stay pruned."""
    if not 0 <= sparsity < 1:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    if scope not in _SCOPES:
        raise ValueError(f"scope must be one of {_SCOPES}, got {scope!r}")
    layers = prunable_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no conv or linear layer to prune")
    scores = {n: _weight(m).detach().abs().flatten().float() for n, m in layers.items()}

    def keep_top(flat: Tensor) -> Tensor:
        n_prune = int(round(sparsity * flat.numel()))
        keep = torch.ones_like(flat, dtype=torch.bool)
        if n_prune:
            keep[torch.topk(flat, n_prune, largest=False).indices] = False
        return keep

    if scope == "layer":
        return {n: keep_top(s).view_as(layers[n].weight) for n, s in scores.items()}
    flat_keep = keep_top(torch.cat(list(scores.values())))
    out, start = {}, 0
    for n, s in scores.items():
        out[n] = flat_keep[start : start + s.numel()].view_as(layers[n].weight)
        start += s.numel()
    return out


def apply_masks(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Hold ``masks`` with :func:`torch.nn.utils.prune.custom_from_mask` (re-parametrisation)."""
    layers = dict(model.named_modules())
    for n, mask in masks.items():
        torch_prune.custom_from_mask(layers[n], "weight", mask.to(layers[n].weight.device))


def make_permanent(model: nn.Module, masks: dict[str, Tensor]) -> None:
    """Remove the re-parametrisation (where present) and zero every pruned weight in place."""
    layers = dict(model.named_modules())
    for n, mask in masks.items():
        mod = layers.get(n)
        if mod is None:
            raise ValueError(f"pruned layer {n!r} is missing from the unlearned model")
        if torch_prune.is_pruned(mod) and hasattr(mod, "weight_orig"):
            torch_prune.remove(mod, "weight")
        with torch.no_grad():
            mod.weight.mul_(mask.to(mod.weight.device, mod.weight.dtype))


def sparsity_of(model: nn.Module) -> float:
    """Fraction of exactly-zero weights over all conv / linear layers."""
    zeros = total = 0
    for m in prunable_layers(model).values():
        w = _weight(m)
        zeros += int((w == 0).sum())
        total += w.numel()
    return zeros / max(total, 1)


@dataclass
class PruneConfig(UnlearnConfig):
    """Prune-then-unlearn. Default (Fashion-MNIST / digits ``small_cnn``): OMP to 50 % global
    sparsity, then ``ga`` (its own defaults). ``epochs``, ``lr`` and ``batch_size`` are those
    of the IMP fine-tuning rounds (1 epoch, SGD lr 0.01 per round); OMP does not train."""

    method = "prune"
    base: str = "ga"
    base_options: dict[str, Any] = field(default_factory=dict)
    kind: str = "omp"
    sparsity: float = 0.5
    scope: str = "global"
    imp_rounds: int = 3
    rewind: bool = True
    momentum: float = 0.9
    weight_decay: float = 5e-4

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kind not in _KINDS:
            raise ValueError(f"prune: kind must be one of {_KINDS}, got {self.kind!r}")
        if self.scope not in _SCOPES:
            raise ValueError(f"prune: scope must be one of {_SCOPES}, got {self.scope!r}")
        if isinstance(self.sparsity, bool) or not 0 < self.sparsity < 1:
            raise ValueError(f"prune: sparsity must be in (0, 1), got {self.sparsity!r}")
        if self.imp_rounds < 1:
            raise ValueError(f"prune: imp_rounds must be ≥ 1, got {self.imp_rounds}")
        if self.kind == "imp" and self.epochs < 1:
            raise ValueError("prune: kind='imp' needs epochs ≥ 1 (fine-tuning per round)")
        if not isinstance(self.base_options, dict):
            raise ValueError("prune: base_options must be a dict of the base method's options")
        if get_method(self.base).name == self.method:
            raise ValueError("prune: base must be another method, not 'prune' itself")
        self.base_config()  # unknown base / bad base options → ValueError now

    def base_config(self) -> UnlearnConfig:
        opts = {"seed": self.seed, "device": self.device, "progress": self.progress,
                "compile": self.compile}
        opts.update(self.base_options)
        return make_config(self.base, **opts)

    def imp_train_config(self) -> TrainConfig:
        return TrainConfig(epochs=max(1, self.epochs), batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay,
                           seed=self.seed, device=self.device, eval_every=0,
                           progress=self.progress, compile=self.compile)


def _imp(model: nn.Module, split: ForgetSplit, config: PruneConfig) -> dict[str, Tensor]:
    """Iterative magnitude pruning with rewinding, fine-tuning on the retain set; leaves the
    final mask applied (re-parametrised) and returns it."""
    original = copy.deepcopy(model.state_dict())
    masks: dict[str, Tensor] = {}
    for k in range(1, config.imp_rounds + 1):
        if masks:
            make_permanent(model, masks)
        target = 1 - (1 - config.sparsity) ** (k / config.imp_rounds)
        masks = magnitude_masks(model, target, config.scope)
        if config.rewind:
            model.load_state_dict(original)
        apply_masks(model, masks)
        train(model, split.retain, config.imp_train_config(), eval_on={})
        log.info("prune: IMP round %d/%d at sparsity %.3f", k, config.imp_rounds, target)
    return masks


@register_method(PruneConfig)
def prune(model: nn.Module, split: ForgetSplit, config: PruneConfig) -> UnlearnResult:
    """Magnitude pruning (OMP or IMP with rewind), then any method with the mask kept."""
    check_split(split, "prune", needs_forget=False)
    torch.manual_seed(config.seed)
    if config.kind == "omp":
        masks = magnitude_masks(model, config.sparsity, config.scope)
        apply_masks(model, masks)
    else:
        masks = _imp(model, split, config)
    pruned_sparsity = sparsity_of(model)
    base_cfg = config.base_config()
    result = get_method(config.base).fn(model, split, base_cfg)
    out = result.model
    if out is not model:
        log.info("prune: %s returned a new model; applying the mask to it", config.base)
        for n in masks:
            if n not in dict(out.named_modules()):
                raise ValueError(f"prune: {config.base} returned a model without layer {n!r}")
    make_permanent(out, masks)
    info: dict[str, Any] = {
        "kind": config.kind,
        "sparsity": sparsity_of(out),
        "sparsity_before_base": pruned_sparsity,
        "base": config.base,
        **{f"base_{k}": v for k, v in result.info.items()},
    }
    return UnlearnResult(out, "prune", config, info=info)
