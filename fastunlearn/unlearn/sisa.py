"""``sisa``: Sharded, Isolated, Sliced, Aggregated training and exact unlearning (Bourtoule et
al., 2021).

Training (:func:`train_sisa`): the training set is split at random (seeded) into ``S`` shards
and each shard into ``R`` slices. Member ``s`` trains incrementally: on slice 0, then on slices
0–1, …, then on slices 0…R−1, each stage a full :func:`fastunlearn.train.train` run of
``config.epochs`` epochs (fresh optimiser, its own schedule, seed derived from
``(config.seed, s, r)``). Before stage ``r`` the member's weights are stored as slice checkpoint
``(s, r)`` — inside the :class:`~fastunlearn.models.ensemble.SISAEnsemble` itself, so they are
saved with every checkpoint of it (no side files). Cost: ``epochs · N · (R+1)/2`` sample
passes (``R = 1``: the cost of one ordinary model).

Unlearning (method ``sisa``): forget samples are removed from the partition; each shard that
held any is restored to its checkpoint before the first slice holding one and re-trained from
there exactly as in training. Shards without forget samples are untouched. The result equals a
fresh ``train_sisa(..., exclude=forget_ids)`` with the same seed (bit for bit on CPU).
``result.info`` reports ``shards_retrained``, ``retrained_samples`` (sample passes spent
re-training) and ``full_training_samples`` (what a full SISA re-training would cost).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from fastunlearn.data.base import DataPart, ImageDataset
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.kernels.compile import check_compile_mode
from fastunlearn.models import create_model
from fastunlearn.models.ensemble import AGGREGATES, SISAEnsemble
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult

log = logging.getLogger(__name__)

__all__ = ["SISAConfig", "partition", "sisa", "train_sisa"]


def _stage_seed(seed: int, shard: int, slice_: int) -> int:
    """Seed of stage (shard, slice): distinct per stage, identical across runs."""
    return (int(seed) * 1_000_003 + shard * 1_009 + slice_) % (2**31 - 1)


_PARTITION_SALT = 0x5157A  # keeps the partition independent of forget_random(seed=same seed)


def partition(n: int, shards: int, slices: int, seed: int) -> tuple[Tensor, Tensor]:
    """``(shard_of, slice_of)``: a seeded random partition of ``n`` samples into ``shards``
    near-equal shards, each cut into ``slices`` near-equal slices (int64 ``[n]`` each).

    The permutation's generator is seeded with ``seed`` plus a fixed salt: an unsalted
    ``randperm(n)`` would be the very permutation ``forget_random`` draws with the same seed,
    putting a whole random forget set into the first shard."""
    if shards < 1 or slices < 1:
        raise ValueError(f"shards and slices must be ≥ 1, got {shards} and {slices}")
    if shards * slices > n:
        raise ValueError(f"{shards} shards × {slices} slices need at least that many samples, "
                         f"got {n}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed) + _PARTITION_SALT))
    shard_of = torch.empty(n, dtype=torch.long)
    slice_of = torch.empty(n, dtype=torch.long)
    for s, chunk in enumerate(torch.tensor_split(perm, shards)):
        shard_of[chunk] = s
        for r, piece in enumerate(torch.tensor_split(chunk, slices)):
            slice_of[piece] = r
    return shard_of, slice_of


def _stage_config(recipe: dict[str, Any], seed: int, shard: int, slice_: int,
                  device: str | None = None, progress: bool | None = None,
                  compile: bool | str | None = None) -> TrainConfig:
    kw = dict(recipe)
    kw.update(seed=_stage_seed(seed, shard, slice_), eval_every=0)
    if device is not None:
        kw["device"] = device
    if progress is not None:
        kw["progress"] = progress
    if compile is not None:
        kw["compile"] = compile
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in kw.items() if k in names})


def _train_shard(
    ens: SISAEnsemble, data: ImageDataset, shard: int, from_slice: int, recipe: dict[str, Any],
    seed: int, device: str | None = None, progress: bool | None = None,
    compile: bool | str | None = None,
) -> int:
    """Restore member ``shard`` to its checkpoint before ``from_slice`` and train the remaining
    stages, refreshing later checkpoints. Returns the sample passes spent."""
    ens.restore_slice(shard, from_slice)
    member = ens.members[shard]
    passes = 0
    for r in range(from_slice, ens.num_slices):
        if r > from_slice:
            ens.save_slice(shard, r)
        idx = ens.shard_indices(shard, r)
        if len(idx) == 0:
            continue  # every sample of this shard so far was removed: nothing to learn yet
        cfg = _stage_config(recipe, seed, shard, r, device, progress, compile)
        train(member, DataPart(data, "train", idx, f"shard{shard}-slice{r}"), cfg, eval_on={})
        passes += cfg.epochs * len(idx)
    return passes


def _full_cost(ens: SISAEnsemble, epochs: int) -> int:
    return sum(epochs * len(ens.shard_indices(s, r))
               for s in range(ens.num_shards) for r in range(ens.num_slices))


def train_sisa(
    model_name: str,
    data: ImageDataset,
    shards: int,
    slices: int = 1,
    config: TrainConfig | None = None,
    out: str | os.PathLike | None = None,
    *,
    aggregate: str = "logits",
    exclude: Tensor | list[int] | None = None,
    model_kwargs: dict[str, Any] | None = None,
) -> SISAEnsemble:
    """Train a SISA ensemble of ``shards`` ``model_name`` members with ``slices`` slices each.

    ``config.epochs`` is the number of epochs of *each* incremental stage; ``config.seed``
    seeds the partition, the member initialisations and every stage. ``exclude`` lists
    training indices kept out of every shard (the partition itself is unchanged, which is what
    SISA unlearning reproduces). With ``out`` the ensemble is saved there as a checkpoint
    (``.safetensors`` + ``.json``; the slice checkpoints are inside the weights file).
    """
    config = config or TrainConfig()
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    n = len(data.train_labels)
    shard_of, slice_of = partition(n, shards, slices, config.seed)
    if exclude is not None:
        ex = torch.as_tensor(exclude, dtype=torch.long).flatten()
        if ex.numel() and (ex.min() < 0 or ex.max() >= n):
            raise ValueError(f"exclude holds indices outside 0..{n - 1}")
        shard_of[ex], slice_of[ex] = -1, -1
    recipe = config.to_dict()
    ens = create_model(
        "sisa_ensemble", data, base=model_name, shards=shards, slices=slices, train_size=n,
        aggregate=aggregate, base_kwargs=model_kwargs or {}, seed=config.seed, recipe=recipe,
    )
    assert isinstance(ens, SISAEnsemble)
    ens.shard_of.copy_(shard_of)
    ens.slice_of.copy_(slice_of)
    for s in range(shards):
        ens.save_slice(s, 0)
        _train_shard(ens, data, s, 0, recipe, config.seed)
        log.info("sisa: shard %d/%d trained", s + 1, shards)
    ens.eval()
    if out is not None:
        from fastunlearn.checkpoint import save_checkpoint
        from fastunlearn.inference import accuracy

        metrics = {"test_acc": accuracy(ens, data.test)}
        save_checkpoint(out, ens, dataset=data, seed=config.seed, train_config=recipe,
                        metrics=metrics, extra={"role": "original", "sisa": {
                            "shards": shards, "slices": slices, "aggregate": aggregate}})
    return ens


@dataclass
class SISAConfig(UnlearnConfig):
    """SISA unlearning. Re-training uses the ensemble's own recorded recipe (that is what
    makes it exact), so ``epochs``, ``lr`` and ``batch_size`` cannot be set here; ``device``,
    ``progress`` and ``compile`` apply (``compile`` replaces the recipe's: it changes the speed,
    not the maths — compiled kernels may round differently from eager ones)."""

    method = "sisa"
    epochs: int | None = None  # type: ignore[assignment]
    lr: float | None = None  # type: ignore[assignment]
    batch_size: int | None = None  # type: ignore[assignment]

    def __post_init__(self) -> None:
        fixed = [k for k in ("epochs", "lr", "batch_size") if getattr(self, k) is not None]
        if fixed:
            raise ValueError(f"sisa: {fixed[0]} cannot be set; shards are re-trained with the "
                             "ensemble's own training recipe (exact unlearning)")
        check_compile_mode(self.compile, self.method)


@register_method(SISAConfig)
def sisa(model: nn.Module, split: ForgetSplit, config: SISAConfig) -> UnlearnResult:
    """SISA: re-train only the shards holding forget samples, from their last clean slice."""
    if not isinstance(model, SISAEnsemble):
        raise ValueError("sisa: the model is not a SISA ensemble; train one with "
                         "train_sisa(...) or `fastunlearn train --sisa-shards S`")
    n = len(split.data.train_labels)
    if model.train_size != n:
        raise ValueError(f"sisa: the ensemble was trained on {model.train_size} samples but "
                         f"{split.data.name} has {n}; use the dataset it was trained on")
    kw = model.fastunlearn_spec["kwargs"] if hasattr(model, "fastunlearn_spec") else {}
    recipe, seed = kw.get("recipe"), kw.get("seed", 0)
    if recipe is None:
        raise ValueError("sisa: the ensemble carries no training recipe; build it with train_sisa")
    epochs = int(recipe.get("epochs", 1))
    forget = split.forget_idx
    shard_of, slice_of = model.shard_of.cpu(), model.slice_of.cpu()
    held = shard_of[forget] >= 0
    first: dict[int, int] = {}
    for s, r in zip(shard_of[forget][held].tolist(), slice_of[forget][held].tolist()):
        first[s] = min(first.get(s, r), r)
    with torch.no_grad():
        model.shard_of[forget] = -1
        model.slice_of[forget] = -1
    device = str(next(model.parameters()).device)
    retrained = 0
    for s in sorted(first):
        retrained += _train_shard(model, split.data, s, first[s], recipe, seed,
                                  device=device, progress=config.progress,
                                  compile=config.compile)
    model.eval()
    info = {
        "shards_retrained": len(first),
        "shards": model.num_shards,
        "slices": model.num_slices,
        "retrained_shard_ids": ",".join(str(s) for s in sorted(first)),
        "first_slices": ",".join(f"{s}:{first[s]}" for s in sorted(first)),
        "forget_in_shards": int(held.sum()),
        "retrained_samples": retrained,
        "full_training_samples": _full_cost(model, epochs),
    }
    return UnlearnResult(model, "sisa", config, info=info)
