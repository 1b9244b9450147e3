"""Run keys and result files of the study engine.

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
*original* model (:func:`original_key`: dataset, model, train config, seed) and a *retrained*
gold model (:func:`retrain_key`: the same plus the forget spec), kept in the model pool
(:mod:`fastunlearn.studies.pool`). A run writes ``runs/<key>/result.json``
(:data:`RESULT_FILE`) atomically as its very last act (:func:`write_json_atomic`), so a killed
study rerun with the same command skips exactly the finished runs and never reads a
half-written result (:func:`read_result`).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

# ``method == DO_NOTHING`` evaluates the original model itself (cost 0): the baseline every
# method must beat.
DO_NOTHING = "original"
RESULT_FILE = "result.json"
# Run fields that define what is computed (the key); "tags" only label the run for reports.
KEY_FIELDS = ("dataset", "model", "forget", "train", "method", "config", "seed", "variant")
# Metric columns kept out of "same results" comparisons: they measure the machine, not the model.
TIMING_COLUMNS = ("rte_s", "rte_cold_s", "rte_warm_s", "peak_mem_mb", "retrain_rte_s",
                  "rte_ratio", "wall_s")
#: the version of the metric definitions; part of every evaluation key, so a change of a
#: definition (2: the SalUn reference's MIA non-members, 5 attack seeds) re-evaluates old runs
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


def finished_result(run_dir: Path, key: str, ekey: str,
                    cdigest: str | None = None) -> dict[str, Any] | None:
    """The finished result of run ``key`` evaluated under ``ekey``, or None (absent,
    malformed, another run's, evaluated with other options, or — with ``cdigest`` — run with
    other method defaults: the run is then redone)."""
    res = read_result(run_dir, key)
    if res is None:
        return None
    if res.get("eval_key") != ekey:
        log.info("run %s was evaluated with other options (%s); it will be redone", key,
                 res.get("eval_key", "none recorded"))
        return None
    if not config_current(res, key, cdigest):
        return None
    return res


#: config fields that say where and how visibly a method runs, not what it computes
RUNTIME_FIELDS = ("device", "progress")


def config_digest(method: str, config: Mapping[str, Any]) -> str:
    """The digest of ``method``'s *resolved* config — ``config`` (the run's overrides) with every
    default filled in, minus :data:`RUNTIME_FIELDS`. A run key hashes the overrides only, so
    when a method's default changes (a re-tuned lr, say) the key stays and this digest moves:
    a finished result recorded under another digest is redone rather than reused. The
    do-nothing row (and any method outside the registry, such as the audit's ceiling row) has
    no config: ``""``."""
    from fastunlearn.unlearn._registry import get_method, make_config

    if method == DO_NOTHING:
        return ""
    try:
        get_method(method)
    except ValueError:
        return ""
    try:
        cfg = make_config(method, **dict(config)).to_dict()
    except (TypeError, ValueError):  # a bad option: the run fails and records why
        return "cfg-invalid"
    return "cfg-" + digest({k: v for k, v in cfg.items() if k not in RUNTIME_FIELDS})


def config_current(res: Mapping[str, Any], key: str, cdigest: str | None) -> bool:
    """Whether a finished result was computed with the method config ``cdigest`` (None: not
    checked). A result without a recorded digest predates the check and is redone."""
    if cdigest is None or res.get("config_digest") == cdigest:
        return True
    log.info("run %s was computed with other method defaults (%s, now %s); it will be redone",
             key, res.get("config_digest", "none recorded"), cdigest)
    return False


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
    from fastunlearn._atomic import atomic_write_bytes

    atomic_write_bytes(path, json.dumps(obj, indent=1, default=_json_default).encode())


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

