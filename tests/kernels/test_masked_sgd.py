"""Masked SGD: the reference and the foreach path against torch.optim.SGD (bit for bit), the
one-launch Triton kernel (interpreted on CPU) against the reference, the frozen-entries
property, bit packing, the automatic choice and input errors."""

from __future__ import annotations

import time

import pytest
import torch

from fastunlearn.kernels import masked_sgd
from fastunlearn.kernels.masked_sgd import (
    choose_impl,
    masked_sgd_step,
    pack_mask,
    prepare_mask,
    reference_masked_sgd_step,
    torch_masked_sgd_step,
    triton_masked_sgd_step,
    unpack_mask,
)

SHAPES = [(41, 401), (7,), (3, 5, 5, 3), (0,), (1,), (33,)]
HYPER = [
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.0, weight_decay=1e-2, nesterov=False),
    dict(momentum=0.9, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=False),
    dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(momentum=0.5, weight_decay=0.0, nesterov=False, dampening=0.3),
]
HYPER_IDS = ["sgd", "wd", "mom", "mom-wd", "nesterov-wd", "dampening"]
NONE_GRAD = (2, 1)  # (step, param): this gradient is None, so the step skips the parameter


def _tensors(seed: int = 0, steps: int = 3):
    """Params and per-step grads on SHAPES; one gradient is None (NONE_GRAD)."""
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    grads: list[list[torch.Tensor | None]] = [
        [torch.randn(s, generator=g) for s in SHAPES] for _ in range(steps)]
    if steps > NONE_GRAD[0]:
        grads[NONE_GRAD[0]][NONE_GRAD[1]] = None
    return params, grads


def _masks(seed: int, density: float = 0.5) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(s, generator=g) < density for s in SHAPES]


def _run(fn, params, grads, masks, hyper, **kw):  # noqa: ANN001, ANN202
    ps = [p.clone() for p in params]
    bufs: list[torch.Tensor | None] = [None] * len(ps)
    for gs in grads:
        bufs = fn(ps, [None if g is None else g.clone() for g in gs], masks, bufs, lr=0.1,
                  **hyper, **kw)
    return ps, bufs


def _torch_sgd(params, grads, hyper):  # noqa: ANN001, ANN202
    ref = [torch.nn.Parameter(p.clone()) for p in params]
    opt = torch.optim.SGD(ref, lr=0.1, **hyper)
    for gs in grads:
        for p, g in zip(ref, gs):
            p.grad = None if g is None else g.clone()
        opt.step()
    bufs = [opt.state[p].get("momentum_buffer") if p in opt.state else None for p in ref]
    return [p.detach() for p in ref], bufs


# --------------------------------------------------------------------- torch paths ----------

@pytest.mark.parametrize("impl", ["reference", "torch"])
@pytest.mark.parametrize("hyper", HYPER, ids=HYPER_IDS)
def test_all_ones_mask_equals_torch_sgd_bit_for_bit(hyper: dict, impl: str) -> None:
    params, grads = _tensors()
    want_p, want_b = _torch_sgd(params, grads, hyper)
    for masks in ([torch.ones(s, dtype=torch.bool) for s in SHAPES], [None] * len(SHAPES),
                  [pack_mask(torch.ones(s)) for s in SHAPES]):
        got_p, got_b = _run(masked_sgd_step, params, grads, masks, hyper, impl=impl)
        for p, q in zip(got_p, want_p):
            assert torch.equal(p, q)
        for b, c in zip(got_b, want_b):
            assert (b is None) == (c is None)
            assert b is None or torch.equal(b, c)


@pytest.mark.parametrize("overwrite", [False, True], ids=["keep-grads", "overwrite-grads"])
@pytest.mark.parametrize("hyper", HYPER, ids=HYPER_IDS)
def test_foreach_path_equals_reference_bit_for_bit(hyper: dict, overwrite: bool) -> None:
    params, grads = _tensors(1)
    masks = _masks(2)
    mixed = [m.float() if i % 3 == 0 else pack_mask(m) if i % 3 == 1 else m
             for i, m in enumerate(masks)]  # float, packed and bool masks in one call
    mixed[4] = None  # and one unmasked parameter
    ref_mixed = list(masks)
    ref_mixed[4] = None
    ref_p, ref_b = _run(reference_masked_sgd_step, params, grads, ref_mixed, hyper)
    got_p, got_b = _run(torch_masked_sgd_step, params, grads, mixed, hyper,
                        overwrite_grads=overwrite)
    for p, q in zip(got_p, ref_p):
        assert torch.equal(p, q)
    for b, c in zip(got_b, ref_b):
        assert (b is None) == (c is None)
        assert b is None or torch.equal(b, c)


