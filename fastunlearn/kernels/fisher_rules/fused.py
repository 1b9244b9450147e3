"""The Fisher (not per-sample gradients) of a token ``nn.Linear`` or a ``groups=1``
``nn.Conv2d`` weight by the fused Triton kernel
:func:`fastunlearn.kernels.fisher_triton.triton_token_fisher`, which squares each sample's
``g_iᵀ a_i`` tile in registers (conv: on the unfolded input, chunk by chunk) and never stores
the per-sample gradients. The driver's switch ``fisher_fast.TOKEN_FISHER_IMPL`` picks this path
(:func:`use_fused`). It serves both layer types, so it sits beside the Linear and Conv2d rules
rather than inside one of them.
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor, nn

from fastunlearn.kernels.fisher_rules.conv import conv_rule_numel, conv_unfold
from fastunlearn.kernels.fisher_rules.registry import (
    _active_calls,
    _Call,
    _cat,
    _chunks,
    _Scratch,
    _tokens,
)

#: Values of ``fisher_fast.TOKEN_FISHER_IMPL``: ``"auto"`` — the fused kernel for CUDA tensors
#: when Triton is importable, else the torch rules; ``"triton"`` — always (CPU tensors need
#: ``TRITON_INTERPRET=1``: tests); ``"torch"`` — never.
TOKEN_FISHER_IMPLS = ("auto", "torch", "triton")
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def use_fused(m: nn.Module, impl: str) -> bool:
    """Whether the fused token Fisher takes this module's weight under switch ``impl``."""
    if impl not in TOKEN_FISHER_IMPLS:
        raise ValueError(f"TOKEN_FISHER_IMPL must be one of {TOKEN_FISHER_IMPLS}, got {impl!r}")
    if impl == "torch" or not isinstance(m, (nn.Linear, nn.Conv2d)):
        return False
    if isinstance(m, nn.Conv2d) and m.groups != 1:
        return False
    w = m.weight
    if not w.requires_grad or w.dtype not in _FUSED_DTYPES:
        return False
    return impl == "triton" or (w.is_cuda and _HAS_TRITON)


def _weighted_square_sum(v: Tensor, w: Tensor | None) -> Tensor:
    """``Σ_i w_i v_i²`` over dim 0."""
    sq = v * v
    return (sq if w is None else sq * w.to(sq.dtype).view(-1, *([1] * (v.dim() - 1)))).sum(0)


def fused_token_fisher(m: nn.Module, calls: list[_Call], w: Tensor | None, scratch: _Scratch,
                       chunk_elems: int) -> dict[str, Tensor]:
    """The Fisher (not per-sample gradients) of a token Linear / groups=1 Conv2d: weight by
    :func:`triton_token_fisher`, bias from the per-sample ``Σ_t g`` (cheap)."""
    from fastunlearn.kernels.fisher_triton import triton_token_fisher

    calls = _active_calls(calls)
    out: dict[str, Tensor] = {}
    has_bias = m.bias is not None and m.bias.requires_grad
    b = next(iter(calls[0].grads.values())).shape[0]
    if isinstance(m, nn.Linear):  # [B, T, in] / [B, T, out]; several calls join along T
        a = _cat([_tokens(c.args[0], b, m.in_features) for c in calls], 1)
        g = _cat([_tokens(c.grad_out(), b, m.out_features) for c in calls], 1)
        out["weight"] = triton_token_fisher(a, g, w)
        if has_bias:
            out["bias"] = _weighted_square_sum(g.sum(1), w)
        return out
    assert isinstance(m, nn.Conv2d)
    o = m.out_channels
    fw = torch.zeros((o, m.weight[0].numel()), dtype=torch.float32, device=m.weight.device)
    fb = torch.zeros(o, dtype=torch.float32, device=m.weight.device) if has_bias else None
    for s, e in _chunks(b, conv_rule_numel(m, calls), chunk_elems):  # the torch rule's room
        a_u = conv_unfold(m, calls, s, e, scratch)  # [c, C_in·kh·kw, L]
        g = _cat([c.grad_out()[s:e].reshape(e - s, o, -1) for c in calls], 2)  # [c, O, L]
        ws = None if w is None else w[s:e]
        fw += triton_token_fisher(a_u.transpose(1, 2), g.transpose(1, 2), ws)
        if fb is not None:
            fb += _weighted_square_sum(g.sum(2), ws)
    out["weight"] = fw.view(m.weight.shape)
    if fb is not None:
        out["bias"] = fb
    return out
