"""MIA-Efficacy as the SalUn reference computes it (issue 12 §6): for class forgetting the
non-members are the retained classes' test images, and the headline is the mean over attack
seeds with its spread."""

import inspect
import math

import numpy as np
import pytest

import fastunlearn as fu
from fastunlearn.evaluate import core
from fastunlearn.evaluate.core import EvalConfig, Evaluator
from fastunlearn.evaluate.mia import mia_efficacy
from fastunlearn.inference import predict_logits

FAST = {"max_samples": 300, "cka": False}


def _captured_nonmembers(monkeypatch, ev, model):
    seen = []
    real = core.mia_efficacy

    def spy(*args, **kwargs):
        seen.append(args[3].clone())  # nonmember_labels
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "mia_efficacy", spy)
    ev.membership(ev.outputs(model))
    assert len(seen) == 1
    return seen[0]


def test_class_forgetting_nonmembers_have_no_forget_class_sample(
        monkeypatch, digits_original, class_split):
    ev = Evaluator(class_split, EvalConfig(**FAST))
    mask = ev.nonmember_mask()
    assert int(mask.sum()) == len(class_split.test_retain)
    assert 3 not in set(class_split.test.labels[mask].tolist())
    labels = _captured_nonmembers(monkeypatch, ev, digits_original)
    assert len(labels) > 0 and 3 not in set(labels.tolist())


def test_the_old_nonmember_set_is_still_available(monkeypatch, digits_original, class_split):
    ev = Evaluator(class_split, EvalConfig(**FAST, mia_nonmembers="test"))
    assert bool(ev.nonmember_mask().all())
    labels = _captured_nonmembers(monkeypatch, ev, digits_original)
    assert 3 in set(labels.tolist())
    with pytest.raises(ValueError, match="mia_nonmembers"):
        EvalConfig(mia_nonmembers="everything")


def test_random_forgetting_nonmembers_are_the_whole_test_part(digits_original, random_split):
    ev = Evaluator(random_split, EvalConfig(**FAST))
    assert bool(ev.nonmember_mask().all())


def test_headline_is_the_mean_over_attack_seeds(digits_original, random_split):
    from fastunlearn.evaluate.mia import efficacy_over_seeds

    m = fu.evaluate(digits_original, random_split, **FAST, mia_seeds=3)
    seeds = m["mia_efficacy_seeds"]
    assert len(seeds) == 3
    assert m["mia_efficacy"] == pytest.approx(sum(seeds) / 3)
    assert m["mia_efficacy_std"] == pytest.approx(np.std(seeds, ddof=1))
    assert seeds[0] == m["mia_efficacy_svc"]["true_prob"]
    # each seed's value is the single-seed attack of that seed (a fresh balanced subsample)
    probs = {k: predict_logits(digits_original, getattr(random_split, k)).double().softmax(1)
             for k in ("retain", "test", "forget")}
    sets = (probs["retain"], random_split.retain.labels, probs["test"],
            random_split.test.labels, probs["forget"], random_split.forget.labels)
    for s in range(3):
        one = mia_efficacy(*sets, max_samples=300, seed=s, attacks=("svc",),
                           features=("true_prob",))
        assert seeds[s] == pytest.approx(one["svc"]["true_prob"].efficacy)
    assert efficacy_over_seeds(*sets, seeds=[1, 2], max_samples=300) == pytest.approx(seeds[1:])


def test_defaults_use_larger_sets_and_several_seeds():
    cfg = EvalConfig()
    assert cfg.max_samples >= 4000 and cfg.mia_seeds == 5 and cfg.mia_nonmembers == "reference"
    sig = inspect.signature(fu.evaluate)  # the functional API has the same defaults
    assert sig.parameters["max_samples"].default == cfg.max_samples
    assert sig.parameters["mia_seeds"].default == cfg.mia_seeds


def test_one_seed_has_no_spread(digits_original, class_split):
    m = fu.evaluate(digits_original, class_split, **FAST, mia_seeds=1)
    assert len(m["mia_efficacy_seeds"]) == 1 and math.isnan(m["mia_efficacy_std"])
    assert m["mia_efficacy"] == m["mia_efficacy_svc"]["true_prob"]
