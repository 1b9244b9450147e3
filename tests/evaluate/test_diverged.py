"""Issue 13 item 4: a diverged model (NaN/inf outputs) is evaluated — its accuracies are
reported, every metric that needs probabilities is NaN and ``diverged`` is True — instead of
failing with "Input contains NaN"."""

from __future__ import annotations

import copy
import math

import pytest
import torch

import fastunlearn as fu

FAST = {"max_samples": 200, "cka": False, "mia_seeds": 2}


@pytest.fixture(scope="module")
def nan_model(digits_original):
    """The original with one weight tensor NaN: a diverged model."""
    model = copy.deepcopy(digits_original)
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    return model


def test_evaluate_reports_a_diverged_models_accuracies(nan_model, digits_original,
                                                       digits_gold, class_split):
    m = fu.evaluate(nan_model, class_split, original=digits_original, retrained=digits_gold,
                    **{**FAST, "cka": True, "cka_probe": 16})
    assert m["diverged"] is True
    for k in ("forget_acc", "retain_acc", "test_acc", "UA"):
        assert math.isfinite(m[k]), k
    for k in ("mia_efficacy", "mia_efficacy_std", "retrain_mia_efficacy", "mia_loss_auc",
              "entropy", "js_to_retrain", "kl_to_retrain", "avg_gap"):
        assert k in m, k
    for k in ("mia_efficacy", "mia_loss_auc", "entropy", "js_to_retrain", "kl_to_retrain",
              "avg_gap"):
        assert math.isnan(m[k]), k
    assert all(math.isnan(v) for v in m["mia_efficacy_svc"].values())
    assert math.isfinite(m["retrain_mia_efficacy"])  # the gold model is fine
    assert m["layer_cka"] == {}
    ok = fu.evaluate(digits_original, class_split, **FAST)
    assert ok["diverged"] is False and math.isfinite(ok["mia_efficacy"])
    no_mia = fu.evaluate(nan_model, class_split, mia=False)
    assert no_mia["diverged"] is True and math.isfinite(no_mia["forget_acc"])
