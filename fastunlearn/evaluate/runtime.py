"""Runtime efficiency (RTE): cold and warm wall time of an unlearning method and
its ratio to a retrain timed by the same code.

``fastunlearn.unlearn`` times one call honestly (device synchronised; masks, Fisher diagonals,
impressions and other precomputation included; evaluation excluded) and returns ``rte_s`` and
``peak_mem_mb``. :func:`time_unlearn` calls it ``runs`` times in this process: the first run
is *cold* (it pays one-off costs such as ``torch.compile``, lazy imports and cuDNN
autotuning), the median of the later runs is *warm*. With ``retrain_config`` the gold retrain
goes through the same ``fastunlearn.unlearn`` path, so ``rte_ratio`` compares like with like
(warm/warm when both have warm runs, else cold/cold).

``evaluate`` only judges models and never imports a method; this module imports the method
registry lazily, inside :func:`time_unlearn`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from torch import nn

from fastunlearn._timing import ColdWarm
from fastunlearn.data.splits import ForgetSplit


@dataclass
class RuntimeReport:
    """Cold/warm timings of one method (and of its retrain baseline, itself a report).

    Works wherever an ``UnlearnResult`` does in :func:`fastunlearn.evaluate`:
    ``evaluate(rep, split, original=orig, retrained=rep.retrain)``.
    """

    method: str
    result: Any  # the last run's UnlearnResult
    timing: ColdWarm
    retrain: RuntimeReport | None = None

    @property
    def model(self) -> nn.Module:
        return self.result.model

    @property
    def rte_cold_s(self) -> float:
        return self.timing.cold_s

    @property
    def rte_warm_s(self) -> float:
        return self.timing.warm_s

    @property
    def rte_s(self) -> float:
        """Warm time when there were later runs, else the single (cold) run."""
        return self.timing.cold_s if math.isnan(self.timing.warm_s) else self.timing.warm_s

    @property
    def peak_mem_mb(self) -> float:
        return self.timing.peak_mem_mb

    @property
    def rte_ratio(self) -> float:
        """Method time / retrain time, warm/warm when both have warm runs, else cold/cold."""
        if self.retrain is None:
            return math.nan
        both_warm = not (math.isnan(self.rte_warm_s) or math.isnan(self.retrain.rte_warm_s))
        if both_warm:
            return self.rte_warm_s / self.retrain.rte_warm_s
        return self.rte_cold_s / self.retrain.rte_cold_s

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "method": self.method,
            "rte_s": self.rte_s,
            "rte_cold_s": self.rte_cold_s,
            "rte_warm_s": self.rte_warm_s,
            "rte_runs_s": list(self.timing.runs_s),
            "peak_mem_mb": self.peak_mem_mb,
        }
        if self.retrain is not None:
            out.update({
                "retrain_rte_s": self.retrain.rte_s,
                "retrain_rte_cold_s": self.retrain.rte_cold_s,
                "retrain_rte_warm_s": self.retrain.rte_warm_s,
                "rte_ratio": self.rte_ratio,
            })
        return out


def _runs(model: nn.Module, split: ForgetSplit, config: Any, runs: int) -> RuntimeReport:
    from fastunlearn.unlearn._registry import unlearn  # lazy: evaluate never needs methods

    if int(runs) != runs or runs < 1:
        raise ValueError(f"runs must be a positive integer, got {runs}")
    seconds, peaks = [], []
    result = None
    for _ in range(int(runs)):
        result = None  # let the previous copy go before the next run
        result = unlearn(model, split, config)
        seconds.append(result.rte_s)
        peaks.append(result.peak_mem_mb)
    assert result is not None
    return RuntimeReport(result.method, result, ColdWarm.from_runs(seconds, peaks))


def time_unlearn(
    model: nn.Module,
    split: ForgetSplit,
    config: Any,
    *,
    runs: int = 2,
    retrain_config: Any | None = None,
    retrain_runs: int | None = None,
) -> RuntimeReport:
    """Run ``fastunlearn.unlearn(model, split, config)`` ``runs`` times (cold, then warm) and,
    with ``retrain_config``, the retrain ``retrain_runs`` times (default: ``runs``)."""
    rep = _runs(model, split, config, runs)
    if retrain_config is not None:
        n = runs if retrain_runs is None else retrain_runs
        rep.retrain = _runs(model, split, retrain_config, n)
    return rep
