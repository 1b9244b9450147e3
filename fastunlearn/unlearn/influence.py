"""``influence``: influence-function unlearning — one Newton-style step (Koh & Liang 2017;
"IU" / WoodFisher in Jia et al. 2023, Singh & Alistarh 2020).

Removing the forget set ``F`` from the mean training loss moves the optimum by approximately

    Δθ = (1/n) · H⁻¹ · Σ_{i∈F} ∇ℓ_i(θ),

``H`` the Hessian of the retain loss and ``n`` the training-set size. ``H`` is replaced by the
damped empirical Fisher of ``num_samples`` retain samples:

* ``hessian="woodfisher"`` (default): ``H = λI + (1/m) Σ_j g_j g_jᵀ`` — the full rank-``m``
  WoodFisher matrix, inverted exactly with the Woodbury identity
  ``H⁻¹v = (v − U(λI_m + UᵀU)⁻¹Uᵀv)/λ``, ``U = [g_1 … g_m]/√m`` (what the reference code's
  recursive Sherman–Morrison updates compute). Memory: ``m ×`` the parameter count.
* ``hessian="diag"``: ``H = diag(F̄_r) + λI`` (the Fisher diagonal only).

``λ = damping · mean(diag F̄_r)`` keeps the damping scale-free. The step is scaled by ``alpha``:
a number, or ``"auto"`` — try ``α_0 · 2^k`` (k = 0, 1, …, ``max_doublings``), ``α_0`` the scale
whose step has norm ``start_step`` × ‖θ‖, and keep
the first whose forget probe reaches ``target_forget_acc`` ("auto": 5 % for class forgetting,
a validation probe's accuracy for sample forgetting), then bisect ``refine_steps`` times between it
and the previous scale for the smallest that still does; a scale that pushes the retain probe
below ``collapse_fraction`` × its starting accuracy is never kept. Only the direction costs
gradients; the search only runs forward passes on small probes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.data.base import DataPart
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.guards import ForgetGuard, check_guard_fields, is_divergence
from fastunlearn.engine.rng import seed_everything
from fastunlearn.kernels.fisher import per_sample_grads
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split, method_device
from fastunlearn.unlearn.fisher import mean_fisher

__all__ = ["InfluenceConfig", "influence", "woodfisher_solve"]

log = logging.getLogger(__name__)

_HESSIANS = ("woodfisher", "diag")


def woodfisher_solve(grads: Tensor, v: Tensor, damping: float) -> Tensor:
    """``(λI + (1/m) GᵀG)⁻¹ v`` for per-sample gradients ``grads`` = G ``[m, d]`` and ``v``
    ``[d]``, exactly, via Woodbury (an ``m × m`` solve in float64; never a ``d × d`` matrix)."""
    if grads.dim() != 2 or v.dim() != 1 or grads.shape[1] != v.shape[0]:
        raise ValueError(f"grads must be [m, d] and v [d], got {tuple(grads.shape)}, "
                         f"{tuple(v.shape)}")
    if not damping > 0:
        raise ValueError(f"damping must be positive, got {damping}")
    m = grads.shape[0]
    u = grads / math.sqrt(m)  # [m, d]
    gram = (u @ u.T).double()
    rhs = (u @ v).double()
    z = torch.linalg.solve(gram + damping * torch.eye(m, dtype=gram.dtype, device=gram.device),
                           rhs)
    return (v - u.T @ z.to(v.dtype)) / damping


@dataclass
class InfluenceConfig(UnlearnConfig):
    """Influence-unlearning recipe (Fashion-MNIST / digits ``small_cnn``): WoodFisher of 128
    retain samples, damping 10 × the mean Fisher diagonal, step scale found by the "auto"
    search (from a step of 1e-4 ‖θ‖, doubling). No training: ``epochs`` and ``lr`` are not
    used, and ``compile`` has no effect (gradient passes and one Newton step, no training
    steps to compile; an info line says so)."""

    method = "influence"
    epochs: int = 0
    hessian: str = "woodfisher"
    num_samples: int = 128
    damping: float = 10.0
    alpha: float | str = "auto"
    start_step: float = 1e-4
    max_doublings: int = 24
    refine_steps: int = 4
    target_forget_acc: float | str | None = "auto"
    probe_size: int = 256
    collapse_fraction: float = 0.9

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.hessian not in _HESSIANS:
            raise ValueError(f"influence: hessian must be one of {_HESSIANS}, got {self.hessian!r}")
        if self.num_samples < 1:
            raise ValueError(f"influence: num_samples must be ≥ 1, got {self.num_samples}")
        if not (self.damping > 0 and math.isfinite(self.damping)):
            raise ValueError(f"influence: damping must be positive, got {self.damping}")
        a = self.alpha
        if a != "auto" and not (isinstance(a, (int, float)) and a > 0 and math.isfinite(a)):
            raise ValueError(f"influence: alpha must be 'auto' or a positive number, got {a!r}")
        if not self.start_step > 0 or self.max_doublings < 0 or self.refine_steps < 0:
            raise ValueError("influence: start_step must be > 0, max_doublings and "
                             "refine_steps ≥ 0")
        check_guard_fields("influence", self.probe_size, 1, self.collapse_fraction,
                           self.target_forget_acc)


def _forget_gradient(model: nn.Module, part: DataPart, batch_size: int,
                     device: torch.device) -> dict[str, Tensor]:
    """``Σ_{i ∈ part} ∇ℓ_i`` (sum of per-sample losses; eval mode)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    was = model.training
    model.eval()
    for x, y in part.batches(batch_size, device=device):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        for (n, _), g in zip(params.items(), torch.autograd.grad(loss, list(params.values()))):
            total[n] += g
    model.train(was)
    return total


