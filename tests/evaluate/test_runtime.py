"""RTE must include everything a method does before and while it updates the model."""

import math
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch

import fastunlearn as fu
from fastunlearn._timing import ColdWarm, measure_cold_warm
from fastunlearn.evaluate.runtime import time_unlearn
from fastunlearn.unlearn import UnlearnConfig, UnlearnResult, register_method
from fastunlearn.unlearn._registry import _METHODS

PRECOMPUTE_S = 0.25
FIRST_CALL_EXTRA_S = 0.3


@dataclass
class _SlowPrecomputeConfig(UnlearnConfig):
    method: ClassVar[str] = "test_slow_precompute"
    precompute_s: float = PRECOMPUTE_S
    first_call_extra_s: float = 0.0


@dataclass
class _SlowRetrainConfig(_SlowPrecomputeConfig):
    method: ClassVar[str] = "test_slow_retrain"


_calls: dict[str, int] = {}


def _slow(model, split, config) -> UnlearnResult:
    """Test method: a deliberately slow 'mask' precomputation, then one tiny update."""
    n = _calls[config.method] = _calls.get(config.method, 0) + 1
    time.sleep(config.precompute_s + (config.first_call_extra_s if n == 1 else 0.0))
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.999)
    return UnlearnResult(model, config.method, config)


@pytest.fixture
def slow_methods():
    for cfg_cls in (_SlowPrecomputeConfig, _SlowRetrainConfig):
        register_method(cfg_cls)(_slow)
    _calls.clear()
    yield
    for cfg_cls in (_SlowPrecomputeConfig, _SlowRetrainConfig):
        _METHODS.pop(cfg_cls.method, None)


def test_rte_includes_slow_precomputation(slow_methods, digits_original, class_split):
    res = fu.unlearn(digits_original, class_split, _SlowPrecomputeConfig(device="cpu"))
    assert res.rte_s >= PRECOMPUTE_S
    m = fu.evaluate(res, class_split, mia=False)
    assert m["rte_s"] == res.rte_s >= PRECOMPUTE_S
    assert "rte_ratio" not in m  # no retrain to compare with


def test_cold_and_warm_runs_and_ratio(slow_methods, digits_original, class_split):
    cfg = _SlowPrecomputeConfig(device="cpu", first_call_extra_s=FIRST_CALL_EXTRA_S)
    gold = _SlowRetrainConfig(device="cpu", precompute_s=2 * PRECOMPUTE_S)
    rep = time_unlearn(digits_original, class_split, cfg, runs=3, retrain_config=gold)
    assert len(rep.timing.runs_s) == 3 and len(rep.retrain.timing.runs_s) == 3
    assert rep.rte_cold_s >= PRECOMPUTE_S + FIRST_CALL_EXTRA_S
    assert PRECOMPUTE_S <= rep.rte_warm_s < rep.rte_cold_s - 0.5 * FIRST_CALL_EXTRA_S
    assert rep.rte_s == rep.rte_warm_s
    # warm/warm ratio ≈ 0.25 / 0.5 (sleep dominates; loose bound for a loaded machine)
    assert rep.rte_ratio == pytest.approx(rep.rte_warm_s / rep.retrain.rte_warm_s)
    assert 0.3 < rep.rte_ratio < 0.8
    m = fu.evaluate(rep, class_split, retrained=rep.retrain, mia=False, cka=False)
    assert m["rte_s"] == rep.rte_s and m["rte_cold_s"] == rep.rte_cold_s
    assert m["rte_ratio"] == pytest.approx(rep.rte_ratio)
    d = rep.to_dict()
    assert d["rte_ratio"] == rep.rte_ratio and d["method"] == "test_slow_precompute"


def test_single_run_has_no_warm_time(slow_methods, digits_original, class_split):
    rep = time_unlearn(digits_original, class_split, _SlowPrecomputeConfig(device="cpu"), runs=1)
    assert math.isnan(rep.rte_warm_s) and rep.rte_s == rep.rte_cold_s >= PRECOMPUTE_S
    assert math.isnan(rep.rte_ratio)
    with pytest.raises(ValueError, match="runs"):
        time_unlearn(digits_original, class_split, _SlowPrecomputeConfig(device="cpu"), runs=0)


def test_measure_cold_warm_generic():
    state = {"n": 0}

    def work() -> int:
        state["n"] += 1
        time.sleep(0.2 if state["n"] == 1 else 0.05)
        return state["n"]

    last, cw = measure_cold_warm(work, torch.device("cpu"), runs=4)
    assert last == 4 and len(cw.runs_s) == 4
    assert cw.cold_s >= 0.2 and 0.05 <= cw.warm_s < 0.15


def test_cold_warm_median():
    cw = ColdWarm.from_runs([5.0, 1.0, 3.0, 2.0])
    assert cw.cold_s == 5.0 and cw.warm_s == 2.0
    assert ColdWarm.from_runs([5.0, 1.0, 3.0]).warm_s == 2.0
    with pytest.raises(ValueError):
        ColdWarm.from_runs([])
