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
    """Add ``Σ g·x̂`` (weight) and ``Σ g`` (bias) over ``reduce_dims`` to ``out``. ``xhat`` must
    be a fresh temporary: it is overwritten (``x̂ *= g`` in place, one pass and no second
    temporary; the product is the same either way round)."""
    w, b = getattr(m, "weight", None), getattr(m, "bias", None)
    if w is not None and w.requires_grad:
        gw = xhat.mul_(g)
        gw = gw.sum(reduce_dims) if reduce_dims else gw
        out["weight"] = out["weight"] + gw if "weight" in out else gw
    if b is not None and b.requires_grad:
        gb = g.sum(reduce_dims) if reduce_dims else g.clone()  # outputs must be fresh
        out["bias"] = out["bias"] + gb if "bias" in out else gb


#: Positions per channel from which :func:`batchnorm_affine_grads` uses the batch-norm backward
#: kernel; below, its per-channel loop over ``c·C`` tiny channels costs more than two
#: elementwise passes (measured on CPU: 4× slower at 2×2 maps, even at 4×4).
BN_KERNEL_MIN_POSITIONS = 16


def batchnorm_affine_grads(m: _BatchNorm, x: Tensor, g: Tensor, out: dict[str, Tensor]) -> None:
    """Add the per-sample ``Σ g·x̂`` / ``Σ g`` of an eval-mode batch norm (running statistics)
    to ``out``, from ``x``/``g`` of shape ``[c, C, ...]``, both as ``Σ (x − μ)·g`` times
    ``1/√(σ² + ε)`` (the order autograd's kernel uses). On maps of at least
    :data:`BN_KERNEL_MIN_POSITIONS` positions: one eval-mode ``native_batch_norm_backward``
    (input gradient skipped) on ``[1, c·C, ...]`` — the samples become channels, so its
    per-channel sums are the per-sample ones, with no temporaries (on large maps fresh ``x̂``
    and ``g·x̂`` tensors cost more than the sums: new pages). On smaller maps, elementwise."""
    mean, var = m.running_mean, m.running_var
    assert mean is not None and var is not None
    need_w = m.weight is not None and m.weight.requires_grad
    need_b = m.bias is not None and m.bias.requires_grad
    if not (need_w or need_b):
        return
    c, ch = x.shape[:2]
    dims = tuple(range(2, x.dim()))
    gw: Tensor | None
    gb: Tensor | None
    if x[0, 0].numel() >= BN_KERNEL_MIN_POSITIONS:
        shape = (1, c * ch, *x.shape[2:])
        _, gw, gb = torch.ops.aten.native_batch_norm_backward(
            g.reshape(shape), x.reshape(shape), None, mean.repeat(c), var.repeat(c), None,
            None, False, m.eps, [False, need_w, need_b])
    else:
        view = (1, -1) + (1,) * len(dims)
        gw = gb = None
        if need_w:
            d = (x - mean.view(view)).mul_(g)
            gw = (d.sum(dims) if dims else d).mul_(torch.rsqrt(var + m.eps))
        if need_b:
            gb = g.sum(dims) if dims else g.clone()  # outputs must be fresh
    for name, v, need in (("weight", gw, need_w), ("bias", gb, need_b)):
        if need:
            assert v is not None
            v = v.view(c, ch)
            out[name] = out[name] + v if name in out else v


@register_fisher_rule(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _batchnorm_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                    scratch: _Scratch | None = None) -> dict[str, Tensor]:
    """Eval-mode batch norm: ``x̂ = (x − μ_run)/√(σ²_run + ε)`` is per sample
    (:func:`batchnorm_affine_grads`)."""
    assert isinstance(m, _BatchNorm) and m.running_mean is not None
    out: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        batchnorm_affine_grads(m, call.args[0][s:e], call.grad_out()[s:e], out)
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
