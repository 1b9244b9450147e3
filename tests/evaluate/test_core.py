import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

import fastunlearn as fu
from fastunlearn.evaluate.core import EvalConfig, Evaluator
from fastunlearn.inference import predict_logits

FAST = {"max_samples": 400, "cka_probe": 48}



@pytest.fixture(scope="module")
def ga_metrics(digits_ga, digits_original, digits_gold, class_split):
    return fu.evaluate(digits_ga, class_split, original=digits_original, retrained=digits_gold,
                       **FAST)


def test_every_metric_is_reported(ga_metrics, digits_ga, digits_gold, every_metric):
    missing = [k for k in every_metric if k not in ga_metrics]
    assert not missing
    assert ga_metrics["UA"] == pytest.approx(100 - ga_metrics["forget_acc"])
    assert ga_metrics["rte_s"] == digits_ga.rte_s
    assert ga_metrics["rte_ratio"] == pytest.approx(digits_ga.rte_s / digits_gold.rte_s)
    for attack in ("svc", "lr"):
        assert set(ga_metrics[f"mia_efficacy_{attack}"]) == {"confidence", "entropy", "m_entropy",
                                                              "true_prob"}
    # the headline: SVC on true_prob, mean over the attack seeds; the first seed's fit is the
    # per-feature diagnostic
    seeds = ga_metrics["mia_efficacy_seeds"]
    assert seeds[0] == ga_metrics["mia_efficacy_svc"]["true_prob"]
    assert ga_metrics["mia_efficacy"] == pytest.approx(np.mean(seeds))
    assert ga_metrics["entropy_norm"] == pytest.approx(ga_metrics["entropy"] / math.log(10))
    assert "3" not in ga_metrics["collateral_damage_per_class"]  # only retain classes
    assert set(ga_metrics["layer_cka"]) >= {"features.0", "features.3", "pre_logits", "logits"}


def test_avg_gap_is_the_mean_of_four_gaps(ga_metrics):
    m = ga_metrics
    gaps = [abs(m["UA"] - m["retrain_UA"]), abs(m["retain_acc"] - m["retrain_retain_acc"]),
            abs(m["test_acc"] - m["retrain_test_acc"]),
            abs(m["mia_efficacy"] - m["retrain_mia_efficacy"])]
    assert m["avg_gap"] == pytest.approx(sum(gaps) / 4)


def test_js_and_entropy_match_scipy_on_real_outputs(ga_metrics, digits_ga, digits_gold,
                                                    class_split):
    p = predict_logits(digits_ga.model, class_split.forget).double().softmax(1).numpy()
    q = predict_logits(digits_gold.model, class_split.forget).double().softmax(1).numpy()
    js = jensenshannon(p, q, base=2, axis=1) ** 2
    assert ga_metrics["js_to_retrain"] == pytest.approx(js.mean(), rel=1e-6)
    assert ga_metrics["js_dist_to_retrain"] == pytest.approx(np.sqrt(js).mean(), rel=1e-6)
    pt = predict_logits(digits_ga.model, class_split.test_forget).double().softmax(1)
    ent = -(pt * pt.clamp_min(1e-300).log()).sum(1).mean().item()
    assert ga_metrics["entropy"] == pytest.approx(ent, rel=1e-6)


def test_reference_against_itself(digits_original, digits_gold, class_split):
    ev = Evaluator(class_split, EvalConfig(**FAST))
    gold = ev.evaluate(digits_gold, original=digits_original, retrained=digits_gold)
    for key in ("js_to_retrain", "kl_to_retrain", "js_to_retrain_test", "avg_gap",
                "confusion_drift_vs_retrain", "gap_forget_acc"):
        assert gold[key] == pytest.approx(0.0, abs=1e-12), key
    orig = ev.evaluate(digits_original, original=digits_original, retrained=digits_gold)
    assert orig["confusion_drift_vs_original"] == 0.0
    assert orig["collateral_damage_mean"] == 0.0 and orig["collateral_damage_worst"] == 0.0
    for block, v in orig["layer_cka"].items():
        assert v == pytest.approx(1.0, abs=1e-9), block
    # forgetting a class: the gold model never saw it, the original memorised it
    assert gold["forget_acc"] < 5 < 90 < orig["forget_acc"]
    assert gold["mia_efficacy"] > orig["mia_efficacy"] + 50
    assert gold["entropy"] > orig["entropy"]
    # the cache: the original's outputs were computed once
    assert ev.outputs(digits_original) is ev.outputs(digits_original)


def test_random_forgetting(digits_original, random_split):
    m = fu.evaluate(digits_original, random_split, **FAST, cka=False)
    assert math.isnan(m["entropy"])  # no test-forget samples
    assert m["test_acc"] == m["test_all_acc"]
    assert 0.0 <= m["mia_loss_auc"] <= 1.0 and not math.isnan(m["entropy_forget"])
    assert "layer_cka" not in m and "js_to_retrain" not in m


def test_max_samples_bounds_the_attack(digits_original, class_split):
    m1 = fu.evaluate(digits_original, class_split, max_samples=50, cka=False)
    m2 = fu.evaluate(digits_original, class_split, max_samples=50, cka=False)
    assert m1["mia_efficacy_svc"] == m2["mia_efficacy_svc"]  # seeded
    no_mia = fu.evaluate(digits_original, class_split, mia=False)
    assert "mia_efficacy" not in no_mia and "mia_loss_auc" in no_mia


def test_bad_options_raise(digits_original, class_split):
    with pytest.raises(ValueError, match="max_samples"):
        fu.evaluate(digits_original, class_split, max_samples=1)
    with pytest.raises(ValueError, match="mia_attacks"):
        EvalConfig(mia_attacks=("forest",))
    with pytest.raises(TypeError, match="nn.Module or an UnlearnResult"):
        fu.evaluate("model.safetensors", class_split)


def test_accuracy_keys_unchanged(digits_original, class_split):
    from fastunlearn.evaluate.accuracy import accuracy_metrics

    a = accuracy_metrics(digits_original, class_split)
    m = fu.evaluate(digits_original, class_split, mia=False)
    for k, v in a.items():
        assert m[k] == v, k
    pred = predict_logits(digits_original, class_split.test).argmax(1)
    labels = class_split.test.labels
    assert m["per_class_test_acc"]["3"] == pytest.approx(
        100 * (pred[labels == 3] == 3).float().mean().item())
    assert torch.isfinite(torch.tensor(list(m["per_class_test_acc"].values()))).all()
