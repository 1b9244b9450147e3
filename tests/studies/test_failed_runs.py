"""Issue 13 items 4 and 8 in studies: a method that diverges or raises is a failed run (status,
reason, "—" in the tables) and the study goes on; evaluation options are keyed apart from the
run, so changing them re-evaluates instead of reusing stale metrics."""

from __future__ import annotations

import csv
import importlib
import json

import pytest

from fastunlearn.studies import StudyConfig, executors, keys, run

unlearn_pkg = importlib.import_module("fastunlearn.unlearn")  # the package, not fu.unlearn

TINY = {"dataset": "digits", "epochs": 1, "mia_samples": 100, "cka": False, "progress": False,
        "threads": 1, "device": "cpu"}


def _rows(out):
    with (out / "results.csv").open() as f:
        return {r["method"]: r for r in csv.DictReader(f)}


@pytest.fixture()
def boom(monkeypatch):
    """``ga`` raises inside the study (a method bug, an OOM …)."""
    real = unlearn_pkg.unlearn

    def unlearn(model, split, config, **kw):  # noqa: ANN001, ANN003
        if config.method == "ga":
            raise RuntimeError("boom: out of memory")
        return real(model, split, config, **kw)

    monkeypatch.setattr(unlearn_pkg, "unlearn", unlearn)


def test_diverged_and_raising_methods_are_failed_runs(tmp_path, boom):
    cfg = StudyConfig(**TINY, forget="class:3", methods=("ft", "ga", "rl"),
                      method_options={"ft": {"lr": 1e30, "epochs": 1}, "rl": {"epochs": 1}},
                      out=str(tmp_path / "cq"), pool=str(tmp_path / "pool"))
    res = run("cost-quality", cfg)
    rows = _rows(res.out)
    assert rows["ft"]["status"] == "failed" and rows["ft"]["failed"] == "True"
    assert rows["ft"]["failure"].startswith("diverged")
    assert rows["ga"]["status"] == "failed" and "RuntimeError: boom" in rows["ga"]["failure"]
    for m in ("rl", "retrain"):
        assert rows[m]["status"] == "ok" and rows[m]["failure"] == "" and rows[m]["avg_gap"]
    for m in ("ft", "ga"):
        assert rows[m]["avg_gap"] == "" and rows[m]["mia_efficacy"] == ""  # NaN: no number
    report = (res.out / "report.md").read_text()
    assert "**Failed runs.** 2 run(s) failed" in report and "boom" in report
    ft_line = next(ln for ln in report.splitlines() if ln.startswith("| `ft`")
                   or ln.startswith("| ft"))
    assert "—" in ft_line
    saved = json.loads((res.out / "runs" / rows["ga"]["key"] / keys.RESULT_FILE).read_text())
    assert saved["status"] == "failed" and saved["metrics"] == {}
    # a rerun keeps the failed runs (they are finished) and does not stop on them
    again = run("cost-quality", cfg)
    assert again.counts["ran"] == 0 and again.counts["skipped"] == again.counts["runs"]


def test_eval_key_is_the_resolved_evaluation(tmp_path):
    assert keys.eval_key({}) == keys.eval_key({"max_samples": 4000, "mia_seeds": 5})
    assert keys.eval_key({"max_samples": 100}) != keys.eval_key({"max_samples": 200})
    assert keys.eval_key({"cka": False}) != keys.eval_key({"cka": True})
    assert keys.eval_key({"mia_nonmembers": "test"}) != keys.eval_key({})


def test_changed_evaluation_options_re_evaluate(tmp_path):
    base = {**TINY, "forget": "class:3", "methods": ("ga",), "out": str(tmp_path / "cq"),
            "pool": str(tmp_path / "pool")}
    first = run("cost-quality", StudyConfig(**base))
    assert first.counts["ran"] == first.counts["runs"]
    same = run("cost-quality", StudyConfig(**base))
    assert same.counts["ran"] == 0
    more = run("cost-quality", StudyConfig(**{**base, "mia_samples": 150}))
    assert more.counts["ran"] == more.counts["runs"] and more.counts["pool_trained"] == 0
    key = _rows(more.out)["ga"]["key"]
    saved = json.loads((more.out / "runs" / key / keys.RESULT_FILE).read_text())
    # cost-quality always adds the linear probe
    assert saved["eval_key"] == keys.eval_key({"max_samples": 150, "cka": False,
                                               "linear_probe": True})
    cka = run("cost-quality", StudyConfig(**{**base, "mia_samples": 150, "cka": True}))
    assert cka.counts["ran"] == cka.counts["runs"]
    assert "layer_cka.logits" in _rows(cka.out)["ga"]