def _flat(d: dict[str, Tensor], names: list[str]) -> Tensor:
    return torch.cat([d[n].reshape(-1) for n in names])


@register_method(InfluenceConfig)
def influence(model: nn.Module, split: ForgetSplit, config: InfluenceConfig) -> UnlearnResult:
    """Influence unlearning: one Newton step with a WoodFisher / diagonal Fisher Hessian."""
    check_split(split, "influence")
    if config.compile is not False:
        log.info("influence: compile=%r has no effect (no training steps)", config.compile)
    device = method_device(model, config)
    gen = seed_everything(config.seed)
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    params = dict(model.named_parameters())
    retain = split.retain.take(config.num_samples, seed=config.seed)
    n_train = len(split.forget) + len(split.retain)
    g = _flat(_forget_gradient(model, split.forget, config.batch_size, device), names) / n_train
    if config.hessian == "diag":
        fis = _flat(mean_fisher(model, retain, labels="data", batch_size=config.batch_size,
                                device=device, generator=gen), names)
        lam = config.damping * float(fis.mean())
        step = g / (fis + lam)
    else:
        rows = []
        for x, y in retain.batches(64, device=device):
            psg = per_sample_grads(model, x, y)
            rows.append(torch.cat([psg[n].flatten(1) for n in names], 1))
        grads = torch.cat(rows)
        lam = config.damping * float(grads.pow(2).mean(0).mean())
        step = woodfisher_solve(grads, g, lam)
        del grads, rows
    start = torch.cat([params[n].detach().reshape(-1) for n in names]).clone()

    sizes = [params[n].numel() for n in names]

    @torch.no_grad()
    def apply(alpha: float) -> None:
        for n, chunk in zip(names, torch.split(start + alpha * step, sizes)):
            params[n].copy_(chunk.view_as(params[n]))

    tried = 0
    if config.alpha != "auto":
        alpha, reason = float(config.alpha), "fixed alpha"
        apply(alpha)
    else:
        # the engine's guard, without weight copies: this search restores by itself
        guard = ForgetGuard.from_split(model, split, probe_size=config.probe_size,
                                       seed=config.seed, keep_state=False,
                                       collapse_fraction=config.collapse_fraction,
                                       target=config.target_forget_acc)
        target, floor = guard.target, guard.floor
        alpha, reason = 0.0, "no alpha kept the retain probe healthy"
        a0 = config.start_step * float(start.norm()) / max(float(step.norm()), 1e-30)

        def verdict(a: float) -> str:  # "bad" (retain collapsed), "hit" (target) or "short"
            nonlocal tried
            tried += 1
            apply(a)
            if not all(torch.isfinite(params[n]).all() for n in names):
                return "bad"
            why = guard.check(model)
            return "bad" if is_divergence(why) else "hit" if why else "short"

        lo, hi = 0.0, None
        for k in range(config.max_doublings + 1):
            a = a0 * 2.0**k
            v = verdict(a)
            if v == "short":
                lo = a
                continue
            hi = a
            if v == "hit":
                alpha = a
            break
        if hi is not None and lo > 0:  # bisect (geometrically) between the last two tries
            for _ in range(config.refine_steps):
                mid = math.sqrt(lo * hi)
                v = verdict(mid)
                if v == "short":
                    lo = mid
                else:
                    hi = mid
                    alpha = mid if v == "hit" else alpha
        if alpha > 0:
            reason = f"forget probe reached {target:.1f} % at alpha {alpha:.4g}"
        elif lo > 0:
            alpha = lo
            reason = (f"largest alpha before the retain probe fell under {floor:.1f} %: {lo:.4g}"
                      if hi is not None else f"largest alpha tried ({lo:.4g})")
        apply(alpha)
    model.eval()
    info = {"alpha": alpha, "alphas_tried": tried, "stop_reason": reason, "damping_abs": lam,
            "hessian": config.hessian, "fisher_samples": len(retain),
            "step_norm": float(alpha * step.norm())}
    return UnlearnResult(model, "influence", config, info=info)
