"""Fast diagonal Fisher without a ``B × |θ|`` per-sample-gradient buffer.

:func:`fast_fisher_diagonal` ``(model, x, y, loss="ce", weights=None) -> {name: Tensor}``
computes ``F = Σ_i w_i (∂ℓ_i/∂θ)²`` (``w_i = 1`` by default) with ONE forward and ONE backward
of the summed loss plus a cheap per-layer contraction, instead of materialising per-sample
gradients for the whole model (the references in :mod:`fastunlearn.kernels.fisher`).

How it works
------------
Forward hooks record each parameterised module's input ``a``; tensor hooks on its output
record ``g = ∂L/∂out`` of the summed loss ``L = Σ_i ℓ_i``. The model runs in **eval mode**, so
sample ``i``'s output depends on sample ``i`` alone and row ``i`` of ``g`` is exactly
``∂ℓ_i/∂out_i``. The backward asks autograd only for the input gradient (``inputs=[x]``),
so the ordinary weight gradients — which the rules below replace — are never computed.
Per-layer rules (one small function each, registered with :func:`register_fisher_rule`):

* ``nn.Linear`` on ``[B, in]`` (called once): ``F_W = (g²)ᵀ (a²)`` — one matmul, since the
  per-sample gradient ``g_i a_iᵀ`` is rank one; ``F_b = Σ_i g_i²``.
* ``nn.Linear`` on ``[B, T, in]`` (tokens; or a module called several times): per-sample
  ``G_i = g_iᵀ a_i`` by ``bmm`` for a chunk of samples, squared and summed into ``F``.
* ``nn.Conv2d`` (any stride/padding/dilation/padding mode/groups): ``F.unfold`` the input of a
  chunk, per-sample ``g_i unfold(a_i)ᵀ`` (grouped ``einsum`` when ``groups > 1``), square, sum.
* ``BatchNorm`` with running statistics (eval): ``∂ℓ_i/∂γ = Σ_spatial g·x̂``,
  ``∂ℓ_i/∂β = Σ_spatial g`` with ``x̂`` from the running mean/variance.
* ``nn.LayerNorm`` / ``nn.GroupNorm``: the same with ``x̂`` from the layer's own statistics
  (per sample, so samples stay independent).
* Any other module that owns parameters: per-layer ``torch.func.vmap`` of ``vjp`` of that
  module's ``functional_call`` on one sample's input with that sample's ``g``.
* Parameters owned by no leaf module (ViT ``cls_token``/``pos_embed``): where the owner's type
  is registered with :func:`register_batch_broadcast` (timm ``VisionTransformer`` is), the
  ``[1, ...]`` parameter is replaced for the pass by a ``[B, ...]`` copy whose row ``i`` only
  sample ``i`` uses (``expand``/broadcast), so the same backward yields its per-sample
  gradients for free. Otherwise, and for parameters shared by several modules (tied
  weights): per-sample gradients of the whole model restricted to those parameters with
  ``torch.func.vmap(grad(...))`` (chunked), then squared and summed — correct, but it costs
  a vmapped forward+backward.

Chunks are sized so no rule ever holds more than ``chunk_elems`` per-sample gradient entries,
so extra memory is bounded by ``chunk_elems`` plus the recorded activations, whatever ``B``.
For the Fisher they are further capped at :data:`FISHER_CACHE_ELEMS` (cache-sized), and a
layer called once is squared inside the backward, as soon as its output gradient arrives
(the per-sample gradients, the output gradient and the chunk never leave the CPU cache).

On CUDA (when Triton is importable) the Fisher of a token ``nn.Linear`` and of a
``groups=1`` ``nn.Conv2d`` weight skips the per-sample gradients altogether: the fused kernel
:func:`fastunlearn.kernels.fisher_triton.triton_token_fisher` squares each sample's
``g_iᵀ a_i`` tile in registers (conv: on the unfolded input, chunk by chunk). The module
switch :data:`TOKEN_FISHER_IMPL` (``"auto"`` / ``"triton"`` / ``"torch"``) picks the path;
``"triton"`` on CPU needs ``TRITON_INTERPRET=1`` (tests).

Train-mode batch norm couples samples (the batch statistics make ``out_i`` depend on every
``x_j``), so per-sample gradients of the batch graph are not the gradients of ``ℓ_i`` alone.
Like the references, this function therefore always runs the model in eval mode (running
statistics, dropout off) and restores its training flag afterwards; a batch-norm layer
without running statistics (``track_running_stats=False``) normalises with batch statistics
even in eval mode, and :func:`fast_fisher_supported` returns ``False`` for such models so the
caller can use a reference path instead (:func:`fast_fisher_diagonal` raises ``ValueError``).
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vjp, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten, tree_map

from fastunlearn._modes import eval_mode

__all__ = [
    "DEFAULT_CHUNK_ELEMS",
    "fast_fisher_diagonal",
    "fast_fisher_supported",
    "fast_per_sample_grads",
    "register_batch_broadcast",
    "register_fisher_rule",
]

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]
#: Largest number of per-sample gradient entries a rule holds at once (64 Mi floats = 256 MB).
DEFAULT_CHUNK_ELEMS = 1 << 26
#: Per-sample gradient entries one rule call of :func:`fast_fisher_diagonal` produces at most
#: (1 Mi floats = 4 MB, also capped by ``chunk_elems``): small enough to stay in the CPU cache
#: between the matmul that writes them and the squaring that reads them. With 256 MB chunks
#: the squaring streamed ~1.4 GB through memory on ResNet-18 (B=32): ~0.3 of a fwd+bwd.
FISHER_CACHE_ELEMS = 1 << 20
#: Per-sample gradients of at least this many entries per sample are squared into the Fisher
#: one sample at a time with ``addcmul_`` (one pass, no temporary); smaller ones in one
#: ``mul_`` + ``sum(0)`` (fewer, larger ops).
ADDCMUL_MIN_ELEMS = 1 << 12


@dataclass
class _Call:
    """One call of a module: its positional/keyword inputs and the gradients of its outputs."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    versions: list[tuple[Tensor, int]]
    n_out: int = 0
    grads: dict[int, Tensor] = field(default_factory=dict)

    def check_unchanged(self, module: nn.Module) -> None:
        for t, v in self.versions:
            if t._version != v:
                raise RuntimeError(f"the input of {type(module).__name__} was modified in place "
                                   "after the module used it; fast Fisher cannot use it")

    def grad_out(self, k: int = 0) -> Tensor | None:
        return self.grads.get(k)


