"""``ssd``: Selective Synaptic Dampening (Foster, Schoepf & Brintrup, AAAI 2024) — no training.

Importances are mean diagonal Fishers (:func:`fastunlearn.kernels.fisher_diagonal`, data
labels): ``I_f`` over the forget set, ``I_D`` over the whole training set (forget included).
A weight is *selected* when it matters much more to the forget set, ``I_f > α · I_D``, and is
then dampened:

    θ ← β · θ,   β = min(λ · I_D / I_f, 1).

Every other weight is left exactly as it was. ``α`` (selection weighting) and ``λ``
(dampening constant) are the paper's two hyper-parameters. ``I_D`` is estimated on
``num_samples`` random training samples and ``I_f`` on at most ``num_forget_samples`` forget
samples (0 = all).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fastunlearn._device import resolve_device
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.train import seed_everything
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split
from fastunlearn.unlearn.fisher import mean_fisher

__all__ = ["SSDConfig", "ssd", "ssd_dampening", "ssd_importances"]

log = logging.getLogger(__name__)


@dataclass
class SSDConfig(UnlearnConfig):
    """SSD recipe (Fashion-MNIST / digits ``small_cnn``): α = 3, λ = 1 (the paper uses α = 10
    on 100 classes; with 10 classes one class is 10 % of the data, so ``I_f ≤ 10 I_D`` always
    and α must stay below 10),
    ``I_D`` from 4,096 training samples, ``I_f`` from up to 4,096 forget samples. No training:
    ``epochs`` and ``lr`` are not used, and ``compile`` has no effect (two Fisher passes, no
    training steps to compile; an info line says so)."""

    method = "ssd"
    epochs: int = 0
    alpha: float = 3.0
    lam: float = 1.0
    num_samples: int = 4096
    num_forget_samples: int = 4096

    def __post_init__(self) -> None:
        super().__post_init__()
        for name in ("alpha", "lam"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise ValueError(f"ssd: {name} must be a positive number, got {v}")
        if self.num_samples < 0 or self.num_forget_samples < 0:
            raise ValueError("ssd: num_samples and num_forget_samples must be ≥ 0 (0 = all)")


def ssd_importances(
    model: nn.Module, split: ForgetSplit, config: SSDConfig
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(I_f, I_D)``: mean diagonal Fishers of the forget set and of the training set, on the
    same sub-samples :func:`ssd` uses (deterministic for a given ``config.seed``)."""
    device = resolve_device(config.device)
    forget = split.forget.take(config.num_forget_samples, seed=config.seed) \
        if config.num_forget_samples else split.forget
    full = split.full.take(config.num_samples, seed=config.seed) if config.num_samples \
        else split.full
    kw = {"labels": "data", "batch_size": config.batch_size, "device": device}
    return mean_fisher(model, forget, **kw), mean_fisher(model, full, **kw)


def ssd_dampening(imp_forget: Tensor, imp_full: Tensor, alpha: float, lam: float) -> Tensor:
    """The factor SSD multiplies each weight by: ``min(λ I_D / I_f, 1)`` where
    ``I_f > α I_D``, exactly 1 elsewhere."""
    selected = imp_forget > alpha * imp_full
    beta = (lam * imp_full / imp_forget.clamp_min(torch.finfo(imp_forget.dtype).tiny)).clamp(max=1)
    return torch.where(selected, beta, torch.ones_like(beta))


@register_method(SSDConfig)
def ssd(model: nn.Module, split: ForgetSplit, config: SSDConfig) -> UnlearnResult:
    """Selective synaptic dampening: shrink weights far more important to the forget set."""
    check_split(split, "ssd")
    if config.compile is not False:
        log.info("ssd: compile=%r has no effect (no training steps)", config.compile)
    seed_everything(config.seed)
    imp_f, imp_d = ssd_importances(model, split, config)
    selected, total = 0, 0
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name not in imp_f:
                continue
            beta = ssd_dampening(imp_f[name], imp_d[name], config.alpha, config.lam)
            changed = beta < 1
            p[changed] *= beta[changed].to(p.dtype)
            selected += int(changed.sum())
            total += p.numel()
    info = {"dampened_weights": selected, "dampened_fraction": selected / max(total, 1)}
    return UnlearnResult(model, "ssd", config, info=info)
