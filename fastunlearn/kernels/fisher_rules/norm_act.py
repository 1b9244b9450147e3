"""timm ``BatchNormAct2d`` (MobileNet, EfficientNet …): batch norm, then its ``drop`` and
``act`` child modules, in one module that owns the batch norm's ``weight``/``bias``.

Its ``forward`` (timm 1.0.x, ``timm/layers/norm_act.py``) is ``act(drop(F.batch_norm(x,
running_mean, running_var, weight, bias, training, momentum, eps)))``. In eval mode (the
driver's) with running statistics the batch norm is per sample and ``drop`` is the identity, so
with ``z = γ·x̂ + β`` the recorded output gradient ``g = ∂L/∂act(z)`` gives
``∂L/∂z = act'(z)·g`` and the usual ``∂ℓ_i/∂γ = Σ (∂L/∂z)·x̂``, ``∂ℓ_i/∂β = Σ ∂L/∂z``.
``z`` is recomputed with the forward's own call (``F.batch_norm`` on the recorded input), and
``act'(z)·g`` is the activation's autograd backward op (``threshold_backward``,
``hardtanh_backward``, ``silu_backward`` …), so the mask and the derivative are the ones the
model's own backward uses.

The rule is registered with ``non_leaf=True`` (the driver lets the module own its parameters
although it has children) and an ``applies`` check: an activation or ``drop`` not in the tables
below keeps the old path (the whole-model vmap fallback), as does a layer without running
statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.kernels.fisher_rules.norms import batchnorm_affine_grads
from fastunlearn.kernels.fisher_rules.registry import (
    _active_calls,
    _Call,
    _qualname,
    _Scratch,
    register_fisher_rule,
)

_aten = torch.ops.aten
#: ``act'(z)·g`` by the exact activation type (or timm's qualified name):
#: ``fn(act_module, z, g)``. Each is the op autograd runs for that activation's backward.
ACT_GRADS: dict[type[nn.Module] | str, Callable[[nn.Module, Tensor, Tensor], Tensor]] = {
    nn.Identity: lambda a, z, g: g,
    nn.ReLU: lambda a, z, g: _aten.threshold_backward(g, z, 0),
    nn.ReLU6: lambda a, z, g: _aten.hardtanh_backward(g, z, 0.0, 6.0),
    nn.LeakyReLU: lambda a, z, g: _aten.leaky_relu_backward(g, z, a.negative_slope, False),
    nn.ELU: lambda a, z, g: _aten.elu_backward(g, a.alpha, 1, 1, False, z),
    nn.SiLU: lambda a, z, g: _aten.silu_backward(g, z),
    nn.GELU: lambda a, z, g: _aten.gelu_backward(g, z, approximate=a.approximate),
    nn.Hardswish: lambda a, z, g: _aten.hardswish_backward(g, z),
    nn.Hardsigmoid: lambda a, z, g: _aten.hardsigmoid_backward(g, z),
    nn.Sigmoid: lambda a, z, g: _aten.sigmoid_backward(g, torch.sigmoid(z)),
    nn.Tanh: lambda a, z, g: _aten.tanh_backward(g, torch.tanh(z)),
    # timm.layers.activations (forward read): F.gelu(x), F.gelu(x, approximate="tanh"),
    # x.sigmoid(), x.tanh() (in place or not)
    "timm.layers.activations.GELU": lambda a, z, g: _aten.gelu_backward(g, z),
    "timm.layers.activations.GELUTanh":
        lambda a, z, g: _aten.gelu_backward(g, z, approximate="tanh"),
    "timm.layers.activations.Sigmoid": lambda a, z, g: _aten.sigmoid_backward(g, torch.sigmoid(z)),
    "timm.layers.activations.Tanh": lambda a, z, g: _aten.tanh_backward(g, torch.tanh(z)),
}
#: ``drop`` modules that are the identity in eval mode.
EVAL_IDENTITY_DROPS: tuple[type[nn.Module] | str, ...] = (
    nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout,
    nn.FeatureAlphaDropout,
    "timm.layers.drop.DropBlock2d",  # forward: ``if not self.training …: return x``
)


def _lookup(table: dict | tuple, m: nn.Module | None) -> type[nn.Module] | str | None:
    if m is None:
        return None
    t = type(m)
    for key in (t, _qualname(t)):
        if key in table:
            return key
    return None


def act_grad_fn(m: nn.Module) -> Callable[[nn.Module, Tensor, Tensor], Tensor] | None:
    """``fn(act, z, g) -> act'(z)·g`` for ``m``'s activation, or ``None`` if not known."""
    key = _lookup(ACT_GRADS, getattr(m, "act", None))
    return None if key is None else ACT_GRADS[key]


def bn_act_supported(m: nn.Module) -> bool:
    """Whether the ``BatchNormAct2d`` rule covers ``m``: running statistics, a known
    activation and an eval-identity ``drop``; its only children are ``drop`` and ``act``."""
    children = dict(m.named_children())
    return (getattr(m, "running_mean", None) is not None
            and getattr(m, "running_var", None) is not None
            and set(children) <= {"drop", "act"}
            and act_grad_fn(m) is not None
            and _lookup(EVAL_IDENTITY_DROPS, getattr(m, "drop", None)) is not None)


@register_fisher_rule("timm.layers.norm_act.BatchNormAct2d", applies=bn_act_supported,
                      non_leaf=True)
def _bn_act_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                 scratch: _Scratch | None = None) -> dict[str, Tensor]:
    """Eval-mode ``act(drop(BN(x)))``: ``∂L/∂z = act'(z)·g`` at ``z = BN(x)``, then the batch
    norm rule (``Σ ∂L/∂z · x̂``, ``Σ ∂L/∂z``)."""
    assert isinstance(m, nn.BatchNorm2d)
    mean, var = m.running_mean, m.running_var
    assert mean is not None and var is not None
    act = m.act
    grad_fn = act_grad_fn(m)
    assert grad_fn is not None
    w = None if m.weight is None else m.weight.detach()
    b = None if m.bias is None else m.bias.detach()
    out: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        x, g = call.args[0][s:e], call.grad_out()[s:e]
        if not isinstance(act, nn.Identity):
            z = F.batch_norm(x, mean, var, w, b, False, 0.0, m.eps)  # the forward's call
            g = grad_fn(act, z, g)
        batchnorm_affine_grads(m, x, g, out)
    return out
