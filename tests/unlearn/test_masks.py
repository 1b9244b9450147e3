"""compute_saliency / threshold_scores / masked_step against slow, obviously correct loops."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastunlearn.data import forget_classes
from fastunlearn.unlearn.masks import (
    MaskedSGD,
    compute_saliency,
    make_sgd,
    mask_density,
    masked_step,
    saliency_scores,
    threshold_scores,
    weight_attributions,
)


def _tiny(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 6), nn.ReLU(), nn.Linear(6, 10))


@pytest.fixture(scope="module")
def tiny_forget(digits):
    # a small forget set (30 samples of class "3") so the per-sample loops stay fast
    return forget_classes(digits, ["3"]).forget.take(30, seed=0)


def _per_sample_grad_sum(model: nn.Module, part) -> dict[str, torch.Tensor]:
    """Σ_i ∇θ CE(x_i) / n, one sample at a time (slow, obviously correct)."""
    x, y = part.tensors()
    total = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for i in range(len(y)):
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        for n, p in model.named_parameters():
            total[n] += p.grad
    return {n: g / len(y) for n, g in total.items()}


def _reference_scores(model: nn.Module, part, kind: str, steps: int) -> dict[str, torch.Tensor]:
    if kind == "grad":
        return {n: g.abs() for n, g in _per_sample_grad_sum(model, part).items()}
    trained = {n: p.detach().clone() for n, p in model.named_parameters()}
    acc = {n: torch.zeros_like(p) for n, p in trained.items()}
    for k in range(steps):
        alpha = (k + 0.5) / steps
        scaled = copy.deepcopy(model)
        with torch.no_grad():
            for n, p in scaled.named_parameters():
                p.copy_(alpha * trained[n])
        for n, g in _per_sample_grad_sum(scaled, part).items():
            acc[n] += g
    return {n: (acc[n] / steps * trained[n]).abs() for n in trained}


def _reference_threshold(scores: dict[str, torch.Tensor], sparsity: float):
    flat = [(float(v), (ti, j)) for ti, s in enumerate(scores.values()) for j, v in
            enumerate(s.reshape(-1).tolist())]
    keep = round((1 - sparsity) * len(flat))
    ranked = sorted(flat, key=lambda t: (-t[0], t[1]))[:keep]
    chosen = {pos for _, pos in ranked}
    return {
        name: torch.tensor(
            [(ti, j) in chosen for j in range(s.numel())], dtype=torch.bool
        ).view(s.shape)
        for ti, (name, s) in enumerate(scores.items())
    }


@pytest.mark.parametrize("kind", ["grad", "ig"])
def test_saliency_scores_match_per_sample_loop(tiny_forget, kind):
    model = _tiny()
    fast = saliency_scores(model, tiny_forget, kind, batch_size=7, ig_steps=4)
    ref = _reference_scores(model, tiny_forget, kind, steps=4)
    assert fast.keys() == ref.keys()
    for name in ref:
        torch.testing.assert_close(fast[name], ref[name], rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.83])
def test_threshold_matches_sorted_loop(tiny_forget, sparsity):
    scores = _reference_scores(_tiny(), tiny_forget, "grad", 1)
    scores["tie"] = torch.zeros(5)  # exact ties (like dead units) are broken by position
    fast = threshold_scores(scores, sparsity)
    ref = _reference_threshold(scores, sparsity)
    for name in ref:
        assert torch.equal(fast[name], ref[name]), name
    total = sum(s.numel() for s in scores.values())
    assert sum(int(m.sum()) for m in fast.values()) == round((1 - sparsity) * total)


@pytest.mark.parametrize("kind", ["grad", "ig"])
def test_compute_saliency_equals_reference_mask(tiny_forget, kind):
    model = _tiny()
    masks = compute_saliency(model, tiny_forget, kind, 0.5, ig_steps=4)
    ref = _reference_threshold(_reference_scores(model, tiny_forget, kind, 4), 0.5)
    for name in ref:
        assert torch.equal(masks[name], ref[name]), name
    assert mask_density(masks) == pytest.approx(0.5, abs=1e-3)


def test_integrated_gradients_completeness(tiny_forget):
    # Σ_i IG_i = L(θ) − L(θ₀) up to the quadrature error (θ₀ = 0 gives uniform logits)
    model = _tiny()
    attr = weight_attributions(model, tiny_forget, "ig", ig_steps=64)
    x, y = tiny_forget.tensors()
    with torch.no_grad():
        gap = F.cross_entropy(model(x), y) - torch.log(torch.tensor(10.0))
    total = sum(a.sum() for a in attr.values())
    assert float(total) == pytest.approx(float(gap), rel=1e-2, abs=1e-3)


def test_saliency_leaves_model_unchanged_and_in_train_mode(tiny_forget):
    model = _tiny().train()
    before = copy.deepcopy(model.state_dict())
    compute_saliency(model, tiny_forget, "ig", 0.5, ig_steps=2)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_masked_step_equals_torch_sgd_where_mask_is_true():
    torch.manual_seed(0)
    p_ref = torch.randn(41, 13, requires_grad=True)
    p_all = p_ref.detach().clone().requires_grad_(True)
    p_mask = p_ref.detach().clone().requires_grad_(True)
    mask = torch.rand(41, 13) < 0.4
    ref_opt = torch.optim.SGD([p_ref], lr=0.1, momentum=0.9, weight_decay=5e-3)
    all_opt = MaskedSGD([p_all], {id(p_all): torch.ones_like(mask)}, 0.1, 0.9, 5e-3)
    mask_opt = MaskedSGD([p_mask], {id(p_mask): mask}, 0.1, 0.9, 5e-3)
    start = p_ref.detach().clone()
    for _ in range(3):
        g = torch.randn(41, 13)
        for p, opt in ((p_ref, ref_opt), (p_all, all_opt), (p_mask, mask_opt)):
            p.grad = g.clone()
            opt.step()
    torch.testing.assert_close(p_all, p_ref, rtol=0, atol=0)
    torch.testing.assert_close(p_mask[mask], p_ref[mask], rtol=0, atol=0)
    assert torch.equal(p_mask[~mask], start[~mask])


def _salun_reference_steps(p, mask, grads, *, lr, momentum, wd, restore):
    """The SalUn code's masked update: ``grad *= mask``, ``torch.optim.SGD.step`` (momentum,
    weight decay); since its "Fix weight decay (#33)" (``restore``) the frozen weights are
    then reset to their values before unlearning and the momentum buffer is multiplied by the
    mask. Without ``restore``: the code before that fix."""
    theta0 = p.detach().clone()
    opt = torch.optim.SGD([p], lr=lr, momentum=momentum, weight_decay=wd)
    keep = mask.to(p.dtype)
    for g in grads:
        p.grad = g.clone() * keep
        opt.step()
        if restore:
            with torch.no_grad():
                p.mul_(keep).add_(theta0 * (1 - keep))
                opt.state[p]["momentum_buffer"].mul_(keep)
    return p


def test_masked_sgd_equals_the_salun_code_since_its_weight_decay_fix():
    """Weight decay is masked here; the SalUn reference did the same since "Fix weight decay
    (#33)" (before it, decay moved the frozen weights) — bit-identical over several steps."""
    torch.manual_seed(3)
    start = torch.randn(37, 11)
    mask = torch.rand(37, 11) < 0.5
    grads = [torch.randn(37, 11) for _ in range(4)]
    kw = {"lr": 0.05, "momentum": 0.9, "wd": 5e-2}
    ref = _salun_reference_steps(start.clone().requires_grad_(True), mask, grads, restore=True,
                                 **kw)
    old = _salun_reference_steps(start.clone().requires_grad_(True), mask, grads, restore=False,
                                 **kw)
    p = start.clone().requires_grad_(True)
    opt = MaskedSGD([p], {id(p): mask}, kw["lr"], kw["momentum"], kw["wd"])
    for g in grads:
        p.grad = g.clone()
        opt.step()
    assert torch.equal(p, ref)
    assert torch.equal(p[~mask], start[~mask])
    assert not torch.equal(old[~mask], start[~mask])  # the pre-fix code moved frozen weights
    assert torch.equal(old[mask], ref[mask])  # … and nothing else differed


def test_masked_step_functional_creates_buffers():
    p = torch.ones(4)
    bufs: list = [None]
    m = torch.tensor([True, False, True, False])
    masked_step([p], [torch.ones(4)], [m], bufs, lr=0.5, momentum=0.9, weight_decay=0.0)
    assert torch.equal(p, torch.tensor([0.5, 1.0, 0.5, 1.0]))
    assert torch.equal(bufs[0], torch.tensor([1.0, 0.0, 1.0, 0.0]))


def test_make_sgd_validates_masks():
    model = _tiny()
    with pytest.raises(ValueError, match="does not have"):
        make_sgd(model, 0.1, masks={"nope": torch.ones(3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="has shape"):
        make_sgd(model, 0.1, masks={"1.weight": torch.ones(3, dtype=torch.bool)})


@pytest.mark.parametrize(
    ("call", "match"),
    [(lambda m, p: compute_saliency(m, p, "hessian"), "kind must be one of"),
     (lambda m, p: compute_saliency(m, p, "grad", sparsity=1.0), "sparsity must be in"),
     (lambda m, p: compute_saliency(m, p, "grad", sparsity=0), "sparsity must be in"),
     (lambda m, p: compute_saliency(m, p, "ig", ig_steps=0), "ig_steps"),
     (lambda m, p: compute_saliency(m, p.take(0), "grad"), "non-empty")],
)
def test_saliency_input_errors(tiny_forget, call, match):
    with pytest.raises(ValueError, match=match):
        call(_tiny(), tiny_forget)


# --- the methods' mask API runs on fastunlearn.kernels ----------------------------------------

def test_masked_sgd_runs_the_kernel_and_supports_nesterov(monkeypatch):
    from fastunlearn.engine import optim as masks_mod  # where MaskedSGD calls the kernel
    from fastunlearn.kernels import masked_sgd

    calls = []
    real = masks_mod.masked_sgd_step
    monkeypatch.setattr(masks_mod, "masked_sgd_step",
                        lambda *a, **k: calls.append(len(a[0])) or real(*a, **k))
    torch.manual_seed(1)
    ps = [torch.randn(41, 13, requires_grad=True), torch.randn(7, requires_grad=True)]
    refs = [p.detach().clone().requires_grad_(True) for p in ps]
    masks = {id(ps[0]): torch.rand(41, 13) < 0.5}  # the second parameter is unmasked
    opt = MaskedSGD(ps, masks, 0.1, 0.9, 1e-2, nesterov=True)
    ref = torch.optim.SGD(refs, lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)
    assert opt._masks[id(ps[0])].dtype == torch.float32  # prepared once for the CPU path
    start = ps[0].detach().clone()
    for _ in range(3):
        gs = [torch.randn_like(p) for p in ps]
        for group in (ps, refs):
            for p, g in zip(group, gs):
                p.grad = g.clone()
        opt.step()
        ref.step()
    assert calls == [2, 2, 2]  # one kernel call per step for all parameters
    m = masks[id(ps[0])]
    assert torch.equal(ps[0][m], refs[0][m]) and torch.equal(ps[1], refs[1])
    assert torch.equal(ps[0][~m], start[~m])
    assert masked_sgd.choose_impl(ps, [p.grad for p in ps], [None, None], [None, None]) == "torch"


def test_ig_saliency_is_the_ig_kernel(tiny_forget, monkeypatch):
    from fastunlearn.kernels.ig import integrated_gradients
    from fastunlearn.unlearn import masks as masks_mod

    calls = []
    monkeypatch.setattr(masks_mod, "integrated_gradients",
                        lambda *a, **k: calls.append(k) or integrated_gradients(*a, **k))
    model = _tiny()
    attr = weight_attributions(model, tiny_forget, "ig", ig_steps=3, batch_size=11)
    assert len(calls) == 1 and calls[0]["method"] == "riemann" and calls[0]["steps"] == 3
    x, y = tiny_forget.tensors()
    direct = integrated_gradients(model, (x, y), steps=3, method="riemann")
    for name, a in attr.items():
        torch.testing.assert_close(a, direct[name], rtol=1e-5, atol=1e-8)
