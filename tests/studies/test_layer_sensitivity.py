"""The ``layer-sensitivity`` study: plan (variants, one retrain per seed), options, and one
small real run on digits whose report, CSVs and answer are checked against the results."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fastunlearn.studies import StudyConfig, run
from fastunlearn.studies.keys import original_key, retrain_key
from fastunlearn.studies.layer_sensitivity import LayerSensitivity, block_params, parse_options

BLOCKS = ["features.0", "features.3", "classifier.0", "head"]  # small_cnn, forward order


def test_plan_default_variants_and_one_retrain_per_seed(digits):
    cfg = StudyConfig(dataset="digits", methods=("ga", "ft"), seeds=2, epochs=1)
    runs = LayerSensitivity.plan(cfg, digits)
    variants = 1 + len(BLOCKS) + (len(BLOCKS) - 1)  # all, only:b, freeze_first:1..3
    assert len(runs) == 2 * (1 + 2 * variants)
    assert len({r["key"] for r in runs}) == len(runs)
    gold = [r for r in runs if r["method"] == "retrain"]
    assert sorted(r["seed"] for r in gold) == [0, 1]
    assert all(r["variant"] == {} and r["tags"]["variant"] == "retrain" for r in gold)
    # every run of a seed shares one original and one retrain model
    for seed in (0, 1):
        mine = [r for r in runs if r["seed"] == seed]
        assert len({original_key(r) for r in mine}) == 1
        assert len({retrain_key(r) for r in mine}) == 1
    ga = [r for r in runs if r["method"] == "ga" and r["seed"] == 0]
    assert [r["variant"] for r in ga] == (
        [{}] + [{"only": b} for b in BLOCKS] + [{"freeze_first": k} for k in (1, 2, 3)])
    assert [r["tags"]["variant"] for r in ga][:2] == ["all", "only:features.0"]
    total = ga[0]["tags"]["total_params"]
    params = block_params(cfg, digits)
    assert list(params) == BLOCKS
    assert total == sum(params.values())  # small_cnn: every weight sits in a block
    assert ga[2]["tags"]["trainable_params"] == params["features.3"]
    assert ga[-1]["tags"]["trainable_params"] == params["head"]  # freeze_first:3 = only head
    assert all(r["forget"] == {"type": "class", "classes": ["0"]} for r in runs)


def test_plan_options_and_no_retrain(digits):
    cfg = StudyConfig(dataset="digits", methods=("ga",), include_retrain=False,
                      forget="random:50", options={"modes": "only", "blocks": "head,features.0"})
    runs = LayerSensitivity.plan(cfg, digits)
    assert [r["variant"] for r in runs] == [{}, {"only": "features.0"}, {"only": "head"}]
    assert runs[0]["forget"] == {"type": "random", "count": 50}


def test_parse_options_validation():
    params = {"act1": 0, "layer1": 10, "layer2": 20, "head": 5}
    opts = parse_options({}, params)
    assert opts["blocks"] == ["layer1", "layer2", "head"]  # act1 has no weights to train
    assert opts["freeze_first"] == [2, 3]  # k=1 would freeze only the weightless act1
    assert opts["modes"] == ("only", "freeze_first") and opts["tolerance"] == 5.0
    assert parse_options({"freeze_first": [3, 1], "tolerance": 2}, params)["freeze_first"] == [1, 3]
    for bad, match in (({"modes": ["all"]}, "modes"), ({"modes": []}, "modes"),
                       ({"blocks": ["nope"]}, "no block 'nope'"),
                       ({"blocks": ["act1"]}, "no parameters"),
                       ({"blocks": ["head", "head"]}, "twice"),
                       ({"freeze_first": [4]}, r"\[1, 3\]"), ({"freeze_first": [0]}, r"\[1, 3\]"),
                       ({"freeze_first": ["x"]}, "integers"),
                       ({"tolerance": -1}, "tolerance"), ({"colour": 1}, "unknown")):
        with pytest.raises(ValueError, match=match):
            parse_options(bad, params)


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_small_run_report_and_answer(tmp_path, digits):
    out = tmp_path / "ls"
    res = run("layer-sensitivity", dataset="digits", epochs=1, methods=("ft",), method_epochs=1,
              mia_samples=200, out=str(out), pool=str(tmp_path / "pool"), progress=False,
              options={"blocks": ["features.3", "head"], "freeze_first": [2]})
    # retrain + ft × (all, only:features.3, only:head, freeze_first:2)
    assert res.counts["runs"] == 5 and res.counts["ran"] == 5
    rows = _csv(out / "results.csv")
    assert len(rows) == 5
    assert {"tag.variant", "tag.trainable_params", "layer_cka.features.0", "forget_acc",
            "gap_forget_acc"} <= set(rows[0])
    by_variant = {r["tag.variant"]: r for r in rows}
    assert set(by_variant) == {"retrain", "all", "only:features.3", "only:head",
                               "freeze_first:2"}
    results = {}
    for r in rows:
        saved = json.loads((out / "runs" / r["key"] / "result.json").read_text())
        assert math.isclose(float(r["forget_acc"]), saved["metrics"]["forget_acc"])
        assert math.isclose(float(r["retain_acc"]), saved["metrics"]["retain_acc"])
        results[r["tag.variant"]] = saved["metrics"]
    # blocks upstream of the only trainable block are frozen: their representation is unchanged
    only_head = results["only:head"]["layer_cka"]
    for block in ("features.0", "features.3", "classifier.0", "pre_logits"):
        assert only_head[block] == pytest.approx(1.0, abs=1e-5)
    assert results["only:features.3"]["layer_cka"]["features.0"] == pytest.approx(1.0, abs=1e-5)

    report = (out / "report.md").read_text()
    for png in ("only.png", "freeze_first.png", "cka_drift.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report
    assert "| `ft` | `only:head` |" in report and "## Answer" in report
    summary = _csv(out / "summary.csv")
    assert len(summary) == 5 and "layer_cka.logits_mean" in summary[0]

    # the answer is derived from the numbers: recompute it from the results
    gap = {v: m["gap_forget_acc"] for v, m in results.items()}
    ret = {v: m["retain_acc"] for v, m in results.items()}
    params = block_params(StudyConfig(dataset="digits"), digits)
    start = abs(results["all"]["original_forget_acc"] - results["all"]["retrain_forget_acc"])
    answer = report[report.index("## Answer"):]
    if gap["all"] > start - 5:  # ft did not forget at all: it is left out of the verdicts
        assert "Not judged: `ft`" in answer and "`ft`: " not in answer
    else:
        cands = [b for b in ("features.3", "head") if ret[f"only:{b}"] >= ret["all"] - 5]
        best = min(cands or ["features.3", "head"],
                   key=lambda b: (round(gap[f"only:{b}"], 1), params[b]))
        assert f"`ft`: `{best}` (gap {gap[f'only:{best}']:.1f}" in answer
        safe = 2 if gap["freeze_first:2"] <= gap["all"] + 5 else 0
        assert f"`ft`: {safe} (" in answer

    again = run("layer-sensitivity", dataset="digits", epochs=1, methods=("ft",),
                method_epochs=1, mia_samples=200, out=str(out), pool=str(tmp_path / "pool"),
                progress=False, options={"blocks": ["features.3", "head"], "freeze_first": [2]})
    assert again.counts["skipped"] == 5 and again.counts["ran"] == 0
