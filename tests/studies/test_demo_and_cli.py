"""`fastunlearn demo` shares its pool with the studies; `fastunlearn study` end to end and its
one-line errors."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest

from fastunlearn.cli import main
from fastunlearn.studies.demo import run_demo

TINY = ["--dataset", "digits", "--epochs", "1", "--mia-samples", "200", "--no-cka",
        "--no-progress", "--threads", "1"]


def test_demo_models_are_reused_by_the_study(tmp_path, capsys):
    table = run_demo(tmp_path / "demo", dataset="digits", forget_class="3", epochs=1,
                     progress=False)
    assert "| retrain |" in table and (tmp_path / "pool").is_dir()
    assert _phase_lines(capsys.readouterr().err) == []  # progress=False: quiet
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


PHASE = re.compile(r"^demo \[(\d+)/(\d+)\] (.+?): (?:(.+) in )?(\d+\.\d) s "
                   r"\(elapsed (\d+) s\)$")


def _phase_lines(err: str) -> list[re.Match]:
    lines = (ln.strip() for ln in re.split(r"[\r\n]", err))  # tqdm bars redraw with \r
    return [m for ln in lines if (m := PHASE.match(ln))]


def test_demo_prints_one_line_per_phase_in_order(tmp_path, capsys):
    argv = ["demo", "--dataset", "digits", "--forget-class", "3", "--epochs", "1", "--device",
            "cpu", "--out", str(tmp_path / "demo"), "--pool", str(tmp_path / "pool")]
    assert main(argv) == 0  # progress is on by default
    cap = capsys.readouterr()
    phases = _phase_lines(cap.err)
    names = [m[3] for m in phases]
    assert len(names) == 5, cap.err
    for name, want in zip(names, ("original model (small_cnn, 1 epoch)",
                                  "gold retrain (small_cnn, 1 epoch)", "ft", "ga",
                                  "evaluation (4 models)"), strict=True):
        assert name == want
    assert [(int(m[1]), int(m[2])) for m in phases] == [(i, 5) for i in range(1, 6)]
    assert [m[4] for m in phases[:2]] == ["trained", "trained"]
    elapsed = [int(m[6]) for m in phases]
    assert elapsed == sorted(elapsed)
    total = sum(float(m[5]) for m in phases)
    assert elapsed[-1] >= int(total) - 1  # the phases' seconds add up to the elapsed time
    assert not _phase_lines(cap.out)  # progress goes to stderr, the table to stdout
    assert "| ga |" in cap.out
    # a second demo on the same pool says where its models came from; --no-progress: quiet
    assert main([*argv, "--force"]) == 0
    assert [m[4] for m in _phase_lines(capsys.readouterr().err)[:2]] == [
        "taken from the pool"] * 2
    assert main([*argv, "--force", "--no-progress"]) == 0
    assert _phase_lines(capsys.readouterr().err) == []


def test_make_demo_shows_progress():
    """The Makefile's demo target no longer silences the demo or its study."""
    makefile = Path(__file__).resolve().parents[2] / "Makefile"
    lines = makefile.read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "fastunlearn demo" in lines and "fastunlearn study cost-quality" in lines
    assert "--no-progress" not in lines


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
