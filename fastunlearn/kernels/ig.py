"""Integrated gradients over the weights: per-weight attributions of a loss.

:func:`integrated_gradients` ``(model, batch_or_loader, baseline="zeros", steps=m,
method="gausslegendre") -> {name: Tensor}`` returns, for every trainable parameter,

    A(θ) = (θ − θ₀) ⊙ ∫₀¹ ∇ℓ(θ₀ + α (θ − θ₀)) dα,

so that (completeness) ``Σ A = ℓ(θ) − ℓ(θ₀)`` up to the quadrature error. ``ℓ`` is the mean
(or summed) cross-entropy over all samples given. The integral is a quadrature over ``α``:

* ``"riemann"`` — the midpoint rule, ``α_k = (k + ½)/m``, weights ``1/m`` (error ``O(1/m²)``);
* ``"gausslegendre"`` — ``m``-point Gauss–Legendre on ``[0, 1]``, exact for polynomials of
  degree ``2m − 1`` (for smooth networks far more accurate per step).

Cost: ``m`` forward+backward passes per batch. The interpolated weights are written into the
model's own parameters in place (no per-step copy of the model); one buffer per parameter
accumulates the weighted gradients. Memory: ``θ``, ``θ₀`` and the accumulator (3 × |θ|).
The model runs in eval mode with its own buffers (batch-norm statistics are not
interpolated); its parameters and training flag are restored afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn._modes import eval_mode

__all__ = ["IG_METHODS", "integrated_gradients", "quadrature"]

IG_METHODS = ("riemann", "gausslegendre")


def quadrature(steps: int, method: str = "gausslegendre") -> tuple[list[float], list[float]]:
    """Nodes ``α_k`` in ``(0, 1)`` and weights ``w_k`` (summing to 1) of the ``steps``-point
    rule ``method``."""
    if steps < 1:
        raise ValueError(f"steps must be ≥ 1, got {steps}")
    if method == "riemann":
        return [(k + 0.5) / steps for k in range(steps)], [1.0 / steps] * steps
    if method == "gausslegendre":
        x, w = np.polynomial.legendre.leggauss(steps)
        return [float(v) for v in (x + 1) / 2], [float(v) for v in w / 2]
    raise ValueError(f"method must be one of {IG_METHODS}, got {method!r}")


def _batches(data: Any) -> Iterable[tuple[Tensor, Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], Tensor):
        yield data[0], data[1]
        return
    for batch in data:
        if not (isinstance(batch, (tuple, list)) and len(batch) >= 2):
            raise ValueError("integrated_gradients needs (x, y) batches")
        yield batch[0], batch[1]


def integrated_gradients(
    model: nn.Module,
    batch_or_loader: tuple[Tensor, Tensor] | Iterable[Any],
    baseline: str | Mapping[str, Tensor] = "zeros",
    steps: int = 16,
    method: str = "gausslegendre",
    reduction: str = "mean",
) -> dict[str, Tensor]:
    """Per-weight integrated gradients ``(θ − θ₀) ⊙ ∫₀¹ ∇ℓ(θ₀ + α(θ − θ₀)) dα``.

    ``batch_or_loader`` is one ``(x, y)`` batch or an iterable of them (iterated once).
    ``baseline`` is ``"zeros"`` (``θ₀ = 0``) or a state dict holding ``θ₀`` for every trainable
    parameter (e.g. the weights before training). ``reduction`` of the per-sample losses is
    ``"mean"`` (over all samples) or ``"sum"``. Returns ``{name: Tensor[param.shape]}`` for the
    parameters with ``requires_grad``; their sum approximates ``ℓ(θ) − ℓ(θ₀)``.
    """
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    alphas, weights = quadrature(steps, method)
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    if isinstance(baseline, str):
        if baseline != "zeros":
            raise ValueError(f"baseline must be 'zeros' or a state dict, got {baseline!r}")
        base = {n: torch.zeros_like(p) for n, p in params.items()}
    else:
        missing = [n for n in params if n not in baseline]
        if missing:
            raise ValueError(f"baseline state dict lacks {len(missing)} parameter(s), e.g. "
                             f"{missing[0]!r}")
        base = {n: baseline[n].detach().to(p.device, p.dtype) for n, p in params.items()}
        bad = [n for n, p in params.items() if base[n].shape != p.shape]
        if bad:
            raise ValueError(f"baseline {bad[0]!r} has shape {tuple(base[bad[0]].shape)}, "
                             f"the model {tuple(params[bad[0]].shape)}")
    theta = {n: p.detach().clone() for n, p in params.items()}
    acc = {n: torch.zeros_like(p) for n, p in params.items()}
    names, plist = list(params), list(params.values())
    count = 0
    with eval_mode(model):
        try:
            with torch.enable_grad():
                for x, y in _batches(batch_or_loader):
                    count += x.shape[0]
                    for a, w in zip(alphas, weights):
                        with torch.no_grad():
                            for n, p in params.items():  # θ_α = θ₀ + α (θ − θ₀), in place
                                torch.lerp(base[n], theta[n], a, out=p.data)
                        loss = F.cross_entropy(model(x), y, reduction="sum")
                        grads = torch.autograd.grad(loss, plist, allow_unused=True)
                        for n, g in zip(names, grads):
                            if g is not None:
                                acc[n].add_(g, alpha=w)
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(theta[n])
    if count == 0:
        raise ValueError("integrated_gradients got no samples")
    scale = 1.0 / count if reduction == "mean" else 1.0
    return {n: acc[n].mul_(theta[n] - base[n]).mul_(scale) for n in names}
