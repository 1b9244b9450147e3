"""Fast diagonal Fisher without a ``B × |θ|`` per-sample-gradient buffer: the driver.

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
so the ordinary weight gradients — which the rules replace — are never computed.

This module is the driver (hooks, ownership, chunking, squaring, the public functions). The
per-layer rules live in :mod:`fastunlearn.kernels.fisher_rules`, one module per layer type,
each registered at import with :func:`register_fisher_rule` (exact module types, or a
third-party class by its qualified name once its ``forward`` is checked; never a blanket
``isinstance``, since a subclass may change ``forward``):

* ``linear`` — ``nn.Linear``: on ``[B, in]`` (called once) ``F_W = (g²)ᵀ (a²)`` — one matmul,
  since the per-sample gradient is rank one; on tokens (or several calls) per-sample ``bmm``.
* ``conv`` — ``nn.Conv2d`` (any stride/padding/dilation/padding mode/groups): unfold + ``bmm``
  per sample, or grouped ``convolution_backward`` for large maps; a conv with one output
  position per sample: ``F_W = (g²)ᵀ (a²)`` on the unfolded column (rank one, like Linear).
* ``norms`` — BatchNorm with running statistics (one batch-norm backward kernel with the
  samples as channels), LayerNorm, GroupNorm: ``Σ g·x̂``, ``Σ g``;
  also timm's ``LayerNorm`` (its ViTs), ``LayerNorm2d`` (over channels), ``GroupNorm(1)``.
* ``norm_act`` — timm ``BatchNormAct2d`` (MobileNet/EfficientNet): ``act(drop(BN(x)))``; the
  output gradient is taken back through the activation's derivative at the recomputed
  ``BN(x)``. It has children (``act``, ``drop``) but its rule is registered ``non_leaf=True``,
  so it owns its ``weight``/``bias`` (unknown activations: the whole-model fallback).
* ``fallback`` — any other module that owns parameters: per-layer ``torch.func.vmap`` of
  ``vjp`` of that module's ``functional_call``.
* ``vit`` — parameters owned by no leaf module (ViT ``cls_token``/``pos_embed``): where the
  owner's type is registered with :func:`register_batch_broadcast` (timm
  ``VisionTransformer`` is), the ``[1, ...]`` parameter is replaced for the pass by a
  ``[B, ...]`` copy whose row ``i`` only sample ``i`` uses, so the same backward yields its
  per-sample gradients for free. Otherwise, and for parameters shared by several modules (tied
  weights): per-sample gradients of the whole model restricted to those parameters with
  ``torch.func.vmap(grad(...))`` (chunked), then squared and summed — correct, but it costs a
  vmapped forward+backward.

Chunks are sized so no rule ever holds more than ``chunk_elems`` per-sample gradient entries,
so extra memory is bounded by ``chunk_elems`` plus the recorded activations, whatever ``B``.
For the Fisher they are further capped at :data:`FISHER_CACHE_ELEMS` (cache-sized), and a
layer called once is squared inside the backward, as soon as its output gradient arrives
(the per-sample gradients, the output gradient and the chunk never leave the CPU cache).

On CUDA (when Triton is importable) the Fisher of a token ``nn.Linear`` and of a
``groups=1`` ``nn.Conv2d`` weight skips the per-sample gradients altogether
(``fisher_rules.fused``: :func:`fastunlearn.kernels.fisher_triton.triton_token_fisher` squares
each sample's ``g_iᵀ a_i`` tile in registers). The module switch :data:`TOKEN_FISHER_IMPL`
(``"auto"`` / ``"triton"`` / ``"torch"``) picks the path; ``"triton"`` on CPU needs
``TRITON_INTERPRET=1`` (tests).

Train-mode batch norm couples samples (the batch statistics make ``out_i`` depend on every
``x_j``), so per-sample gradients of the batch graph are not the gradients of ``ℓ_i`` alone.
Like the references, this function therefore always runs the model in eval mode (running
statistics, dropout off) and restores every module's training flag afterwards; a batch-norm
layer without running statistics (``track_running_stats=False``) normalises with batch
statistics even in eval mode, and :func:`fast_fisher_supported` returns ``False`` for such
models so the caller can use a reference path instead (:func:`fast_fisher_diagonal` raises
``ValueError``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap
from torch.nn.modules.batchnorm import _BatchNorm
from torch.utils._pytree import tree_flatten, tree_map

from fastunlearn._modes import eval_mode
from fastunlearn.kernels.fisher_rules.conv import (
    conv_rule_numel,
    conv_square_sum,
    is_single_position,
)
from fastunlearn.kernels.fisher_rules.fallback import vmap_rule
from fastunlearn.kernels.fisher_rules.fused import fused_token_fisher, use_fused
from fastunlearn.kernels.fisher_rules.linear import is_single_batch_call, linear_square_sum
from fastunlearn.kernels.fisher_rules.registry import (
    LossFn,
    _active_calls,
    _broadcast_params,
    _Call,
    _chunks,
    _own_trainable,
    _Scratch,
    owns_with_children,
    register_batch_broadcast,
    register_fisher_rule,
    rule_for,
)

__all__ = [
    "DEFAULT_CHUNK_ELEMS",
    "fast_fisher_diagonal",
    "fast_fisher_supported",
    "fast_per_sample_grads",
    "register_batch_broadcast",
    "register_fisher_rule",
]

log = logging.getLogger(__name__)

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
#: Fisher of token-Linear and groups=1 Conv2d weights: ``"auto"`` — the fused Triton kernel
#: for CUDA tensors when Triton is importable, else the torch rules; ``"triton"`` — always
#: (CPU tensors need ``TRITON_INTERPRET=1``: tests); ``"torch"`` — never. Read at each call.
TOKEN_FISHER_IMPL = "auto"


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
    """``({owner: {local name: global name}}, {global name: param})`` for parameters owned by
    exactly one owner — a leaf module, or a module whose rule covers its children too
    (``register_fisher_rule(..., non_leaf=True)``, e.g. timm ``BatchNormAct2d``); the second
    dict holds the rest (no such owner, or shared: those go to the whole-model fallback)."""
    names = {id(p): n for n, p in model.named_parameters() if p.requires_grad}
    owners: dict[int, list[tuple[nn.Module, str, bool]]] = {}
    for m in model.modules():
        leaf = next(m.children(), None) is None or owns_with_children(m)
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
                rule = rule_for(m) or vmap_rule
                numel = (conv_rule_numel(m, calls) if isinstance(m, nn.Conv2d)  # + the unfold
                         else sum(p.numel() for p in _own_trainable(m).values()))
                for s, e in _chunks(b, numel, rule_chunk_elems or chunk_elems):
                    for local, gs in rule(m, calls, s, e, scratch).items():
                        consume(names[local], s, e, gs)

            def process_now(m: nn.Module, calls: list[_Call]) -> bool:
                # the vmap fallback stays after the backward (functorch inside an autograd
                # hook loses track of its tensors)
                if rule_for(m) is None:
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
    # Each entry starts as its first contribution (a fresh tensor), not as a zero-filled
    # buffer written and read back once more (ResNet-18: 45 MB; ~2 % of a fwd+bwd with the
    # ImageNet stem at 32 px); parameters nothing reached get zeros at the end.
    acc: dict[str, Tensor] = {}

    wl = None if weights is None else weights.detach().double().cpu().tolist()

    def add(name: str, v: Tensor) -> None:
        """``acc[name] += v`` for a fresh ``v`` of the parameter's shape (taken if first)."""
        a, p = acc.get(name), params[name]
        if a is not None:
            a += v
        elif v.dtype == p.dtype and v.device == p.device and v.is_contiguous():
            acc[name] = v.view(p.shape)
        else:
            acc[name] = v.to(p.dtype).reshape(p.shape).clone(memory_format=torch.contiguous_format)

    def consume(name: str, s: int, e: int, gs: Tensor) -> None:
        if gs[0].numel() >= ADDCMUL_MIN_ELEMS:
            first = 0
            if name not in acc:
                a = torch.mul(gs[0], gs[0])
                add(name, a if wl is None else a.mul_(wl[s]))
                first = 1
            a = acc[name]
            for i in range(first, e - s):
                a.addcmul_(gs[i], gs[i], value=1.0 if wl is None else wl[s + i])
            return
        sq = gs.mul_(gs)  # rule outputs are temporaries: square in place
        if weights is not None:
            sq.mul_(weights[s:e].to(sq.dtype).view(-1, *([1] * (sq.dim() - 1))))
        add(name, sq.sum(0))

    def square_sum(m: nn.Module, calls: list[_Call], names: dict[str, str],
                   scratch: _Scratch) -> bool:
        if is_single_batch_call(m, calls):
            assert isinstance(m, nn.Linear)
            parts = linear_square_sum(m, calls, weights)
        elif is_single_position(m, calls):
            assert isinstance(m, nn.Conv2d)
            parts = conv_square_sum(m, calls, weights)
        elif use_fused(m, TOKEN_FISHER_IMPL):
            parts = fused_token_fisher(m, calls, weights, scratch, chunk_elems)
        else:
            return False
        for local, v in parts.items():
            add(names[local], v)
        return True

    _run(model, x, y, loss, chunk_elems, consume, square_sum,
         min(chunk_elems, FISHER_CACHE_ELEMS))
    return {n: acc[n] if n in acc else torch.zeros_like(p) for n, p in params.items()}


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
