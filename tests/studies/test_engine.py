"""The study engine: keys, confidence intervals, resume after interruption, executors."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import torch
from scipy import stats

import fastunlearn as fu
from fastunlearn.studies import executors, keys, pool, tables
from fastunlearn.studies.config import StudyConfig, parse_forget
from fastunlearn.studies.cost_quality import pareto_front

TINY = {"dataset": "digits", "epochs": 1, "methods": ("ga", "ft"), "method_epochs": 1,
        "mia_samples": 200, "cka": False, "progress": False, "threads": 1}


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- statistics
def test_mean_ci_matches_student_t():
    mean, half, n = tables.mean_ci([1.0, 2.0, 3.0])
    # sd = 1, t_{0.975, 2} = 4.3026527297 → half-width 4.3027 / sqrt(3)
    assert n == 3 and mean == pytest.approx(2.0)
    assert half == pytest.approx(4.302652729749464 / math.sqrt(3), rel=1e-9)
    xs = [0.3, -1.2, 4.5, 2.2, 0.0]
    lo, hi = stats.t.interval(0.95, len(xs) - 1, loc=sum(xs) / 5, scale=stats.sem(xs))
    m, h, _ = tables.mean_ci(xs)
    assert (m - h, m + h) == pytest.approx((lo, hi), rel=1e-12)


def test_mean_ci_edge_cases():
    assert math.isnan(tables.mean_ci([5.0])[1]) and tables.mean_ci([5.0])[0] == 5.0
    assert math.isnan(tables.mean_ci([])[0])
    m, h, n = tables.mean_ci([1.0, float("nan"), 3.0])  # non-finite values are ignored
    assert n == 2 and m == 2.0 and h == pytest.approx(12.706204736174698 * 1.0, rel=1e-9)
    assert tables.mean_ci([2.0, 2.0, 2.0])[1] == 0.0


def test_aggregate_groups_over_seeds():
    rows = [{"method": "a", "seed": s, "x": v} for s, v in enumerate([1.0, 2.0, 3.0])]
    rows += [{"method": "b", "seed": 0, "x": 10.0}]
    agg = tables.aggregate(rows, ["method"], ["x"])
    assert [r["method"] for r in agg] == ["a", "b"] and [r["n"] for r in agg] == [3, 1]
    assert agg[0]["x_mean"] == 2.0
    assert agg[0]["x_ci95"] == pytest.approx(tables.mean_ci([1, 2, 3])[1])
    assert math.isnan(agg[1]["x_ci95"])


def test_pareto_front():
    pts = [(1.0, 5.0), (0.1, 9.0), (2.0, 1.0), (2.0, 6.0), (0.5, 5.0), (float("nan"), 0.0)]
    # (1, 5) is dominated by (0.5, 5); (2, 6) by (2, 1); NaN points never qualify
    assert pareto_front(pts) == [1, 4, 2]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # ties dominate nothing


# ------------------------------------------------------------------------------ keys
def test_run_keys_ignore_tags_and_separate_pool_models():
    a = keys.make_run(dataset="digits", model="small_cnn", forget={"type": "class",
                        "classes": ["3"]}, method="ga", seed=0, tags={"x": 1})
    b = keys.make_run(dataset="digits", model="small_cnn", forget={"type": "class",
                        "classes": ["3"]}, method="ga", seed=0, tags={"x": 2})
    c = keys.make_run(dataset="digits", model="small_cnn", forget={"type": "class",
                        "classes": ["4"]}, method="ga", seed=0)
    d = keys.make_run(dataset="digits", model="small_cnn", forget={"type": "class",
                        "classes": ["3"]}, method="ga", seed=0, config={"lr": 0.1})
    assert a["key"] == b["key"] != c["key"] != d["key"]
    assert keys.original_key(a) == keys.original_key(c)  # one original per (data, model)
    assert keys.retrain_key(a) != keys.retrain_key(c)   # one gold model per forget set
    assert keys.retrain_key(a) == keys.retrain_key(d)


def test_config_and_forget_validation():
    with pytest.raises(ValueError, match="unknown method 'nope'"):
        StudyConfig(methods=("nope",))
    with pytest.raises(ValueError, match="retrain is the"):
        StudyConfig(methods=("retrain",))
    with pytest.raises(ValueError, match="seeds"):
        StudyConfig(seeds=0)
    with pytest.raises(ValueError, match="executor"):
        StudyConfig(executor="slurm")
    assert parse_forget("random:10%") == {"type": "random", "fraction": pytest.approx(0.1)}
    assert parse_forget("random:500") == {"type": "random", "count": 500}
    assert parse_forget("class:1,Coat", ["a", "b", "Coat"]) == {"type": "class",
                                                                "classes": ["b", "Coat"]}
    for bad in ("random:150%", "random:-3", "class:", "cls:Coat", "random:x"):
        with pytest.raises(ValueError, match="forget spec"):
            parse_forget(bad)
    with pytest.raises(ValueError, match="not a class"):
        parse_forget("class:Dog", ["a", "b"])
    with pytest.raises(ValueError, match="unknown study"):
        fu.studies.run("nope", dataset="digits")


def test_variants_restrict_trainable_weights(digits):
    model = fu.create_model("small_cnn", digits)
    blocks = pool.model_blocks(model)
    assert list(blocks)[-1] == "head" and len(blocks) >= 3
    first = list(blocks)[0]
    pool.apply_variant(model, {"only": first})
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in blocks[first].parameters()}
    model = fu.create_model("small_cnn", digits)
    pool.apply_variant(model, {"freeze_first": 2})
    frozen = {id(p) for p in model.parameters() if not p.requires_grad}
    names = list(pool.model_blocks(model))
    blocks = pool.model_blocks(model)
    assert frozen == {id(p) for n in names[:2] for p in blocks[n].parameters()}
    with pytest.raises(ValueError, match="no block 'nope'"):
        pool.apply_variant(model, {"only": "nope"})
    with pytest.raises(ValueError, match="freeze_first"):
        pool.apply_variant(model, {"freeze_first": 99})


# ----------------------------------------------------------------- end to end + resume
def test_cost_quality_end_to_end(tmp_path):
    res = fu.studies.run("cost-quality", out=str(tmp_path / "cq"), **TINY)
    assert res.counts == {"runs": 4, "skipped": 0, "ran": 4, "pool_trained": 2,
                          "pool_reused": 0}
    rows = _csv(tmp_path / "cq" / "results.csv")
    assert [r["method"] for r in rows] == ["retrain", "ga", "ft", "original"]
    nothing = rows[3]  # the do-nothing row: the original itself, cost 0
    assert float(nothing["rte_s"]) == 0.0 and float(nothing["avg_gap"]) > 0
    gold = rows[0]
    assert float(gold["avg_gap"]) == 0.0 and float(gold["rte_ratio"]) == pytest.approx(1.0)
    for r in rows:
        stored = json.loads((tmp_path / "cq" / "runs" / r["key"] / "result.json").read_text())
        assert float(r["forget_acc"]) == pytest.approx(stored["metrics"]["forget_acc"])
        assert float(r["avg_gap"]) == pytest.approx(stored["metrics"]["avg_gap"])
        assert (tmp_path / "cq" / "runs" / r["key"] / "run.log").stat().st_size > 0
    report = (tmp_path / "cq" / "report.md").read_text()
    assert "## Answer" in report and "![Pareto front](pareto.png)" in report
    assert (tmp_path / "cq" / "pareto.png").stat().st_size > 1000
    summary = _csv(tmp_path / "cq" / "summary.csv")
    assert {r["method"] for r in summary} == {"retrain", "ga", "ft", "original"}
    assert "original (do nothing)" in report and "beats do-nothing" in report
    gap0 = float(nothing["avg_gap"])
    for ln in (ln for ln in report.splitlines() if ln.startswith("| `")):
        mark = ln.rstrip(" |").split("|")[-1].strip()
        assert mark == ("✓" if float(ln.split("|")[2]) < gap0 else "✗"), ln
    # probe recovery is a default column (every run, the retrain's included)
    assert "probe %" in report
    for r in rows:
        assert 0.0 <= float(r["probe_forget_acc"]) <= 100.0, r
    # the table is sorted by Avg-Gap
    table = [ln for ln in report.splitlines() if ln.startswith("| `")]
    gaps = [float(ln.split("|")[2]) for ln in table]
    assert gaps == sorted(gaps) and len(gaps) == 2


def test_the_answer_says_what_avg_gap_misses():
    """A head edit that wins Avg-Gap but leaves the class in the features is named as such,
    with the best method whose probe is near the retrain's; no caveat when the winner's
    probe is near."""
    from fastunlearn.studies.cost_quality import _probe_caveat

    head = {"method": "zero_shot", "avg_gap_mean": 0.05, "rte_ratio_mean": 0.004,
            "probe_forget_acc_mean": 83.0}
    deep = {"method": "ct", "avg_gap_mean": 1.2, "rte_ratio_mean": 0.15,
            "probe_forget_acc_mean": 71.0}
    gold, nothing = {"probe_forget_acc_mean": 69.0}, {"probe_forget_acc_mean": 84.0}
    text = _probe_caveat([head, deep], gold, nothing)
    assert "`zero_shot`'s features still recovers 83.0 %" in text
    assert "retrain: 69.0 %" in text and "original: 84.0 %" in text
    assert "the closest on Avg-Gap is `ct`" in text
    assert "No method's probe" in _probe_caveat([head], gold, nothing)
    assert _probe_caveat([deep, head], gold, nothing) == ""
    assert _probe_caveat([head], {}, nothing) == ""  # no retrain probe: nothing to say


def test_cost_quality_with_audit_columns(tmp_path):
    res = fu.studies.run("cost-quality", out=str(tmp_path / "cq"),
                         **{**TINY, "epochs": 3, "methods": ("ga",),
                            "options": {"shadows": 8, "quality": "ulira"}})
    report = res.report.read_text()
    assert "forget score" in report and "U-LiRA AUC" in report and "probe %" in report
    assert "|U-LiRA AUC − 0.5|" in report  # the Pareto plot's quality axis
    audit = json.loads((tmp_path / "cq" / "audit" / "audit.json").read_text())
    assert [r["method"] for r in audit["rows"]] == ["original", "ga", "retrain"]
    ga = next(r for r in audit["rows"] if r["method"] == "ga")
    row = next(ln for ln in report.splitlines() if ln.startswith("| `ga`"))
    assert f"{ga['forget_score']:.3f}" in row and f"{ga['ulira_auc']:.3f}" in row


@pytest.mark.parametrize(("options", "msg"), [
    ({"shadows": 5}, "even number"), ({"quality": "probe"}, "needs the audit"),
    ({"quality": "nope", "shadows": 8}, "quality must be"), ({"shadow": 8}, "unknown")])
def test_cost_quality_options_are_checked(tmp_path, options, msg):
    with pytest.raises(ValueError, match=msg):
        fu.studies.run("cost-quality", out=str(tmp_path / "cq"), **{**TINY, "options": options})


def test_resume_after_interruption_skips_finished_runs(tmp_path, monkeypatch):
    out, pool = str(tmp_path / "cq"), str(tmp_path / "pool")
    real = executors.execute_run
    calls = []

    def dies_on_third(*args, **kw):
        calls.append(args[0]["method"])
        if len(calls) == 3:
            raise KeyboardInterrupt  # the study is killed during its third run
        return real(*args, **kw)

    monkeypatch.setattr(executors, "execute_run", dies_on_third)
    cfg = {**TINY, "methods": ("ga", "ft", "neggrad_plus")}
    with pytest.raises(KeyboardInterrupt):
        fu.studies.run("cost-quality", out=out, pool=pool, **cfg)
    done = list(Path(out, "runs").glob("*/result.json"))
    assert len(done) == 2 and not (Path(out) / "results.csv").exists()
    # a half-written temp file from the killed run must not count as a result
    (Path(out) / "runs" / "junk").mkdir()
    (Path(out) / "runs" / "junk" / ".result.json.123.tmp").write_text("{")
    monkeypatch.setattr(executors, "execute_run", real)
    res = fu.studies.run("cost-quality", out=out, pool=pool, **cfg)
    # 5 runs: retrain, 3 methods, the do-nothing original
    assert res.counts["skipped"] == 2 and res.counts["ran"] == 3
    assert res.counts["pool_trained"] == 0  # original and retrain come from the pool
    assert len(_csv(Path(out) / "results.csv")) == 5
    # a third invocation does nothing but rebuild the report
    again = fu.studies.run("cost-quality", out=out, pool=pool, **cfg)
    assert again.counts["skipped"] == 5 and again.counts["ran"] == 0
    # a corrupt result is redone, not trusted
    victim = next(Path(out, "runs").glob("*/result.json"))
    victim.write_text("{not json")
    fixed = fu.studies.run("cost-quality", out=out, pool=pool, **cfg)
    assert fixed.counts["ran"] == 1 and fixed.counts["skipped"] == 4


def test_multi_seed_reports_confidence_intervals(tmp_path):
    res = fu.studies.run("cost-quality", out=str(tmp_path / "cq"), seeds=2,
                         **{**TINY, "methods": ("ga",)})
    # 2 seeds × (retrain, ga, original); 2 seeds × orig+gold in the pool
    assert res.counts["runs"] == 6 and res.counts["pool_trained"] == 4
    summary = {r["method"]: r for r in _csv(tmp_path / "cq" / "summary.csv")}
    rows = [r for r in _csv(tmp_path / "cq" / "results.csv") if r["method"] == "ga"]
    vals = [float(r["test_acc"]) for r in rows]
    m, h, _ = tables.mean_ci(vals)
    assert float(summary["ga"]["test_acc_mean"]) == pytest.approx(m)
    assert float(summary["ga"]["test_acc_ci95"]) == pytest.approx(h)
    assert summary["ga"]["n"] == "2"
    assert "±" in res.report.read_text()


def _comparable(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    skip = set(keys.TIMING_COLUMNS)
    return [{k: v for k, v in r.items() if k not in skip} for r in rows]


def _assert_same_table(a: Path, b: Path) -> None:
    ra, rb = _comparable(_csv(a)), _comparable(_csv(b))
    assert len(ra) == len(rb) and ra[0].keys() == rb[0].keys()
    for x, y in zip(ra, rb):
        for k in x:
            try:
                fx, fy = float(x[k]), float(y[k])
            except ValueError:
                assert x[k] == y[k], k
                continue
            assert fx == pytest.approx(fy, rel=1e-6, abs=1e-9, nan_ok=True), k


def test_process_pool_gives_the_local_table(tmp_path):
    cfg = {**TINY, "methods": ("ga",)}
    fu.studies.run("cost-quality", out=str(tmp_path / "a" / "cq"), **cfg)
    fu.studies.run("cost-quality", out=str(tmp_path / "b" / "cq"), executor="process",
                   workers=2, **cfg)
    _assert_same_table(tmp_path / "a" / "cq" / "results.csv",
                       tmp_path / "b" / "cq" / "results.csv")


def test_ray_gives_the_local_table(tmp_path):
    ray = pytest.importorskip("ray")
    cfg = {**TINY, "methods": ("ga",)}
    fu.studies.run("cost-quality", out=str(tmp_path / "a" / "cq"), **cfg)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}})
    try:
        res = fu.studies.run("cost-quality", out=str(tmp_path / "b" / "cq"), executor="ray",
                             **cfg)
    finally:
        ray.shutdown()
    # retrain, ga and the do-nothing row; one original and one gold model
    assert res.counts["ran"] == 3 and res.counts["pool_trained"] == 2
    _assert_same_table(tmp_path / "a" / "cq" / "results.csv",
                       tmp_path / "b" / "cq" / "results.csv")


def test_duplicate_keys_are_refused(tmp_path):
    run = keys.make_run(dataset="digits", model="small_cnn",
                          forget={"type": "class", "classes": ["3"]}, method="ga")
    with pytest.raises(ValueError, match="same key"):
        executors.execute([run, dict(run)], tmp_path / "x", progress=False)


def test_pool_models_are_checkpoints_with_their_training_time(tmp_path):
    fu.studies.run("cost-quality", out=str(tmp_path / "cq"), pool=str(tmp_path / "pool"),
                   **{**TINY, "methods": ("ga",)})
    metas = [json.loads(p.read_text()) for p in (tmp_path / "pool").glob("*/model.json")]
    roles = sorted(m["role"] for m in metas)
    assert roles == ["original", "retrain"]
    assert all(m["metrics"]["rte_s"] > 0 for m in metas)
    ck = fu.load_checkpoint(next((tmp_path / "pool").glob("gold-*/model.safetensors")))
    assert isinstance(ck.model, torch.nn.Module)


def test_freeze_first_also_freezes_stem_weights_outside_blocks(digits):
    model = fu.create_model("resnet18", digits)
    blocks = pool.model_blocks(model)
    assert "conv1" not in blocks  # the stem conv belongs to no probe block
    pool.apply_variant(model, {"freeze_first": 2})
    later = {id(p) for b in list(blocks.values())[2:] for p in b.parameters()}
    for name, p in model.named_parameters():
        assert p.requires_grad == (id(p) in later), name


def test_zero_shot_with_frozen_head_says_so(digits):
    model = fu.create_model("small_cnn", digits)
    first = list(pool.model_blocks(model))[0]
    pool.apply_variant(model, {"only": first})
    split = fu.forget_classes(digits, ["3"])
    with pytest.raises(ValueError, match="classifier is frozen"):
        fu.unlearn(model, split, fu.ZeroShotConfig(progress=False))
