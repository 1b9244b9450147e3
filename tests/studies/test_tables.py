"""Issue 15: the studies' shared table / file / machine helpers (one definition each)."""

from __future__ import annotations

import csv
import math
import os

import pytest

from fastunlearn.evaluate.report import machine_description
from fastunlearn.studies.audit_report import audit_table
from fastunlearn.studies.runlog import machine
from fastunlearn.studies.tables import fmt, md_table, write_csv


def test_fmt():
    assert fmt(1.234, 0.5) == "1.23 ± 0.50"
    assert fmt(1.234, math.nan, 1) == "1.2"
    assert fmt(-0.001, nd=2) == "0.00"  # never "-0.00"
    assert fmt(-0.3, nd=0) == "0" and fmt(-0.6, nd=0) == "-1"
    for missing in (None, math.nan, math.inf, "x", True):
        assert fmt(missing) == "—"


def test_md_table_alignment():
    assert md_table(["a", "b"], [["`x`", "1"]]) == "| a | b |\n|---|---:|\n| `x` | 1 |\n"
    centred = md_table(["a", "b"], [["x", "✓"]], align=["---", ":---:"])
    assert centred.splitlines()[1] == "|---|:---:|"
    with pytest.raises(ValueError, match="align has 1 entries for 2 columns"):
        md_table(["a", "b"], [], align=["---"])


def test_audit_table_uses_the_shared_table():
    rows = [{"method": "original", "forget_score": 0.1234, "beats_do_nothing": None},
            {"method": "ga", "forget_score": -0.0001, "beats_do_nothing": False},
            {"method": "retrain", "forget_score": math.nan, "beats_do_nothing": None}]
    lines = audit_table(rows).splitlines()
    assert lines[1].startswith("|---|---:|") and lines[1].endswith("|:---:|")
    assert lines[2].startswith("| original (do nothing) | 0.123 | —")
    assert lines[3].startswith("| `ga` | 0.000 |") and lines[3].endswith("| ✗ |")
    assert lines[4].startswith("| retrain (ceiling) | — |")


def test_write_csv_is_atomic_and_keeps_every_column(tmp_path):
    path = tmp_path / "sub" / "rows.csv"
    write_csv([{"a": 1}, {"b": 2, "a": 3}], path)
    with path.open() as f:
        assert list(csv.DictReader(f)) == [{"a": "1", "b": ""}, {"a": "3", "b": "2"}]
    assert os.listdir(path.parent) == ["rows.csv"]  # no temp file left behind
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_machine_is_the_report_commands_description():
    import torch

    assert machine("cpu") == machine_description(torch.device("cpu"))
    assert machine("cpu").startswith("CPU (") and "torch thread" in machine("cpu")


def test_paired_beats_do_nothing_needs_a_consistent_per_seed_improvement():
    """cost-quality's ✓ with several seeds: the per-seed Avg-Gap improvement over doing
    nothing (same original and gold model) must have its 95 % CI above 0."""
    from fastunlearn.studies.cost_quality import _paired_beats

    nothing = [6.8, 6.2, 7.3]

    def rows(method_gaps):
        return ([{"method": "original", "seed": s, "avg_gap": g} for s, g in enumerate(nothing)]
                + [{"method": "m", "seed": s, "avg_gap": g} for s, g in enumerate(method_gaps)])

    assert _paired_beats(rows([3.0, 2.9, 3.1]), "m") is True         # clearly better
    assert _paired_beats(rows([6.79, 6.21, 7.29]), "m") is False     # 0.003 better: noise
    assert _paired_beats(rows([7.0, 5.0, 7.4]), "m") is False        # better on average only
    assert _paired_beats(rows([3.0]), "m") is None                   # one seed: no pairing
