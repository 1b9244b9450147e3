"""forget-scaling: the plan (one task and one gold retrain per forget spec), option checks, the
trend helper, and one small end-to-end study on digits."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fastunlearn.data import load_dataset
from fastunlearn.studies import StudyConfig, keys, run
from fastunlearn.studies.forget_scaling import (
    DEFAULT_CLASS_COUNTS,
    DEFAULT_FRACTIONS,
    ForgetScaling,
    ForgetScalingOptions,
    sweep,
    trend,
)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _config(**kw) -> StudyConfig:
    base = {"dataset": "digits", "epochs": 1, "methods": ("ga", "ft"), "method_epochs": 1,
            "mia_samples": 200, "cka": False, "progress": False}
    return StudyConfig(**{**base, **kw})


def test_plan_default_sweep(digits):
    cfg = _config(seeds=2)
    runs = ForgetScaling.plan(cfg, digits)
    n_tasks = len(DEFAULT_FRACTIONS) + len(DEFAULT_CLASS_COUNTS)
    assert len(runs) == n_tasks * 2 * 3  # tasks × seeds × (retrain + ga + ft)
    assert len({r["key"] for r in runs}) == len(runs)
    retrains = [r for r in runs if r["method"] == "retrain"]
    assert len(retrains) == n_tasks * 2
    # every forget spec × seed has its own gold model; one original per seed
    assert len({keys.retrain_key(r) for r in runs}) == n_tasks * 2
    assert len({keys.original_key(r) for r in runs}) == 2
    fractions = sorted({r["forget"]["fraction"] for r in runs if r["forget"]["type"] == "random"})
    assert fractions == list(DEFAULT_FRACTIONS)
    classes = sorted((r["forget"]["classes"] for r in runs if r["forget"]["type"] == "class"),
                     key=len)
    assert classes[0] == ["0"] and classes[-1] == ["0", "1", "2"]
    for r in runs:
        size = r["forget"].get("fraction") or len(r["forget"].get("classes", []))
        assert r["tags"]["size"] == size
        assert r["tags"]["kind"] == r["forget"]["type"]


def test_options_parse_and_class_order(digits):
    cfg = _config(options={"fractions": "25%,0.05", "class_counts": [2], "classes": ["7", 3]})
    tasks = sweep(cfg, digits)
    assert [(k, s) for k, s, _, _ in tasks] == [("random", 0.05), ("random", 0.25), ("class", 2)]
    assert tasks[-1][2] == {"type": "class", "classes": ["7", "3"]}
    assert ForgetScalingOptions(fractions=0.1).fractions == (0.1,)
    only_class = sweep(_config(options={"fractions": []}), digits)
    assert {k for k, *_ in only_class} == {"class"}


@pytest.mark.parametrize("options, match", [
    ({"fractions": [0.0]}, "in \\(0, 1\\)"),
    ({"fractions": [1.5]}, "in \\(0, 1\\)"),
    ({"fractions": ["abc"]}, "numbers"),
    ({"fractions": [0.1, 0.1]}, "repeat"),
    ({"class_counts": [10]}, "\\[1, 9\\]"),
    ({"class_counts": [0]}, "\\[1, 9\\]"),
    ({"class_counts": [1.5]}, "integers"),
    ({"class_counts": [3], "classes": ["1", "2"]}, "only 2"),
    ({"classes": ["1", "1"]}, "twice"),
    ({"classes": ["cat"]}, "cat"),
    ({"fractions": [], "class_counts": []}, "at least one"),
    ({"fraction": [0.1]}, "unknown forget-scaling option 'fraction'"),
])
def test_bad_options(digits, options, match):
    with pytest.raises(ValueError, match=match):
        ForgetScaling.plan(_config(options=options), digits)


def test_forget_and_models_must_be_unset(digits):
    with pytest.raises(ValueError, match="leave forget unset"):
        ForgetScaling.plan(_config(forget="class:1"), digits)
    with pytest.raises(ValueError, match="models is for cross-arch"):
        ForgetScaling.plan(_config(models=("lenet5",)), digits)


def test_trend():
    rho, _, word = trend([0.01, 0.05, 0.25, 0.5], [1.0, 2.0, 2.5, 9.0])
    assert rho == pytest.approx(1.0) and word == "grows"
    rho, _, word = trend([1, 2, 3], [5.0, 4.0, 1.0])
    assert rho == pytest.approx(-1.0) and word == "shrinks"
    assert trend([1, 2, 3], [2.0, 2.0, 2.0])[2] == "does not change"
    assert trend([1, 1], [1.0, 3.0])[2] == "does not change"
    rho, _, _ = trend([1, 2, 3, 4], [1.0, math.nan, 3.0, 2.0])  # NaN points are dropped
    assert rho == pytest.approx(0.5)


def test_study_end_to_end(tmp_path: Path):
    res = run("forget-scaling", dataset="digits", epochs=1, methods=("ga",), mia_samples=200,
              cka=False, progress=False, out=str(tmp_path / "fs"), pool=str(tmp_path / "pool"),
              options={"fractions": [0.05, 0.25], "class_counts": [1, 2]})
    out = tmp_path / "fs"
    assert res.counts["runs"] == 8 and res.counts["ran"] == 8
    assert res.counts["pool_trained"] == 5  # one original + four gold retrains
    with (out / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 8
    assert {"tag.kind", "tag.size", "avg_gap", "retrain_forget_acc", "rte_ratio"} <= set(rows[0])
    # the csv agrees with every run's result.json
    for row in rows:
        result = json.loads((out / "runs" / row["key"] / "result.json").read_text())
        assert float(row["avg_gap"]) == pytest.approx(result["metrics"]["avg_gap"])
        assert float(row["UA"]) == pytest.approx(result["metrics"]["UA"])
    # retrain rows are the reference: zero gap, and their forget accuracy is the gold value
    for row in rows:
        if row["method"] == "retrain":
            assert float(row["avg_gap"]) == pytest.approx(0.0)
            assert float(row["forget_acc"]) == pytest.approx(float(row["retrain_forget_acc"]))
    with (out / "summary.csv").open() as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 8  # (4 sizes) × (retrain, ga), one seed each
    report = res.report.read_text()
    for text in ("## Random forgetting", "## Class forgetting", "## Answer", "retrain (gold)",
                 "| 5 % |", "| 2 classes (0, 1) |", "Spearman", "worst at",
                 "avg_gap_vs_size.png", "forget_acc_vs_size.png"):
        assert text in report, text
    ga_gap = [float(r["avg_gap"]) for r in rows if r["method"] == "ga"
              and r["tag.kind"] == "random" and float(r["tag.size"]) == 0.25][0]
    assert f"{ga_gap:.2f}" in report
    for png in ("avg_gap_vs_size.png", "forget_acc_vs_size.png"):
        assert (out / png).stat().st_size > 5000


def _row(kind, size, method, seed, gap, fa, gold_fa, gold_ta):
    return {"tag.kind": kind, "tag.size": size, "tag.label": "", "method": method,
            "seed": seed, "avg_gap": gap, "forget_acc": fa, "UA": 100 - fa, "retain_acc": 90.0,
            "test_acc": gold_ta, "mia_efficacy": 50.0, "rte_ratio": 0.1, "rte_s": 1.0,
            "retrain_forget_acc": gold_fa, "retrain_UA": 100 - gold_fa,
            "retrain_retain_acc": 95.0, "retrain_test_acc": gold_ta,
            "retrain_mia_efficacy": 40.0, "retrain_rte_s": 10.0}


def test_report_from_known_rows(tmp_path: Path, digits):
    """Two seeds of made-up numbers: ga's gap grows with the size, ft's shrinks, retrain's
    forget accuracy tracks its test accuracy — the report must say exactly that."""
    from fastunlearn.studies.base import StudyContext

    rows = []
    for seed in (0, 1):
        for size in (0.01, 0.1, 0.5):
            gold_fa, gold_ta = 88.0 - 10 * size + seed, 88.0 - 10 * size
            rows.append(_row("random", size, "retrain", seed, 0.0, gold_fa, gold_fa, gold_ta))
            rows.append(_row("random", size, "ga", seed, 10 * size + seed, 50.0, gold_fa, gold_ta))
            rows.append(_row("random", size, "ft", seed, 5 - 5 * size + seed, 95.0, gold_fa,
                             gold_ta))
        for k in (1, 3):
            rows.append(_row("class", k, "retrain", seed, 0.0, 0.0, 0.0, 90.0))
            rows.append(_row("class", k, "ga", seed, 2.0 * k + seed, 3.0, 0.0, 90.0))
            rows.append(_row("class", k, "ft", seed, 4.0 - k + seed, 9.0, 0.0, 90.0))
    cfg = _config(seeds=2)
    ctx = StudyContext(cfg, digits, [], rows, tmp_path, {})
    text = ForgetScaling.report(ctx)
    assert "| 1 % | retrain (gold) | 11.60 ± 6.35 |" in text  # UA 100 − (88.9, 87.9)
    assert "`ga`: Avg-Gap grows with the size (Spearman ρ = +0.84" in text
    assert "`ft`: Avg-Gap shrinks with the size" in text
    assert "worst at 50 % (5.50)" in text and "worst at 1 % (5.45)" in text
    assert "Avg-Gap grows with the forget-set size for 1 of 2 method(s)" in text
    assert "on average 0.5 points above it" in text
    assert "`ga` -36.5, `ft` +8.5" in text  # mean forget-acc offset to retrain
    assert "worst at 3 classes (6.50)" in text and "worst at 1 class (3.50)" in text
    assert "(flat; retraining never saw the forgotten classes)" in text
    assert (tmp_path / "summary.csv").exists()
    assert (tmp_path / "forget_acc_vs_size.png").stat().st_size > 5000