class _Scratch:
    """One flat buffer reused by every rule call of a pass. Fresh multi-megabyte tensors cost
    page faults on every allocation (glibc returns them to the OS), which on CPU took longer
    than the matmuls themselves; views of one buffer are faulted in once."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.buf = torch.empty(0, dtype=dtype, device=device)

    def views(self, *shapes: tuple[int, ...]) -> list[Tensor]:
        """Disjoint uninitialised views; valid until the next call."""
        sizes = [math.prod(sh) for sh in shapes]
        if sum(sizes) > self.buf.numel():
            self.buf = torch.empty(sum(sizes), dtype=self.buf.dtype, device=self.buf.device)
        out, o = [], 0
        for sh, n in zip(shapes, sizes):
            out.append(self.buf[o : o + n].view(sh))
            o += n
        return out


# A rule returns the per-sample gradients of samples [s, e) for the module's own parameters,
# ``{local_name: Tensor[e - s, *shape]}``, given all calls of the module in one forward pass.
# The returned tensors are temporaries (fresh, or views of ``scratch``, never aliases of a
# recorded input or gradient): consumers may overwrite them, and they are invalid after the
# next rule call.
Rule = Callable[[nn.Module, list[_Call], int, int, _Scratch], dict[str, Tensor]]
_RULES: dict[type[nn.Module], Rule] = {}


def register_fisher_rule(*types: type[nn.Module]) -> Callable[[Rule], Rule]:
    """Register ``rule(module, calls, start, end) -> {param_name: Tensor[end - start, ...]}``
    (per-sample gradients of samples ``start:end``) for exact module types (not subclasses)."""

    def deco(fn: Rule) -> Rule:
        for t in types:
            _RULES[t] = fn
        return fn

    return deco


def _own_trainable(m: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in m.named_parameters(recurse=False) if p.requires_grad}


def _active_calls(calls: list[_Call]) -> list[_Call]:
    """Calls whose output reached the loss (a call without gradients contributes zero)."""
    return [c for c in calls if c.grads]


def _tokens(t: Tensor, b: int, last: int) -> Tensor:
    """``[B, ..., last]`` → ``[B, T, last]``."""
    return t.reshape(b, -1, last)


# --------------------------------------------------------------------------- linear ----------
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


def _cat(ts: list[Tensor], dim: int) -> Tensor:
    return ts[0] if len(ts) == 1 else torch.cat(ts, dim)


def _linear_square_sum(m: nn.Linear, calls: list[_Call], w: Tensor | None) -> dict[str, Tensor]:
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


# --------------------------------------------------------------------------- conv2d ----------
#: Output positions per sample from which the conv rule uses oneDNN's grouped weight gradient
#: (samples as groups) instead of unfold + bmm (measured on CPU: faster for large maps, much
#: slower for small maps with many channels).
CONV_GROUPED_MIN_POSITIONS = 512


def _conv_padded(m: nn.Conv2d, a: Tensor) -> tuple[Tensor, tuple[int, int]]:
    """The input padded like the module pads it, and the padding left to the conv itself."""
    padding: Any = m.padding
    if isinstance(padding, str) or m.padding_mode != "zeros":
        mode = "constant" if m.padding_mode == "zeros" else m.padding_mode
        return F.pad(a, m._reversed_padding_repeated_twice, mode=mode), (0, 0)
    return a, (int(padding[0]), int(padding[1]))


def _conv_positions(m: nn.Conv2d, calls: list[_Call]) -> int:
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
        positions = _conv_positions(m, calls)
        if len(calls) == 1 and positions >= CONV_GROUPED_MIN_POSITIONS:
            a, pad = _conv_padded(m, calls[0].args[0][s:e])
            g = calls[0].grad_out()[s:e]
            wr = w.detach()[None].expand(c, *w.shape).reshape(c * o, *w.shape[1:])
            gw = torch.ops.aten.convolution_backward(
                g.reshape(1, c * o, *g.shape[2:]), a.reshape(1, -1, *a.shape[2:]), wr, None,
                list(m.stride), list(pad), list(m.dilation), False, [0, 0], c * gr,
                [False, True, False])[1]
            out["weight"] = gw.view(c, *w.shape)
        else:
            a_u = _conv_unfold(m, calls, s, e, scratch)  # [c, C_in·kh·kw, L]
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


def _conv_unfold(m: nn.Conv2d, calls: list[_Call], s: int, e: int, scratch: _Scratch) -> Tensor:
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


# --------------------------------------------------------------------------- fused -----------
#: Fisher of token-Linear and groups=1 Conv2d weights: ``"auto"`` — the fused Triton kernel
#: for CUDA tensors when Triton is importable, else the torch rules; ``"triton"`` — always
#: (CPU tensors need ``TRITON_INTERPRET=1``: tests); ``"torch"`` — never.
TOKEN_FISHER_IMPL = "auto"
TOKEN_FISHER_IMPLS = ("auto", "torch", "triton")
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_FUSED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _use_fused(m: nn.Module) -> bool:
    """Whether the fused token Fisher takes this module's weight (see TOKEN_FISHER_IMPL)."""
    impl = TOKEN_FISHER_IMPL
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


