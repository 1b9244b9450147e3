"""Per-sample information measures on predictive distributions.

All functions take probability tensors ``[N, C]`` (rows sum to 1), compute in float64 with the
convention ``0 · log 0 = 0`` and return one value per row (``[N]``, float64):

- :func:`entropy` — ``H(p) = −Σ p log p`` (nats unless ``base`` is given);
- :func:`kl_divergence` — ``KL(p‖q) = Σ p log(p/q)``, the same direction and value as
  ``scipy.stats.entropy(p, q)``;
- :func:`js_divergence` — ``JS(p‖q) = ½ KL(p‖m) + ½ KL(q‖m)`` with ``m = ½(p + q)``, log base 2
  by default (so it lies in [0, 1]); it equals ``scipy.spatial.distance.jensenshannon(p, q,
  base=2) ** 2`` (scipy returns the *distance*, the square root).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def _check(p: Tensor, name: str) -> Tensor:
    if p.dim() != 2:
        raise ValueError(f"{name} must be a [N, C] probability tensor, got shape {tuple(p.shape)}")
    return p.detach().to(torch.float64)


def _same_shape(p: Tensor, q: Tensor) -> None:
    if p.shape != q.shape:
        raise ValueError(
            f"p and q must have the same shape, got {tuple(p.shape)} and {tuple(q.shape)}"
        )


def _scale(base: float | None) -> float:
    if base is None:
        return 1.0
    if not (base > 0 and base != 1 and math.isfinite(base)):
        raise ValueError(f"log base must be positive and not 1, got {base}")
    return 1.0 / math.log(base)


def entropy(p: Tensor, *, base: float | None = None) -> Tensor:
    """Shannon entropy of each row of ``p`` (nats; bits with ``base=2``)."""
    p = _check(p, "p")
    return -torch.special.xlogy(p, p).sum(1) * _scale(base)


def kl_divergence(p: Tensor, q: Tensor, *, base: float | None = None) -> Tensor:
    """``KL(p‖q)`` per row (nats by default); ``inf`` where q = 0 < p."""
    p, q = _check(p, "p"), _check(q, "q")
    _same_shape(p, q)
    return (torch.special.xlogy(p, p) - torch.special.xlogy(p, q)).sum(1) * _scale(base)


def js_divergence(p: Tensor, q: Tensor, *, base: float = 2.0) -> Tensor:
    """Jensen–Shannon divergence per row, log base 2 by default (in [0, 1]); symmetric."""
    p, q = _check(p, "p"), _check(q, "q")
    _same_shape(p, q)
    m = 0.5 * (p + q)
    js = 0.5 * kl_divergence(p, m, base=base) + 0.5 * kl_divergence(q, m, base=base)
    return js.clamp_min(0.0)  # rounding can give -1e-17 for identical rows
