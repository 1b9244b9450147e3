"""Weight-saliency masks and the masked update step.

Two small functions form the API the methods use; the heavy lifting is in
:mod:`fastunlearn.kernels` (integrated gradients, the masked SGD step), so faster kernels
replace slower ones without touching any method:

* :func:`compute_saliency` ``(model, part, kind, sparsity, ...) -> {param_name: BoolTensor}`` —
  which weights a method may change. ``kind="grad"`` is SalUn's saliency (Fan et al., ICLR'24):
  the score of a weight is ``|∂L_f/∂θ|`` at the trained weights, ``L_f`` the mean
  cross-entropy over ``part`` (the forget set). ``kind="ig"`` is the integrated-gradient
  saliency of the IG-saliency seed project: the score is
  ``|(θ − θ₀) · (1/m) Σ_k ∂L_f/∂θ (θ₀ + α_k (θ − θ₀))|`` with ``α_k = (k − ½)/m`` (midpoint
  rule) and the baseline ``θ₀ = 0``, computed by
  :func:`fastunlearn.kernels.integrated_gradients` (``method="riemann"``); by the completeness
  property the scores' signed sum is ``L_f(θ) − L_f(θ₀)`` up to the quadrature error. The
  mask keeps the top ``1 − sparsity`` fraction of all scores *globally* (over every parameter
  tensor together), so ``sparsity=0.5`` updates half of the weights — SalUn's default.
* :func:`masked_step` — one SGD update (momentum, weight decay) applied only where the mask is
  True: :func:`fastunlearn.kernels.masked_sgd_step` (the foreach torch path on CPU, one Triton
  launch for all parameters on CUDA). Weight decay is masked too, so weights outside the mask
  stay bit-for-bit unchanged. The SalUn code multiplies ``param.grad`` by the mask before
  ``torch.optim.SGD.step``; until its commit "Fix weight decay (#33)" weight decay then still
  moved the frozen weights, and since that commit it resets them (and their momentum) after
  every step, which gives the same update as here (bit-identical on the CPU path — tested).
  :class:`MaskedSGD` wraps it as a ``torch.optim.Optimizer``. Both live in the engine's
  :mod:`fastunlearn.engine.optim` (the optimisers every loop's step runner steps) and are
  re-exported here.

Where the SalUn reference code differs: it sums batch-mean gradients over the forget loader
(the same ranking up to the weight of a smaller last batch) and has no ``ig`` kind. The seed's
IG script integrates over *inputs* and adds that to every parameter; the weight-space IG here
is what its README describes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fastunlearn._device import model_device
from fastunlearn.data.base import DataPart

# the masked update lives in the engine's optimisers; re-exported here, beside the masks
from fastunlearn.engine.optim import MaskedSGD, make_sgd, masked_step  # noqa: F401
from fastunlearn.kernels.ig import integrated_gradients

MASK_KINDS = ("salun", "ig")
"""Values of the ``mask`` option of maskable methods: ``salun`` → ``kind="grad"``."""

_SALIENCY_KINDS = ("grad", "ig")


def check_sparsity(sparsity: float, where: str = "mask") -> None:
    """ValueError unless ``0 < sparsity < 1``."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        raise ValueError(f"{where}: sparsity must be in (0, 1), got {sparsity!r}")


def check_mask_option(method: str, mask: str | None, sparsity: float) -> None:
    """Validate the ``mask`` / ``mask_sparsity`` fields of a maskable method's config."""
    if mask is not None and mask not in MASK_KINDS:
        raise ValueError(f"{method}: mask must be one of {MASK_KINDS} or None, got {mask!r}")
    check_sparsity(sparsity, f"{method}: mask_sparsity")


def _named_trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _loss_sum(logits: Tensor, y: Tensor) -> Tensor:
    return F.cross_entropy(logits.float(), y, reduction="sum")


