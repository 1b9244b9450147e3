"""Executing a study's runs: phase 1 trains the pool models, phase 2 runs the methods.

:func:`execute` dispatches both phases (:func:`_dispatch`) to the chosen executor — ``local``
(in process, or a spawn process pool when ``workers > 1``), ``process`` or ``ray`` — skipping
finished runs; :func:`execute_run` is one method run plus its evaluation.

``method == "retrain"`` is the gold model itself (evaluated against itself: every gap is 0 and
``rte_ratio`` is 1) — the reference row of each task, not a new training run;
``method == DO_NOTHING`` evaluates the unchanged original (cost 0).

A method registered outside fastunlearn (``fu.register_methods_from``, an entry point, a plain
import) is run in process-pool and Ray workers too: :func:`execute` records its defining module
in the run's non-key field ``"method_module"`` and :func:`execute_run` imports that module in
the worker before building the config (it must be importable there).

A method that raises, or diverges to NaN/inf weights, does not stop the study: its run is
recorded as failed (``"status": "failed"`` and the reason in ``"failure"``; no quality metrics,
so tables show "—") and the study goes on. Failed runs are finished runs: a rerun keeps them
(delete ``runs/<key>`` to try again).
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

from fastunlearn.studies.keys import (
    DO_NOTHING,
    KEY_FIELDS,
    RESULT_FILE,
    _canonical,
    config_digest,
    eval_key,
    finished_result,
    forget_spec,
    original_key,
    retrain_key,
    write_json_atomic,
)
from fastunlearn.studies.pool import (
    _dataset,
    _load_pool,
    _warm_up,
    apply_variant,
    build_pool_model,
    pool_ready,
)
from fastunlearn.studies.runlog import _run_log, machine

__all__ = ["EXECUTORS", "execute", "execute_run", "machine", "progress_callbacks"]

log = logging.getLogger(__name__)

EXECUTORS = ("local", "process", "ray")

_EVAL: dict[str, Any] = {}  # one Evaluator + reference models per task, the last one only


def execute_run(run: Mapping[str, Any], out_dir: str, pool_dir: str, device: str = "auto",
                threads: int | None = None, eval_options: Mapping[str, Any] | None = None,
                ) -> dict[str, Any]:
    """Run one method on one task and evaluate it; write ``runs/<key>/result.json``.

    Returns the result dict (``{"key", "eval_key", "run", "status", "failure", "metrics",
    ...}``); an existing finished result evaluated the same way is returned as is with
    ``"skipped": True``. A method that raises or diverges gives a ``"failed"`` result.
    """
    from fastunlearn._device import resolve_device
    from fastunlearn.data import split_from_spec
    from fastunlearn.evaluate.core import EvalConfig, Evaluator
    from fastunlearn.unlearn import make_config, unlearn
    from fastunlearn.unlearn._registry import import_method_module

    if threads:
        torch.set_num_threads(threads)
    run_dir = Path(out_dir) / "runs" / run["key"]
    ekey = eval_key(eval_options)
    done = finished_result(run_dir, run["key"], ekey, run.get("config_digest"))
    if done is not None:
        return {**done, "skipped": True}
    pool = Path(pool_dir)
    _warm_up()
    t0 = time.perf_counter()
    with _run_log(run_dir):
        log.info("run %s: %s", run["key"], _canonical({k: run[k] for k in KEY_FIELDS}))
        task = (run["dataset"], original_key(run), retrain_key(run), ekey)
        cache = _EVAL.get("task")
        if cache is None or cache[0] != task:
            data = _dataset(run["dataset"])
            split = split_from_spec(data, forget_spec(run))
            original, _ = _load_pool(pool, original_key(run))
            gold, gold_meta = _load_pool(pool, retrain_key(run))
            ev = Evaluator(split, EvalConfig(**(eval_options or {})))
            cache = (task, split, original, gold, gold_meta, ev)
            _EVAL["task"] = cache
        _, split, original, gold, gold_meta, ev = cache
        gold_cost = {"rte_s": gold_meta.get("metrics", {}).get("rte_s", math.nan)}
        info: dict[str, Any] = {}
        metrics: dict[str, Any] = {}
        failure: str | None = None
        model = None
        try:
            if run["method"] == "retrain":
                model, cost = gold, dict(gold_cost)
            elif run["method"] == DO_NOTHING:  # the unchanged original: the row to beat, cost 0
                model, cost = original, {"rte_s": 0.0, "peak_mem_mb": 0.0}
            else:
                start = copy.deepcopy(original)
                apply_variant(start, run["variant"])
                # a method registered by the parent process only (not built in): import its
                # module here, in a fresh process-pool or Ray worker, before looking it up
                import_method_module(run.get("method_module"))
                # the pool model is loaded on the CPU: "auto" means the study's device (CUDA
                # when there is one), named so that unlearn() moves the model there
                cfg = make_config(run["method"], **{"seed": run["seed"],
                                                    "device": str(resolve_device(device)),
                                                    "progress": False, **run["config"]})
                res = unlearn(start, split, cfg, inplace=True)
                model, cost = res.model, {"rte_s": res.rte_s, "peak_mem_mb": res.peak_mem_mb}
                info = {k: v for k, v in res.info.items()
                        if isinstance(v, (int, float, str, bool))}
                log.info("unlearned in %.2f s: %s", res.rte_s, info)
                if res.info.get("weights_finite") is False:
                    failure = (f"diverged: {res.info.get('nonfinite_tensors', 'some')} weight "
                               "tensor(s) hold NaN/inf")
                    metrics = dict(cost)
            if failure is None:
                metrics = ev.evaluate(model, original=original, retrained=gold, cost=cost,
                                      retrain_cost=gold_cost)
        except Exception as err:  # noqa: BLE001 - a method's failure is its run's result
            failure = f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"
            log.exception("run %s (%s) failed", run["key"], run["method"])
        finally:
            if model is not None and model is not gold and model is not original:
                ev.release(model)
        if failure is not None:
            log.warning("run %s (%s, seed %s) failed: %s — recorded, the study goes on",
                        run["key"], run["method"], run["seed"], failure)
        result = {
            "key": run["key"],
            "eval_key": ekey,
            "config_digest": run.get("config_digest"),
            "run": dict(run),
            "status": "ok" if failure is None else "failed",
            "failure": failure,
            "metrics": metrics,
            "info": info,
            "wall_s": time.perf_counter() - t0,
            "machine": machine(device),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "torch": torch.__version__,
        }
        write_json_atomic(run_dir / RESULT_FILE, result)
        log.info("done in %.1f s", result["wall_s"])
    return {**result, "skipped": False}



# ------------------------------------------------------------------------ executors
def _dispatch(
    fn: Callable[..., dict[str, Any]],
    jobs: Sequence[tuple[Any, ...]],
    executor: str,
    workers: int,
    resources: Mapping[str, float],
    on_done: Callable[[dict[str, Any]], None],
) -> list[dict[str, Any]]:
    """Call ``fn(*job)`` for every job on the chosen executor; results in job order."""
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    if not jobs:
        return []
    if executor == "local" and workers <= 1:
        for i, job in enumerate(jobs):
            results[i] = fn(*job)
            on_done(results[i])
    elif executor in ("local", "process"):
        import multiprocessing as mp

        with ProcessPoolExecutor(max_workers=max(1, workers),
                                 mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(fn, *job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                results[futures[fut]] = fut.result()
                on_done(results[futures[fut]])
    elif executor == "ray":
        ray = _ray()
        remote = ray.remote(num_cpus=resources.get("cpus", 1),
                            num_gpus=resources.get("gpus", 0))(fn)
        refs = {remote.remote(*job): i for i, job in enumerate(jobs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                results[refs[ref]] = ray.get(ref)
                on_done(results[refs[ref]])
    else:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    return [r for r in results if r is not None]


def _ray() -> Any:
    try:
        import ray
    except ImportError as err:
        raise ValueError(
            "executor 'ray' needs the ray package: pip install 'fastunlearn[ray]'"
        ) from err
    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS")
        kwargs: dict[str, Any] = {"ignore_reinit_error": True, "log_to_driver": False}
        if address:
            kwargs["address"] = address
        else:
            kwargs["include_dashboard"] = False
        ray.init(**kwargs)
    return ray


def _with_method_module(run: dict[str, Any], in_workers: bool) -> dict[str, Any]:
    """``run`` plus ``"method_module"`` (not part of the key) when its method is registered
    outside fastunlearn, so that a worker process can import it (:func:`execute_run`)."""
    from fastunlearn.unlearn._registry import get_method, method_module

    if run.get("method_module") or run["method"] in ("retrain", DO_NOTHING):
        return run
    try:
        module = method_module(run["method"])
    except ValueError:  # an unknown method: its run fails and says so
        return run
    if module is not None:
        run["method_module"] = module
    elif in_workers and not get_method(run["method"]).fn.__module__.startswith("fastunlearn."):
        log.warning("method %r is defined in the main script: worker processes may not know "
                    "it; define it in an importable module (fu.register_methods_from)",
                    run["method"])
    return run


def progress_callbacks(
    bar: Any, counts: dict[str, int], postfix: Callable[[dict[str, Any]], str],
) -> tuple[Callable[[dict[str, Any]], None], Callable[[dict[str, Any]], None]]:
    """``(pool_done, run_done)`` for :func:`_dispatch`: count pool models trained/reused and
    runs ran/skipped, advance ``bar`` and show ``postfix(result)`` of the last run."""

    def pool_done(res: dict[str, Any]) -> None:
        counts["pool_trained" if res["trained"] else "pool_reused"] += 1
        bar.update(1)

    def run_done(res: dict[str, Any]) -> None:
        counts["skipped" if res["skipped"] else "ran"] += 1
        bar.update(1)
        bar.set_postfix_str(postfix(res))

    return pool_done, run_done


def execute(
    runs: Iterable[Mapping[str, Any]],
    out_dir: str | Path,
    *,
    pool_dir: str | Path | None = None,
    executor: str = "local",
    workers: int = 1,
    device: str = "auto",
    threads: int | None = None,
    cpus_per_run: float = 1,
    gpus_per_run: float = 0,
    eval_options: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Run every run (pool models first), skipping finished ones. Returns the results in run
    order and counts ``{"runs", "skipped", "ran", "pool_trained", "pool_reused"}``."""
    from tqdm.auto import tqdm

    if executor not in EXECUTORS:
        raise ValueError(f"executor must be one of {EXECUTORS}, got {executor!r}")
    if int(workers) != workers or workers < 1:
        raise ValueError(f"workers must be a positive integer, got {workers}")
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads
                                or threads < 1):
        raise ValueError(f"threads must be a positive integer, got {threads}")
    ekey = eval_key(eval_options)
    if threads is None and executor == "process":
        threads = max(1, (os.cpu_count() or 1) // workers)  # no oversubscription
    elif threads is None and executor == "ray":
        threads = max(1, int(cpus_per_run))
    in_workers = executor != "local" or workers > 1
    runs = [_with_method_module(dict(r), in_workers) for r in runs]
    for r in runs:  # the resolved method config: a changed default redoes the run
        r["config_digest"] = config_digest(r["method"], r["config"])
    keys = [r["key"] for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError("two runs of the study have the same key; make their configs differ")
    out = Path(out_dir)
    pool = Path(pool_dir) if pool_dir is not None else out.parent / "pool"
    out.mkdir(parents=True, exist_ok=True)
    pool.mkdir(parents=True, exist_ok=True)

    todo = [r for r in runs if finished_result(out / "runs" / r["key"], r["key"], ekey,
                                                r["config_digest"]) is None]
    pool_jobs: dict[str, dict[str, Any]] = {}
    for r in todo:
        for role, key in (("original", original_key(r)), ("retrain", retrain_key(r))):
            if key not in pool_jobs and not pool_ready(pool, key):
                pool_jobs[key] = {"key": key, "role": role, "run": r}
    counts = {"runs": len(runs), "skipped": len(runs) - len(todo), "ran": 0,
              "pool_trained": 0, "pool_reused": 0}
    resources = {"cpus": cpus_per_run, "gpus": gpus_per_run}
    bar = tqdm(total=len(pool_jobs) + len(todo), desc=f"study {out.name}", disable=not progress,
               unit="job")

    pool_done, run_done = progress_callbacks(
        bar, counts, lambda res: f"{res['run']['method']} {res['wall_s']:.0f}s")

    try:
        _dispatch(build_pool_model, [(j, str(pool), device, threads) for j in pool_jobs.values()],
                  executor, workers, resources, pool_done)
        _dispatch(execute_run,
                  [(r, str(out), str(pool), device, threads, dict(eval_options or {}))
                   for r in todo],
                  executor, workers, resources, run_done)
    finally:
        bar.close()
    results = []
    for r in runs:
        res = finished_result(out / "runs" / r["key"], r["key"], ekey, r["config_digest"])
        if res is None:  # pragma: no cover - a run that returned without writing its result
            raise RuntimeError(f"run {r['key']} finished without a result")
        res["run"]["tags"] = r["tags"]  # tags may change without changing the key
        results.append(res)
    return results, counts

