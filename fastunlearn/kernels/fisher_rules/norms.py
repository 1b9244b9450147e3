"""Normalisation rules: ``∂ℓ_i/∂γ = Σ g·x̂`` and ``∂ℓ_i/∂β = Σ g`` over each sample's
non-channel positions.

* ``BatchNorm1d/2d/3d`` with running statistics (the driver runs the model in eval mode):
  ``x̂ = (x − μ_run)/√(σ²_run + ε)``, per sample.
* ``nn.LayerNorm`` / ``nn.GroupNorm``: ``x̂`` from the layer's own statistics, which are per
  sample too, so samples stay independent.

Rules match exact types, so subclasses are registered one by one, by qualified name (timm is
not imported here), after reading their ``forward`` (timm 1.0.x, ``timm/layers/norm.py``):

* ``timm.layers.norm.LayerNorm`` (every norm of timm's ViTs): ``F.layer_norm(x,
  normalized_shape, weight, bias, eps)`` — or timm's ``fast_layer_norm``, the same maths
  (apex's fused kernel or the autocast dtype) — so the ``nn.LayerNorm`` rule.
* ``timm.layers.norm.LayerNorm2d`` (ConvNeXt …): ``x.permute(0, 2, 3, 1)``, the same layer
  norm over the channels, permuted back — the channel layer-norm rule below.
* ``timm.layers.norm.GroupNorm`` / ``GroupNorm1``: ``F.group_norm`` (or ``fast_group_norm``,
  the same maths) — the ``nn.GroupNorm`` rule.

Not registered (different maths or not checked): the ``*Fp32`` variants (normalise in float32
and cast back), ``LayerNormExp2d``, the RMS and "simple" norms.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from fastunlearn.kernels.fisher_rules.registry import (
    _active_calls,
    _Call,
    _Scratch,
    register_fisher_rule,
)


def _affine_rule(xhat: Tensor, g: Tensor, reduce_dims: tuple[int, ...], m: nn.Module,
                 out: dict[str, Tensor]) -> None:
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    if w is not None and w.requires_grad:
        gw = (g * xhat).sum(reduce_dims) if reduce_dims else g * xhat
        out["weight"] = out["weight"] + gw if "weight" in out else gw
    if b is not None and b.requires_grad:
        gb = g.sum(reduce_dims) if reduce_dims else g.clone()  # outputs must be fresh
        out["bias"] = out["bias"] + gb if "bias" in out else gb


@register_fisher_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batchnorm_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                    scratch: _Scratch | None = None) -> dict[str, Tensor]:
    """Eval-mode batch norm: ``x̂ = (x − μ_run)/√(σ²_run + ε)`` is per sample."""
    assert isinstance(m, _BatchNorm) and m.running_mean is not None
    out: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        x, g = call.args[0][s:e], call.grad_out()[s:e]
        shape = (1, -1) + (1,) * (x.dim() - 2)
        assert m.running_var is not None
        xhat = (x - m.running_mean.view(shape)) * torch.rsqrt(m.running_var.view(shape) + m.eps)
        _affine_rule(xhat, g, tuple(range(2, x.dim())), m, out)
    return out


@register_fisher_rule(nn.LayerNorm, "timm.layers.norm.LayerNorm")
def _layernorm_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                    scratch: _Scratch | None = None) -> dict[str, Tensor]:
    assert isinstance(m, nn.LayerNorm)
    out: dict[str, Tensor] = {}
    k = len(m.normalized_shape)
    for call in _active_calls(calls):
        x, g = call.args[0][s:e], call.grad_out()[s:e]
        xhat = F.layer_norm(x, m.normalized_shape, eps=m.eps)
        _affine_rule(xhat, g, tuple(range(1, x.dim() - k)), m, out)
    return out


@register_fisher_rule("timm.layers.norm.LayerNorm2d")
def _channel_layernorm_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                            scratch: _Scratch | None = None) -> dict[str, Tensor]:
    """Layer norm over the channels of ``[B, C, H, W]`` (timm ``LayerNorm2d``: permute to
    channels-last, ``F.layer_norm`` over ``C``, permute back)."""
    assert isinstance(m, nn.LayerNorm)
    out: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        x, g = call.args[0][s:e], call.grad_out()[s:e]
        xhat = F.layer_norm(x.permute(0, 2, 3, 1), m.normalized_shape, eps=m.eps)
        _affine_rule(xhat, g.permute(0, 2, 3, 1), (1, 2), m, out)
    return out


@register_fisher_rule(nn.GroupNorm, "timm.layers.norm.GroupNorm", "timm.layers.norm.GroupNorm1")
def _groupnorm_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                    scratch: _Scratch | None = None) -> dict[str, Tensor]:
    assert isinstance(m, nn.GroupNorm)
    out: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        x, g = call.args[0][s:e], call.grad_out()[s:e]
        xhat = F.group_norm(x, m.num_groups, eps=m.eps)
        _affine_rule(xhat, g, tuple(range(2, x.dim())), m, out)
    return out
