"""Fused token Fisher: ``F = Σ_n w_n (g_nᵀ a_n)²`` without per-sample gradients.

:func:`triton_token_fisher` ``(a: [N, T, I], g: [N, T, O], weights=None) -> [O, I]`` (float32)
is the diagonal empirical Fisher of a weight used on tokens or positions: a ``Linear`` on
``[N, T, in]`` (``a`` its input, ``g`` the gradient of its output), or a ``Conv2d`` after
``unfold`` (``a[n, p, i]`` the patch of output position ``p``, ``i`` over ``C_in·kh·kw``;
``g[n, p, o]``). Sample ``n``'s gradient ``G_n = g_nᵀ a_n`` (``[O, I]``) lives only in
registers: each program owns one ``[BLOCK_O, BLOCK_I]`` tile of ``F``, builds that tile of
``G_n`` sample by sample and adds its square, so memory traffic is one read of ``a`` and ``g``
per tile row/column and one write of ``F`` — never the ``N × O × I`` per-sample buffer the
torch path (``bmm`` then square) materialises chunk by chunk.

:func:`torch_token_fisher` is the reference ("obviously correct, but slow"):
``einsum('nto,nti->noi')`` squared and summed over samples, in float32.
Runs on CUDA, or on CPU under ``TRITON_INTERPRET=1`` (tests; slow).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import Tensor

__all__ = ["torch_token_fisher", "triton_token_fisher"]

_HAS_TRITON = importlib.util.find_spec("triton") is not None
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def _check(a: Tensor, g: Tensor, weights: Tensor | None) -> None:
    if a.dim() != 3 or g.dim() != 3:
        raise ValueError(f"a and g must be [N, T, I] and [N, T, O], got {tuple(a.shape)} and "
                         f"{tuple(g.shape)}")
    if a.shape[:2] != g.shape[:2]:
        raise ValueError(f"a and g must share N and T, got {tuple(a.shape)} and {tuple(g.shape)}")
    if a.device != g.device:
        raise ValueError(f"a and g must be on one device, got {a.device} and {g.device}")
    if weights is not None and weights.shape != (a.shape[0],):
        raise ValueError(f"weights must have shape [{a.shape[0]}], got {tuple(weights.shape)}")


def torch_token_fisher(a: Tensor, g: Tensor, weights: Tensor | None = None) -> Tensor:
    """Reference: per-sample ``G_n = g_nᵀ a_n`` by ``einsum``, squared, (weighted) summed over
    ``n``; float32 whatever the input dtype. Holds the ``N × O × I`` per-sample buffer."""
    _check(a, g, weights)
    sq = torch.einsum("nto,nti->noi", g.float(), a.float()).pow(2)
    if weights is not None:
        sq = sq * weights.float()[:, None, None]
    return sq.sum(0)


_kernel = None


def _get_kernel():  # noqa: ANN202 - returns a triton.JITFunction
    """The Triton kernel, defined on first use (importing Triton is slow, and
    ``TRITON_INTERPRET`` is read when the kernel is defined)."""
    global _kernel
    if _kernel is not None:
        return _kernel
    import triton
    import triton.language as tl

    # Program (po, pi, ps) owns the tile F[o0:o0+BO, i0:i0+BI] and the samples
    # n = ps, ps + SPLIT, ps + 2·SPLIT, … (SPLIT > 1 writes partial sums to plane ps):
    #   for each such n:
    #       G = 0                                    # [BO, BI] fp32, registers only
    #       for t0 in 0, BT, 2·BT, … < T:
    #           G += g[n, t0:t0+BT, o0:o0+BO]ᵀ @ a[n, t0:t0+BT, i0:i0+BI]    (tl.dot)
    #       F += w_n · G ⊙ G                         # w_n = 1 without weights
    #   store F once.
    # Out-of-range rows/columns/tokens load as 0 (so tiles may exceed O, I, T: tl.dot needs
    # every tile dimension ≥ 16) and are never stored. Any strides are allowed. UPCAST turns
    # the tiles to fp32 first (only under the interpreter, whose bf16 dot multiplies the raw
    # uint16 bits; bf16 products are exact in fp32, so the result is the same).
    @triton.jit
    def token_fisher_kernel(
        a_ptr, g_ptr, w_ptr, f_ptr,
        N, T, O, I,  # noqa: E741
        s_an, s_at, s_ai, s_gn, s_gt, s_go, s_fs, s_fo, s_fi,
        HAS_WEIGHTS: tl.constexpr, SPLIT: tl.constexpr, INPUT_PRECISION: tl.constexpr,
        UPCAST: tl.constexpr, BLOCK_O: tl.constexpr, BLOCK_I: tl.constexpr, BLOCK_T: tl.constexpr,
    ):
        pid_o = tl.program_id(0)
        pid_i = tl.program_id(1)
        pid_s = tl.program_id(2)
        offs_o = pid_o * BLOCK_O + tl.arange(0, BLOCK_O)
        offs_i = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
        offs_t = tl.arange(0, BLOCK_T)
        in_o = offs_o < O
        in_i = offs_i < I
        fisher = tl.full((BLOCK_O, BLOCK_I), 0.0, tl.float32)
        a_base = a_ptr + pid_s * s_an  # pointers advance by SPLIT samples per step (the
        g_base = g_ptr + pid_s * s_gn  # launcher keeps SPLIT·stride within int32)
        for n in range(pid_s, N, SPLIT):
            grad = tl.full((BLOCK_O, BLOCK_I), 0.0, tl.float32)
            for t0 in range(0, T, BLOCK_T):
                tt = t0 + offs_t
                in_t = tt < T
                g_tile = tl.load(g_base + offs_o[:, None] * s_go + tt[None, :] * s_gt,
                                 mask=in_o[:, None] & in_t[None, :], other=0.0)  # [BO, BT]
                a_tile = tl.load(a_base + tt[:, None] * s_at + offs_i[None, :] * s_ai,
                                 mask=in_t[:, None] & in_i[None, :], other=0.0)  # [BT, BI]
                if UPCAST:
                    g_tile = g_tile.to(tl.float32)
                    a_tile = a_tile.to(tl.float32)
                grad = tl.dot(g_tile, a_tile, grad, input_precision=INPUT_PRECISION)
            if HAS_WEIGHTS:
                fisher += tl.load(w_ptr + n) * grad * grad
            else:
                fisher += grad * grad
            a_base += SPLIT * s_an
            g_base += SPLIT * s_gn
        f_ptrs = f_ptr + pid_s * s_fs + offs_o[:, None] * s_fo + offs_i[None, :] * s_fi
        tl.store(f_ptrs, fisher, mask=in_o[:, None] & in_i[None, :])

    _kernel = token_fisher_kernel
    return _kernel


def _interpreted(kernel: object) -> bool:
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def _span(x: Tensor) -> int:
    """Largest element offset inside one sample ``x[n]``."""
    return sum((size - 1) * stride for size, stride in zip(x.shape[1:], x.stride()[1:]))


def _block(size: int, cap: int) -> int:
    """Smallest power of two ≥ ``size``, clamped to ``[16, cap]`` (tl.dot's minimum is 16)."""
    return max(16, min(cap, 1 << max(0, size - 1).bit_length()))


def _launch(a: Tensor, g: Tensor, weights: Tensor | None, split: int | None,
            block_o: int | None, block_i: int | None, block_t: int | None,
            allow_tf32: bool | None) -> Tensor:
    import triton

    n, t, i = a.shape
    o = g.shape[2]
    bo = block_o or _block(o, 64)
    bi = block_i or _block(i, 64)
    bt = block_t or _block(t, 32)
    for name, v in (("block_o", bo), ("block_i", bi), ("block_t", bt)):
        if v < 16 or v & (v - 1):
            raise ValueError(f"{name} must be a power of two ≥ 16, got {v}")
    tiles = triton.cdiv(o, bo) * triton.cdiv(i, bi)
    if split is None:  # enough programs to fill the GPU when the layer has few tiles
        sms = (torch.cuda.get_device_properties(a.device).multi_processor_count
               if a.is_cuda else 1)
        split = max(1, min(n, triton.cdiv(2 * sms, tiles), 64))
    if split < 1:
        raise ValueError(f"split must be ≥ 1, got {split}")
    # the kernel's offsets are int32: one sample's span, and SPLIT·(sample or partial-plane
    # stride), must fit (only odd layouts of huge tensors need the copy)
    a, g = (x if _span(x) < 2**31 else x.contiguous() for x in (a, g))
    if max(_span(a), _span(g)) >= 2**31:
        raise ValueError("triton_token_fisher: one sample spans ≥ 2³¹ elements")
    biggest = max(a.stride(0), g.stride(0), o * i, 1)
    split = max(1, min(split, n, (2**31 - 1) // biggest))
    if a.dtype != g.dtype:  # tl.dot needs one operand dtype
        common = torch.promote_types(a.dtype, g.dtype)
        a, g = a.to(common), g.to(common)
    out = torch.empty((split, o, i) if split > 1 else (o, i), dtype=torch.float32,
                      device=a.device)
    fs = out.stride(0) if split > 1 else 0
    fo, fi = out.stride(-2), out.stride(-1)
    w = (out if weights is None  # a dummy pointer when unused
         else weights.to(device=a.device, dtype=torch.float32).contiguous())
    kernel = _get_kernel()
    upcast = a.dtype == torch.bfloat16 and _interpreted(kernel)
    fp32 = a.dtype == torch.float32 or upcast
    if allow_tf32 is None:  # torch's own setting for fp32 matmuls
        allow_tf32 = torch.get_float32_matmul_precision() != "highest"
    precision = "ieee" if fp32 and not allow_tf32 else "tf32"  # no effect on 16-bit tiles
    kernel[(triton.cdiv(o, bo), triton.cdiv(i, bi), split)](
        a, g, w, out, n, t, o, i,
        a.stride(0), a.stride(1), a.stride(2), g.stride(0), g.stride(1), g.stride(2),
        fs, fo, fi,
        HAS_WEIGHTS=weights is not None, SPLIT=split, INPUT_PRECISION=precision, UPCAST=upcast,
        BLOCK_O=bo, BLOCK_I=bi, BLOCK_T=bt, num_warps=4 if bo * bi <= 4096 else 8)
    return out.sum(0) if split > 1 else out


@torch.no_grad()
def triton_token_fisher(
    a: Tensor,
    g: Tensor,
    weights: Tensor | None = None,
    *,
    split: int | None = None,
    block_o: int | None = None,
    block_i: int | None = None,
    block_t: int | None = None,
    allow_tf32: bool | None = None,
) -> Tensor:
    """``F[o, i] = Σ_n w_n (Σ_t g[n, t, o] a[n, t, i])²`` as float32 ``[O, I]`` — one fused
    kernel, per-sample gradients never written to memory.

    ``a``: ``[N, T, I]``, ``g``: ``[N, T, O]`` (float16/bfloat16/float32, any strides — a
    transposed view of an unfolded conv input needs no copy); ``weights``: optional ``[N]``.
    Products accumulate in float32; float32 inputs use exact (IEEE) products unless
    ``allow_tf32`` (default: TF32 exactly when ``torch.get_float32_matmul_precision()`` is
    not ``"highest"``, as for torch's own matmuls). ``split`` spreads the samples over that
    many programs per tile (partial sums added after; default: enough to fill the GPU);
    ``block_*`` override the tile sizes (powers of two ≥ 16). Runs on CUDA, or on CPU under
    ``TRITON_INTERPRET=1``.
    """
    _check(a, g, weights)
    if a.dtype not in _DTYPES or g.dtype not in _DTYPES:
        raise ValueError(f"triton_token_fisher takes float16/bfloat16/float32, got {a.dtype} "
                         f"and {g.dtype}")
    if not _HAS_TRITON:
        raise ValueError("triton_token_fisher needs triton (pip install triton)")
    n, _, i = a.shape
    o = g.shape[2]
    if n == 0 or o == 0 or i == 0 or a.shape[1] == 0:
        return torch.zeros((o, i), dtype=torch.float32, device=a.device)
    return _launch(a, g, weights, split, block_o, block_i, block_t, allow_tf32)
