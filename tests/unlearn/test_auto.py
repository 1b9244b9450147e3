"""``auto``: the default recipe. It runs without a config, stays within its budget, records
what it chose, is deterministic for a seed, never collapses the model, moves a random forget
set toward a retrained model and works on a user's own data and module."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import fastunlearn as fu
from fastunlearn.data import ForgetSplit
from fastunlearn.inference import accuracy, predict_logits
from fastunlearn.unlearn.auto import (
    AutoConfig,
    logit_confidence,
    matched_temperature,
    membership_auc,
)

CPU = {"device": "cpu", "progress": False}


def _phi(model, part):
    return logit_confidence(predict_logits(model, part), part.labels)


@pytest.fixture(scope="module")
def digits_retrain(digits, random_split):
    """The gold model for ``random_split``: the conftest recipe on the retain set only."""
    torch.manual_seed(0)
    model = fu.create_model("small_cnn", digits)
    cfg = fu.TrainConfig(epochs=15, lr=0.05, batch_size=64, device="cpu", progress=False,
                         eval_every=0)
    return fu.train(model, random_split.retain, cfg)


def test_membership_auc_matches_a_pairwise_count():
    g = torch.Generator().manual_seed(0)
    for na, nb in [(1, 1), (7, 3), (50, 41)]:
        a = torch.randint(0, 6, (na,), generator=g).float()  # ties on purpose
        b = torch.randn(nb, generator=g) + 2
        pairs = (a[:, None] < b[None, :]).double() + 0.5 * (a[:, None] == b[None, :]).double()
        assert membership_auc(a, b) == pytest.approx(pairs.mean().item(), abs=1e-12)
    assert membership_auc(torch.zeros(3), torch.ones(4)) == 1.0
    assert membership_auc(torch.ones(3), torch.zeros(4)) == 0.0


def test_logit_confidence_is_the_lira_statistic():
    g = torch.Generator().manual_seed(1)
    logits, y = torch.randn(9, 5, generator=g) * 3, torch.randint(0, 5, (9,), generator=g)
    p = F.softmax(logits.double(), 1).gather(1, y[:, None])[:, 0]
    ref = torch.log(p) - torch.log1p(-p)
    assert torch.allclose(logit_confidence(logits, y).double(), ref, atol=1e-4)


def test_matched_temperature_hits_the_target_entropy():
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(2)) * 4
    for target in (0.2, 1.0, 2.0):
        tau = matched_temperature(logits, target)
        logp = F.log_softmax(logits / tau, 1)
        assert float(-(logp.exp() * logp).sum(1).mean()) == pytest.approx(target, abs=1e-3)


def test_no_config_runs_auto_and_records_its_choice(random_split, digits_original):
    res = fu.unlearn(digits_original, random_split)
    assert res.method == "auto" and isinstance(res.config, AutoConfig)
    rec = res.info["auto"]
    # the model carries fu.train's history: the retrain cost is its epochs × |retain|
    assert rec["retrain_epochs"] == 15 and "history" in rec["retrain_cost_source"]
    assert rec["budget_passes"] == pytest.approx(
        0.7 * 0.05 * 15 * len(random_split.retain), rel=1e-3)
    # digits is small: 5 % of its retrain is a step or two, so the minimum steps run instead
    # and the record says how much of a retrain that was
    assert rec["teacher"]["steps"] == 10 and rec["student"]["planned_steps"] == 5
    assert rec["minimum_steps"] is True
    assert res.info["budget_fraction_spent"] > 0.05
    assert sum(g["size"] for g in rec["groups"].values()) == len(random_split.forget)
    assert set(rec["groups"]) == {"memorized", "partial", "typical"}
    assert rec["teacher"]["temperature"] > 0
    assert rec["thresholds"]["low"] <= rec["thresholds"]["high"]
    assert res.info["weights_finite"] and not res.info["unchanged"]


def test_a_budget_that_covers_the_minimums_is_kept(random_split, digits_original):
    res = fu.unlearn(digits_original, random_split, AutoConfig(budget=0.5, **CPU))
    rec = res.info["auto"]
    assert rec["minimum_steps"] is False
    assert rec["spent_passes"] <= rec["budget_passes"] * 1.001
    assert res.info["budget_fraction_spent"] <= 0.5 * 0.7 * 1.001


def test_the_choice_is_deterministic_for_a_seed(random_split, digits_original):
    a = fu.unlearn(digits_original, random_split, AutoConfig(seed=3, **CPU))
    b = fu.unlearn(digits_original, random_split, AutoConfig(seed=3, **CPU))
    assert a.info["auto"] == b.info["auto"]
    for (k, va), vb in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        assert torch.equal(va, vb), k


def test_a_larger_budget_buys_more_steps(random_split, digits_original):
    small = fu.unlearn(digits_original, random_split, AutoConfig(budget=0.3, **CPU))
    big = fu.unlearn(digits_original, random_split, AutoConfig(budget=1.0, **CPU))
    assert big.info["auto"]["teacher"]["steps"] > 3 * small.info["auto"]["teacher"]["steps"]


def test_class_forgetting_moves_the_class_to_the_other_classes(class_split, digits_original):
    res = fu.unlearn(digits_original, class_split, AutoConfig(**CPU))
    rec = res.info["auto"]
    assert set(rec["groups"]) == {"class"} and rec["teacher"]["steps"] == 0
    assert rec["groups"]["class"]["size"] == len(class_split.forget)
    fa0 = accuracy(digits_original, class_split.forget)
    assert fa0 > 90 and accuracy(res.model, class_split.forget) < 20.0
    assert accuracy(res.model, class_split.retain) > accuracy(digits_original,
                                                              class_split.retain) - 2.0


class MLP(nn.Module):
    """A user's module without a conv layer: auto's teacher shrinks and perturbs instead."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def _user_digits(forget):
    import sklearn.datasets

    d = sklearn.datasets.load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(d.target, dtype=torch.long)
    tr, te = slice(0, 1400), slice(1400, None)
    split = ForgetSplit.from_datasets(TensorDataset(x[tr], y[tr]), forget=forget,
                                      test=TensorDataset(x[te], y[te]), val=0.2, seed=0,
                                      classes=[str(i) for i in range(10)])
    torch.manual_seed(0)
    model = MLP()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for _ in range(200):
        opt.zero_grad()
        F.cross_entropy(model(x[tr]), y[tr]).backward()
        opt.step()
    return split, model


@pytest.mark.parametrize("forget", ["3", list(range(0, 1400, 20))])
def test_bring_your_own_split_and_module(forget):
    split, model = _user_digits(forget)
    res = fu.unlearn(model, split, AutoConfig(**CPU))
    rec = res.info["auto"]
    assert rec["retrain_cost_source"].startswith("assumed")  # a plain module has no history
    assert res.info["weights_finite"] and not res.info["unchanged"]
    ra0, ra1 = accuracy(model, split.retain), accuracy(res.model, split.retain)
    assert ra1 > ra0 - 2.0
    if forget == "3":  # the class is gone, the rest kept
        assert accuracy(model, split.forget) > 90 and accuracy(res.model, split.forget) < 20
    else:  # no square conv kernel: the teacher shrinks and perturbs
        assert rec["teacher"]["scramble"].startswith("shrink-and-perturb")


def test_bad_budget_is_one_clear_error():
    with pytest.raises(ValueError, match="budget"):
        AutoConfig(budget=0)
    with pytest.raises(ValueError, match="low ≤ high"):
        AutoConfig(low=0.6, high=0.5)
