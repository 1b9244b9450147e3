"""cross-arch: the plan (one task and one gold retrain per model), model checks, the ranking
agreement helper, and one small end-to-end study with two small CNNs on digits."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fastunlearn.data import load_dataset
from fastunlearn.models import list_models
from fastunlearn.studies import StudyConfig, keys, run
from fastunlearn.studies.cross_arch import (
    DEFAULT_MODELS,
    CrossArch,
    answer,
    ranking_agreement,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(**kw) -> StudyConfig:
    base = {"dataset": "digits", "epochs": 1, "methods": ("ga", "ft"), "method_epochs": 1,
            "mia_samples": 200, "cka": False, "progress": False}
    return StudyConfig(**{**base, **kw})


def test_default_models_are_registered():
    assert set(DEFAULT_MODELS) <= set(list_models())


def test_plan_default_models(digits):
    cfg = _config(seeds=2)
    runs = CrossArch.plan(cfg, digits)
    assert cfg.models == DEFAULT_MODELS  # recorded for the report header
    n = len(DEFAULT_MODELS)
    assert len(runs) == n * 2 * 3  # models × seeds × (retrain + ga + ft)
    assert len({r["key"] for r in runs}) == len(runs)
    assert len({keys.retrain_key(r) for r in runs}) == n * 2
    assert len({keys.original_key(r) for r in runs}) == n * 2
    assert sum(r["method"] == "retrain" for r in runs) == n * 2
    assert {r["model"] for r in runs} == set(DEFAULT_MODELS)
    assert all(r["tags"]["arch"] == r["model"] for r in runs)
    assert all(r["forget"] == {"type": "class", "classes": ["0"]} for r in runs)
    forget = CrossArch.plan(_config(models=("lenet5",), forget="random:10%"), digits)
    assert all(r["forget"] == {"type": "random", "fraction": 0.1} for r in forget)


@pytest.mark.parametrize("kw, match", [
    ({"models": ("nonet",)}, "unknown model 'nonet'"),
    ({"models": ("sisa_ensemble",)}, "ensemble"),
    ({"models": ("lenet5", "lenet5")}, "twice"),
    ({"models": ("lenet5",), "options": {"x": 1}}, "unknown cross-arch option 'x'; options: none"),
])
def test_bad_config(digits, kw, match):
    with pytest.raises(ValueError, match=match):
        CrossArch.plan(_config(**kw), digits)


def _table(values: dict[str, list[float]], methods: list[str]) -> dict:
    return {(a, m): {"avg_gap_mean": v} for a, vs in values.items() for m, v in zip(methods, vs)}


def test_ranking_agreement():
    methods = ["ga", "ft", "rl"]
    table = _table({"a": [1.0, 2.0, 3.0], "b": [10.0, 20.0, 30.0], "c": [3.0, 2.0, 1.0],
                    "d": [1.0, math.nan, 2.0]}, methods)
    got = {(a, b): (tau, n) for a, b, tau, n in ranking_agreement(list("abcd"), methods, table)}
    assert got[("a", "b")] == (pytest.approx(1.0), 3)
    assert got[("a", "c")] == (pytest.approx(-1.0), 3)
    assert got[("a", "d")] == (pytest.approx(1.0), 2)  # NaN method left out
    one = _table({"a": [1.0], "b": [2.0]}, ["ga"])
    assert math.isnan(ranking_agreement(["a", "b"], ["ga"], one)[0][2])


def test_answer_names_hardest_and_ranking_change():
    methods = ["ga", "ft"]
    table = _table({"x": [1.0, 2.0], "y": [6.0, 4.0]}, methods)
    per = {"x": {"gap_mean": 1.5, "best": "ga", "rte_mean": 0.1, "gold_test_mean": 90.0},
           "y": {"gap_mean": 5.0, "best": "ft", "rte_mean": 0.3, "gold_test_mean": 80.0}}
    text = answer(per, ["x", "y"], methods, table)
    assert "Hardest to unlearn: `y`" in text and "Easiest: `x`" in text
    assert "changes with the architecture" in text and "τ = -1.00" in text
    assert "costs most on `y`" in text
    assert "Caution" not in answer(per, ["x", "y"], methods, table, chance=10.0)
    warned = answer(per, ["x", "y"], methods, table, chance=45.0)  # 80 < 2 × 45 ≤ 90
    assert "Caution: the retrained model of `y` is below twice the chance accuracy (chance = " \
        "45.0 %)" in warned


def test_study_end_to_end(tmp_path: Path):
    res = run("cross-arch", dataset="digits", epochs=1, models=("small_cnn", "lenet5"),
              methods=("ga", "ft"), method_epochs=1, mia_samples=200, cka=False, progress=False,
              out=str(tmp_path / "ca"), pool=str(tmp_path / "pool"))
    out = tmp_path / "ca"
    assert res.counts["runs"] == 6 and res.counts["pool_trained"] == 4
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 6
    assert {(r["model"], r["method"]) for r in rows} == {
        (a, m) for a in ("small_cnn", "lenet5") for m in ("retrain", "ga", "ft")}
    for row in rows:
        result = json.loads((out / "runs" / row["key"] / "result.json").read_text())
        assert result["run"]["model"] == row["model"]
        assert float(row["avg_gap"]) == pytest.approx(result["metrics"]["avg_gap"])
    with (out / "summary.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 6
    report = res.report.read_text()
    for text in ("## Avg-Gap to each model's retrain", "## RTE ratio", "## Per model",
                 "## Answer", "Hardest to unlearn", "Kendall", "| `lenet5` |",
                 "| `small_cnn` |", "cross_arch.png", "model(s) `small_cnn, lenet5`"):
        assert text in report, text
    gaps = {m: sum(float(r["avg_gap"]) for r in rows if r["model"] == m
                   and r["method"] != "retrain") / 2 for m in ("small_cnn", "lenet5")}
    hard = max(gaps, key=gaps.get)
    assert f"Hardest to unlearn: `{hard}` (mean Avg-Gap {gaps[hard]:.2f}" in report
    assert (out / "cross_arch.png").stat().st_size > 5000
    chance = 100 / 9  # class 0 forgotten: TA is measured on the nine other classes
    weak = [m for m in gaps if float(next(r["retrain_test_acc"] for r in rows
                                          if r["model"] == m)) < 2 * chance]
    assert ("Caution" in report) == bool(weak)
