"""Integrated gradients over weights: completeness, quadrature accuracy, API behaviour."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastunlearn.kernels.ig import integrated_gradients, quadrature
from fastunlearn.models import create_model


def _mlp() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 9), nn.Tanh(), nn.Linear(9, 7), nn.Tanh(),
                         nn.Linear(7, 4))


@torch.no_grad()
def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return F.cross_entropy(model(x), y).item()


def _gap(model: nn.Module, x: torch.Tensor, y: torch.Tensor, baseline: dict) -> float:
    """``ℓ(θ) − ℓ(θ₀)`` computed directly."""
    m0 = copy.deepcopy(model)
    m0.load_state_dict(baseline)
    return _loss(model, x, y) - _loss(m0, x, y)


def test_quadrature_rules() -> None:
    for method in ("riemann", "gausslegendre"):
        a, w = quadrature(5, method)
        assert abs(sum(w) - 1) < 1e-12 and all(0 < v < 1 for v in a)
    a, w = quadrature(3, "gausslegendre")  # exact for α⁵
    assert abs(sum(wi * ai**5 for ai, wi in zip(a, w)) - 1 / 6) < 1e-12
    with pytest.raises(ValueError, match="method"):
        quadrature(3, "simpson")
    with pytest.raises(ValueError, match="steps"):
        quadrature(0)


@pytest.mark.parametrize("baseline_kind, m", [("zeros", 4), ("nearby", 8)])
def test_completeness_and_gauss_legendre_beats_riemann(baseline_kind: str, m: int) -> None:
    """Float64 so the comparison measures quadrature error, not rounding. (On rougher paths —
    a baseline 0.7σ away — GL(m) loses to the midpoint rule with 4m points for m ≤ 8: its
    advantage needs an integrand smooth on the scale of its node spacing.)"""
    model = _mlp().double()
    x, y = torch.randn(10, 3, 4, dtype=torch.float64), torch.randint(0, 4, (10,))
    if baseline_kind == "zeros":
        baseline = {k: torch.zeros_like(v) for k, v in model.state_dict().items()}
        arg: object = "zeros"
    else:
        torch.manual_seed(9)
        baseline = {k: v + 0.3 * torch.randn_like(v) for k, v in model.state_dict().items()}
        arg = baseline
    gap = _gap(model, x, y, baseline)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    err = {}
    for method, steps in (("gausslegendre", m), ("riemann", 4 * m)):
        attr = integrated_gradients(model, (x, y), baseline=arg, steps=steps, method=method)
        err[method] = abs(sum(a.sum().item() for a in attr.values()) - gap)
    for k, v in model.state_dict().items():  # weights restored exactly
        assert torch.equal(v, before[k])
    assert err["riemann"] < 1e-2 * abs(gap)  # completeness
    assert err["gausslegendre"] <= err["riemann"]


def test_loader_equals_batch_and_reduction() -> None:
    model = create_model("small_cnn", num_classes=3, in_chans=1, img_size=8)
    x, y = torch.randn(6, 1, 8, 8), torch.randint(0, 3, (6,))
    whole = integrated_gradients(model, (x, y), steps=3)
    parts = integrated_gradients(model, [(x[:4], y[:4]), (x[4:], y[4:])], steps=3)
    summed = integrated_gradients(model, (x, y), steps=3, reduction="sum")
    for n in whole:
        torch.testing.assert_close(parts[n], whole[n], rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(summed[n], 6 * whole[n], rtol=1e-4, atol=1e-7)


def test_completeness_relu_cnn_many_steps() -> None:
    model = create_model("small_cnn", num_classes=3, in_chans=1, img_size=8)
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 3, (8,))
    torch.manual_seed(5)
    baseline = {k: v + 0.05 * torch.randn_like(v) for k, v in model.state_dict().items()}
    m0 = copy.deepcopy(model)
    m0.load_state_dict(baseline)
    gap = _loss(model, x, y) - _loss(m0, x, y)
    attr = integrated_gradients(model, (x, y), baseline=baseline, steps=32, method="riemann")
    total = sum(a.sum().item() for a in attr.values())
    assert abs(total - gap) < 0.02 * abs(gap) + 1e-6


def test_bad_input() -> None:
    model = _mlp()
    x, y = torch.randn(2, 3, 4), torch.randint(0, 4, (2,))
    with pytest.raises(ValueError, match="baseline"):
        integrated_gradients(model, (x, y), baseline="ones")
    with pytest.raises(ValueError, match="lacks"):
        integrated_gradients(model, (x, y), baseline={})
    with pytest.raises(ValueError, match="reduction"):
        integrated_gradients(model, (x, y), reduction="max")
    with pytest.raises(ValueError, match="no samples"):
        integrated_gradients(model, [])