def _fused_token_fisher(m: nn.Module, calls: list[_Call], w: Tensor | None, scratch: _Scratch,
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
    o, k = m.out_channels, m.weight[0].numel()
    fw = torch.zeros((o, k), dtype=torch.float32, device=m.weight.device)
    fb = torch.zeros(o, dtype=torch.float32, device=m.weight.device) if has_bias else None
    numel = sum(p.numel() for p in _own_trainable(m).values()) + k * _conv_positions(m, calls)
    for s, e in _chunks(b, numel, chunk_elems):  # same room as the torch rule's unfold
        a_u = _conv_unfold(m, calls, s, e, scratch)  # [c, C_in·kh·kw, L]
        g = _cat([c.grad_out()[s:e].reshape(e - s, o, -1) for c in calls], 2)  # [c, O, L]
        ws = None if w is None else w[s:e]
        fw += triton_token_fisher(a_u.transpose(1, 2), g.transpose(1, 2), ws)
        if fb is not None:
            fb += _weighted_square_sum(g.sum(2), ws)
    out["weight"] = fw.view(m.weight.shape)
    if fb is not None:
        out["bias"] = fb
    return out


# --------------------------------------------------------------------------- norms -----------
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


@register_fisher_rule(nn.LayerNorm)
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


@register_fisher_rule(nn.GroupNorm)
def _groupnorm_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
                    scratch: _Scratch | None = None) -> dict[str, Tensor]:
    assert isinstance(m, nn.GroupNorm)
    out: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        x, g = call.args[0][s:e], call.grad_out()[s:e]
        xhat = F.group_norm(x, m.num_groups, eps=m.eps)
        _affine_rule(xhat, g, tuple(range(2, x.dim())), m, out)
    return out


