"""The ``collateral`` study: forget tasks from options, the plan (one retrain per task and
seed), the per-class change arithmetic on hand-made results, and one small real run on digits
whose heatmaps, CSVs and answer are checked against the saved results."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest

from fastunlearn.studies import StudyConfig, run
from fastunlearn.studies.collateral import Collateral, class_changes, forget_tasks
from fastunlearn.studies.keys import original_key, retrain_key


def _tasks(digits, **kw):
    return [t["classes"] for t in forget_tasks(StudyConfig(dataset="digits", **kw), digits)]


def test_forget_tasks_from_options(digits):
    assert _tasks(digits) == [[c] for c in digits.classes]  # default: every class
    assert _tasks(digits, forget="class:7") == [["7"]]
    assert _tasks(digits, options={"classes": "3,1"}) == [["3"], ["1"]]
    assert _tasks(digits, options={"classes": "class:3,1"}) == [["1", "3"]]
    assert _tasks(digits, options={"classes": ["class:5,2", 4, "9"]}) == [["2", "5"], ["4"],
                                                                        ["9"]]
    for kw, match in (
        ({"forget": "random:10%"}, "class forgetting"),
        ({"options": {"classes": ["1", 1]}}, "twice"),
        ({"options": {"classes": ["class:1,2", "class:2,1"]}}, "twice"),
        ({"options": {"classes": ["ten"]}}, "not a class"),
        ({"options": {"classes": []}}, "empty"),
        ({"options": {"classes": [1.5]}}, "classes must be a list of class names or indices"),
        ({"options": {"classes": ["class:" + ",".join(digits.classes)]}}, "cannot forget all"),
        ({"options": {"tolerance": "x"}}, "tolerance"),
        ({"options": {"klasses": [1]}}, "unknown collateral option"),
    ):
        with pytest.raises(ValueError, match=match):
            _tasks(digits, **kw)


def test_plan_one_retrain_per_task_and_seed(digits):
    cfg = StudyConfig(dataset="digits", methods=("ga", "ft"), seeds=2, epochs=1,
                      options={"classes": [1, "class:3,4"]})
    runs = Collateral.plan(cfg, digits)
    assert len(runs) == 2 * 2 * 3  # tasks × seeds × (retrain + 2 methods)
    assert len({r["key"] for r in runs}) == len(runs)
    gold = [r for r in runs if r["method"] == "retrain"]
    assert sorted((r["tags"]["forgotten"], r["seed"]) for r in gold) == [
        ("1", 0), ("1", 1), ("3,4", 0), ("3,4", 1)]
    assert len({retrain_key(r) for r in runs}) == 4  # one gold model per task and seed
    assert len({original_key(r) for r in runs}) == 2  # one original per seed, shared by tasks


def _result(method, seed, gone, per_class, dmg, orig_forget):
    return {"run": {"method": method, "seed": seed, "forget": {"type": "class", "classes": gone},
                    "tags": {"forgotten": ",".join(gone)}},
            "metrics": {"per_class_test_acc": per_class, "collateral_damage_per_class": dmg,
                        "original_test_forget_acc": orig_forget}}


def test_class_changes_recover_the_original():
    classes = ["a", "b", "c"]
    orig = {"a": 90.0, "b": 80.0, "c": 70.0}
    now1 = {"a": 5.0, "b": 75.0, "c": 72.0}   # forgot a
    now2 = {"a": 85.0, "b": 1.0, "c": 3.0}    # forgot b and c together
    results = [
        _result("ga", 0, ["a"], now1, {c: orig[c] - now1[c] for c in "bc"}, orig["a"]),
        _result("ga", 0, ["b", "c"], now2, {"a": orig["a"] - now2["a"]}, 50.0),
        # another seed's original is unknown for b and c: those changes are NaN
        _result("ga", 1, ["b", "c"], now2, {"a": 1.0}, 50.0),
    ]
    ch = class_changes(results, classes)
    assert ch[0] == pytest.approx({"a": -85.0, "b": -5.0, "c": 2.0})
    # b and c were forgotten together: their original accuracies come from the first task
    assert ch[1] == pytest.approx({"a": -5.0, "b": -79.0, "c": -67.0})
    assert ch[2]["a"] == pytest.approx(-1.0)
    assert math.isnan(ch[2]["b"]) and math.isnan(ch[2]["c"])
    # a list of per-class accuracies (in class order) works like the dict
    listed = [dict(results[0], metrics={**results[0]["metrics"],
                                        "per_class_test_acc": list(now1.values())})]
    assert class_changes(listed, classes)[0] == pytest.approx(ch[0])


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_small_run_heatmaps_tables_and_answer(tmp_path, digits):
    out = tmp_path / "col"
    res = run("collateral", dataset="digits", epochs=1, methods=("ga", "ft"), method_epochs=1,
              mia_samples=200, cka=False, out=str(out), pool=str(tmp_path / "pool"),
              progress=False, options={"classes": "1,3"})
    assert res.counts["runs"] == 6 and res.counts["pool_trained"] == 3  # 1 original, 2 gold
    rows = _csv(out / "results.csv")
    assert len(rows) == 6
    assert {"tag.forgotten", "collateral_damage_worst", "confusion_drift_vs_retrain",
            "collateral_damage_per_class.0"} <= set(rows[0])
    saved = {}
    for r in rows:
        m = json.loads((out / "runs" / r["key"] / "result.json").read_text())["metrics"]
        assert math.isclose(float(r["collateral_damage_worst"]), m["collateral_damage_worst"])
        saved[(r["method"], r["tag.forgotten"])] = m

    change = {(r["method"], r["forgotten"], r["class"]): float(r["change"])
              for r in _csv(out / "per_class_change.csv")}
    assert len(change) == 3 * 2 * len(digits.classes)
    for (method, task), m in saved.items():
        for c in digits.classes:
            if c == task:  # the forgotten class: against the original's accuracy on it
                want = m["per_class_test_acc"][c] - m["original_test_forget_acc"]
            else:  # a retain class: minus its collateral damage
                want = -m["collateral_damage_per_class"][c]
            assert change[(method, task, c)] == pytest.approx(want, abs=1e-4)

    report = (out / "report.md").read_text()
    for png in ("collateral.png", "collateral_methods.png"):
        assert (out / png).stat().st_size > 1000
        assert f"]({png})" in report
    assert "| retrain (gold) |" in report and "## Answer" in report
    assert len(_csv(out / "summary.csv")) == 6  # task × method
    assert len(_csv(out / "summary_by_method.csv")) == 3

    # the answer's pair and method, recomputed from result.json
    mean = {(t, c): (change[("ga", t, c)] + change[("ft", t, c)]) / 2
            for t in ("1", "3") for c in digits.classes if c != t}
    (t, c), v = min(mean.items(), key=lambda kv: (kv[1], kv[0]))
    assert f"The largest collateral drop is `{t}` → `{c}`" in report
    assert f"by {v:.1f} points" in report
    def avg(method, metric):
        return (saved[(method, "1")][metric] + saved[(method, "3")][metric]) / 2

    ref = avg("retrain", "forget_acc")
    best = min(("ga", "ft"), key=lambda m: (round(avg(m, "collateral_damage_worst"), 1),
                                            avg(m, "forget_acc") > ref + 5,
                                            avg(m, "forget_acc")))
    assert f"smallest worst-case damage is `{best}`'s" in report
    assert f"loses {avg(best, 'collateral_damage_worst'):.1f} points" in report
