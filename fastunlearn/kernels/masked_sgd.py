"""Masked SGD step: update only the weights a saliency mask selects (SalUn-style unlearning).

:func:`masked_sgd_step` ``(params, grads, masks, momentum_buffers, lr, momentum, weight_decay,
nesterov=False, dampening=0.0, impl="auto", overwrite_grads=False)`` performs one
``torch.optim.SGD`` step in which the masked-off entries get a zero update direction.
Semantics (the same in every implementation), per entry with mask ``m`` (``m != 0`` =
selected):

* the direction is ``d = g + wd·θ`` where the mask is set and ``d = 0`` where it is not — the
  gradient **and the weight decay** are masked (the SalUn code masks the gradient only, so its
  weight decay still shrinks the "frozen" weights);
* then exactly ``torch.optim.SGD``'s update: with momentum ``b ← μ·b + (1 − dampening)·d``
  (``b ← d`` on the first step, when the buffer is ``None``), ``d ← d + μ·b`` (Nesterov) or
  ``d ← b``; ``θ ← θ − lr·d``.

So inside the mask the numbers are ``torch.optim.SGD``'s, and with an all-ones mask the result
equals ``torch.optim.SGD`` bit for bit (torch paths; the Triton kernel within fp32 rounding).
Outside the mask the step is SGD with a zero gradient and no weight decay: the momentum entry
decays, ``b ← μ·b``, and the weight moves by ``−lr·μ·b``. A buffer created by this function
holds 0 outside the mask, so **with a fixed mask the weights and buffers outside it never
change** (tested). Only buffers that are non-zero outside the mask — carried over from an
unmasked optimiser, or after the mask changed — keep coasting there.

Entries with ``grads[i] is None`` are skipped (weight and buffer untouched, like
``torch.optim.SGD``); a ``None`` mask means "all ones". Masks are bool / uint8 (non-zero =
update), float 0/1, or bit-packed with :func:`pack_mask` (32 entries per int32 word).

Implementations (``impl``):

* ``"reference"`` — :func:`reference_masked_sgd_step`: per tensor, ``torch.where`` on the
  direction, then ``torch.optim.SGD``'s single-tensor update op for op. Obviously correct.
* ``"torch"`` — :func:`torch_masked_sgd_step`: the same numbers with ``torch._foreach_*`` ops and
  the mask as a 0/1 multiplier. It never makes more memory passes than "mask multiply +
  ``torch.optim.SGD`` (foreach)", and fewer where an exact fusion exists: with momentum (no
  Nesterov, no dampening) ``b += d·m`` is one ``addcmul`` (``d·m`` is exactly ``d`` or 0, so it
  rounds like ``b + d``); without momentum ``θ ← θ − lr·d·m`` is one ``addcmul(m, d,
  value=−lr)`` where this build's kernel rounds that like ``θ.add_(d, alpha=−lr)`` (probed once
  per dtype; otherwise a masked copy). Nesterov and dampening need the reference's passes
  exactly. Fastest with masks in the parameter dtype (:func:`prepare_mask`); other formats are
  converted on every call. Being a multiplication, a non-finite gradient outside the mask still
  poisons its weight here (as with mask-multiply + SGD); the other two paths select.
* ``"triton"`` — :func:`triton_masked_sgd_step`: ONE kernel launch for all parameters of a
  dtype (see the comment above the kernel): reads θ, g, b and the mask once and writes θ and b
  once; bool/uint8 or bit-packed masks (1 or 1/8 byte per weight). CUDA, or CPU tensors under
  ``TRITON_INTERPRET=1`` (tests).
* ``"auto"`` — Triton when every tensor is on CUDA, contiguous and fp32/fp16/bf16 and Triton
  is importable; ``"torch"`` otherwise (measured against the mask-multiply + SGD reference in
  benchmarks/bench_masked_sgd.py; numbers in docs/kernels.md).
"""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "IMPLS",
    "masked_sgd_step",
    "pack_mask",
    "prepare_mask",
    "reference_masked_sgd_step",
    "torch_masked_sgd_step",
    "triton_masked_sgd_step",
    "unpack_mask",
]

IMPLS = ("auto", "reference", "torch", "triton")
_HAS_TRITON = importlib.util.find_spec("triton") is not None
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


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


def _is_packed(mask: Tensor, p: Tensor) -> bool:
    """A mask whose shape differs from the parameter's is its :func:`pack_mask` form."""
    return mask.shape != p.shape


