"""Masked SGD step: update only the weights a saliency mask selects (SalUn-style unlearning).

:func:`masked_sgd_step` ``(params, grads, masks, momentum_buffers, lr, momentum, weight_decay,
nesterov=False, dampening=0.0, impl="auto")`` performs one ``torch.optim.SGD`` step restricted
to the masked entries. Semantics (the same in every implementation):

* **inside the mask** (``mask != 0``): exactly ``torch.optim.SGD``'s update —
  ``d = g + wd·θ``; with momentum ``b ← μ·b + (1 − dampening)·d`` (``b ← d`` on the first step,
  when the buffer is ``None``), ``d = d + μ·b`` (Nesterov) or ``d = b``; ``θ ← θ − lr·d``.
* **outside the mask** nothing changes: the weight is frozen (no weight decay either) and its
  momentum entry is neither decayed nor updated (a buffer created on the first step holds 0
  there). With an all-ones mask the result equals ``torch.optim.SGD`` bit for bit (tested).

Implementations: ``torch_masked_sgd_step`` — the reference: ``torch.optim``'s functional
``sgd`` (with ``torch.optim.SGD``'s default ``foreach`` choice) on all entries, then
``torch.where(mask, new, old)`` for weights and buffers; ``triton_masked_sgd_step`` — one
fused elementwise kernel per parameter (reads θ, g, b and the mask once, writes θ and b only
where the mask is set); masks may be bool/uint8/float or bit-packed with :func:`pack_mask`
(32 entries per int32 word: 1/32 of the mask traffic).
``impl="auto"`` uses Triton for CUDA tensors when Triton is importable and the reference
otherwise (on CPU the reference is the only path: Triton kernels do not run there).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "IMPLS",
    "masked_sgd_step",
    "pack_mask",
    "torch_masked_sgd_step",
    "triton_masked_sgd_step",
]

IMPLS = ("auto", "torch", "triton")
_HAS_TRITON = importlib.util.find_spec("triton") is not None


def pack_mask(mask: Tensor) -> Tensor:
    """Bit-pack a mask: entry ``k`` of ``mask.flatten()`` is bit ``k % 32`` of int32 word
    ``k // 32`` (little-endian within the word)."""
    flat = (mask.flatten() != 0).to(torch.int64)
    pad = (-flat.numel()) % 32
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    shifts = torch.arange(32, device=flat.device, dtype=torch.int64)
    words = (flat.view(-1, 32) << shifts).sum(1)
    return torch.where(words >= 2**31, words - 2**32, words).to(torch.int32)


def unpack_mask(packed: Tensor, numel: int) -> Tensor:
    """Inverse of :func:`pack_mask` (flat bool tensor of ``numel`` entries)."""
    shifts = torch.arange(32, device=packed.device, dtype=torch.int64)
    bits = (packed.to(torch.int64)[:, None] >> shifts) & 1
    return bits.flatten()[:numel] != 0


def _check(params: Sequence[Tensor], grads: Sequence[Tensor], masks: Sequence[Tensor],
           bufs: list[Tensor | None], lr: float, momentum: float, weight_decay: float,
           nesterov: bool, dampening: float) -> None:
    n = len(params)
    if not (len(grads) == len(masks) == len(bufs) == n):
        raise ValueError(f"params, grads, masks and momentum_buffers must have the same length, "
                         f"got {n}, {len(grads)}, {len(masks)}, {len(bufs)}")
    if lr < 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"lr, momentum and weight_decay must be ≥ 0, got {lr}, {momentum}, "
                         f"{weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov needs momentum > 0 and dampening = 0")
    for p, g, m in zip(params, grads, masks):
        if g.shape != p.shape:
            raise ValueError(f"grad shape {tuple(g.shape)} != param shape {tuple(p.shape)}")
        packed = m.dtype == torch.int32 and m.dim() == 1 and m.numel() == -(-p.numel() // 32)
        if m.shape != p.shape and not packed:
            raise ValueError(f"mask shape {tuple(m.shape)} fits neither the param "
                             f"{tuple(p.shape)} nor its bit-packed form")


def _is_packed(mask: Tensor, p: Tensor) -> bool:
    """A mask whose shape differs from the parameter's is its :func:`pack_mask` form."""
    return mask.shape != p.shape


def _dense(mask: Tensor, p: Tensor) -> Tensor:
    return unpack_mask(mask, p.numel()).view(p.shape) if _is_packed(mask, p) else mask != 0


@torch.no_grad()
def torch_masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    masks: Sequence[Tensor],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
) -> list[Tensor | None]:
    """Reference: ``torch.optim.sgd.sgd`` (foreach) on every entry, then keep the old weight
    and buffer wherever the mask is 0. Updates ``params`` and ``momentum_buffers`` in place
    (``None`` buffers are created when ``momentum > 0``) and returns the buffer list."""
    _check(params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
           dampening)
    from torch.optim.sgd import sgd

    old_p = [p.clone() for p in params]
    old_b = [None if b is None else b.clone() for b in momentum_buffers]
    new_b: list[Tensor | None] = list(momentum_buffers)
    sgd(list(params), list(grads), new_b, weight_decay=weight_decay, momentum=momentum, lr=lr,
        dampening=dampening, nesterov=nesterov, maximize=False, foreach=None)
    for i, (p, m) in enumerate(zip(params, masks)):
        on = _dense(m, p)
        p.copy_(torch.where(on, p, old_p[i]))
        b = new_b[i]
        if b is not None:
            prev = old_b[i]
            b.copy_(torch.where(on, b, torch.zeros_like(b) if prev is None else prev))
        momentum_buffers[i] = b
    return momentum_buffers