def test_a_result_without_an_eval_key_is_redone(tmp_path):
    base = {**TINY, "forget": "class:3", "methods": ("ga",), "out": str(tmp_path / "cq"),
            "pool": str(tmp_path / "pool")}
    first = run("cost-quality", StudyConfig(**base))
    for d in (first.out / "runs").iterdir():
        p = d / keys.RESULT_FILE
        res = json.loads(p.read_text())
        del res["eval_key"]  # written before evaluation was keyed
        p.write_text(json.dumps(res))
    again = run("cost-quality", StudyConfig(**base))
    assert again.counts["ran"] == again.counts["runs"]


def test_threads_must_be_positive(tmp_path):
    for bad in (0, -2):
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            StudyConfig(dataset="digits", threads=bad)
        with pytest.raises(ValueError, match="threads must be a positive integer"):
            executors.execute([], tmp_path / "x", threads=bad)
    assert not (tmp_path / "x").exists()


def _changed_default(monkeypatch, method: str, **defaults):
    """Swap ``method``'s registered config class for a subclass with other ``defaults`` —
    what a re-tuned default in a new release looks like to a resumed study."""
    import dataclasses

    from fastunlearn.unlearn import _registry

    entry = _registry.get_method(method)
    new = dataclasses.make_dataclass(
        f"Changed{entry.config_cls.__name__}",
        [(k, type(v), dataclasses.field(default=v)) for k, v in defaults.items()],
        bases=(entry.config_cls,))
    monkeypatch.setitem(_registry._METHODS, entry.name,
                        dataclasses.replace(entry, config_cls=new))


def test_config_digest_is_the_resolved_config(monkeypatch):
    from fastunlearn.unlearn import make_config

    ga = make_config("ga")
    assert keys.config_digest("ga", {}) == keys.config_digest("ga", {"lr": ga.lr})
    assert keys.config_digest("ga", {}) != keys.config_digest("ga", {"lr": ga.lr * 3})
    # where a method runs is not what it computes
    assert keys.config_digest("ga", {}) == keys.config_digest("ga", {"device": "cpu",
                                                                     "progress": False})
    assert keys.config_digest(keys.DO_NOTHING, {}) == ""
    before = keys.config_digest("ga", {})
    _changed_default(monkeypatch, "ga", lr=ga.lr * 3)
    assert keys.config_digest("ga", {}) != before
    assert keys.config_digest("ga", {"lr": ga.lr}) == before


def test_a_changed_method_default_redoes_its_runs_only(tmp_path, monkeypatch):
    from fastunlearn.unlearn import make_config

    base = {**TINY, "forget": "class:3", "methods": ("ga", "rl"), "out": str(tmp_path / "cq"),
            "pool": str(tmp_path / "pool"), "method_options": {"rl": {"epochs": 1}}}
    first = run("cost-quality", StudyConfig(**base))
    assert first.counts["ran"] == first.counts["runs"] == 4  # retrain, ga, rl, do nothing
    old = _rows(first.out)
    _changed_default(monkeypatch, "ga", lr=make_config("ga").lr * 3)
    again = run("cost-quality", StudyConfig(**base))
    # the key (the options asked for) is unchanged; ga's resolved config is not
    assert again.counts["ran"] == 1 and again.counts["skipped"] == 3
    new = _rows(again.out)
    assert new["ga"]["key"] == old["ga"]["key"]
    saved = json.loads((again.out / "runs" / new["ga"]["key"] / keys.RESULT_FILE).read_text())
    assert saved["config_digest"] == keys.config_digest("ga", {}) != ""
    assert new["rl"]["wall_s"] == old["rl"]["wall_s"]  # reused, not rerun
    # a result recorded before digests existed is redone
    p = again.out / "runs" / new["rl"]["key"] / keys.RESULT_FILE
    res = json.loads(p.read_text())
    del res["config_digest"]
    p.write_text(json.dumps(res))
    last = run("cost-quality", StudyConfig(**base))
    assert last.counts["ran"] == 1