# --------------------------------------------------------------------------- fallback --------
def _vmap_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
               scratch: _Scratch | None = None) -> dict[str, Tensor]:
    """Any module: ``vmap`` over samples of ``vjp`` of the module's own ``functional_call``
    (its direct parameters only) on one sample's input with that sample's output gradient."""
    params = {n: p.detach() for n, p in _own_trainable(m).items()}
    fixed = {n: p.detach() for n, p in m.named_parameters(recurse=False) if not p.requires_grad}
    fixed.update(dict(m.named_buffers(recurse=False)))
    b = None
    total: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        leaves, spec = tree_flatten((call.args, call.kwargs))
        b = b or next(t.shape[0] for t in call.grads.values())
        mapped = [i for i, t in enumerate(leaves)
                  if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == b]
        cot = [call.grads.get(k) for k in range(call.n_out)]

        def one(p: dict[str, Tensor], xs: list[Tensor], gs: list[Tensor | None],
                leaves: list[Any] = leaves, mapped: list[int] = mapped, spec: Any = spec,
                ) -> dict[str, Tensor]:
            vals = list(leaves)
            for i, t in zip(mapped, xs):
                vals[i] = t.unsqueeze(0)
            args, kwargs = spec.unflatten(vals)

            def fwd(q: dict[str, Tensor]) -> tuple[Tensor, ...]:
                outs = functional_call(m, (q, fixed), tuple(args), kwargs)
                return tuple(o for o in tree_flatten(outs)[0] if isinstance(o, Tensor))

            outs, pull = vjp(fwd, p)
            cots = tuple(torch.zeros_like(o) if gk is None else gk.unsqueeze(0)
                         for o, gk in zip(outs, gs))
            return pull(cots)[0]

        xs = [leaves[i][s:e] for i in mapped]
        gs = [None if gk is None else gk[s:e] for gk in cot]
        part = vmap(one, in_dims=(None, 0, 0))(params, xs, gs)
        for n, v in part.items():
            total[n] = total[n] + v if n in total else v
    return total


# --------------------------------------------------------------------------- broadcast -------
BroadcastNames = Callable[[nn.Module], tuple[str, ...]]
_BROADCAST: dict[str, BroadcastNames] = {}


def _qualname(t: type) -> str:
    return f"{t.__module__}.{t.__qualname__}"


def register_batch_broadcast(owner: type[nn.Module] | str, names: BroadcastNames) -> None:
    """Declare that modules of type ``owner`` (a class or its ``module.QualName``) use their
    direct parameters ``names(module)`` — each of shape ``[1, ...]`` — only by broadcasting or
    ``expand``-ing dim 0 over the batch, so a ``[B, ...]`` stand-in gives per-sample gradients
    in the ordinary backward. A wrong declaration gives wrong Fishers: declare only what the
    owner's ``forward`` visibly does (the tests compare such models with the references)."""
    _BROADCAST[owner if isinstance(owner, str) else _qualname(owner)] = names


def _vit_broadcast(m: nn.Module) -> tuple[str, ...]:
    # timm VisionTransformer._pos_embed: ``cls_token.expand(B, -1, -1)``, ``x + pos_embed``
    # (resampling under dynamic_img_size would mix rows: not declared then).
    names = ("cls_token", "reg_token")
    return names if getattr(m, "dynamic_img_size", False) else (*names, "pos_embed")


register_batch_broadcast("timm.models.vision_transformer.VisionTransformer", _vit_broadcast)


def _broadcast_params(model: nn.Module, rest: dict[str, Tensor]) -> dict[str, Tensor]:
    """The parameters in ``rest`` that a registered owner only broadcasts over the batch."""
    ids = {id(p): n for n, p in rest.items()}
    out: dict[str, Tensor] = {}
    for m in model.modules():
        fn = _BROADCAST.get(_qualname(type(m)))
        if fn is None:
            continue
        for local in fn(m):
            p = m._parameters.get(local)
            if p is not None and id(p) in ids and p.dim() > 0 and p.shape[0] == 1:
                out[ids[id(p)]] = p
    return out


