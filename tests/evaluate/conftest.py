"""Shared models for the evaluation tests: digits with class 3 forgotten, the gold model
(retrained without it) and a gradient-ascent unlearned model, trained once per session."""

from __future__ import annotations

from contextlib import contextmanager

import pytest
import torch


@contextmanager
def one_thread():
    """Small ops on a shared 2-core machine: one thread avoids stalls (up to 10× here)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _one_thread():
    with one_thread():
        yield


@pytest.fixture(scope="session")
def class_split(digits):
    from fastunlearn.data import forget_classes

    return forget_classes(digits, ["3"])


@pytest.fixture(scope="session")
def random_split(digits):
    from fastunlearn.data import forget_random

    return forget_random(digits, count=120, seed=0)


@pytest.fixture(scope="session")
def digits_gold(digits_original, class_split):
    """The retrain baseline as an UnlearnResult (model + rte_s), trained like the original."""
    from fastunlearn.unlearn import RetrainConfig, unlearn

    torch.manual_seed(0)
    cfg = RetrainConfig(epochs=15, lr=0.05, batch_size=64, device="cpu", progress=False)
    with one_thread():
        return unlearn(digits_original, class_split, cfg)


@pytest.fixture(scope="session")
def digits_ga(digits_original, class_split):
    """Gradient ascent on the forget class (an UnlearnResult)."""
    from fastunlearn.unlearn import GAConfig, unlearn

    torch.manual_seed(0)
    with one_thread():
        return unlearn(digits_original, class_split, GAConfig(device="cpu", progress=False))


@pytest.fixture(scope="session")
def every_metric():
    """Every key ``evaluate`` (and ``fastunlearn evaluate --json``) reports with an original,
    a retrained model and a cost (issue 6)."""
    return (
        "forget_acc", "UA", "retain_acc", "test_acc", "test_forget_acc", "test_retain_acc",
        "test_all_acc", "per_class_test_acc", "mia_efficacy", "mia_efficacy_svc", "mia_efficacy_lr",
        "mia_attack_acc_svc", "mia_attack_acc_lr", "mia_loss_auc", "entropy", "entropy_norm",
        "entropy_forget", "js_to_retrain", "js_dist_to_retrain", "kl_to_retrain", "avg_gap",
        "retrain_mia_efficacy", "gap_forget_acc", "retrain_forget_acc", "original_forget_acc",
        "confusion_drift_vs_original", "confusion_drift_vs_retrain", "collateral_damage_mean",
        "collateral_damage_worst", "collateral_damage_per_class", "layer_cka", "layer_cka_retain",
        "rte_s", "peak_mem_mb", "retrain_rte_s", "rte_ratio",
    )