@pytest.mark.parametrize("impl", ["reference", "torch"])
def test_entries_outside_mask_stay_frozen(impl: str) -> None:
    params, grads = _tensors(3)
    masks = _masks(4, density=0.4)
    hyper = dict(momentum=0.9, weight_decay=0.1, nesterov=True)
    got_p, got_b = _run(masked_sgd_step, params, grads, masks, hyper, impl=impl)
    for p, p0, m, b in zip(got_p, params, masks, got_b):
        assert torch.equal(p[~m], p0[~m])
        assert b is not None and torch.equal(b[~m], torch.zeros_like(b[~m]))
        if m.any():
            assert not torch.equal(p[m], p0[m])


def test_addcmul_fallback_is_exact_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds whose addcmul rounds twice take the masked-copy path: same numbers."""
    monkeypatch.setattr(masked_sgd, "_exact_addcmul", lambda dtype, device_type: False)
    params, grads = _tensors(12)
    want_p, _ = _torch_sgd(params, grads, HYPER[1])
    got_p, _ = _run(torch_masked_sgd_step, params, grads,
                    [torch.ones(s) for s in SHAPES], HYPER[1])
    for p, q in zip(got_p, want_p):
        assert torch.equal(p, q)


def test_grads_are_not_modified() -> None:
    params, grads = _tensors(5, steps=1)
    copies = [g.clone() for g in grads[0]]
    for hyper in HYPER:
        torch_masked_sgd_step([p.clone() for p in params], grads[0], _masks(6),
                              [None] * len(params), lr=0.1, **hyper)
    for g, c in zip(grads[0], copies):
        assert torch.equal(g, c)


@pytest.mark.parametrize("impl", ["reference", "torch", "triton"])
def test_old_buffer_coasts_outside_mask(impl: str, request: pytest.FixtureRequest) -> None:
    """Outside the mask the step is SGD with zero gradient and no weight decay: b ← μ·b,
    θ ← θ − lr·μ·b (what the module docstring promises for pre-existing buffers)."""
    dev = request.getfixturevalue("triton_device") if impl == "triton" else "cpu"
    p0, b0, g = (torch.randn(2, 37, device=dev) for _ in range(3))
    m = torch.rand(2, 37, device=dev) < 0.5
    p, bufs = p0.clone(), [b0.clone()]
    masked_sgd_step([p], [g], [m], bufs, lr=0.1, momentum=0.9, weight_decay=0.5, impl=impl)
    torch.testing.assert_close(bufs[0][~m], 0.9 * b0[~m], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(p[~m], p0[~m] - 0.1 * 0.9 * b0[~m], rtol=1e-6, atol=1e-7)


# --------------------------------------------------------------------- packing, choice ------

def test_pack_roundtrip() -> None:
    m = torch.rand(41, 401) < 0.3
    packed = pack_mask(m)
    assert packed.dtype == torch.int32 and packed.numel() == -(-m.numel() // 32)
    assert torch.equal(unpack_mask(packed, m.numel()).view(m.shape), m)
    ones = pack_mask(torch.ones(64, dtype=torch.bool))
    assert torch.equal(ones, torch.full((2,), -1, dtype=torch.int32))  # bit 31 set


def test_auto_uses_foreach_path_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    for name in ("reference", "torch", "triton"):
        monkeypatch.setitem(masked_sgd._IMPL_FNS, name,
                            lambda *a, _n=name, **k: called.append(_n) or a[3])
    p = [torch.zeros(3)]
    masked_sgd_step(p, [torch.ones(3)], [torch.ones(3)], [None], lr=0.1)
    assert called == ["torch"]
    assert choose_impl(p, [torch.ones(3)], [None], [None]) == "torch"


def test_prepare_mask_on_cpu_is_the_param_dtype() -> None:
    p = torch.zeros(3, 4, dtype=torch.float64)
    m = prepare_mask(torch.rand(3, 4) < 0.5, p)
    assert m.dtype == torch.float64 and set(m.unique().tolist()) <= {0.0, 1.0}
    with pytest.raises(ValueError, match="mask shape"):
        prepare_mask(torch.ones(4, 3), p)


def test_bad_input() -> None:
    p = [torch.zeros(3)]
    with pytest.raises(ValueError, match="same length"):
        masked_sgd_step(p, [], [torch.ones(3)], [None], lr=0.1)
    with pytest.raises(ValueError, match="mask shape"):
        masked_sgd_step(p, [torch.ones(3)], [torch.ones(4)], [None], lr=0.1)
    with pytest.raises(ValueError, match="grad shape"):
        masked_sgd_step(p, [torch.ones(4)], [None], [None], lr=0.1)
    with pytest.raises(ValueError, match="buffer shape"):
        masked_sgd_step(p, [torch.ones(3)], [None], [torch.ones(2)], lr=0.1, momentum=0.9)
    with pytest.raises(ValueError, match="nesterov"):
        masked_sgd_step(p, [torch.ones(3)], [torch.ones(3)], [None], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="≥ 0"):
        masked_sgd_step(p, [torch.ones(3)], [None], [None], lr=-0.1)
    with pytest.raises(ValueError, match="impl"):
        masked_sgd_step(p, [torch.ones(3)], [torch.ones(3)], [None], lr=0.1, impl="cuda")
    with pytest.raises(ValueError, match="contiguous"):
        triton_masked_sgd_step([torch.zeros(3, 4).t()], [torch.ones(4, 3)], [None], [None],
                               lr=0.1)
    with pytest.raises(ValueError, match="float64"):
        triton_masked_sgd_step([torch.zeros(3, dtype=torch.float64)],
                               [torch.ones(3, dtype=torch.float64)], [None], [None], lr=0.1)


# --------------------------------------------------------------------- Triton ---------------

@pytest.fixture
def triton_device(monkeypatch: pytest.MonkeyPatch) -> str:
    """CUDA when present; otherwise Triton's interpreter on CPU (TRITON_INTERPRET=1 is read
    when the kernel is defined, so the cached kernel is dropped before and after)."""
    pytest.importorskip("triton")
    if torch.cuda.is_available():
        return "cuda"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    monkeypatch.setattr(masked_sgd, "_kernel", None)
    return "cpu"


def _to(dev: str, params, grads, masks):  # noqa: ANN001, ANN202
    return ([p.to(dev) for p in params],
            [[None if g is None else g.to(dev) for g in gs] for gs in grads],
            [None if m is None else m.to(dev) for m in masks])


@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
@pytest.mark.parametrize("hyper", HYPER, ids=HYPER_IDS)
def test_triton_matches_reference(hyper: dict, packed: bool, triton_device: str) -> None:
    params, grads = _tensors(7)
    masks = _masks(8, density=0.6)
    masks[4] = None  # an unmasked parameter in the same launch
    kmasks = [None if m is None else pack_mask(m) if packed else m for m in masks]
    params, grads, masks = _to(triton_device, params, grads, masks)
    kmasks = [None if m is None else m.to(triton_device) for m in kmasks]
    ref_p, ref_b = _run(reference_masked_sgd_step, params, grads, masks, hyper)
    got_p, got_b = _run(triton_masked_sgd_step, params, grads, kmasks, hyper, block=256)
    for x, y, p0, m in zip(ref_p, got_p, params, masks):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-6)
        if m is not None:
            assert torch.equal(y[~m], p0[~m])  # frozen: fresh buffers hold 0 off the mask
    for x, y in zip(ref_b, got_b):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("hyper", [HYPER[3], HYPER[4]], ids=["mom-wd", "nesterov-wd"])
def test_triton_all_ones_equals_torch_sgd(hyper: dict, triton_device: str) -> None:
    params, grads = _tensors(9)
    want_p, want_b = _torch_sgd(params, grads, hyper)
    ones = [torch.ones(s, dtype=torch.bool) for s in SHAPES]
    params, grads, ones = _to(triton_device, params, grads, ones)
    got_p, got_b = _run(triton_masked_sgd_step, params, grads, ones, hyper, block=256)
    for p, q in zip(got_p, want_p):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-6, atol=1e-6)
    for b, c in zip(got_b, want_b):
        assert (b is None) == (c is None)
        if b is not None:
            torch.testing.assert_close(b.cpu(), c, rtol=1e-6, atol=1e-6)


def test_triton_is_one_launch_per_dtype(triton_device: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = masked_sgd._get_kernel()
    grids: list[tuple[int, ...]] = []

    class Counting:
        def __getitem__(self, grid: tuple[int, ...]):  # noqa: ANN204
            grids.append(grid)
            return kernel[grid]

    monkeypatch.setattr(masked_sgd, "_get_kernel", lambda: Counting())
    params, grads = _tensors(10, steps=1)
    params, grads, masks = _to(triton_device, params, grads, _masks(11))
    triton_masked_sgd_step(params, grads[0], masks, [None] * len(params), lr=0.1,
                           momentum=0.9, block=256)
    blocks = sum(-(-p.numel() // 256) for p in params)
    assert grids == [(blocks,)]
    # a second dtype is a second launch (fp16 computed in fp32, stored in fp16)
    grids.clear()
    half = [p.half() for p in params[:3]]
    want = [p.float() for p in half]
    hg = [g.half() for g in grads[0][:3]]
    triton_masked_sgd_step(params[:3] + half, grads[0][:3] + hg, masks[:3] * 2,
                           [None] * 6, lr=0.1, block=256)
    assert len(grids) == 2
    reference_masked_sgd_step(want, [g.float() for g in hg], masks[:3], [None] * 3, lr=0.1)
    for h, w in zip(half, want):
        torch.testing.assert_close(h.float(), w, rtol=1e-3, atol=1e-3)


def test_kernel_compiles_for_cuda_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ahead-of-time compilation for sm_90 (no device needed): the int → pointer casts, the
    constexpr dtype and the full-block fast path lower to PTX with 16-byte vector accesses."""
    triton = pytest.importorskip("triton")
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    if "nvidia" not in triton.backends.backends:
        pytest.skip("Triton has no NVIDIA backend here")
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(masked_sgd, "_kernel", None)
    kernel = masked_sgd._get_kernel()
    import triton.language as tl

    names = ["meta_ptr", "block_tensor_ptr", "lr", "mu", "one_minus_damp", "wd", "HAS_MOMENTUM",
             "NESTEROV", "DTYPE", "ALIGNED", "BLOCK"]
    types = ["*i64", "*i32", "fp32", "fp32", "fp32", "fp32"] + ["constexpr"] * 5
    consts = {"HAS_MOMENTUM": True, "NESTEROV": True, "DTYPE": tl.float32, "ALIGNED": True,
              "BLOCK": 2048}
    src = ASTSource(fn=kernel, signature=dict(zip(names, types)),
                    constexprs={(names.index(k),): v for k, v in consts.items()})
    ptx = triton.compile(src, target=GPUTarget("cuda", 90, 32),
                         options={"num_warps": 8, "enable_fp_fusion": True}).asm["ptx"]
    assert "ld.global.v4" in ptx and "st.global.v4" in ptx


