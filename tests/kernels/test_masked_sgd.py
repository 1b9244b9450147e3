"""Masked SGD: the torch reference against torch.optim.SGD, the Triton kernel (interpreted on
CPU) against the reference, bit packing, and the automatic choice."""

from __future__ import annotations

import pytest
import torch

from fastunlearn.kernels import masked_sgd
from fastunlearn.kernels.masked_sgd import (
    masked_sgd_step,
    pack_mask,
    torch_masked_sgd_step,
    triton_masked_sgd_step,
    unpack_mask,
)

SHAPES = [(41, 401), (7,), (3, 5, 2, 2), (1,)]
HYPER = [
    dict(momentum=0.0, weight_decay=0.0, nesterov=False),
    dict(momentum=0.9, weight_decay=5e-4, nesterov=False),
    dict(momentum=0.9, weight_decay=1e-2, nesterov=True),
    dict(momentum=0.5, weight_decay=0.0, nesterov=False, dampening=0.3),
]


def _tensors(seed: int = 0) -> tuple[list[torch.Tensor], list[list[torch.Tensor]]]:
    g = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=g) for s in SHAPES]
    grads = [[torch.randn(s, generator=g) for s in SHAPES] for _ in range(3)]
    return params, grads


@pytest.mark.parametrize("hyper", HYPER)
def test_reference_equals_torch_sgd_with_all_ones_mask(hyper: dict) -> None:
    params, grads = _tensors()
    ref = [torch.nn.Parameter(p.clone()) for p in params]
    opt = torch.optim.SGD(ref, lr=0.1, **hyper)
    mine = [p.clone() for p in params]
    masks = [torch.ones_like(p, dtype=torch.bool) for p in params]
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for step_grads in grads:
        for p, g in zip(ref, step_grads):
            p.grad = g.clone()
        opt.step()
        bufs = masked_sgd_step(mine, step_grads, masks, bufs, lr=0.1, **hyper)
    for p, q in zip(mine, ref):
        assert torch.equal(p, q.detach())
    if hyper["momentum"] > 0:
        for b, q in zip(bufs, ref):
            assert torch.equal(b, opt.state[q]["momentum_buffer"])


def test_reference_freezes_entries_outside_mask() -> None:
    params, grads = _tensors(1)
    g = torch.Generator().manual_seed(2)
    masks = [torch.rand(p.shape, generator=g) < 0.4 for p in params]
    before = [p.clone() for p in params]
    bufs: list[torch.Tensor | None] = [None] * len(params)
    for step_grads in grads:
        bufs = torch_masked_sgd_step(params, step_grads, masks, bufs, lr=0.1, momentum=0.9,
                                     weight_decay=0.1)
    for p, p0, m, b in zip(params, before, masks, bufs):
        assert torch.equal(p[~m], p0[~m])
        assert b is not None and torch.equal(b[~m], torch.zeros_like(b[~m]))
        if m.any():
            assert not torch.equal(p[m], p0[m])


def test_pack_roundtrip() -> None:
    m = torch.rand(41, 401) < 0.3
    packed = pack_mask(m)
    assert packed.dtype == torch.int32 and packed.numel() == -(-m.numel() // 32)
    assert torch.equal(unpack_mask(packed, m.numel()).view(m.shape), m)
    ones = pack_mask(torch.ones(64, dtype=torch.bool))
    assert torch.equal(ones, torch.full((2,), -1, dtype=torch.int32))  # bit 31 set


def test_packed_mask_in_reference() -> None:
    params, grads = _tensors(3)
    masks = [torch.rand(p.shape) < 0.5 for p in params]
    a = [p.clone() for p in params]
    b = [p.clone() for p in params]
    torch_masked_sgd_step(a, grads[0], masks, [None] * 4, lr=0.1, momentum=0.9)
    torch_masked_sgd_step(b, grads[0], [pack_mask(m) for m in masks], [None] * 4, lr=0.1,
                          momentum=0.9)
    for x, y in zip(a, b):
        assert torch.equal(x, y)


def test_auto_uses_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    called = []
    monkeypatch.setattr(masked_sgd, "torch_masked_sgd_step",
                        lambda *a, **k: called.append("torch") or a[3])
    monkeypatch.setattr(masked_sgd, "triton_masked_sgd_step",
                        lambda *a, **k: called.append("triton") or a[3])
    p = [torch.zeros(3)]
    masked_sgd.masked_sgd_step(p, [torch.ones(3)], [torch.ones(3)], [None], lr=0.1)
    assert called == ["torch"]


def test_bad_input() -> None:
    p = [torch.zeros(3)]
    with pytest.raises(ValueError, match="same length"):
        masked_sgd_step(p, [], [torch.ones(3)], [None], lr=0.1)
    with pytest.raises(ValueError, match="mask shape"):
        masked_sgd_step(p, [torch.ones(3)], [torch.ones(4)], [None], lr=0.1)
    with pytest.raises(ValueError, match="nesterov"):
        masked_sgd_step(p, [torch.ones(3)], [torch.ones(3)], [None], lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="impl"):
        masked_sgd_step(p, [torch.ones(3)], [torch.ones(3)], [None], lr=0.1, impl="cuda")


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


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("hyper", HYPER)
def test_triton_matches_reference(hyper: dict, packed: bool, triton_device: str) -> None:
    dev = triton_device
    params, grads = _tensors(4)
    params = [p.to(dev) for p in params]
    grads = [[g.to(dev) for g in gs] for gs in grads]
    masks = [(torch.rand(p.shape) < 0.6).to(dev) for p in params]
    kmasks = [pack_mask(m) for m in masks] if packed else masks
    a, b = [p.clone() for p in params], [p.clone() for p in params]
    ba: list[torch.Tensor | None] = [None] * 4
    bb: list[torch.Tensor | None] = [None] * 4
    for gs in grads:
        ba = torch_masked_sgd_step(a, gs, masks, ba, lr=0.1, **hyper)
        bb = triton_masked_sgd_step(b, gs, kmasks, bb, lr=0.1, block=128, **hyper)
    for x, y in zip(a, b):
        torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7)
    for x, y in zip(ba, bb):
        assert (x is None) == (y is None)
        if x is not None:
            torch.testing.assert_close(y, x, rtol=1e-6, atol=1e-7)
