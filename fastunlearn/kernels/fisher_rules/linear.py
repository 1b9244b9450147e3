"""``nn.Linear`` rules.

* On ``[B, in]`` (called once) the Fisher needs no per-sample buffer: the per-sample gradient
  ``g_i a_iᵀ`` is rank one, so ``F_W = (w·g²)ᵀ (a²)`` — one matmul — and ``F_b = Σ_i w_i g_i²``
  (:func:`linear_square_sum`, used by the driver's Fisher directly).
* On ``[B, T, in]`` (tokens), or for a module called several times: per-sample
  ``G_i = Σ_t g_{i,t} a_{i,t}ᵀ`` by ``bmm`` for a chunk of samples (the registered rule; calls add
  up along the token axis). On CUDA the Fisher of such a weight takes the fused kernel instead
  (:mod:`fastunlearn.kernels.fisher_rules.fused`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastunlearn.kernels.fisher_rules.registry import (
    _active_calls,
    _Call,
    _cat,
    _Scratch,
    _tokens,
    register_fisher_rule,
)


@register_fisher_rule(nn.Linear)
def _linear_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                 scratch: _Scratch) -> dict[str, Tensor]:
    assert isinstance(m, nn.Linear)
    calls = _active_calls(calls)
    a = _cat([_tokens(c.args[0][s:e], e - s, m.in_features) for c in calls], 1)
    g = _cat([_tokens(c.grad_out()[s:e], e - s, m.out_features) for c in calls], 1)
    out: dict[str, Tensor] = {}
    if m.weight.requires_grad:  # [c, out, in] = Σ_t g_t a_tᵀ
        (w,) = scratch.views((e - s, m.out_features, m.in_features))
        out["weight"] = torch.bmm(g.transpose(1, 2), a, out=w)
    if m.bias is not None and m.bias.requires_grad:
        out["bias"] = g.sum(1)
    return out


def is_single_batch_call(m: nn.Module, calls: list[_Call]) -> bool:
    """Whether :func:`linear_square_sum` applies: an ``nn.Linear`` called once on ``[B, in]``."""
    return isinstance(m, nn.Linear) and len(calls) == 1 and calls[0].args[0].dim() == 2


def linear_square_sum(m: nn.Linear, calls: list[_Call], w: Tensor | None) -> dict[str, Tensor]:
    """Single call on ``[B, in]``: per-sample ``g_i a_iᵀ`` is rank one, so
    ``Σ_i w_i (g_i a_iᵀ)² = (w·g²)ᵀ (a²)`` — one matmul, no per-sample buffer."""
    a, g = calls[0].args[0], calls[0].grad_out()
    g2 = g * g if w is None else g * g * w[:, None]
    out: dict[str, Tensor] = {}
    if m.weight.requires_grad:
        out["weight"] = g2.t() @ (a * a)
    if m.bias is not None and m.bias.requires_grad:
        out["bias"] = g2.sum(0)
    return out
