"""The model pool: original and gold-retrained models shared by every study.

Both are trained once per key (:func:`~fastunlearn.studies.keys.original_key`,
:func:`~fastunlearn.studies.keys.retrain_key`) into ``<pool>/<key>/model.safetensors`` by
:func:`build_pool_model`, under the key's :class:`pool_lock`, so studies sharing a pool (worker
processes, Ray tasks, teammates on one file system) never train a model twice or interleave
their writes. Also here: :func:`apply_variant` / :func:`model_blocks`, which restrict which
weights a method may change (``layer-sensitivity``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from fastunlearn.engine.runner import StepRunner
from fastunlearn.studies.keys import forget_spec
from fastunlearn.studies.runlog import _run_log, machine

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- per-process caches
# ---------------------------------------------------------------- per-process caches
_DATA: dict[str, Any] = {}


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
        runner = StepRunner(opt, None, 1, progress=False)  # the path every loop takes
        runner.step(w.sum())
        runner.close()
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

        from fastunlearn._atomic import current_umask

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
        extra={"role": role, "pool_key": key, "machine": machine(device)},
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


