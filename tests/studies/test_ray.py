"""Studies on the Ray executor: a third-party method in Ray workers (issue 14) and a study on a
local Ray cluster started with ``ray start`` and found through ``RAY_ADDRESS`` (issue 15). Each
gives the local executor's results for the same seed.

Ray workers are fresh interpreters that do not inherit the driver's ``sys.path``: the third-party
method's module (``tests/unlearn/plugin_method.py``, imported as ``plugin_method``) reaches them
through ``PYTHONPATH`` — the job's ``runtime_env`` for a Ray instance started by ``ray.init``, the
environment of ``ray start`` for a cluster — as a user's own method module would.

The tests need the ``ray`` extra (``pip install -e '.[dev,ray]'``, which ``.ci/run`` installs);
without it they are skipped.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import fastunlearn as fu
from fastunlearn.unlearn import _registry

ray = pytest.importorskip("ray")

PLUGIN_DIR = Path(__file__).resolve().parents[1] / "unlearn"  # holds plugin_method.py
PLUGIN_MODULE, PLUGIN = "plugin_method", "plugin_noise"
TINY = {"dataset": "digits", "epochs": 1, "method_epochs": 1, "mia_samples": 200,
        "cka": False, "progress": False, "threads": 1}
# columns that measure the machine, not the model (wall times, memory)
TIMING = {"rte_s", "rte_cold_s", "rte_warm_s", "peak_mem_mb", "retrain_rte_s", "rte_ratio",
          "wall_s"}
# what every Ray worker of these tests needs: the plugin importable, one torch thread, no bars
# (the plugin's folder before any PYTHONPATH already set)
WORKER_ENV = {"PYTHONPATH": os.pathsep.join(p for p in (str(PLUGIN_DIR),
                                                      os.environ.get("PYTHONPATH")) if p),
              "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _forget_plugin() -> None:
    _registry._METHODS.pop(PLUGIN, None)
    sys.modules.pop(PLUGIN_MODULE, None)
    fu.__dict__.pop("PluginNoiseConfig", None)


@pytest.fixture(scope="module")
def plugin():
    """``plugin_noise`` registered from its own module (not fastunlearn's) for this module's
    tests, then forgotten so that the rest of the session sees the built-in methods only."""
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(PLUGIN_DIR))
        _forget_plugin()
        assert fu.register_methods_from(PLUGIN_MODULE) == [PLUGIN]
        yield PLUGIN
        _forget_plugin()


@pytest.fixture(scope="module")
def local_rows(plugin, tmp_path_factory):
    """The local executor's results.csv rows (by method) of the study both tests repeat."""
    out = tmp_path_factory.mktemp("local") / "cq"
    fu.studies.run("cost-quality", out=str(out), methods=("ga", plugin), **TINY)
    return _rows_by_method(out)


def _rows_by_method(study_dir: Path) -> dict[str, dict[str, str]]:
    with (study_dir / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    by_method = {r["method"]: r for r in rows}
    assert len(by_method) == len(rows), "one row per method expected (one seed)"
    return by_method


def _assert_same_rows(got: dict[str, dict[str, str]], want: dict[str, dict[str, str]]) -> None:
    """Every row of ``got`` equals the local row of its method, timing columns aside."""
    for method, row in got.items():
        ref = want[method]
        assert row.keys() == ref.keys(), method
        for col in set(row) - TIMING:
            try:
                a, b = float(row[col]), float(ref[col])
            except ValueError:
                assert row[col] == ref[col], (method, col)
                continue
            assert a == pytest.approx(b, rel=1e-6, abs=1e-9, nan_ok=True), (method, col)


def _assert_plugin_ran_in_a_worker(study_dir: Path, rows: dict[str, dict[str, str]]) -> None:
    row = rows[PLUGIN]
    assert row["status"] == "ok", row["failure"]
    saved = json.loads((study_dir / "runs" / row["key"] / "result.json").read_text())
    assert saved["run"]["method_module"] == PLUGIN_MODULE  # what the worker imported
    assert saved["info"]["ran_on"] == "cpu"  # set by plugin_noise itself


@pytest.fixture()
def no_ray():
    """No Ray connection before or after the test."""
    ray.shutdown()
    yield
    ray.shutdown()


def test_a_plugin_method_runs_in_ray_workers_and_gives_the_local_results(
        plugin, local_rows, no_ray, tmp_path, monkeypatch):
    """Issue 14 on Ray. Without the worker importing ``run["method_module"]`` the run fails
    ("unknown method 'plugin_noise'"); without the module on the workers' PYTHONPATH it fails
    too (ModuleNotFoundError)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # address="local": a new Ray instance of our own, even if a `ray start` cluster is running
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": WORKER_ENV})
    out = tmp_path / "cq"
    res = fu.studies.run("cost-quality", out=str(out), executor="ray", methods=(plugin,), **TINY)
    assert res.counts["ran"] == 3 and res.counts["pool_trained"] == 2  # plugin, retrain, original
    rows = _rows_by_method(out)
    assert set(rows) == {plugin, "retrain", "original"}
    _assert_plugin_ran_in_a_worker(out, rows)
    _assert_same_rows(rows, local_rows)


@pytest.fixture()
def ray_cluster(no_ray, monkeypatch):
    """A one-node Ray cluster started as a user would (``ray start --head --num-cpus 2
    --disable-usage-stats``) and its address in ``RAY_ADDRESS``.

    ``--temp-dir`` keeps its address file out of ``/tmp/ray``, so another ``ray.init()`` on this
    machine does not join it; ``--port 0`` takes a free port; ``--block`` keeps ``ray start`` in
    the foreground, and terminating it stops exactly this cluster's processes (``ray stop``
    would stop every Ray process of the machine).

    Token authentication is off on both sides: ``ray start`` turns it on when
    ``~/.ray/auth_token`` exists (any earlier ``ray.init()`` writes one), and a driver given an
    explicit address (``RAY_ADDRESS``) then needs ``RAY_AUTH_MODE=token`` — which in turn fails
    where no token exists. Off, the test does not depend on what ran on the machine before."""
    temp_dir = Path(tempfile.mkdtemp(prefix="fu-ray-"))  # short: Ray's socket paths live here
    env = {**os.environ, **WORKER_ENV, "RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    beside = Path(sys.executable).with_name("ray")  # the venv's, beside its python
    ray_cli = str(beside) if beside.exists() else shutil.which("ray") or "ray"
    cmd = [ray_cli, "start", "--head", "--num-cpus", "2", "--disable-usage-stats",
           "--include-dashboard", "false", "--port", "0", "--temp-dir", str(temp_dir), "--block"]
    log = (temp_dir / "ray-start.log").open("w")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    address_file = temp_dir / "ray_current_cluster"  # written once the head node is up
    try:
        deadline = time.monotonic() + 120
        while not (address_file.exists() and address_file.read_text().strip()):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("ray start failed:\n" + (temp_dir / "ray-start.log").read_text())
            time.sleep(0.2)
        address = address_file.read_text().strip()
        monkeypatch.setenv("RAY_ADDRESS", address)
        monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
        yield address
    finally:
        ray.shutdown()
        proc.terminate()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


def test_a_study_on_a_local_ray_cluster_gives_the_local_results(
        plugin, local_rows, ray_cluster, tmp_path):
    """Issue 15: the engine connects to the cluster named by RAY_ADDRESS (it starts no Ray
    instance of its own) and runs the pool models and the runs there."""
    out = tmp_path / "cq"
    res = fu.studies.run("cost-quality", out=str(out), executor="ray", methods=("ga", plugin),
                         **TINY)
    assert ray.is_initialized()
    assert ray.get_runtime_context().gcs_address == ray_cluster  # the cluster, not a new one
    assert ray.cluster_resources().get("CPU") == 2
    assert res.counts["ran"] == 4 and res.counts["pool_trained"] == 2
    rows = _rows_by_method(out)
    assert set(rows) == set(local_rows) == {"ga", plugin, "retrain", "original"}
    _assert_plugin_ran_in_a_worker(out, rows)
    _assert_same_rows(rows, local_rows)