def _dense(mask: Tensor, p: Tensor) -> Tensor:
    """The mask as a bool tensor of ``p``'s shape."""
    return unpack_mask(mask, p.numel()).view(p.shape) if _is_packed(mask, p) else mask != 0


def _factor(mask: Tensor, p: Tensor) -> Tensor:
    """The mask as a 0/1 multiplier in ``p``'s dtype (no copy when it already is one)."""
    if _is_packed(mask, p):
        return unpack_mask(mask, p.numel()).view(p.shape).to(p.dtype)
    return mask if mask.dtype == p.dtype else mask.to(p.dtype)


def prepare_mask(mask: Tensor, param: Tensor) -> Tensor:
    """``mask`` in the format :func:`masked_sgd_step` (``impl="auto"``) handles fastest for
    ``param``: bool for CUDA parameters when Triton is installed, otherwise 0/1 in the
    parameter's dtype (the torch path multiplies by it). Convert once, reuse every step."""
    if mask.shape != param.shape:
        raise ValueError(f"mask shape {tuple(mask.shape)} != param shape {tuple(param.shape)}")
    if param.is_cuda and _HAS_TRITON:
        return (mask != 0).to(param.device)
    return (mask != 0).to(device=param.device, dtype=param.dtype)


def _check(params: Sequence[Tensor], grads: Sequence[Tensor | None],
           masks: Sequence[Tensor | None], bufs: Sequence[Tensor | None], lr: float,
           momentum: float, weight_decay: float, nesterov: bool, dampening: float) -> None:
    n = len(params)
    if not (len(grads) == len(masks) == len(bufs) == n):
        raise ValueError(f"params, grads, masks and momentum_buffers must have the same length, "
                         f"got {n}, {len(grads)}, {len(masks)}, {len(bufs)}")
    if lr < 0 or momentum < 0 or weight_decay < 0:
        raise ValueError(f"lr, momentum and weight_decay must be ≥ 0, got {lr}, {momentum}, "
                         f"{weight_decay}")
    if nesterov and (momentum <= 0 or dampening != 0):
        raise ValueError("nesterov needs momentum > 0 and dampening = 0")
    for p, g, m, b in zip(params, grads, masks, bufs):
        if g is not None and g.shape != p.shape:
            raise ValueError(f"grad shape {tuple(g.shape)} != param shape {tuple(p.shape)}")
        if b is not None and b.shape != p.shape:
            raise ValueError(f"momentum buffer shape {tuple(b.shape)} != param shape "
                             f"{tuple(p.shape)}")
        if m is None:
            continue
        packed = m.dtype == torch.int32 and m.dim() == 1 and m.numel() == -(-p.numel() // 32)
        if m.shape != p.shape and not packed:
            raise ValueError(f"mask shape {tuple(m.shape)} fits neither the param "
                             f"{tuple(p.shape)} nor its bit-packed form")


# ------------------------------------------------------------------ reference (slow) ----------

@torch.no_grad()
def reference_masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    masks: Sequence[Tensor | None],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
) -> list[Tensor | None]:
    """Obviously correct: per tensor, ``d = where(mask, g + wd·θ, 0)``, then the exact ops of
    ``torch.optim.SGD``'s single-tensor update. Updates ``params`` and ``momentum_buffers`` in
    place (``None`` buffers are created when ``momentum > 0``) and returns the buffer list."""
    _check(params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
           dampening)
    for i, (p, g, m) in enumerate(zip(params, grads, masks)):
        if g is None:
            continue
        d = g.add(p, alpha=weight_decay) if weight_decay != 0 else g
        if m is not None:
            d = torch.where(_dense(m, p), d, torch.zeros((), dtype=d.dtype, device=d.device))
        if momentum != 0:
            buf = momentum_buffers[i]
            if buf is None:
                buf = d.detach().clone()
                momentum_buffers[i] = buf
            else:
                buf.mul_(momentum).add_(d, alpha=1 - dampening)
            d = d.add(buf, alpha=momentum) if nesterov else buf
        p.add_(d, alpha=-lr)
    return momentum_buffers


# ------------------------------------------------------------------ torch foreach (CPU) -------