def weight_attributions(
    model: nn.Module,
    part: DataPart,
    kind: str = "grad",
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    ig_steps: int = 8,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Signed attribution of the mean cross-entropy over ``part`` to every weight (float32,
    parameter shapes): the gradient ``∇θ L`` (``kind="grad"``) or the integrated gradients
    ``(θ − θ₀) · (1/m) Σ_k ∇θ L(θ₀ + α_k(θ − θ₀))``, ``θ₀ = 0``, ``α_k = (k − ½)/m``,
    ``m = ig_steps`` (``kind="ig"``, by :func:`fastunlearn.kernels.integrated_gradients`: ``m``
    forward+backward passes per batch, the data read once). ``max_samples`` uses a seeded random
    subset. The model is evaluated in eval mode (as in SalUn) and left unchanged.
    """
    if kind not in _SALIENCY_KINDS:
        raise ValueError(f"saliency kind must be one of {_SALIENCY_KINDS}, got {kind!r}")
    if len(part) == 0:
        raise ValueError("saliency needs a non-empty data part (the forget set is empty)")
    if isinstance(ig_steps, bool) or int(ig_steps) != ig_steps or ig_steps < 1:
        raise ValueError(f"ig_steps must be a positive integer, got {ig_steps}")
    if max_samples is not None:
        if max_samples < 1:
            raise ValueError(f"max_samples must be ≥ 1 or None, got {max_samples}")
        part = part.take(max_samples, seed=seed)
    device = model_device(model)
    params = _named_trainable(model)
    if not params:
        raise ValueError("saliency: the model has no trainable parameters")
    if kind == "ig":
        attr = integrated_gradients(
            model, part.batches(batch_size, device=device), baseline="zeros",
            steps=int(ig_steps), method="riemann", reduction="mean",
        )
        return {name: a.float() for name, a in attr.items()}
    # fresh leaves (sharing storage), so the gradients flow to them and p.grad stays untouched
    point = {name: p.detach().requires_grad_(True) for name, p in params.items()}
    total = {name: torch.zeros_like(t, dtype=torch.float32) for name, t in point.items()}
    n = len(part)
    was_training = model.training
    model.eval()
    try:
        for x, y in part.batches(batch_size, device=device):
            loss = _loss_sum(functional_call(model, point, (x,)), y) / n
            grads = torch.autograd.grad(loss, list(point.values()), allow_unused=True)
            for name, g in zip(point, grads):
                if g is not None:
                    total[name] += g.float()
    finally:
        model.train(was_training)
    return total


def saliency_scores(
    model: nn.Module,
    part: DataPart,
    kind: str = "grad",
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    ig_steps: int = 8,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Non-negative saliency score per weight: ``|weight_attributions(...)|``."""
    attr = weight_attributions(
        model, part, kind, batch_size=batch_size, max_samples=max_samples, ig_steps=ig_steps,
        seed=seed,
    )
    return {name: a.abs_() for name, a in attr.items()}


def threshold_scores(scores: dict[str, Tensor], sparsity: float) -> dict[str, Tensor]:
    """Global top-k: True for the ``round((1 − sparsity) · N)`` highest scores over all tensors
    (ties broken by position: earlier parameter, then earlier element, wins)."""
    check_sparsity(sparsity, "threshold_scores")
    if not scores:
        return {}
    flat = torch.cat([s.detach().reshape(-1).float() for s in scores.values()])
    keep = round((1.0 - sparsity) * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if keep > 0:
        order = torch.sort(flat, descending=True, stable=True).indices
        chosen[order[:keep]] = True
    masks, start = {}, 0
    for name, s in scores.items():
        masks[name] = chosen[start : start + s.numel()].view(s.shape)
        start += s.numel()
    return masks


def compute_saliency(
    model: nn.Module,
    part: DataPart,
    kind: str = "grad",
    sparsity: float = 0.5,
    *,
    batch_size: int = 256,
    max_samples: int | None = None,
    ig_steps: int = 8,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Boolean masks ``{param_name: BoolTensor}`` (on the model's device) of the weights most
    salient for forgetting ``part``: :func:`saliency_scores` then :func:`threshold_scores`.
    ``sparsity`` is the fraction of weights left frozen (False)."""
    check_sparsity(sparsity, "compute_saliency")
    scores = saliency_scores(
        model, part, kind, batch_size=batch_size, max_samples=max_samples, ig_steps=ig_steps,
        seed=seed,
    )
    return threshold_scores(scores, sparsity)


def mask_density(masks: dict[str, Tensor]) -> float:
    """Fraction of True entries over all masks (1 − effective sparsity)."""
    total = sum(m.numel() for m in masks.values())
    return float(sum(int(m.sum()) for m in masks.values())) / max(1, total)


def masks_for_config(model: nn.Module, part: DataPart, config: object) -> dict[str, Tensor] | None:
    """The saliency masks a maskable method's config asks for (``config.mask`` ∈ ``salun``,
    ``ig``, None) on ``part``, with ``config.mask_sparsity``; None when no mask is set."""
    mask = getattr(config, "mask", None)
    if mask is None:
        return None
    kind = "grad" if mask == "salun" else "ig"
    return compute_saliency(
        model,
        part,
        kind,
        getattr(config, "mask_sparsity", 0.5),
        batch_size=getattr(config, "batch_size", 256),
        seed=getattr(config, "seed", 0),
    )
