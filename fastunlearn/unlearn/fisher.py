"""``fisher``: Fisher forgetting (Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless
Net", CVPR 2020) — no training epochs.

Every weight gets Gaussian noise whose variance is the inverse of its Fisher information on the
retain set: ``θ ← θ + sqrt(α · min(1/F̄_r, v_max)) · ε``, ``ε ~ N(0, I)``. Weights the retain
data relies on (large ``F̄_r``) barely move; weights that only matter for the forget data are
scrambled. ``F̄_r`` is the mean diagonal Fisher of ``num_samples`` retain samples
(:func:`fastunlearn.kernels.fisher_diagonal`, labels drawn from the model by default). As in
the reference code, a weight tensor's variance is averaged over each output unit
(``per_unit``), and for class forgetting the forgotten classes' rows of the final linear layer
are set to zero, noise-free (``zero_forget_head``): their logit becomes a constant 0.

Random-sample forgetting only gets the noise (Fisher forgetting is weak there by design).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fastunlearn._device import resolve_device
from fastunlearn.data.base import DataPart
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.kernels.fisher import LABEL_MODES, fisher_diagonal
from fastunlearn.train import seed_everything
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split

__all__ = ["FisherConfig", "classifier_layer", "fisher", "mean_fisher"]

log = logging.getLogger(__name__)


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The final linear layer: ``model.get_classifier()`` (timm and the small nets) when it
    is an ``nn.Linear``, else the last ``nn.Linear`` in module order."""
    getter = getattr(model, "get_classifier", None)
    if callable(getter):
        head = getter()
        if isinstance(head, nn.Linear):
            return head
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear classifier layer")
    return linears[-1]


def mean_fisher(
    model: nn.Module,
    part: DataPart,
    *,
    labels: str,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Mean diagonal Fisher ``(1/n) Σ_i g_i²`` of ``model`` over every sample of ``part``."""
    if len(part) == 0:
        raise ValueError(f"cannot compute a Fisher on the empty part {part.name!r}")
    total = fisher_diagonal(model, loader=part.batches(batch_size, device=device), labels=labels,
                            generator=generator)
    return {n: v / len(part) for n, v in total.items()}


@dataclass
class FisherConfig(UnlearnConfig):
    """Fisher-forgetting recipe (Fashion-MNIST / digits ``small_cnn``): noise scale
    ``alpha`` = 1e-6 on the inverse mean Fisher of 1,024 retain samples (labels drawn from the
    model), variance capped at ``max_var`` = 1e3 per weight before scaling. No training:
    ``epochs`` and ``lr`` are not used, and ``compile`` has no effect (one Fisher pass, no
    training steps to compile; an info line says so)."""

    method = "fisher"
    epochs: int = 0
    alpha: float = 1e-6
    num_samples: int = 1024
    labels: str = "model"
    max_var: float = 1e3
    per_unit: bool = True
    zero_forget_head: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"fisher: alpha must be a positive number, got {self.alpha}")
        if self.num_samples < 0:
            raise ValueError(f"fisher: num_samples must be ≥ 0 (0 = all), got {self.num_samples}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"fisher: labels must be one of {LABEL_MODES}, got {self.labels!r}")
        if not self.max_var > 0:
            raise ValueError(f"fisher: max_var must be positive, got {self.max_var}")


@register_method(FisherConfig)
@torch.no_grad()
def fisher(model: nn.Module, split: ForgetSplit, config: FisherConfig) -> UnlearnResult:
    """Fisher forgetting: noise scaled by the inverse retain Fisher (Golatkar et al.)."""
    check_split(split, "fisher")
    if config.compile is not False:
        log.info("fisher: compile=%r has no effect (no training steps)", config.compile)
    device = resolve_device(config.device)
    gen = seed_everything(config.seed)
    part = split.retain.take(config.num_samples, seed=config.seed) if config.num_samples \
        else split.retain
    with torch.enable_grad():
        fis = mean_fisher(model, part, labels=config.labels, batch_size=config.batch_size,
                          device=device, generator=gen)
    head = classifier_layer(model)
    head_params = [getattr(head, "weight_orig", head.weight), head.bias]  # (pruned: weight_orig)
    forget_rows = split.forget_class_ids if split.kind == "class" and config.zero_forget_head \
        else []
    noise_norm2 = 0.0
    for name, p in model.named_parameters():
        if name not in fis:
            continue
        var = (1.0 / (fis[name] + 1e-8)).clamp(max=config.max_var)
        if config.per_unit and var.dim() > 1:
            var = var.flatten(1).mean(1).view(-1, *([1] * (var.dim() - 1))).expand_as(var)
        var = config.alpha * var
        noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype) * var.sqrt()
        if forget_rows and any(p is h for h in head_params):
            p[forget_rows] = 0.0
            noise[forget_rows] = 0.0
        p.add_(noise)
        noise_norm2 += float(noise.pow(2).sum())
    info = {"fisher_samples": len(part), "noise_norm": math.sqrt(noise_norm2),
            "zeroed_head_rows": len(forget_rows)}
    return UnlearnResult(model, "fisher", config, info=info)
