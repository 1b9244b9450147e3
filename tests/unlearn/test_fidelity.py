"""Reference fidelity of ``ssd`` and ``fisher`` (issue 16): each estimator against a plain loop
written the way the reference code writes it, on a tiny model with odd batch sizes and a
partial last batch; Fisher's per-layer variance scaling against a hand computation."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastunlearn.data import forget_classes
from fastunlearn.unlearn import unlearn
from fastunlearn.unlearn.fisher import (
    FisherConfig,
    expected_batch_fisher,
    fisher_variances,
)
from fastunlearn.unlearn.ssd import SSDConfig, batch_mean_grad_sq, ssd_importances

COMMON = {"device": "cpu", "progress": False}


class _Tiny(nn.Module):
    """Conv (2 channels) → batch norm → ReLU → linear head over 3 classes (8×8 inputs)."""

    def __init__(self, classes: int = 3, in_chans: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_chans, 2, 3, padding=1)
        self.bn = nn.BatchNorm2d(2)
        self.head = nn.Linear(2 * 8 * 8, classes)

    def forward(self, x):
        return self.head(F.relu(self.bn(self.conv(x))).flatten(1))

    def get_classifier(self):
        return self.head


def _tiny(classes: int = 3, seed: int = 0) -> _Tiny:
    torch.manual_seed(seed)
    m = _Tiny(classes)
    with torch.no_grad():  # non-trivial batch-norm statistics, so eval vs train mode matters
        m.bn.running_mean.uniform_(-0.5, 0.5)
        m.bn.running_var.uniform_(0.5, 2.0)
    return m


def _data(n: int, classes: int = 3, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 1, 8, 8, generator=g), torch.randint(0, classes, (n,), generator=g)


def _chunks(x, y, bs):
    return [(x[i:i + bs], y[i:i + bs]) for i in range(0, len(x), bs)]


# ------------------------------------------------------------------------------------- SSD
def _reference_calc_importance(model, loader):
    """if-loops/selective-synaptic-dampening ``ParameterPerturber.calc_importance``."""
    criterion = nn.CrossEntropyLoss()
    importances = {k: torch.zeros_like(p) for k, p in model.named_parameters()}
    for x, y in loader:
        model.zero_grad()
        loss = criterion(model(x), y)
        loss.backward()
        for (_, p), (_, imp) in zip(model.named_parameters(), importances.items()):
            if p.grad is not None:
                imp.data += p.grad.data.clone().pow(2)
    for imp in importances.values():
        imp.data /= float(len(loader))
    model.zero_grad()
    return importances


@pytest.mark.parametrize(("n", "bs"), [(23, 5), (31, 7), (9, 9), (10, 64)])
def test_ssd_importance_is_the_batch_mean_gradient_squared(n, bs):
    model = _tiny()
    x, y = _data(n)
    loader = _chunks(x, y, bs)
    model.train()  # calc_importance runs after model.eval(); ours sets and restores it
    ours = batch_mean_grad_sq(model, loader)
    assert model.training and model.bn.training
    model.eval()
    ref = _reference_calc_importance(model, loader)
    assert set(ours) == set(ref)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-12)
    # the per-sample Fisher is a different quantity (it would be equal only for batch size 1)
    per_sample = _reference_calc_importance(model, _chunks(x, y, 1))
    assert not torch.allclose(ours["conv.weight"], per_sample["conv.weight"])


def test_ssd_importances_read_forget_and_retain_then_forget_in_order(digits):
    """``ssd_importances`` = the reference loop over the forget set and over
    ``ConcatDataset(retain, forget)``, unshuffled, batch 7 (last batch partial)."""
    split = forget_classes(digits, ["3"])
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Flatten(),
                          nn.Linear(2 * 8 * 8, 10))
    cfg = SSDConfig(batch_size=7, **COMMON)
    assert len(split.forget) % 7 and len(split.full) % 7  # partial last batches
    imp_f, imp_d = ssd_importances(model, split, cfg)
    xf, yf = split.forget.tensors()
    xr, yr = split.retain.tensors()
    model.eval()
    ref_f = _reference_calc_importance(model, _chunks(xf, yf, 7))
    ref_d = _reference_calc_importance(model, _chunks(torch.cat([xr, xf]), torch.cat([yr, yf]), 7))
    for name in ref_f:
        torch.testing.assert_close(imp_f[name], ref_f[name], rtol=1e-4, atol=1e-12)
        torch.testing.assert_close(imp_d[name], ref_d[name], rtol=1e-4, atol=1e-12)


def test_ssd_defaults_are_the_reference_values():
    cfg = SSDConfig()
    assert (cfg.alpha, cfg.lam, cfg.batch_size, cfg.importance) == (10.0, 1.0, 64, "batch_grad")
    assert (cfg.num_samples, cfg.num_forget_samples, cfg.full_order) == (0, 0, "retain_forget")


# ---------------------------------------------------------------------------------- Fisher
def _reference_hessian(model, loader):
    """OPTML-Group/Unlearn-Saliency ``unlearn/fisher.py::hessian`` (returns ``grad2_acc``)."""
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="mean")
    acc = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    for data, orig_target in loader:
        output = model(data)
        prob = F.softmax(output, dim=-1).data
        for y in range(output.shape[1]):
            target = torch.empty_like(orig_target).fill_(y)
            loss = loss_fn(output, target)
            model.zero_grad()
            loss.backward(retain_graph=True)
            for n, p in model.named_parameters():
                acc[n] += torch.mean(prob[:, y]) * p.grad.data.pow(2)
    for n in acc:
        acc[n] /= len(loader)
    model.zero_grad()
    return acc


@pytest.mark.parametrize(("n", "bs"), [(37, 32), (13, 4)])
def test_fisher_is_the_expected_batch_fisher_over_all_labels(n, bs):
    model = _tiny()
    x, y = _data(n)
    loader = _chunks(x, y, bs)
    ours = expected_batch_fisher(model, loader)
    ref = _reference_hessian(model, loader)
    for name in ref:
        torch.testing.assert_close(ours[name], ref[name], rtol=1e-5, atol=1e-12)


def _reference_get_mean_var(p, fis, alpha, num_classes, forget_class=None):
    """``get_mean_var`` (variance part) of the same file, ``p.grad2_acc`` = ``fis``."""
    var = 1.0 / (fis + 1e-8)
    var = var.clamp(max=1e3)
    if p.shape[0] == num_classes:
        var = var.clamp(max=1e2)
    var = alpha * var
    if p.ndim > 1:
        var = var.mean(dim=1, keepdim=True).expand_as(p).clone()
    if p.shape[0] == num_classes and forget_class is not None:
        var[forget_class] = 0.0001
    if p.shape[0] == num_classes:
        var *= 10
    elif p.ndim == 1:
        var *= 10
    return var


@pytest.mark.parametrize("forget", [None, 1])
def test_fisher_per_layer_scaling_matches_the_reference(forget):
    model = _tiny(classes=3)  # only the head has a first dimension of 3
    g = torch.Generator().manual_seed(2)
    # Fisher values spanning the clamps: tiny (→ capped at 1e3 / 1e2), moderate, large
    fis = {n: 10.0 ** torch.empty(p.shape).uniform_(-5, 1, generator=g)
           for n, p in model.named_parameters()}
    alpha = 1e-6
    ours = fisher_variances(model, fis, alpha=alpha, max_var=1e3, head_max_var=1e2,
                            forget_rows=[forget] if forget is not None else None,
                            forget_row_var=1e-4)
    for name, p in model.named_parameters():
        ref = _reference_get_mean_var(p, fis[name], alpha, 3, forget)
        torch.testing.assert_close(ours[name], ref, rtol=1e-6, atol=0, msg=name)


def test_fisher_per_layer_scaling_by_hand():
    """Hand-computed variances for a few entries of the tiny model (α = 1e-6)."""
    model = _tiny(classes=3)
    fis = {n: torch.full(p.shape, 0.25) for n, p in model.named_parameters()}
    fis["conv.weight"][0, 0, 0, 0] = 1e-9           # 1/F capped at 1e3
    fis["head.weight"][2, :] = 1e-9                 # head cap 1e2
    fis["bn.weight"][1] = 2.0                       # 1/F = 0.5
    var = fisher_variances(model, fis, alpha=1e-6, max_var=1e3, head_max_var=1e2,
                           forget_rows=[0], forget_row_var=1e-4)
    a = 1e-6
    # conv weight [2, 1, 3, 3]: averaged over dim 1 (one input channel: unchanged), not ×10
    assert var["conv.weight"][0, 0, 0, 0].item() == pytest.approx(a * 1e3)
    assert var["conv.weight"][1, 0, 2, 2].item() == pytest.approx(a * 4)
    # 1-D tensors (conv bias, batch-norm weight / bias): ×10
    assert var["conv.bias"][0].item() == pytest.approx(a * 4 * 10)
    assert var["bn.weight"][1].item() == pytest.approx(a * 0.5 * 10)
    assert var["bn.bias"][0].item() == pytest.approx(a * 4 * 10)
    # head: row 2 capped at 1e2 then averaged over its inputs, ×10; row 0 forgotten: 1e-4 × 10
    assert var["head.weight"][2, 5].item() == pytest.approx(a * 1e2 * 10)
    assert var["head.weight"][1, 5].item() == pytest.approx(a * 4 * 10)
    assert var["head.weight"][0, 5].item() == pytest.approx(1e-4 * 10)
    assert var["head.bias"][0].item() == pytest.approx(1e-4 * 10)
    assert var["head.bias"][1].item() == pytest.approx(a * 4 * 10)


def test_fisher_averages_conv_variances_over_input_channels_only():
    """The reference averages over dim 1 (``var.mean(dim=1)``): a conv layer keeps one
    variance per (output channel, kernel position), not one per output channel."""
    conv = nn.Conv2d(2, 2, 3)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(2, 3))
    fis = {n: torch.full(p.shape, 1.0) for n, p in model.named_parameters()}
    fis["0.weight"][0, 0, 0, 0] = 0.5   # var 2 at (0, 0, 0, 0), 1 elsewhere
    var = fisher_variances(model, fis, alpha=1.0, max_var=1e3, head_max_var=1e2)
    assert var["0.weight"][0, 1, 0, 0].item() == pytest.approx(1.5)   # mean over in-channels
    assert var["0.weight"][0, 0, 1, 1].item() == pytest.approx(1.0)   # other positions apart


def test_fisher_method_applies_the_variances(digits, digits_original):
    """``fisher`` = weights (forgotten rows 0) + sqrt(variance) · N(0, 1) from a generator
    seeded by ``config.seed``, drawn in parameter order on the CPU."""
    split = forget_classes(digits, ["3"])
    cfg = FisherConfig(num_samples=200, seed=3, **COMMON)
    res = unlearn(digits_original, split, cfg)
    part = split.retain.take(200, seed=3)
    fis = expected_batch_fisher(digits_original, part.batches(cfg.batch_size))
    var = fisher_variances(digits_original, fis, alpha=cfg.alpha, max_var=cfg.max_var,
                           head_max_var=cfg.head_max_var, forget_rows=[3],
                           forget_row_var=cfg.forget_row_var)
    gen = torch.Generator().manual_seed(3)
    head_names = {"classifier.2.weight", "classifier.2.bias"}
    after = dict(res.model.named_parameters())
    for name, p in digits_original.named_parameters():
        mu = p.detach().clone()
        if name in head_names:
            mu[3] = 0.0
        expected = mu + torch.randn(p.shape, generator=gen) * var[name].sqrt()
        torch.testing.assert_close(after[name].detach(), expected, rtol=1e-5, atol=1e-6)
