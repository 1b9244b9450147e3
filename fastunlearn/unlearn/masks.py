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
  :class:`MaskedSGD` wraps it as a ``torch.optim.Optimizer``.

Where the SalUn reference code differs: it sums batch-mean gradients over the forget loader
(the same ranking up to the weight of a smaller last batch) and has no ``ig`` kind. The seed's
IG script integrates over *inputs* and adds that to every parameter; the weight-space IG here
is what its README describes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from fastunlearn._device import model_device
from fastunlearn.data.base import DataPart
from fastunlearn.kernels.ig import integrated_gradients
from fastunlearn.kernels.masked_sgd import masked_sgd_step, prepare_mask

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


def masked_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    masks: Sequence[Tensor | None],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    overwrite_grads: bool = False,
) -> None:
    """One SGD step ``d = mask·(g + wd·p); buf = μ·buf + (1 − dampening)·d; p −= lr·buf``
    (or Nesterov's ``p −= lr·(d + μ·buf)``) in place, by
    :func:`fastunlearn.kernels.masked_sgd_step` (``impl="auto"``).

    Matches ``torch.optim.SGD`` exactly where the mask is True (and everywhere when a mask is
    None); entries where the mask is False keep their value and a zero momentum buffer (for a
    mask that stays the same from the first step on). ``None`` grads are skipped.
    ``momentum_buffers`` is updated in place (None → created). ``overwrite_grads=True`` lets the
    CPU path use the gradients as scratch (values afterwards unspecified; saves a copy).
    """
    masked_sgd_step(params, grads, masks, momentum_buffers, lr, momentum, weight_decay,
                    nesterov, dampening, overwrite_grads=overwrite_grads)


class MaskedSGD(torch.optim.Optimizer):
    """SGD (momentum, weight decay, Nesterov) that only updates masked weights, via
    :func:`masked_step` — one fused Triton launch for all parameters on CUDA.

    ``masks`` maps each parameter tensor (by identity) to a bool tensor of its shape; parameters
    without an entry are updated normally. The masks are converted once into the format the
    step reads fastest (:func:`fastunlearn.kernels.masked_sgd.prepare_mask`: bool on CUDA, 0/1
    in the parameter dtype on CPU). Like ``torch.optim.SGD`` with Nesterov, ``step()`` may
    leave other values in ``p.grad`` (it uses them as scratch; the next ``zero_grad`` clears
    them).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        masks: dict[int, Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "nesterov": nesterov, "dampening": dampening}
        params = list(params)
        super().__init__(params, defaults)
        by_id = {id(p): p for group in self.param_groups for p in group["params"]}
        self._masks = {k: prepare_mask(m, by_id[k]) if k in by_id else m
                       for k, m in masks.items()}

    def _mask(self, p: Tensor) -> Tensor | None:
        m = self._masks.get(id(p))
        if m is not None and m.device != p.device:  # the model moved since construction
            m = self._masks[id(p)] = prepare_mask(m, p)
        return m

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim.Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            bufs = [self.state[p].get("momentum_buffer") for p in ps]
            masked_step(
                ps,
                [p.grad for p in ps],
                [self._mask(p) for p in ps],
                bufs,
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                nesterov=group.get("nesterov", False),
                dampening=group.get("dampening", 0.0),
                overwrite_grads=True,
            )
            for p, b in zip(ps, bufs):
                if b is not None:
                    self.state[p]["momentum_buffer"] = b
        return loss


def make_sgd(
    model: nn.Module,
    lr: float,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    masks: dict[str, Tensor] | None = None,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` over the trainable parameters, or :class:`MaskedSGD` when ``masks``
    (``{param_name: BoolTensor}``, e.g. from :func:`compute_saliency`) is given."""
    params = _named_trainable(model)
    if masks is None:
        return torch.optim.SGD(
            params.values(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"mask names a parameter the model does not have: {unknown[0]!r}")
    by_id = {}
    for name, m in masks.items():
        p = params[name]
        if m.shape != p.shape:
            raise ValueError(
                f"mask for {name!r} has shape {tuple(m.shape)}, parameter {tuple(p.shape)}"
            )
        by_id[id(p)] = m.to(device=p.device, dtype=torch.bool)
    return MaskedSGD(params.values(), by_id, lr, momentum, weight_decay)


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