_kernel = None


def _get_kernel():  # noqa: ANN202 - returns a triton.JITFunction
    """The Triton kernel, defined on first use (importing Triton is slow)."""
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    # One program per BLOCK entries of one parameter. live = in bounds & mask bit set.
    #   d = g + wd·θ;  b = d (first) | μ·b + (1−damp)·d;  d = d + μ·b (nesterov) | b
    #   θ ← θ − lr·d  — loads and stores are predicated on `live`, so masked-off weights
    #   and buffer entries are never written.
    @triton.jit
    def masked_sgd_kernel(p_ptr, g_ptr, b_ptr, m_ptr, n, lr, mu, damp, wd,
                          HAS_MOMENTUM: tl.constexpr, FIRST: tl.constexpr,
                          NESTEROV: tl.constexpr, PACKED: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        inb = offs < n
        if PACKED:
            word = tl.load(m_ptr + offs // 32, mask=inb, other=0)
            on = ((word >> (offs % 32)) & 1) != 0
        else:
            on = tl.load(m_ptr + offs, mask=inb, other=0) != 0
        live = inb & on
        p = tl.load(p_ptr + offs, mask=live, other=0.0)
        d = tl.load(g_ptr + offs, mask=live, other=0.0) + wd * p
        if HAS_MOMENTUM:
            if FIRST:
                b = d
            else:
                b = mu * tl.load(b_ptr + offs, mask=live, other=0.0) + (1.0 - damp) * d
            tl.store(b_ptr + offs, b, mask=live)
            if NESTEROV:
                d = d + mu * b
            else:
                d = b
        tl.store(p_ptr + offs, p - lr * d, mask=live)

    _kernel = masked_sgd_kernel
    return _kernel


@torch.no_grad()
def triton_masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    masks: Sequence[Tensor],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    block: int = 1024,
) -> list[Tensor | None]:
    """Fused Triton kernel (one launch per parameter); same semantics and return value as
    :func:`torch_masked_sgd_step`. Needs contiguous tensors; runs on CUDA, or on CPU under
    ``TRITON_INTERPRET=1`` (tests)."""
    _check(params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
           dampening)
    import triton

    kernel = _get_kernel()
    for i, (p, g, m) in enumerate(zip(params, grads, masks)):
        if not (p.is_contiguous() and g.is_contiguous() and m.is_contiguous()):
            raise ValueError("triton_masked_sgd_step needs contiguous params, grads and masks")
        packed = _is_packed(m, p)
        mk = m if packed or m.dtype != torch.bool else m.view(torch.uint8)
        b = momentum_buffers[i]
        first = momentum > 0 and b is None
        if first:
            b = torch.zeros_like(p)
            momentum_buffers[i] = b
        n = p.numel()
        kernel[(triton.cdiv(n, block),)](
            p, g, p if b is None else b, mk, n, float(lr), float(momentum), float(dampening),
            float(weight_decay), HAS_MOMENTUM=momentum > 0, FIRST=first, NESTEROV=nesterov,
            PACKED=packed, BLOCK=block)
    return momentum_buffers


def masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor],
    masks: Sequence[Tensor],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    impl: str = "auto",
) -> list[Tensor | None]:
    """One SGD step on the masked entries only (see the module docstring for the exact rule).

    ``impl``: ``"torch"`` (reference), ``"triton"`` (fused kernel) or ``"auto"`` (Triton for
    CUDA tensors when available, else the reference). Updates in place; returns the momentum
    buffer list (``None`` entries replaced on the first momentum step).
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        on_cuda = bool(params) and all(p.is_cuda for p in params)
        impl = "triton" if on_cuda and _HAS_TRITON else "torch"
    fn = triton_masked_sgd_step if impl == "triton" else torch_masked_sgd_step
    return fn(params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
              dampening)
