"""Random forgetting must *move toward the retrained model*, not only keep accuracy bands
(issue 12 §7): for every method of methods I and II, the mean loss on the forget set (digits,
random 10 %) rises from the original's toward the loss a model retrained without the forget set
has there — in log space at least a quarter of the way. The original fails the check (tested).

Digits-sized configs where the defaults (recipes for Fashion-MNIST) barely move on digits, whose
network fits its training set to CE ≈ 0.002 — measured at the defaults, as the fraction of the
way: ft 0.005, ga 0.0, neggrad_plus 0.005, l1_sparse 0.03, scrub 0.002, bad_teacher 0.06,
influence 0.004, ssd 0.005, boundary_shrink 0.09 (at its Fashion-MNIST validation-tuned lr
1e-3/3; 0.32 at lr 1e-3, its earlier default, used here) (rl 1.70, salun 1.56, ig_salun 1.66,
two_stage 1.03, fisher 0.43, prune 0.27 move at their defaults).

Methods marked OVERSHOOT push the forget loss past the retrained model's by more than the
original's gap (the forgotten samples then look *less* familiar than unseen ones — detectable
in its own way); for them only the direction and size of the move are asserted. ``lora_ft``
is left out: fine-tuning the retain set through rank-8/16 adapters *lowers* the forget loss on
digits (−0.16 / −0.30 of the way), i.e. it does not forget random samples here.
"""

from __future__ import annotations

import math

import pytest

from fastunlearn.evaluate.mia import per_sample_loss
from fastunlearn.inference import predict_logits
from fastunlearn.unlearn import RetrainConfig, make_config, unlearn

COMMON = {"device": "cpu", "progress": False}
CONFIGS = {
    "ft": {"epochs": 10, "lr": 0.1, "batch_size": 32},
    "ga": {"lr": 0.01, "target_forget_acc": 0, "batch_size": 32, "epochs": 5},
    "neggrad_plus": {"beta": 0.7, "epochs": 5, "lr": 0.05, "batch_size": 16,
                     "target_forget_acc": 0},
    "l1_sparse": {"epochs": 10, "lr": 0.1, "batch_size": 32},
    "scrub": {"epochs": 5, "msteps": 5, "lr": 0.05, "forget_batch_size": 16, "batch_size": 32},
    "bad_teacher": {"epochs": 2, "lr": 1e-2, "batch_size": 32},
    "influence": {"target_forget_acc": 90},
    "ssd": {"alpha": 1.0},
    "boundary_shrink": {"lr": 1e-3},
    "rl": {}, "salun": {}, "ig_salun": {}, "two_stage": {},
    "fisher": {}, "prune": {},
}
OVERSHOOT = {"bad_teacher", "influence"}


def _forget_loss(model, split) -> float:
    return float(per_sample_loss(predict_logits(model, split.forget), split.forget.labels).mean())


@pytest.fixture(scope="module")
def reference(digits_original, random_split):
    gold = unlearn(digits_original, random_split,
                   RetrainConfig(epochs=15, lr=0.05, batch_size=64, **COMMON)).model
    return {"original": math.log(_forget_loss(digits_original, random_split)),
            "retrained": math.log(_forget_loss(gold, random_split))}


def _fraction(model, split, ref) -> float:
    lm = math.log(_forget_loss(model, split))
    return (lm - ref["original"]) / (ref["retrained"] - ref["original"])


def test_doing_nothing_does_not_move(digits_original, random_split, reference):
    assert reference["retrained"] - reference["original"] > math.log(5)  # a gap to close
    assert _fraction(digits_original, random_split, reference) == pytest.approx(0.0)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_random_forgetting_moves_toward_retrain(name, digits_original, random_split,
                                                reference):
    res = unlearn(digits_original, random_split, make_config(name, **COMMON, **CONFIGS[name]))
    frac = _fraction(res.model, random_split, reference)
    assert frac >= 0.25, (name, frac)
    if name not in OVERSHOOT:  # ends closer to the retrained model than the original was
        assert abs(frac - 1.0) < 1.0, (name, frac)