# --------------------------------------------------------------------------- driver ----------
def _sum_loss_fn(loss: str | LossFn) -> LossFn:
    """``L(logits, y) = Σ_i ℓ_i`` where ``ℓ_i = loss(logits[i:i+1], y[i:i+1])``."""
    if callable(loss):
        fn = loss
        return lambda z, t: vmap(lambda zi, ti: fn(zi[None], ti[None]))(z, t).sum()
    if loss == "ce":
        return lambda z, t: F.cross_entropy(z, t, reduction="sum")
    raise ValueError(f"loss must be 'ce' or a callable (logits, y) -> scalar, got {loss!r}")


def fast_fisher_supported(model: nn.Module) -> bool:
    """``False`` where samples are coupled even in eval mode (batch norm without running
    statistics), or where a module reparametrises its weights in a forward pre-hook
    (``torch.nn.utils.prune``'s ``weight_orig`` × mask, weight norm …): the per-layer rules
    assume the module's own parameters are what its forward uses. Such models take the
    reference path."""
    for m in model.modules():
        if isinstance(m, _BatchNorm) and m.running_mean is None:
            return False
        if m._forward_pre_hooks or any(n.endswith("_orig") for n, _ in
                                       m.named_parameters(recurse=False)):
            return False
    return True


class _Recorder:
    """Hooks that record inputs and output gradients of the modules in ``owners``.

    With ``on_grad``, a module called once with one tensor output is handed to
    ``on_grad(module, calls)`` as soon as its output gradient arrives in the backward; where
    that returns ``True`` (done), its gradient and inputs are dropped right after: the
    gradient is still in cache, and its memory goes back to the allocator for the rest of the
    backward instead of piling up (on CPU, keeping every layer's gradient alive cost ~5 % of
    a fwd+bwd in fresh-page faults).
    Such modules land in ``done``; the others are left for the caller."""

    def __init__(self, owners: list[nn.Module],
                 on_grad: Callable[[nn.Module, list[_Call]], bool] | None = None) -> None:
        self.calls: dict[nn.Module, list[_Call]] = {m: [] for m in owners}
        self.sources: list[nn.Module] = []  # modules none of whose inputs need grad
        self.on_grad = on_grad
        self.done: set[nn.Module] = set()
        self.handles = [m.register_forward_hook(self._hook, with_kwargs=True) for m in owners]

    def _hook(self, m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any],
              output: Any) -> None:
        leaves = tree_flatten((args, kwargs))[0]
        tensors = [t for t in leaves if isinstance(t, Tensor)]
        args, kwargs = tree_map(lambda t: t.detach() if isinstance(t, Tensor) else t,
                                (args, kwargs))
        call = _Call(args, kwargs, [(t, t._version) for t in tensors])
        if not any(t.requires_grad for t in tensors) and m not in self.sources:
            self.sources.append(m)
        outs = [o for o in tree_flatten(output)[0] if isinstance(o, Tensor)]
        call.n_out = len(outs)
        for k, o in enumerate(outs):
            if o.requires_grad:
                o.register_hook(lambda gk, k=k, call=call, m=m: self._grad(m, call, k, gk))
        self.calls[m].append(call)

    def _grad(self, m: nn.Module, call: _Call, k: int, gk: Tensor) -> None:
        call.grads[k] = gk.detach()
        calls = self.calls[m]
        if self.on_grad is None or call.n_out != 1 or len(calls) != 1 or m in self.done:
            return
        with torch.no_grad():
            if not self.on_grad(m, calls):
                return
        self.done.add(m)
        call.grads.clear()
        call.args, call.kwargs = (), {}

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _ownership(model: nn.Module) -> tuple[dict[nn.Module, dict[str, str]], dict[str, Tensor]]:
    """``({leaf module: {local name: global name}}, {global name: param})`` for parameters
    owned by exactly one leaf module; the second dict holds the rest (no leaf owner, or shared:
    those go to the whole-model fallback)."""
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    owners: dict[int, list[tuple[nn.Module, str, bool]]] = {}
    for m in model.modules():
        leaf = next(m.children(), None) is None
        for local, p in m.named_parameters(recurse=False):
            if id(p) in names:
                owners.setdefault(id(p), []).append((m, local, leaf))
    by_module: dict[nn.Module, dict[str, str]] = {}
    rest: dict[str, Tensor] = {}
    params = dict(model.named_parameters())
    for pid, name in names.items():
        own = owners.get(pid, [])
        if len(own) == 1 and own[0][2]:
            by_module.setdefault(own[0][0], {})[own[0][1]] = name
        else:
            rest[name] = params[name]
    return by_module, rest


