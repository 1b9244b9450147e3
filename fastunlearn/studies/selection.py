"""Hard forget sets for the audit and the studies: ``memorized:``, ``mixed:`` and ``worst:``
specs resolved to an explicit index list by *selection models* that the audit never scores.

A forget set chosen by the same models that score it looks worse for doing nothing than it is
(the winner's curse: the examples picked for a high "in" confidence are partly picked for those
models' noise). So the selection uses its own models, trained into the pool under their own keys
(``select-…``), on seeded random halves drawn with another seed than any audit layout
(:data:`SELECT_SEED_OFFSET`):

* ``memorized`` / ``mixed``: ``models`` (default 8) selection models, each on a random half of the
  training set (every example "in" for half of them); the Feldman–Zhang memorization of every
  training example (:func:`fastunlearn.evaluate.memorization.memorization_scores`) picks the
  set (:func:`fastunlearn.data.hard_sets.select_by_scores`). Cost: ``models / 2`` retrains on
  all of the data (each model sees half of it).
* ``worst``: one selection model trained on all of the data, then the worst-case search of Fan
  et al. (:func:`fastunlearn.studies.worst_case.select_worst`).

The resolved spec is ``{"type": "indices", "ids": [...], "selected": {...}}``: the indices, and
how they were chosen (the asked spec, the selection seed and models, the memorization digest).
Stored in ``audit.json`` and the studies' results, it reproduces a run without the selection
pool.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastunlearn.studies.keys import digest
from fastunlearn.studies.runlog import _run_log, machine

log = logging.getLogger(__name__)

#: added to the audit seed for the selection models' halves and training seeds, so that no
#: selection model is an audit shadow (whose halves come from ``seed``)
SELECT_SEED_OFFSET = 100_003
DEFAULT_SELECT_MODELS = 8
HARD = ("memorized", "mixed", "worst")


def is_hard(spec: Mapping[str, Any]) -> bool:
    return spec.get("type") in HARD


def membership(n: int, shadows: int, seed: int) -> torch.Tensor:
    """``[shadows, n]`` bool: each column has exactly ``shadows // 2`` True entries, chosen
    with a local generator seeded by ``seed`` (the layout of the audit's shadows and of the
    selection models)."""
    g = torch.Generator().manual_seed(int(seed) + 7919)
    ranks = torch.rand(shadows, n, generator=g).argsort(0).argsort(0)
    return ranks < shadows // 2


@dataclasses.dataclass(frozen=True)
class Selection:
    """Where the selection models come from: the dataset, architecture and training recipe of
    the models that will be audited, and a seed (the audit's; the selection offsets it)."""

    dataset: str
    model: str
    train: dict[str, Any]
    seed: int = 0
    models: int = DEFAULT_SELECT_MODELS

    def __post_init__(self) -> None:
        if int(self.models) != self.models or self.models < 2 or self.models % 2:
            raise ValueError(f"selection models must be an even number ≥ 2, got {self.models}")

    @property
    def select_seed(self) -> int:
        return int(self.seed) + SELECT_SEED_OFFSET

    def key_data(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "model": self.model, "train": self.train,
                "seed": self.select_seed, "models": int(self.models)}

    def model_key(self, i: int) -> str:
        """Pool key of selection model ``i`` (``i = -1``: the one trained on all the data)."""
        what = "full" if i < 0 else f"half-{i}"
        return f"select-{what}-" + digest({**self.key_data(), "index": i})

    def train_seed(self, i: int) -> int:
        return self.select_seed * 1000 + i

    def member(self, n: int) -> torch.Tensor:
        """``[models, n]`` bool: which selection model trains on which example (each example in
        exactly half of them)."""
        return membership(n, self.models, self.select_seed)


# ------------------------------------------------------------------------- one model
def build_selection_model(job: dict[str, Any], pool_dir: str, device: str = "auto",
                          threads: int | None = None) -> dict[str, Any]:
    """Train selection model ``job["index"]`` (``-1``: on all of the data) into the pool, once,
    under its key's lock."""
    from fastunlearn.checkpoint import read_metadata, save_checkpoint
    from fastunlearn.studies.pool import _dataset, _warm_up, pool_lock, pool_path, pool_ready

    if threads:
        torch.set_num_threads(threads)
    _warm_up()
    sel, i = Selection(**job["selection"]), int(job["index"])
    pool, key = Path(pool_dir), sel.model_key(i)
    path = pool_path(pool, key)
    with pool_lock(pool, key):
        if pool_ready(pool, key):
            meta = read_metadata(path.with_suffix(".safetensors"))
            return {"key": key, "trained": False,
                    "train_s": meta.get("metrics", {}).get("rte_s", math.nan)}
        data = _dataset(sel.dataset)
        n = len(data.train_labels)
        idx = (torch.arange(n) if i < 0
               else torch.nonzero(sel.member(n)[i]).flatten())
        net, seconds, tcfg = _train_on(sel, data, idx, sel.train_seed(i), device, path)
        save_checkpoint(path, net, dataset=data, seed=sel.train_seed(i),
                        train_config=tcfg.to_dict(), metrics={"rte_s": seconds},
                        extra={"role": "selection", "pool_key": key, "index": i,
                               "machine": machine(device)})
    return {"key": key, "trained": True, "train_s": seconds}


def _train_on(sel: Selection, data: Any, idx: torch.Tensor, seed: int, device: str,
              path: Path) -> tuple[torch.nn.Module, float, Any]:
    from fastunlearn._device import resolve_device
    from fastunlearn._timing import measure
    from fastunlearn.models import create_model
    from fastunlearn.train import TrainConfig, train

    sub = dataclasses.replace(data, train_images=data.train_images[idx],
                              train_labels=data.train_labels[idx])
    tcfg = TrainConfig(**{**sel.train, "seed": seed, "device": device, "progress": False})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create_model(sel.model, sub)
    with _run_log(path.parent):
        log.info("selection model (%s, %d samples)", sel.model, len(idx))
        with measure(resolve_device(device)) as m:
            net = train(net, sub.train, tcfg, eval_on={})
        log.info("trained in %.1f s", m.seconds)
    return net, m.seconds, tcfg


# ------------------------------------------------------------------------- scores
def selection_jobs(sel: Selection, kind: str, pool: Path) -> list[dict[str, Any]]:
    """The selection models ``kind`` needs that the pool does not hold yet."""
    from fastunlearn.studies.pool import pool_ready

    indices = [-1] if kind == "worst" else list(range(sel.models))
    return [{"selection": dataclasses.asdict(sel), "index": i} for i in indices
            if not pool_ready(pool, sel.model_key(i))]


def memorization(sel: Selection, pool: Path) -> dict[str, np.ndarray]:
    """``{"scores", "phi", "member"}`` of every training example from the pool's selection
    models (which must be trained: :func:`selection_jobs`); cached in the pool."""
    from fastunlearn._atomic import atomic_write_bytes
    from fastunlearn.data.base import DataPart
    from fastunlearn.evaluate.audit import logit_scaled_confidence
    from fastunlearn.evaluate.memorization import memorization_scores
    from fastunlearn.inference import predict_logits
    from fastunlearn.studies.pool import _dataset, _load_pool

    cache = pool / ("select-scores-" + digest(sel.key_data())) / "memorization.npz"
    if cache.exists():
        try:
            with np.load(cache) as z:
                return {k: z[k] for k in z.files}
        except (OSError, ValueError) as err:
            log.warning("recomputing unreadable %s (%s)", cache, err)
    data = _dataset(sel.dataset)
    n = len(data.train_labels)
    member = sel.member(n).numpy()
    view = DataPart(data, "train", torch.arange(n))
    phi = []
    for i in range(sel.models):
        net, _ = _load_pool(pool, sel.model_key(i))
        logits = predict_logits(net, view)
        phi.append(np.asarray(logit_scaled_confidence(logits, view.labels), dtype=np.float64))
    out = {"scores": memorization_scores(np.stack(phi), member), "phi": np.stack(phi),
           "member": member}
    buf = io.BytesIO()
    np.savez(buf, **out)
    atomic_write_bytes(cache, buf.getvalue())
    return out


def resolve(spec: Mapping[str, Any], sel: Selection, pool: Path) -> dict[str, Any]:
    """The resolved indices spec of a hard ``spec`` (its selection models must be trained)."""
    from fastunlearn.data.hard_sets import hard_count, select_by_scores
    from fastunlearn.studies.pool import _dataset, _load_pool

    kind = spec["type"]
    asked = {k: spec[k] for k in ("type", "fraction", "count") if k in spec}
    info: dict[str, Any] = {**asked, "selection_seed": sel.select_seed}
    if kind == "worst":
        from fastunlearn.studies.worst_case import WorstCaseConfig, select_worst

        data = _dataset(sel.dataset)
        count = hard_count(spec, len(data.train_labels))
        cache = pool / ("select-worst-" + digest({**sel.key_data(), "count": count})) / "ids.json"
        if cache.exists():
            ids = [int(v) for v in json.loads(cache.read_text())["ids"]]
        else:
            from fastunlearn.studies.keys import write_json_atomic

            net, _ = _load_pool(pool, sel.model_key(-1))
            pos, winfo = select_worst(net, data.train, count,
                                      WorstCaseConfig(seed=sel.select_seed))
            ids = sorted(int(v) for v in pos)
            write_json_atomic(cache, {"ids": ids,
                                      "seconds": float(winfo.get("seconds", math.nan))})
        info.update(by="worst-case search", selection_models=1)
    else:
        mem = memorization(sel, pool)
        ids = [int(v) for v in select_by_scores(mem["scores"], spec)]
        info.update(by="memorization", selection_models=sel.models,
                    memorization_mean=float(np.nanmean(mem["scores"][ids])),
                    memorization_all=float(np.nanmean(mem["scores"])))
    return {"type": "indices", "ids": ids, "selected": info}


def resolve_hard_forget(spec: Mapping[str, Any], sel: Selection, pool: Path, *,
                        executor: str = "local", workers: int = 1, device: str = "auto",
                        threads: int | None = None, progress: bool = False,
                        ) -> dict[str, Any]:
    """Train the selection models ``spec`` needs (skipping those in the pool) and resolve it."""
    from tqdm.auto import tqdm

    from fastunlearn.studies.executors import _dispatch

    pool.mkdir(parents=True, exist_ok=True)
    jobs = selection_jobs(sel, spec["type"], pool)
    if jobs:
        log.info("training %d selection model(s) for %s", len(jobs), spec["type"])
        bar = tqdm(total=len(jobs), desc=f"selection models ({spec['type']})", unit="model",
                   disable=not progress)
        try:
            _dispatch(build_selection_model, [(j, str(pool), device, threads) for j in jobs],
                      executor, workers, {"cpus": 1, "gpus": 0}, lambda _res: bar.update(1))
        finally:
            bar.close()
    return resolve(spec, sel, pool)


__all__ = ["DEFAULT_SELECT_MODELS", "SELECT_SEED_OFFSET", "Selection", "build_selection_model",
           "is_hard", "memorization", "membership", "resolve", "resolve_hard_forget",
           "selection_jobs"]