@functools.cache
def _exact_addcmul(dtype: torch.dtype, device_type: str) -> bool:
    """Whether ``θ.addcmul_(m, d, value=−lr)`` equals ``θ.add_(d, alpha=−lr)`` bit for bit for
    ``m = 1`` with this build's foreach kernels (probed once per dtype and device type).

    ``−lr·m`` is exact for a 0/1 ``m``, so a kernel that fuses the remaining multiply-add (as
    ``add`` with ``alpha`` does) rounds once, like ``add``; one that rounds the product first
    differs in ~10 % of the entries, which the probe sees."""
    g = torch.Generator().manual_seed(0)
    for n in (7, 4099):  # a vector tail and full vectors
        p, d = (torch.randn(n, generator=g).to(device_type, dtype) for _ in range(2))
        for lr in (0.1, 0.0123):
            a, b = [p.clone()], [p.clone()]
            torch._foreach_add_(a, [d], alpha=-lr)
            torch._foreach_addcmul_(b, [torch.ones_like(d)], [d], value=-lr)
            if not torch.equal(a[0], b[0]):
                return False
    return True


@torch.no_grad()
def torch_masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    masks: Sequence[Tensor | None],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    overwrite_grads: bool = False,
) -> list[Tensor | None]:
    """``torch._foreach_*`` implementation (the ``"auto"`` choice off CUDA); same semantics,
    arguments and return value as :func:`reference_masked_sgd_step`. The mask multiplies the
    direction (0/1 in the parameter dtype; see :func:`prepare_mask`).

    ``grads`` are not modified unless ``overwrite_grads=True``, which lets this path use them
    as scratch space (their values afterwards are unspecified, as after ``torch.optim.SGD``
    with Nesterov): without weight decay it then masks them in place instead of allocating a
    masked copy — what "mask multiply + SGD" does too."""
    _check(params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
           dampening)
    idx = [i for i, g in enumerate(grads) if g is not None]
    if not idx:
        return momentum_buffers
    n = len(idx)
    ps = [params[i] for i in idx]
    fs = [None if masks[i] is None else _factor(masks[i], params[i]) for i in idx]
    # d = g + wd·θ exactly as torch.optim.SGD forms it; scratch[j]: ds[j] may be written to
    gs = [grads[i] for i in idx]
    if weight_decay != 0:
        ds, scratch = torch._foreach_add(gs, ps, alpha=weight_decay), [True] * n
    else:
        ds, scratch = gs, [overwrite_grads] * n

    def masked(k: list[int]) -> list[Tensor]:
        """d·m for the entries k (in place on scratch, into new tensors otherwise)."""
        in_place = [j for j in k if fs[j] is not None and scratch[j]]
        copy = [j for j in k if fs[j] is not None and not scratch[j]]
        if in_place:
            torch._foreach_mul_([ds[j] for j in in_place], [fs[j] for j in in_place])
        if copy:
            for j, t in zip(copy, torch._foreach_mul([ds[j] for j in copy],
                                                     [fs[j] for j in copy])):
                ds[j], scratch[j] = t, True
        return [ds[j] for j in k]

    def nesterov_direction(k: list[int], bufs: list[Tensor]) -> list[Tensor]:
        """d·m + μ·b for the entries k, with ds[k] already masked (in place on scratch)."""
        out = []
        for j, b in zip(k, bufs):
            out.append(ds[j].add_(b, alpha=momentum) if scratch[j]
                       else ds[j].add(b, alpha=momentum))
        return out

    every = list(range(n))
    if momentum == 0:
        # θ ← θ − lr·d·m as one addcmul where that rounds exactly like θ.add_(d·m, alpha=−lr)
        fused = [j for j in every
                 if fs[j] is not None and _exact_addcmul(ps[j].dtype, ps[j].device.type)]
        rest = sorted(set(every) - set(fused))
        if fused:
            torch._foreach_addcmul_([ps[j] for j in fused], [fs[j] for j in fused],
                                    [ds[j] for j in fused], value=-lr)
        if rest:
            torch._foreach_add_([ps[j] for j in rest], masked(rest), alpha=-lr)
        return momentum_buffers

    old = [j for j in every if momentum_buffers[idx[j]] is not None]
    new = [j for j in every if momentum_buffers[idx[j]] is None]
    direction: list[Tensor | None] = [None] * n
    if old:
        bufs = [momentum_buffers[idx[j]] for j in old]
        torch._foreach_mul_(bufs, momentum)
        if dampening == 0 and not nesterov:
            # b += d·m in one addcmul: d·m is exactly d or 0, so b + d·m rounds like b + d
            on = [k for k, j in enumerate(old) if fs[j] is not None]
            off = [k for k, j in enumerate(old) if fs[j] is None]
            if on:
                torch._foreach_addcmul_([bufs[k] for k in on], [ds[old[k]] for k in on],
                                        [fs[old[k]] for k in on])
            if off:
                torch._foreach_add_([bufs[k] for k in off], [ds[old[k]] for k in off])
            dirs = bufs
        else:
            torch._foreach_add_(bufs, masked(old), alpha=1 - dampening)
            dirs = nesterov_direction(old, bufs) if nesterov else bufs
        for j, t in zip(old, dirs):
            direction[j] = t
    if new:
        bufs = [t.detach().clone() for t in masked(new)]
        for j, b in zip(new, bufs):
            momentum_buffers[idx[j]] = b
        dirs = nesterov_direction(new, bufs) if nesterov else bufs
        for j, t in zip(new, dirs):
            direction[j] = t
    torch._foreach_add_(ps, direction, alpha=-lr)
    return momentum_buffers