# --------------------------------------------------------------------- GPU ------------------

def _resnet18_shapes() -> list[tuple[int, ...]]:
    from fastunlearn.models import create_model

    model = create_model("resnet18", num_classes=10, in_chans=3, img_size=32)
    return [tuple(p.shape) for p in model.parameters()]


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_auto_is_triton_and_twice_as_fast_as_mask_multiply_sgd() -> None:
    pytest.importorskip("triton")
    dev = "cuda"
    shapes = _resnet18_shapes()
    torch.manual_seed(0)
    base = [torch.randn(s, device=dev) for s in shapes]
    masks = [torch.rand(s, device=dev) < 0.5 for s in shapes]
    grads = [torch.randn(s, device=dev) for s in shapes]
    hyper = dict(momentum=0.9, weight_decay=5e-4)
    # equality with the reference on the real kernel
    ref_p, ref_b = _run(reference_masked_sgd_step, base, [grads] * 2, masks, hyper)
    assert choose_impl(base, grads, masks, [None] * len(base)) == "triton"
    got_p, got_b = _run(masked_sgd_step, base, [grads] * 2, masks, hyper)
    for x, y in zip(ref_p + ref_b, got_p + got_b):
        torch.testing.assert_close(y, x, rtol=1e-5, atol=1e-6)
    # speed: mask multiply + torch.optim.SGD(foreach) against masked_sgd_step(impl="auto")
    ref = [torch.nn.Parameter(p.clone()) for p in base]
    fmask = [m.float() for m in masks]
    opt = torch.optim.SGD(ref, lr=0.1, foreach=True, **hyper)
    mine = [p.clone() for p in base]
    bufs: list[torch.Tensor | None] = [None] * len(mine)

    for p, g in zip(ref, grads):
        p.grad = g.clone()

    def reference() -> None:
        torch._foreach_mul_([p.grad for p in ref], fmask)
        opt.step()

    def fast() -> None:
        nonlocal bufs
        bufs = masked_sgd_step(mine, grads, masks, bufs, lr=0.1, **hyper)

    def timed(fn) -> float:  # noqa: ANN001
        for _ in range(3):
            fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(20):
            t0 = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            out.append(time.perf_counter() - t0)
        return sorted(out)[len(out) // 2]

    ratio = timed(reference) / timed(fast)
    assert ratio >= 2.0, f"masked_sgd_step is only {ratio:.2f}× the reference"
