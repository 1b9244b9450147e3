import math

import numpy as np
import pytest
import torch
from scipy.stats import entropy as scipy_entropy

from fastunlearn.evaluate.mia import (
    attack_efficacy,
    balanced_sample,
    loss_attack_auc,
    m_entropy,
    mia_efficacy,
    mia_features,
    per_sample_loss,
)


def test_m_entropy_hand_computed_three_classes():
    # Song & Mittal: −(1 − p_y) log p_y − Σ_{i≠y} p_i log(1 − p_i)
    p = torch.tensor([[0.7, 0.2, 0.1], [0.7, 0.2, 0.1]], dtype=torch.float64)
    y = torch.tensor([0, 1])
    want0 = -(0.3 * math.log(0.7)) - 0.2 * math.log(0.8) - 0.1 * math.log(0.9)
    want1 = -(0.8 * math.log(0.2)) - 0.7 * math.log(0.3) - 0.1 * math.log(0.9)
    got = m_entropy(p, y)
    assert got[0].item() == pytest.approx(want0, rel=1e-12)
    assert got[1].item() == pytest.approx(want1, rel=1e-12)
    # the OPTML-Group code's version (log p_i for the wrong classes) differs
    buggy0 = -(0.3 * math.log(0.7)) - 0.2 * math.log(0.2) - 0.1 * math.log(0.1)
    assert abs(got[0].item() - buggy0) > 0.3


def test_m_entropy_extremes_are_finite():
    p = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=torch.float64)
    got = m_entropy(p, torch.tensor([0, 0]))
    assert got[0].item() == 0.0  # confident and right: no uncertainty
    assert math.isfinite(got[1].item()) and got[1].item() > 60  # confident and wrong: huge


def test_features_match_definitions():
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(torch.randn(30, 5, generator=g, dtype=torch.float64) * 2, 1)
    y = torch.randint(0, 5, (30,), generator=g)
    f = mia_features(p, y)
    np.testing.assert_allclose(f["confidence"], p.max(1).values.numpy())
    np.testing.assert_allclose(f["true_prob"], p[torch.arange(30), y].numpy())
    np.testing.assert_allclose(f["entropy"], scipy_entropy(p.numpy(), axis=1), rtol=1e-10)
    np.testing.assert_allclose(f["m_entropy"], m_entropy(p, y).numpy())


def test_attack_on_separable_data_is_perfect():
    rng = np.random.default_rng(0)
    members = rng.uniform(0.0, 1.0, 400)
    nonmembers = rng.uniform(2.0, 3.0, 400)
    for attack in ("svc", "lr"):
        like_nonmembers = attack_efficacy(members, nonmembers, rng.uniform(2.0, 3.0, 300),
                                          attack=attack)
        assert like_nonmembers.attack_acc > 99.0
        assert like_nonmembers.efficacy > 99.0
        like_members = attack_efficacy(members, nonmembers, rng.uniform(0.0, 1.0, 300),
                                       attack=attack)
        assert like_members.efficacy < 1.0


def test_attack_on_identical_distributions_is_chance():
    rng = np.random.default_rng(1)
    for attack in ("svc", "lr"):
        res = attack_efficacy(rng.normal(size=1000), rng.normal(size=1000), rng.normal(size=500),
                              attack=attack, seed=3)
        assert abs(res.attack_acc - 50.0) < 5.0, res


def test_attack_rejects_bad_input():
    with pytest.raises(ValueError, match="at least 2"):
        attack_efficacy(np.ones(1), np.ones(5), np.ones(3))
    with pytest.raises(ValueError, match="unknown attack"):
        attack_efficacy(np.ones(5), np.zeros(5), np.ones(3), attack="forest")


def test_mia_efficacy_from_probabilities():
    """Members confident on their label, non-members not: forget samples that look like
    non-members → high efficacy for every feature that separates them."""
    g = torch.Generator().manual_seed(0)
    c = 4

    def probs(n: int, confident: bool) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(0, c, (n,), generator=g)
        logits = torch.randn(n, c, generator=g)
        logits[torch.arange(n), y] += 12.0 if confident else 0.0
        return logits.softmax(1), y

    pm, ym = probs(600, True)
    pn, yn = probs(500, False)
    pt, yt = probs(200, False)
    res = mia_efficacy(pm, ym, pn, yn, pt, yt, max_samples=300)
    for f in ("true_prob", "m_entropy", "entropy", "confidence"):
        assert res["svc"][f].efficacy > 90.0, f
        assert res["svc"][f].attack_acc > 90.0, f
    assert set(res) == {"svc", "lr"}


def test_balanced_sample_is_seeded_and_bounded():
    a1, b1 = balanced_sample(1000, 300, 200, seed=5)
    a2, b2 = balanced_sample(1000, 300, 200, seed=5)
    assert len(a1) == len(b1) == 200 and torch.equal(a1, a2) and torch.equal(b1, b2)
    a3, b3 = balanced_sample(1000, 50, 200, seed=5)
    assert len(a3) == len(b3) == 50 and len(set(a3.tolist())) == 50


def test_loss_attack_auc_golden():
    # pairs (target, held-out) with target loss < held-out loss: 3 of 4
    auc = loss_attack_auc(torch.tensor([0.1, 0.2]), torch.tensor([0.15, 0.3]))
    assert auc == pytest.approx(0.75)
    assert loss_attack_auc(torch.tensor([0.1, 0.2]), torch.tensor([1.0, 2.0])) == 1.0
    rng = torch.Generator().manual_seed(0)
    same = loss_attack_auc(torch.rand(2000, generator=rng), torch.rand(2000, generator=rng))
    assert abs(same - 0.5) < 0.03
    assert math.isnan(loss_attack_auc(torch.tensor([]), torch.tensor([1.0])))


def test_per_sample_loss_matches_cross_entropy():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(17, 6, generator=g)
    y = torch.randint(0, 6, (17,), generator=g)
    ref = torch.nn.functional.cross_entropy(logits.double(), y, reduction="none")
    assert torch.allclose(per_sample_loss(logits, y), ref)


def test_non_finite_features_give_a_clear_error():
    good = np.random.default_rng(0).random((20, 1))
    bad = good.copy()
    bad[3, 0] = np.nan
    with pytest.raises(ValueError, match="not finite.*mia=False"):
        attack_efficacy(good, good, bad)
