"""``nn.Conv2d`` rule (any stride/padding/dilation/padding mode/groups).

Per-sample ``G_i = g_i unfold(a_i)ᵀ``: ``F.unfold`` the input of a chunk of samples, ``bmm``
with the output gradient (grouped ``einsum`` when ``groups > 1``); several calls of one module
add up before squaring (their patches join along the position axis). For large maps
(≥ :data:`CONV_GROUPED_MIN_POSITIONS` output positions; grouped and depthwise convs from
:data:`CONV_GROUPED_MIN_POSITIONS_GROUPS`) the same product comes from oneDNN's
``convolution_backward`` with the chunk's samples as extra groups.

Where a layer's output map is a single position (``1×1``: an ImageNet-stem ResNet's last stage
at 32 px), each sample's gradient is rank one, ``g_i a_iᵀ`` with ``a_i`` the one unfolded
column, so its Fisher is ``(w·g²)ᵀ (a²)`` — one matmul per group, no per-sample buffer
(:func:`conv_square_sum`, used by the driver's Fisher; the Linear rule's shortcut).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.kernels.fisher_rules.registry import (
    _active_calls,
    _Call,
    _cat,
    _own_trainable,
    _Scratch,
    register_fisher_rule,
)

#: Output positions per sample from which the conv rule uses oneDNN's grouped weight gradient
#: (samples as groups) instead of unfold + bmm (measured on CPU, 1 thread: faster for large
#: maps — ~20 % at 16×16 for ResNet's 3×3 convs, where the unfold copy costs ~0.8 of the bmm
#: — much slower for small maps with many channels).
CONV_GROUPED_MIN_POSITIONS = 256
#: The same for grouped / depthwise convs (``groups > 1``), where the unfold path's per-group
#: ``einsum`` is a batch of tiny matmuls: oneDNN was ~4× faster from 4×4 maps (MobileNetV2),
#: slower at 2×2 and below.
CONV_GROUPED_MIN_POSITIONS_GROUPS = 16


def _use_grouped_backward(m: nn.Conv2d, calls: list[_Call], positions: int) -> bool:
    """Whether the conv rule takes ``convolution_backward`` with samples as groups."""
    least = CONV_GROUPED_MIN_POSITIONS if m.groups == 1 else CONV_GROUPED_MIN_POSITIONS_GROUPS
    return len(calls) == 1 and positions >= least


def _conv_padded(m: nn.Conv2d, a: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """The input padded like the module pads it, and the padding left to the conv itself."""
    padding: Any = m.padding
    if isinstance(padding, str) or m.padding_mode != "zeros":
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        return F.pad(a, m._reversed_padding_repeated_twice, mode=mode), (0, 0)
    return a, (int(padding[0]), int(padding[1]))


def conv_positions(m: nn.Conv2d, calls: list[_Call]) -> int:
    """Output positions per sample over all calls that reached the loss (the unfold's ``L``)."""
    return sum(c.grad_out()[0].numel() // m.out_channels for c in _active_calls(calls))


@register_fisher_rule(nn.Conv2d)
def _conv2d_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                 scratch: _Scratch) -> dict[str, Tensor]:
    """Per-sample ``g_i unfold(a_i)ᵀ`` (several calls add up before squaring: their patches
    are concatenated along the position axis); for large maps the same product comes from
    ``convolution_backward`` with the chunk's samples as extra groups."""
    assert isinstance(m, nn.Conv2d)
    calls = _active_calls(calls)
    c, o, gr = e - s, m.out_channels, m.groups
    out: dict[str, Tensor] = {}
    w = m.weight
    if w.requires_grad:
        k = w[0].numel() * gr  # C_in·kh·kw
        positions = conv_positions(m, calls)
        if _use_grouped_backward(m, calls, positions):
            a, pad = _conv_padded(m, calls[0].args[0][s:e])
            g = calls[0].grad_out()[s:e]
            wr = w.detach()[None].expand(c, *w.shape).reshape(c * o, *w.shape[1:])
            gw = torch.ops.aten.convolution_backward(
                g.reshape(1, c * o, *g.shape[2:]), a.reshape(1, -1, *a.shape[2:]), wr, None,
                list(m.stride), list(pad), list(m.dilation), False, [0, 0], c * gr,
                [False, True, False])[1]
            out["weight"] = gw.view(c, *w.shape)
        else:
            a_u = conv_unfold(m, calls, s, e, scratch)  # [c, C_in·kh·kw, L]
            g = _cat([call.grad_out()[s:e].reshape(c, o, -1) for call in calls], 2)
            if gr == 1:
                (gw,) = scratch.views((c, o, k))
                gw = torch.bmm(g, a_u.transpose(1, 2), out=gw)
            else:
                gw = torch.einsum("bgol,bgkl->bgok", g.reshape(c, gr, o // gr, -1),
                                  a_u.reshape(c, gr, k // gr, -1))
            out["weight"] = gw.reshape(c, *w.shape)
    if m.bias is not None and m.bias.requires_grad:
        out["bias"] = sum(call.grad_out()[s:e].reshape(c, o, -1).sum(2) for call in calls)
    return out


def conv_unfold(m: nn.Conv2d, calls: list[_Call], s: int, e: int, scratch: _Scratch) -> Tensor:
    """``F.unfold`` of the (padded) inputs of samples ``s:e``, calls concatenated along the
    position axis: ``[c, C_in·kh·kw, L]``. A single call unfolds into ``scratch`` (behind the
    room the bmm output takes, so the two views never overlap)."""
    if len(calls) == 1:
        a, pad = _conv_padded(m, calls[0].args[0][s:e])
        g = calls[0].grad_out()
        c, k = e - s, m.weight[0].numel() * m.groups
        _, u = scratch.views((c, m.out_channels, k), (c, k, g[0].numel() // m.out_channels))
        return torch.ops.aten.im2col.out(a.contiguous(), list(m.kernel_size), list(m.dilation),
                                         list(pad), list(m.stride), out=u)
    us = []
    for call in calls:
        a, pad = _conv_padded(m, call.args[0][s:e])
        us.append(F.unfold(a, m.kernel_size, dilation=m.dilation, padding=pad, stride=m.stride))
    return torch.cat(us, 2)


def is_single_position(m: nn.Module, calls: list[_Call]) -> bool:
    """Whether :func:`conv_square_sum` applies: an ``nn.Conv2d`` with one call that reached
    the loss, whose output has one position per sample."""
    if not isinstance(m, nn.Conv2d):
        return False
    active = _active_calls(calls)
    return len(active) == 1 and conv_positions(m, active) == 1


def conv_square_sum(m: nn.Conv2d, calls: list[_Call], w: Tensor | None) -> dict[str, Tensor]:
    """Fisher of a conv whose output is one position per sample: per-sample gradients are
    rank one (``g_i a_iᵀ``, ``a_i`` the unfolded input column), so
    ``Σ_i w_i (g_i a_iᵀ)² = (w·g²)ᵀ (a²)`` per group — a sum of non-negative terms, like the
    Linear shortcut."""
    (call,) = _active_calls(calls)
    a, pad = _conv_padded(m, call.args[0])
    b, o, gr = a.shape[0], m.out_channels, m.groups
    cols = F.unfold(a, m.kernel_size, dilation=m.dilation, padding=pad, stride=m.stride)
    g = call.grad_out().reshape(b, o)
    g2 = g * g if w is None else g * g * w.to(g.dtype)[:, None]
    out: dict[str, Tensor] = {}
    if m.weight.requires_grad:
        a2 = cols.reshape(b, -1)
        a2 = a2 * a2  # [B, C_in·kh·kw]
        if gr == 1:
            fw = g2.t() @ a2
        else:
            fw = torch.einsum("bgo,bgk->gok", g2.reshape(b, gr, o // gr), a2.reshape(b, gr, -1))
        out["weight"] = fw.reshape(m.weight.shape)
    if m.bias is not None and m.bias.requires_grad:
        out["bias"] = g2.sum(0)
    return out


def conv_rule_numel(m: nn.Conv2d, calls: list[_Call]) -> int:
    """Entries per sample a conv rule call holds: its per-sample gradients plus the unfolded
    input (chunks are sized on this)."""
    own = sum(p.numel() for p in _own_trainable(m).values())
    return own + m.weight[0].numel() * m.groups * conv_positions(m, calls)
