"""``make gpu-check`` (benchmarks/gpu_check.py) on CPU: the dry run lists every step and runs
nothing; the comparison with committed rows fails on a > 10 % regression and only then."""

from __future__ import annotations

import csv
import importlib.util
import io
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "benchmarks" / "gpu_check.py"


@pytest.fixture(scope="module")
def gc():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("gpu_check", None)


FIELDS = ("case", "provider", "device", "seconds", "ratio", "peak_mem_mb", "rel_err", "repeats",
          "versions", "time", "suite", "cpu_ratio")


def _csv(rows: list[tuple[str, str, str, float]]) -> str:
    """CSV text of (suite, case, provider, ratio) rows on one device."""
    out = io.StringIO()
    w = csv.DictWriter(out, fieldnames=FIELDS)
    w.writeheader()
    for suite, case, provider, ratio in rows:
        w.writerow({"suite": suite, "case": case, "provider": provider, "ratio": ratio,
                    "device": "nvidia-h100", "seconds": 0.01, "repeats": 5})
    return out.getvalue()


COMMITTED = _csv([
    ("batched", "small_cnn-k32", "sequential", 1.0),
    ("batched", "small_cnn-k32", "batched", 0.30),  # an older row: the last one counts
    ("compile", "resnet18-32px-b32", "compiled", 0.70),
    ("batched", "small_cnn-k32", "batched", 0.50),
])


def test_dry_run_lists_every_step_and_runs_nothing(tmp_path) -> None:
    venv = tmp_path / "venv"
    results = sorted((ROOT / "benchmarks" / "results").iterdir())
    done = subprocess.run([sys.executable, str(SCRIPT), "--dry-run", "--venv", str(venv)],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    steps = [line.split()[1] for line in lines if line[:4].strip().rstrip(".").isdigit()]
    assert steps == ["setup", "setup", "cuda", "gpu-tests", "bench:masked_sgd",
                     "bench:fisher_fast", "bench:ig", "bench:compile", "bench:batched",
                     "compare", "record"]
    text = done.stdout
    assert f"-m venv --system-site-packages {venv}" in text
    assert "-m pip install -q -e '.[dev]'" in text
    assert "-m pytest -q -rs -p no:cacheprovider -m gpu tests" in text
    for suite in ("masked_sgd", "fisher_fast", "ig", "compile", "batched"):
        assert f"--benchmark-only benchmarks/bench_{suite}.py" in text
        assert (ROOT / "benchmarks" / f"bench_{suite}.py").is_file()  # the plan is not stale
    assert "FASTUNLEARN_BENCH_RESULTS=" in text and "1.10x" in text
    assert not venv.exists()  # nothing ran
    assert sorted((ROOT / "benchmarks" / "results").iterdir()) == results


def test_dry_run_with_a_ready_venv_skips_its_creation(gc, tmp_path) -> None:
    (tmp_path / "venv" / "bin").mkdir(parents=True)
    (tmp_path / "venv" / "bin" / "python").touch()
    names = [s.name for s in gc.plan(tmp_path / "venv", tmp_path / "scratch")]
    assert names[:2] == ["setup", "cuda"]


def test_one_regressed_ratio_fails(gc) -> None:
    new = gc.read_rows(_csv([("batched", "small_cnn-k32", "sequential", 1.0),
                             ("batched", "small_cnn-k32", "batched", 0.56),   # +12 %
                             ("compile", "resnet18-32px-b32", "compiled", 0.71)]))
    comparisons = gc.compare(new, gc.read_rows(COMMITTED))
    bad = gc.regressions(comparisons)
    assert len(bad) == 1 and "batched/small_cnn-k32/batched" in bad[0] and "+12.0%" in bad[0]
    by = {c.key[:3]: c for c in comparisons}
    assert by[("batched", "small_cnn-k32", "batched")].old == 0.50  # the last committed row


def test_within_ten_percent_or_new_rows_pass(gc) -> None:
    new = gc.read_rows(_csv([("batched", "small_cnn-k32", "batched", 0.55),   # +10.0 %
                             ("compile", "resnet18-32px-b32", "compiled", 0.40),  # faster
                             ("batched", "lenet5-k32", "batched", 0.9),  # nothing committed
                             ("masked_sgd", "small_cnn-k32", "batched", 9.0)]))  # other suite
    comparisons = gc.compare(new, gc.read_rows(COMMITTED))
    assert gc.regressions(comparisons) == []
    assert [c.old for c in comparisons] == [0.50, 0.70, None, None]
    assert "nothing committed" in comparisons[2].line()


@pytest.mark.parametrize(("ratio", "status"), [(0.60, 1), (0.52, 0)])
def test_check_exit_status_and_recorded_rows(gc, tmp_path, monkeypatch, ratio, status) -> None:
    """The compare and record steps of a run whose commands are done: exit 1 on a regression,
    and the new rows are appended to benchmarks/results/<gpu-name>.csv either way."""
    monkeypatch.setattr(gc, "ROOT", tmp_path)
    monkeypatch.setattr(gc, "committed_text", lambda rel, root=None: COMMITTED)
    target = tmp_path / "benchmarks" / "results" / "nvidia-h100.csv"
    target.parent.mkdir(parents=True)
    target.write_text(COMMITTED)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (scratch / "nvidia-h100.csv").write_text(
        _csv([("batched", "small_cnn-k32", "batched", ratio)]))
    assert gc._run([], scratch, tmp_path / "venv", 0.10, 480.0) == status
    rows = gc.read_rows(target.read_text())
    assert len(rows) == 5 and float(rows[-1]["ratio"]) == ratio