# ------------------------------------------------------------------ Triton (one launch) -------

_kernel = None
_triton_update = None


def _get_kernel():  # noqa: ANN202 - returns a triton.JITFunction
    """The Triton kernel, defined on first use (importing Triton is slow; TRITON_INTERPRET is
    read when the kernel is defined)."""
    global _kernel, _triton_update
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    # One launch for every parameter of one dtype. Layout: parameter t owns the row
    # meta[t, :] = (θ, g, b, mask data pointers as int64; numel n_t; first block f_t;
    # mask mode; fresh) and the blocks f_t … f_t + ⌈n_t / BLOCK⌉ − 1 of the grid;
    # block_tensor[pid] = t (built once per list of sizes and cached). Program pid handles
    # entries k = (pid − f_t)·BLOCK + [0, BLOCK) of parameter t, turning the int64 pointers
    # back into typed pointers (int → pointer casts), so nothing is copied into a flat buffer.
    # Mask modes: 0 none (all ones), 1 dense uint8/bool (on = m[k] ≠ 0), 2 bit-packed
    # (on = bit k mod 32 of int32 word k div 32). With `on` for entry k, in fp32:
    #   d = on ? g + wd·θ : 0
    #   b = fresh ? d : μ·b + (1 − damp)·d          (HAS_MOMENTUM; fresh = buffer just created,
    #                                                its uninitialised values are never used)
    #   d = d + μ·b (NESTEROV) | b                  (HAS_MOMENTUM)
    #   θ ← θ − lr·d                                 (stored in the parameter dtype)
    # Traffic per entry: read θ, g, b, mask (1 byte or 1 bit); write θ, b. Blocks that lie
    # wholly inside their tensor (all but each tensor's last) load and store without bounds
    # masks, and with ALIGNED (every θ, g, b address a multiple of 16 bytes, checked on the
    # host; block starts are multiples of BLOCK) the compiler emits 16-byte vector accesses.
    @triton.jit
    def update(p, g, b_old, on, is_fresh, lr, mu, one_minus_damp, wd,
                HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr):
        d = tl.where(on, g + wd * p, 0.0)
        b = d
        if HAS_MOMENTUM:
            b = tl.where(is_fresh, d, mu * b_old + one_minus_damp * d)
            if NESTEROV:
                d = d + mu * b
            else:
                d = b
        return p - lr * d, b

    @triton.jit
    def masked_sgd_kernel(meta_ptr, block_tensor_ptr, lr, mu, one_minus_damp, wd,
                          HAS_MOMENTUM: tl.constexpr, NESTEROV: tl.constexpr,
                          DTYPE: tl.constexpr, ALIGNED: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        t = tl.load(block_tensor_ptr + pid).to(tl.int64)
        row = meta_ptr + t * 8
        p_ptr = tl.load(row + 0).to(tl.pointer_type(DTYPE))
        g_ptr = tl.load(row + 1).to(tl.pointer_type(DTYPE))
        b_ptr = tl.load(row + 2).to(tl.pointer_type(DTYPE))
        if ALIGNED:
            p_ptr = tl.multiple_of(p_ptr, 16)
            g_ptr = tl.multiple_of(g_ptr, 16)
            b_ptr = tl.multiple_of(b_ptr, 16)
        m_raw = tl.load(row + 3)
        n = tl.load(row + 4)
        start = (pid - tl.load(row + 5)) * BLOCK
        mode = tl.load(row + 6)
        fresh = tl.load(row + 7)
        offs = start + tl.arange(0, BLOCK).to(tl.int64)
        inb = offs < n
        zero = offs * 0  # broadcasts the per-tensor scalars (the interpreter needs it)
        dense = tl.load(m_raw.to(tl.pointer_type(tl.uint8)) + offs,
                        mask=inb & ((zero + mode) == 1), other=1)
        word = tl.load(m_raw.to(tl.pointer_type(tl.int32)) + offs // 32,
                       mask=inb & ((zero + mode) == 2), other=-1)
        on = (dense != 0) & (((word >> (offs % 32).to(tl.int32)) & 1) != 0)
        is_fresh = (zero + fresh) != 0
        if start + BLOCK <= n:
            p = tl.load(p_ptr + offs).to(tl.float32)
            g = tl.load(g_ptr + offs).to(tl.float32)
            b_old = p
            if HAS_MOMENTUM:
                b_old = tl.load(b_ptr + offs).to(tl.float32)
            new_p, new_b = _triton_update(p, g, b_old, on, is_fresh, lr, mu, one_minus_damp, wd,
                                   HAS_MOMENTUM, NESTEROV)
            if HAS_MOMENTUM:
                tl.store(b_ptr + offs, new_b.to(DTYPE))
            tl.store(p_ptr + offs, new_p.to(DTYPE))
        else:
            p = tl.load(p_ptr + offs, mask=inb, other=0.0).to(tl.float32)
            g = tl.load(g_ptr + offs, mask=inb & on, other=0.0).to(tl.float32)
            b_old = p
            if HAS_MOMENTUM:
                b_old = tl.load(b_ptr + offs, mask=inb, other=0.0).to(tl.float32)
            new_p, new_b = _triton_update(p, g, b_old, on, is_fresh, lr, mu, one_minus_damp, wd,
                                   HAS_MOMENTUM, NESTEROV)
            if HAS_MOMENTUM:
                tl.store(b_ptr + offs, new_b.to(DTYPE), mask=inb)
            tl.store(p_ptr + offs, new_p.to(DTYPE), mask=inb)

    _triton_update = update  # a module global: the interpreter looks jit callees up there
    _kernel = masked_sgd_kernel
    return _kernel


@functools.lru_cache(maxsize=16)
def _block_map(device: torch.device, numels: tuple[int, ...],
               block: int) -> tuple[Tensor, tuple[int, ...]]:
    """``block_tensor`` (int32, one entry per program) and each tensor's first block."""
    counts = [-(-n // block) for n in numels]
    firsts, acc = [], 0
    for c in counts:
        firsts.append(acc)
        acc += c
    owner = torch.repeat_interleave(torch.arange(len(numels), dtype=torch.int32),
                                    torch.tensor(counts, dtype=torch.int64))
    return owner.to(device), tuple(firsts)


def _triton_dtype(dtype: torch.dtype):  # noqa: ANN202 - a triton.language dtype
    import triton.language as tl

    return {torch.float32: tl.float32, torch.float16: tl.float16,
            torch.bfloat16: tl.bfloat16}[dtype]


def _triton_ready(params: Sequence[Tensor], grads: Sequence[Tensor | None],
                  masks: Sequence[Tensor | None], bufs: Sequence[Tensor | None]) -> str | None:
    """None when the Triton path can take these tensors, else the reason."""
    dev = None
    for p, g, m, b in zip(params, grads, masks, bufs):
        if g is None:
            continue
        dev = p.device if dev is None else dev
        for what, t in (("param", p), ("grad", g), ("momentum buffer", b), ("mask", m)):
            if t is None:
                continue
            if t.device != dev:
                return f"all tensors must be on one device ({what} on {t.device}, not {dev})"
            if not t.is_contiguous():
                return f"needs contiguous tensors (a {what} is not)"
        if p.dtype not in _TRITON_DTYPES:
            return f"supports {_TRITON_DTYPES}, got a {p.dtype} parameter"
        if g.dtype != p.dtype or (b is not None and b.dtype != p.dtype):
            return "grads and momentum buffers must have the parameter's dtype"
    return None


@torch.no_grad()
def triton_masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    masks: Sequence[Tensor | None],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    block: int = 2048,
    num_warps: int = 8,
) -> list[Tensor | None]:
    """Fused Triton kernel, one launch per parameter dtype (one for a usual model); same
    semantics and return value as :func:`reference_masked_sgd_step`. Needs contiguous tensors
    on one device, fp32/fp16/bf16 (computed in fp32); runs on CUDA, or on CPU under
    ``TRITON_INTERPRET=1`` (tests). New momentum buffers are allocated uninitialised: the kernel
    writes every entry."""
    _check(params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
           dampening)
    why = _triton_ready(params, grads, masks, momentum_buffers)
    if why is not None:
        raise ValueError(f"triton_masked_sgd_step {why}")
    if block < 32 or block & (block - 1):
        raise ValueError(f"block must be a power of two ≥ 32, got {block}")
    has_momentum = momentum != 0
    groups: dict[torch.dtype, list[int]] = {}
    for i, g in enumerate(grads):
        if g is not None:
            groups.setdefault(params[i].dtype, []).append(i)
    kernel = _get_kernel()
    for dtype, idx in groups.items():
        keep: list[Tensor] = []  # converted masks, alive until the launch is queued
        rows: list[list[int]] = []
        aligned = True
        device = params[idx[0]].device
        numels = tuple(params[i].numel() for i in idx)
        owner, firsts = _block_map(device, numels, block)
        for i, first in zip(idx, firsts):
            p, g, m = params[i], grads[i], masks[i]
            fresh = 0
            b = momentum_buffers[i]
            if has_momentum and b is None:
                b = torch.empty_like(p, memory_format=torch.contiguous_format)
                momentum_buffers[i] = b
                fresh = 1
            if m is None:
                mode, m_ptr = 0, p.data_ptr()
            elif _is_packed(m, p):
                mode, m_ptr = 2, m.data_ptr()
            else:
                mk = m if m.dtype in (torch.uint8, torch.int8) else (
                    m.view(torch.uint8) if m.dtype == torch.bool else (m != 0).view(torch.uint8))
                keep.append(mk)
                mode, m_ptr = 1, mk.data_ptr()
            ptrs = [p.data_ptr(), g.data_ptr(), (b if b is not None else p).data_ptr()]
            aligned = aligned and all(a % 16 == 0 for a in ptrs)
            rows.append([*ptrs, m_ptr, p.numel(), first, mode, fresh])
        if owner.numel() == 0:
            continue
        meta = torch.tensor(rows, dtype=torch.int64).to(device)
        kernel[(owner.numel(),)](
            meta, owner, float(lr), float(momentum), float(1.0 - dampening),
            float(weight_decay), HAS_MOMENTUM=has_momentum, NESTEROV=nesterov,
            DTYPE=_triton_dtype(dtype), ALIGNED=aligned, BLOCK=block, num_warps=num_warps,
            enable_fp_fusion=True)  # FMAs, as torch's CUDA kernels use
    return momentum_buffers


# ------------------------------------------------------------------ public ------------------

_IMPL_FNS = {
    "reference": reference_masked_sgd_step,
    "torch": torch_masked_sgd_step,
    "triton": triton_masked_sgd_step,
}


def choose_impl(params: Sequence[Tensor], grads: Sequence[Tensor | None],
                masks: Sequence[Tensor | None], bufs: Sequence[Tensor | None]) -> str:
    """What ``impl="auto"`` runs: ``"triton"`` when Triton is importable and every tensor is on
    one CUDA device, contiguous and fp32/fp16/bf16; ``"torch"`` otherwise."""
    live = [p for p, g in zip(params, grads) if g is not None]
    on_cuda = bool(live) and all(p.is_cuda for p in live)
    if on_cuda and _HAS_TRITON and _triton_ready(params, grads, masks, bufs) is None:
        return "triton"
    return "torch"


def masked_sgd_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    masks: Sequence[Tensor | None],
    momentum_buffers: list[Tensor | None],
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    impl: str = "auto",
    overwrite_grads: bool = False,
) -> list[Tensor | None]:
    """One SGD step whose direction is zero outside the mask (the module docstring has the
    exact rule). Updates ``params`` and ``momentum_buffers`` in place and returns the buffer
    list (``None`` entries replaced on the first momentum step).

    ``impl``: ``"auto"`` (Triton for CUDA tensors, the foreach path otherwise), ``"torch"``,
    ``"triton"`` or ``"reference"``. ``overwrite_grads=True`` allows the torch path to use the
    gradient tensors as scratch (see :func:`torch_masked_sgd_step`); the other paths never
    write them.
    """
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if impl == "auto":
        impl = choose_impl(params, grads, masks, momentum_buffers)
    args = (params, grads, masks, momentum_buffers, lr, momentum, weight_decay, nesterov,
            dampening)
    extra = {"overwrite_grads": True} if impl == "torch" and overwrite_grads else {}
    return _IMPL_FNS[impl](*args, **extra)
