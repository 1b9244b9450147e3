"""benchmarks/bench_fisher_protocol.py on its smoke case: one CSV row per (provider, round),
same-round ratios with the median/min/max columns, the mode check and the profile."""

from __future__ import annotations

import csv
import importlib
import statistics
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
CASE = "smoke-resnet18-frozenbn-8px-b4"


@pytest.fixture
def protocol(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(BENCH))  # the script imports bench_fisher_fast beside it
    return importlib.import_module("bench_fisher_protocol")


def _run(protocol: ModuleType, out: Path, *extra: str) -> Path:
    return protocol.main(["--rounds", "2", "--warmup", "0", "--threads", "1", "--cases", CASE,
                          "--providers", "fastunlearn", "--out", str(out), *extra])


def test_rows_per_round_and_summary_columns(protocol: ModuleType, tmp_path: Path) -> None:
    out = _run(protocol, tmp_path / "p.csv")
    with out.open(newline="") as fh:
        reader = csv.DictReader(fh)
        assert {"median_ratio", "min_ratio", "max_ratio", "round"} <= set(reader.fieldnames)
        rows = list(reader)
    assert sorted((r["provider"], r["round"]) for r in rows) == [
        ("fastunlearn", "0"), ("fastunlearn", "1"), ("fwd+bwd", "0"), ("fwd+bwd", "1")]
    fast = [r for r in rows if r["provider"] == "fastunlearn"]
    ratios = [float(r["ratio"]) for r in fast]
    for r in fast:
        assert float(r["ratio"]) == pytest.approx(
            float(r["seconds"]) / float(r["baseline_seconds"]), rel=2e-3)
        assert float(r["median_ratio"]) == pytest.approx(statistics.median(ratios), abs=2e-4)
        assert float(r["min_ratio"]) == min(ratios) and float(r["max_ratio"]) == max(ratios)
        assert r["rounds"] == "2" and r["modes_kept"] == "True"
        assert float(r["rel_err"]) <= 1e-4  # against the vmap reference
        assert r["model_mode"].startswith("train (")  # BatchNorm frozen in a train-mode model
    assert all(float(r["ratio"]) == 1.0 for r in rows if r["provider"] == "fwd+bwd")


def test_a_provider_that_changes_modes_fails(protocol: ModuleType, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    def careless(name, model, x, y):  # noqa: ANN001, ANN202
        return lambda: model.train()  # unfreezes the BatchNorm layers

    monkeypatch.setattr(protocol.providers, "make_provider", careless)
    with pytest.raises(SystemExit, match="train/eval mode"):
        _run(protocol, tmp_path / "p.csv", "--no-check")
    rows = list(csv.DictReader((tmp_path / "p.csv").open(newline="")))
    assert {r["modes_kept"] for r in rows if r["provider"] == "fastunlearn"} == {"False"}


def test_profile_says_where_the_time_goes(protocol: ModuleType, tmp_path: Path) -> None:
    path = _run(protocol, tmp_path / "p.csv", "--profile")
    text = path.read_text()
    assert path.name == f"p-profile-{CASE}.txt"
    assert "== fwd+bwd" in text and "== fastunlearn" in text and "where the extra" in text
    assert "aten::bmm" in text  # the per-sample contractions show up
