"""`fastunlearn demo` shares its pool with the studies; `fastunlearn study` end to end and its
one-line errors."""

from __future__ import annotations

import csv

import pytest

from fastunlearn.cli import main
from fastunlearn.studies.demo import run_demo

TINY = ["--dataset", "digits", "--epochs", "1", "--mia-samples", "200", "--no-cka",
        "--no-progress", "--threads", "1"]


def test_demo_models_are_reused_by_the_study(tmp_path, capsys):
    table = run_demo(tmp_path / "demo", dataset="digits", forget_class="3", epochs=1,
                     progress=False)
    assert "| retrain |" in table and (tmp_path / "pool").is_dir()
    pooled = sorted(p.name for p in (tmp_path / "pool").iterdir())
    assert [p[:5] for p in pooled] == ["gold-", "orig-"]
    rc = main(["study", "cost-quality", *TINY, "--forget", "class:3", "--methods", "ga",
               "--pool", str(tmp_path / "pool"), "--out", str(tmp_path / "cq")])
    out = capsys.readouterr().out
    assert rc == 0 and "0 pool models trained" in out
    assert sorted(p.name for p in (tmp_path / "pool").iterdir()) == pooled
    with (tmp_path / "cq" / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["retrain", "ga", "original"]
    # the demo's gold row and the study's retrain row judge the same model
    demo_rows = {ln.split("|")[1].strip(): ln for ln in table.splitlines() if ln.startswith("|")}
    demo_gold_ra = float(demo_rows["retrain"].split("|")[3])
    assert float(rows[0]["retain_acc"]) == pytest.approx(demo_gold_ra, abs=0.01)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["study", "nope"], "unknown study 'nope'"),
        (["study", "cost-quality", "--methods", "nope"], "unknown method 'nope'"),
        (["study", "cost-quality", "--forget", "random:300%"], "bad forget spec"),
        (["study", "cost-quality", "--forget", "class:Dog"], "not a class"),
        (["study", "cost-quality", "--seeds", "0"], "seeds must be"),
        (["study", "cost-quality", "--set", "lr=0.1"], "METHOD.KEY=VALUE"),
    ],
)
def test_study_cli_errors_are_one_line_and_write_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "study"
    argv = [*args, "--dataset", "digits", "--out", str(out), "--pool", str(tmp_path / "pool")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "pool").exists()


def test_list_studies(capsys):
    assert main(["list", "studies"]) == 0
    out = capsys.readouterr().out
    for name in ("cost-quality", "forget-scaling", "cross-arch", "collateral",
                 "layer-sensitivity"):
        assert name in out
