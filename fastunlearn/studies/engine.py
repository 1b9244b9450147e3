"""The study engine: keyed runs, a pool of original/retrained models, resumable execution.

A study is a list of *runs*. A run is plain JSON-able data (so it can be pickled to a worker
process or shipped to a Ray task)::

    {"dataset": "digits", "model": "small_cnn", "forget": {"type": "class", "classes": ["3"]},
     "train": {"epochs": 1}, "method": "ft", "config": {"epochs": 1}, "seed": 0,
     "variant": {}, "tags": {...}}

and its key is the hash of everything but ``tags`` (labels for the report). How the run is
*evaluated* is keyed apart (:func:`eval_key`: the resolved evaluation options and
:data:`EVAL_VERSION`): a finished run whose evaluation key differs from the current one is
redone — method and evaluation, since the unlearned model is not kept — so changing
``--mia-samples`` or ``--no-cka`` never reuses stale metrics. Each run needs an
*original* model (keyed by dataset, model, train config, seed) and a *retrained* gold model
(the same plus the forget spec). Both live in a pool directory shared by every study and are
trained once per key (phase 1, itself dispatched to the executor); the method runs follow
(phase 2). A run writes ``runs/<key>/result.json`` atomically as its very last act, so a killed
study rerun with the same command skips exactly the finished runs and never reads a half-written
result.

``method == "retrain"`` is the gold model itself (evaluated against itself: every gap is 0 and
``rte_ratio`` is 1) — the reference row of each task, not a new training run.

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
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

EXECUTORS = ("local", "process", "ray")
# ``method == DO_NOTHING`` evaluates the original model itself (cost 0): the baseline every
# method must beat (issue 12 §5).
DO_NOTHING = "original"
RESULT_FILE = "result.json"
# Run fields that define what is computed (the key); "tags" only label the run for reports.
KEY_FIELDS = ("dataset", "model", "forget", "train", "method", "config", "seed", "variant")
# Metric columns kept out of "same results" comparisons: they measure the machine, not the model.
TIMING_COLUMNS = ("rte_s", "rte_cold_s", "rte_warm_s", "peak_mem_mb", "retrain_rte_s",
                  "rte_ratio", "wall_s")
#: the version of the metric definitions; part of every evaluation key, so a change of a
#: definition (2: MIA non-members and attack seeds as in issue 12 §6) re-evaluates old runs
EVAL_VERSION = 2


# ----------------------------------------------------------------------------- keys
def _canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def digest(obj: Any, n: int = 16) -> str:
    return hashlib.sha256(_canonical(obj).encode()).hexdigest()[:n]


def make_run(
    *,
    dataset: str,
    model: str,
    forget: Mapping[str, Any],
    method: str,
    train: Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    seed: int = 0,
    variant: Mapping[str, Any] | None = None,
    tags: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A run dict with its ``key`` (see the module docstring)."""
    run = {
        "dataset": dataset,
        "model": model,
        "forget": dict(forget),
        "train": dict(train or {}),
        "method": method,
        "config": dict(config or {}),
        "seed": int(seed),
        "variant": dict(variant or {}),
        "tags": dict(tags or {}),
    }
    run["key"] = run_key(run)
    return run


def run_key(run: Mapping[str, Any]) -> str:
    return digest({k: run[k] for k in KEY_FIELDS})


def original_key(run: Mapping[str, Any]) -> str:
    return "orig-" + digest({k: run[k] for k in ("dataset", "model", "train", "seed")})


def retrain_key(run: Mapping[str, Any]) -> str:
    return "gold-" + digest({k: run[k] for k in ("dataset", "model", "forget", "train", "seed")})


def eval_key(eval_options: Mapping[str, Any] | None) -> str:
    """The key of how runs are evaluated: every resolved
    :class:`~fastunlearn.evaluate.core.EvalConfig` field (defaults included) and
    :data:`EVAL_VERSION`."""
    from dataclasses import asdict

    from fastunlearn.evaluate.core import EvalConfig

    return "eval-" + digest({"version": EVAL_VERSION,
                             **asdict(EvalConfig(**dict(eval_options or {})))})