def _chunks(b: int, numel: int, chunk_elems: int) -> list[tuple[int, int]]:
    step = max(1, min(b, chunk_elems // max(numel, 1)))
    return [(s, min(b, s + step)) for s in range(0, b, step)]


def _whole_model_grads(model: nn.Module, rest: dict[str, Tensor], x: Tensor, y: Tensor,
                       loss: LossFn, chunk_elems: int) -> list[tuple[int, int, dict[str, Tensor]]]:
    """Per-sample gradients of ``rest`` (and only those) via ``vmap(grad)`` on the whole
    model, in chunks of samples."""
    params = {n: p.detach() for n, p in rest.items()}
    others = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    buffers = dict(model.named_buffers())

    def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        return loss(functional_call(model, (p, others, buffers), (xi[None],)), yi[None])

    numel = sum(p.numel() for p in params.values())
    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    return [(s, e, per_sample(params, x[s:e], y[s:e]))
            for s, e in _chunks(x.shape[0], numel, chunk_elems)]


def _per_sample_loss(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    return lambda z, t: F.cross_entropy(z, t, reduction="sum")


def _run(model: nn.Module, x: Tensor, y: Tensor, loss: str | LossFn, chunk_elems: int,
         consume: Callable[[str, int, int, Tensor], None],
         square_sum: Callable[[nn.Module, list[_Call], dict[str, str], _Scratch], bool],
         rule_chunk_elems: int | None = None, stream: bool = True) -> None:
    """Forward + input-only backward with hooks, then feed per-sample gradients of every chunk
    to ``consume(name, start, end, grads)`` (``square_sum`` may take a layer whole and return
    ``True``: then it has accumulated that layer's Fisher itself). Rules get chunks of at most
    ``rule_chunk_elems`` (default ``chunk_elems``) entries; with ``stream`` a layer with a rule
    that is called once is processed inside the backward (see :class:`_Recorder`)."""
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [B, ...], got shape {tuple(x.shape)}")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")
    if chunk_elems < 1:
        raise ValueError(f"chunk_elems must be ≥ 1, got {chunk_elems}")
    if not fast_fisher_supported(model):
        raise ValueError("fast Fisher needs batch norm with running statistics "
                         "(track_running_stats=False couples samples); use the reference")
    sum_loss = _sum_loss_fn(loss)
    by_module, rest = _ownership(model)
    if not by_module and not rest:
        raise ValueError("model has no parameters with requires_grad=True")
    with eval_mode(model):
        b = x.shape[0]
        stand_in = {n: p.detach().expand(b, *p.shape[1:]).clone().requires_grad_(True)
                    for n, p in _broadcast_params(model, rest).items()}
        rest = {n: p for n, p in rest.items() if n not in stand_in}
        if by_module or stand_in:
            first = next(iter(by_module), model)
            scratch = _Scratch(next(first.parameters()).dtype, next(first.parameters()).device)

            def process(m: nn.Module, calls: list[_Call]) -> None:
                for c in calls:
                    c.check_unchanged(m)
                if not _active_calls(calls):
                    return  # output never reached the loss: zero gradient
                names = by_module[m]
                if square_sum(m, calls, names, scratch):
                    return
                rule = _RULES.get(type(m), _vmap_rule)
                numel = sum(p.numel() for p in _own_trainable(m).values())
                if isinstance(m, nn.Conv2d):  # room for the unfolded input too
                    numel += m.weight[0].numel() * m.groups * _conv_positions(m, calls)
                for s, e in _chunks(b, numel, rule_chunk_elems or chunk_elems):
                    for local, gs in rule(m, calls, s, e, scratch).items():
                        consume(names[local], s, e, gs)

            def process_now(m: nn.Module, calls: list[_Call]) -> bool:
                # the vmap fallback stays after the backward (functorch inside an autograd
                # hook loses track of its tensors)
                if type(m) not in _RULES:
                    return False
                process(m, calls)
                return True

            rec = _Recorder(list(by_module), process_now if stream else None)
            try:
                with torch.enable_grad():
                    xin = x.detach().requires_grad_(True) if x.is_floating_point() else x
                    logits = (functional_call(model, stand_in, (xin,), strict=False)
                              if stand_in else model(xin))
                    total = sum_loss(logits, y)
                    inputs = [xin] if xin.requires_grad else []
                    inputs += list(stand_in.values()) + list(rest.values())
                    inputs += [p for m in rec.sources for p in _own_trainable(m).values()]
                    grads = (torch.autograd.grad(total, inputs, allow_unused=True)
                             if total.requires_grad and inputs else [None] * len(inputs))
            finally:
                rec.remove()
            offset = int(xin.requires_grad)
            for (n, p), gp in zip(stand_in.items(), grads[offset:]):
                if gp is not None:
                    # a copy: autograd may hand the same tensor to other branches
                    consume(n, 0, b, gp.reshape(b, 1, *p.shape[1:]).clone())
            for m in by_module:
                if m not in rec.done:
                    process(m, rec.calls[m])
        if rest:
            for s, e, gs in _whole_model_grads(model, rest, x, y, _per_sample_loss(loss),
                                               chunk_elems):
                for n, g in gs.items():
                    consume(n, s, e, g)


def fast_fisher_diagonal(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    loss: str | LossFn = "ce",
    weights: Tensor | None = None,
    chunk_elems: int = DEFAULT_CHUNK_ELEMS,
) -> dict[str, Tensor]:
    """``F = Σ_i w_i (∂ℓ_i/∂θ)²`` for one batch: ``{name: Tensor[param.shape]}``.

    Same conventions as :func:`fastunlearn.kernels.fisher.fisher_diagonal` (sum over samples,
    sum-reduced per-sample loss ``ℓ_i``, eval mode, trainable parameters only, keyed by
    ``named_parameters`` names). ``weights`` (``[B]``, default all ones) weights each sample's
    squared gradient — e.g. class probabilities for the exact expected Fisher. A callable
    ``loss(logits, y)`` is applied per sample (through ``vmap``), like the references.
    Raises ``ValueError`` where :func:`fast_fisher_supported` is ``False``.
    """
    if weights is not None and weights.shape != (x.shape[0],):
        raise ValueError(f"weights must have shape [{x.shape[0]}], got {tuple(weights.shape)}")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    acc = {n: torch.zeros_like(p) for n, p in params.items()}

    wl = None if weights is None else weights.detach().double().cpu().tolist()

    def consume(name: str, s: int, e: int, gs: Tensor) -> None:
        a = acc[name]
        if gs[0].numel() >= ADDCMUL_MIN_ELEMS:
            for i in range(e - s):
                a.addcmul_(gs[i], gs[i], value=1.0 if wl is None else wl[s + i])
            return
        sq = gs.mul_(gs)  # rule outputs are temporaries: square in place
        if weights is not None:
            sq.mul_(weights[s:e].to(sq.dtype).view(-1, *([1] * (sq.dim() - 1))))
        a += sq.sum(0)

    def square_sum(m: nn.Module, calls: list[_Call], names: dict[str, str],
                   scratch: _Scratch) -> bool:
        if isinstance(m, nn.Linear) and len(calls) == 1 and calls[0].args[0].dim() == 2:
            parts = _linear_square_sum(m, calls, weights)
        elif _use_fused(m):
            parts = _fused_token_fisher(m, calls, weights, scratch, chunk_elems)
        else:
            return False
        for local, v in parts.items():
            acc[names[local]] += v
        return True

    _run(model, x, y, loss, chunk_elems, consume, square_sum,
         min(chunk_elems, FISHER_CACHE_ELEMS))
    return acc


def fast_per_sample_grads(
    model: nn.Module, x: Tensor, y: Tensor, loss: str | LossFn = "ce"
) -> dict[str, Tensor]:
    """Per-sample gradients ``{name: Tensor[B, *shape]}`` from the same hooks and rules (one
    forward, one input-only backward, per-layer contractions). Memory is ``B × |θ|``, as for
    any per-sample-gradient API; use :func:`fast_fisher_diagonal` for the Fisher."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    out = {n: torch.zeros((x.shape[0], *p.shape), dtype=p.dtype, device=p.device)
           for n, p in params.items()}

    def consume(name: str, s: int, e: int, gs: Tensor) -> None:
        out[name][s:e] += gs

    chunk = x.shape[0] * max((p.numel() for p in params.values()), default=1)
    _run(model, x, y, loss, chunk, consume, lambda m, calls, names, scratch: False)
    return out