def finished_result(run_dir: Path, key: str, ekey: str) -> dict[str, Any] | None:
    """The finished result of run ``key`` evaluated under ``ekey``, or None (absent,
    malformed, another run's, or evaluated with other options: the run is then redone)."""
    res = read_result(run_dir, key)
    if res is None:
        return None
    if res.get("eval_key") != ekey:
        log.info("run %s was evaluated with other options (%s); it will be redone", key,
                 res.get("eval_key", "none recorded"))
        return None
    return res


def forget_spec(run: Mapping[str, Any]) -> dict[str, Any]:
    """The run's forget spec; random forgetting draws its samples with the run's seed."""
    spec = dict(run["forget"])
    if spec.get("type") == "random" and "seed" not in spec:
        spec["seed"] = run["seed"]
    return spec


# ------------------------------------------------------------------------ atomic io
def write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON via a temp file + fsync + rename (never a half-written file),
    readable as the umask allows (not the temp file's 0600)."""
    from fastunlearn.checkpoint import _atomic_write_bytes

    _atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def read_result(run_dir: Path, key: str) -> dict[str, Any] | None:
    """The finished result in ``run_dir`` for ``key``, or None — missing, unreadable (not UTF-8,
    not JSON), malformed (not an object with ``key``, a ``run`` holding every key field and a
    ``metrics`` object) or another run's: the run is then redone."""
    path = run_dir / RESULT_FILE
    if not path.exists():
        return None
    try:
        res = json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError included
        log.warning("ignoring unreadable %s (%s); the run will be redone", path, err)
        return None
    problem = _result_problem(res)
    if problem:
        log.warning("ignoring malformed %s (%s); the run will be redone", path, problem)
        return None
    return res if res["key"] == key else None


def _result_problem(res: Any) -> str | None:
    if not isinstance(res, dict):
        return f"a JSON {type(res).__name__}, not an object"
    if not isinstance(res.get("key"), str):
        return "no 'key'"
    run = res.get("run")
    if not isinstance(run, dict):
        return "no 'run' object"
    missing = [k for k in KEY_FIELDS if k not in run]
    if missing:
        return f"'run' lacks {missing[0]!r}"
    if not isinstance(res.get("metrics"), dict):
        return "no 'metrics' object"
    return None


# ---------------------------------------------------------------- per-process caches
_DATA: dict[str, Any] = {}
_EVAL: dict[str, Any] = {}  # one Evaluator + reference models per task, the last one only


def _dataset(name: str) -> Any:
    from fastunlearn.data import load_dataset

    if name not in _DATA:
        _DATA.clear()
        _DATA[name] = load_dataset(name)
    return _DATA[name]


def _train_config(run: Mapping[str, Any], device: str) -> Any:
    from fastunlearn.train import TrainConfig

    return TrainConfig(**{"seed": run["seed"], "device": device, "progress": False,
                          **run["train"]})


# ------------------------------------------------------------------------- the pool
_WARM: list[bool] = []


def _warm_up() -> None:
    """Pay one-off costs outside any timed section: the first optimizer of a process imports
    ``torch._dynamo`` (≈ 2 s), which would otherwise inflate the first pool model's training
    time and every RTE ratio that divides by it."""
    if _WARM:
        return
    w = torch.zeros(4, requires_grad=True)
    for opt in (torch.optim.SGD([w], lr=0.1, momentum=0.9), torch.optim.AdamW([w], lr=0.1)):
        w.sum().backward()
        opt.step()
        opt.zero_grad()
    _WARM.append(True)


def pool_path(pool: Path, key: str) -> Path:
    return pool / key / "model"


def pool_ready(pool: Path, key: str) -> bool:
    """Whether the pool holds a whole, unmodified model for ``key`` (header, size and hash
    checked, once per file version and process); a damaged entry is logged and retrained."""
    from fastunlearn.checkpoint import CheckpointError, verify_checkpoint

    weights = pool_path(pool, key).with_suffix(".safetensors")
    try:
        st = weights.stat()
    except OSError:
        return False
    version = (str(weights), st.st_ino, st.st_size, st.st_mtime_ns)
    if version in _VERIFIED:
        return True
    try:
        verify_checkpoint(weights)
    except (CheckpointError, OSError) as err:
        log.warning("pool model %s is unusable and will be retrained: %s", key, err)
        return False
    _VERIFIED.add(version)
    return True


_VERIFIED: set[tuple[str, int, int, int]] = set()  # pool files checked by this process


def build_pool_model(job: Mapping[str, Any], pool_dir: str, device: str = "auto",
                     threads: int | None = None) -> dict[str, Any]:
    """Train one original (``job["role"] == "original"``) or gold retrain model into the pool,
    unless it is already there. Returns ``{"key", "role", "trained", "train_s"}``.

    The key's :class:`pool_lock` is held from the check to the save, so studies sharing a pool
    (processes, Ray workers, teammates on one file system) train each model once and never
    interleave their writes: a second builder waits, then finds the model ready."""
    pool = Path(pool_dir)
    with pool_lock(pool, job["key"]):
        return _build_pool_model_locked(job, pool, device, threads)


class pool_lock:  # noqa: N801 - context manager
    """Hold ``<pool>/<key>/.lock`` (an OS file lock, released if the process dies) for the
    block. Whoever fills a pool entry checks :func:`pool_ready` and writes inside it. The lock
    sits in the entry's own directory so that a pool lists nothing but its entries."""

    def __init__(self, pool: Path, key: str) -> None:
        self.path = pool_path(Path(pool), key).parent / ".lock"
        self.key = key

    def __enter__(self) -> None:
        from filelock import FileLock, Timeout

        from fastunlearn.checkpoint import current_umask

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lock = FileLock(str(self.path), mode=0o666 & ~current_umask())
        try:
            self.lock.acquire(timeout=0)
        except Timeout:
            log.info("waiting for another process building pool model %s", self.key)
            self.lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self.lock.release()


def _build_pool_model_locked(job: Mapping[str, Any], pool: Path, device: str,
                             threads: int | None) -> dict[str, Any]:
    from fastunlearn._device import resolve_device
    from fastunlearn._timing import measure
    from fastunlearn.checkpoint import read_metadata, save_checkpoint
    from fastunlearn.data import split_from_spec
    from fastunlearn.models import create_model
    from fastunlearn.train import train

    if threads:
        torch.set_num_threads(threads)
    _warm_up()
    key, role, run = job["key"], job["role"], job["run"]
    path = pool_path(pool, key)
    if pool_ready(pool, key):
        meta = read_metadata(path.with_suffix(".safetensors"))
        return {"key": key, "role": role, "trained": False,
                "train_s": meta.get("metrics", {}).get("rte_s", math.nan)}
    data = _dataset(run["dataset"])
    split = split_from_spec(data, forget_spec(run))
    part = split.full if role == "original" else split.retain
    tcfg = _train_config(run, device)
    tcfg.progress = bool(job.get("progress", False))
    torch.manual_seed(run["seed"])
    net = create_model(run["model"], data)
    dev = resolve_device(device)
    with _run_log(path.parent):
        log.info("training %s %s on %s (%d samples, %s)", role, run["model"], run["dataset"],
                 len(part), tcfg.to_dict())
        with measure(dev) as m:
            net = train(net, part, tcfg, eval_on={})
        log.info("trained in %.1f s", m.seconds)
    save_checkpoint(
        path, net, dataset=data, forget=split.spec if role == "retrain" else None,
        seed=run["seed"], train_config=tcfg.to_dict(),
        metrics={"rte_s": m.seconds, "peak_mem_mb": m.peak_mem_mb},
        extra={"role": role, "pool_key": key, "machine": machine()},
    )
    return {"key": key, "role": role, "trained": True, "train_s": m.seconds}


def _load_pool(pool: Path, key: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    from fastunlearn.checkpoint import CheckpointError, load_checkpoint

    try:
        ck = load_checkpoint(pool_path(pool, key).with_suffix(".safetensors"))
    except CheckpointError as err:
        raise CheckpointError(f"pool model {key} cannot be loaded ({err}); run the study again "
                              "to retrain it") from err
    return ck.model, ck.meta


# ------------------------------------------------------------------------- variants
def apply_variant(model: torch.nn.Module, variant: Mapping[str, Any]) -> None:
    """Restrict which weights the method may change (``layer-sensitivity``).

    ``{"only": BLOCK}``: only that block's parameters stay trainable; ``{"freeze_first": k}``:
    the first ``k`` blocks are frozen, with every weight registered before block ``k`` (stem
    layers that belong to no block). BatchNorm running statistics of frozen blocks still move
    when a method trains in train mode. Blocks are :func:`~fastunlearn.evaluate.drift.probe_blocks`
    plus ``"head"`` (the final linear layer), in forward order.
    """
    if not variant:
        return
    blocks = model_blocks(model)
    unknown = set(variant) - {"only", "freeze_first"}
    if unknown:
        raise ValueError(f"unknown variant option {sorted(unknown)[0]!r}; use only / freeze_first")
    if "only" in variant:
        name = variant["only"]
        if name not in blocks:
            raise ValueError(f"model has no block {name!r}; blocks: {', '.join(blocks)}")
        keep = {id(p) for p in blocks[name].parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in keep)
    if "freeze_first" in variant:
        k = int(variant["freeze_first"])
        if not 0 <= k < len(blocks):
            raise ValueError(f"freeze_first must be in [0, {len(blocks) - 1}], got {k}")
        # everything registered before block k's first weight: the first k blocks plus any
        # stem weights that belong to no probe block (ResNet conv1/bn1, MobileNet conv_stem)
        later = [p for blk in list(blocks.values())[k:] for p in blk.parameters()]
        if later:
            order = {id(p): i for i, p in enumerate(model.parameters())}
            first = min(order[id(p)] for p in later)
            for p in model.parameters():
                if order[id(p)] < first:
                    p.requires_grad_(False)


def model_blocks(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Named blocks in forward order: the probe blocks of the CKA drift metric, then ``head``."""
    from fastunlearn.evaluate.drift import final_linear, probe_blocks

    blocks = dict(probe_blocks(model))
    blocks["head"] = final_linear(model)
    return blocks


# ------------------------------------------------------------------------- one run
class _run_log:  # noqa: N801 - context manager
    """Send this package's log records to ``dir/run.log`` while the run lasts."""

    def __init__(self, run_dir: Path) -> None:
        self.dir = run_dir

    def __enter__(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.handler = logging.FileHandler(self.dir / "run.log")
        self.handler.setFormatter(
            logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
        self.logger = logging.getLogger("fastunlearn")
        self.old = (self.logger.level, self.logger.propagate)
        # INFO and up go to the file; the console (root handlers) still sees what it saw
        # before — only records at the level the package was already set to pass on.
        self.forward = _Forward(self.logger.getEffectiveLevel())
        self.logger.setLevel(min(logging.INFO, self.logger.getEffectiveLevel()))
        self.logger.propagate = False
        self.logger.addHandler(self.handler)
        self.logger.addHandler(self.forward)

    def __exit__(self, *exc: object) -> None:
        self.logger.removeHandler(self.handler)
        self.logger.removeHandler(self.forward)
        self.logger.setLevel(self.old[0])
        self.logger.propagate = self.old[1]
        self.handler.close()


class _Forward(logging.Handler):
    """Pass records at or above ``level`` on to the root logger's handlers."""

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        for h in root.handlers:
            if record.levelno >= h.level:
                h.handle(record)


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
    done = finished_result(run_dir, run["key"], ekey)
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
            "run": dict(run),
            "status": "ok" if failure is None else "failed",
            "failure": failure,
            "metrics": metrics,
            "info": info,
            "wall_s": time.perf_counter() - t0,
            "machine": machine(),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
            "torch": torch.__version__,
        }
        write_json_atomic(run_dir / RESULT_FILE, result)
        log.info("done in %.1f s", result["wall_s"])
    return {**result, "skipped": False}


def machine() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU ({platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} threads)"


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
    keys = [r["key"] for r in runs]
    if len(set(keys)) != len(keys):
        raise ValueError("two runs of the study have the same key; make their configs differ")
    out = Path(out_dir)
    pool = Path(pool_dir) if pool_dir is not None else out.parent / "pool"
    out.mkdir(parents=True, exist_ok=True)
    pool.mkdir(parents=True, exist_ok=True)

    todo = [r for r in runs if finished_result(out / "runs" / r["key"], r["key"], ekey) is None]
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
        res = finished_result(out / "runs" / r["key"], r["key"], ekey)
        if res is None:  # pragma: no cover - a run that returned without writing its result
            raise RuntimeError(f"run {r['key']} finished without a result")
        res["run"]["tags"] = r["tags"]  # tags may change without changing the key
        results.append(res)
    return results, counts


# ------------------------------------------------------------------- tables and CIs
def flatten(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metric dicts → ``{"a.b": v}`` with scalar values (lists are dropped)."""
    flat: dict[str, Any] = {}
    for k, v in metrics.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            flat.update(flatten(v, name + "."))
        elif isinstance(v, (int, float, str, bool)) or v is None:
            flat[name] = v
    return flat


def result_rows(results: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One flat row per result: run fields (``tag.*`` for tags), ``status`` (``ok`` /
    ``failed``), ``failed`` and ``failure`` (the reason), then every scalar metric — a failed
    run has no quality metrics (empty cells, "—" in tables)."""
    rows = []
    for res in results:
        run = res["run"]
        status = res.get("status", "ok")
        row: dict[str, Any] = {
            "key": res["key"], "dataset": run["dataset"], "model": run["model"],
            "forget": _canonical(run["forget"]), "method": run["method"],
            "config": _canonical(run["config"]), "variant": _canonical(run["variant"]),
            "seed": run["seed"], "status": status, "failed": status == "failed",
            "failure": res.get("failure") or "",
        }
        row.update({f"tag.{k}": v for k, v in run.get("tags", {}).items()})
        row.update(flatten(res["metrics"]))
        row["wall_s"] = res.get("wall_s")
        rows.append(row)
    return rows


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    import csv

    columns: list[str] = []
    for r in rows:
        columns.extend(c for c in r if c not in columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns, restval="")
        w.writeheader()
        w.writerows(rows)
    os.replace(tmp, path)
    return path


def mean_ci(values: Sequence[float], level: float = 0.95) -> tuple[float, float, int]:
    """Mean and the half-width of its two-sided ``level`` confidence interval (Student t, the
    sample standard deviation); NaN half-width for fewer than two finite values."""
    from scipy import stats

    xs = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(xs) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mean, half, n


def aggregate(rows: Sequence[Mapping[str, Any]], by: Sequence[str],
              metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Group rows by the ``by`` columns (over seeds) → ``{by..., n, m_mean, m_ci95}``, in the
    order groups first appear."""
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault(tuple(r.get(b) for b in by), []).append(r)
    out = []
    for gkey, members in groups.items():
        agg: dict[str, Any] = dict(zip(by, gkey))
        agg["n"] = len(members)
        for m in metrics:
            vals = [r.get(m) for r in members]
            vals = [v for v in vals if isinstance(v, (int, float)) and not isinstance(v, bool)]
            mean, half, _ = mean_ci(vals)
            agg[f"{m}_mean"], agg[f"{m}_ci95"] = mean, half
        out.append(agg)
    return out


def fmt(mean: Any, half: Any = math.nan, nd: int = 2) -> str:
    """``mean ± half`` (just the mean when the half-width is NaN)."""
    if not isinstance(mean, (int, float)) or not math.isfinite(mean):
        return "—"
    if isinstance(half, (int, float)) and math.isfinite(half):
        return f"{mean:.{nd}f} ± {half:.{nd}f}"
    return f"{mean:.{nd}f}"
