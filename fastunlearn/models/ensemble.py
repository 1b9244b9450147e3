"""``sisa_ensemble``: S shard models behind one ``nn.Module`` (SISA, Bourtoule et al. 2021).

The ensemble is an ordinary model: ``forward(x)`` returns ``[N, num_classes]`` logits, so
``evaluate``, ``accuracy`` and checkpoints work on it unchanged. Everything SISA unlearning
needs travels in its state dict (hence in every ``.safetensors`` checkpoint):

* ``members.{s}.*`` — the S shard models (same architecture, ``base``);
* ``shard_of`` / ``slice_of`` — int64 ``[train_size]``: which shard and slice each training
  sample belongs to (``-1``: in no shard — excluded at training time or unlearned since);
* ``slice_checkpoints.{s}.{r}.*`` — the weights of member ``s`` *before* it trained on slice
  ``r`` (``r = 0`` is its initialisation), for ``r = 0 … R−1``. That is ``S × R`` extra copies
  of one member's weights: kept in memory and inside the checkpoint file (no side files), at
  ``R`` times the size of the members themselves.

The training recipe (a ``TrainConfig`` dict) and the seed are part of the model spec
(``fastunlearn_spec["kwargs"]``), so a checkpoint rebuilds an ensemble that can be unlearned
exactly. Training and unlearning live in :mod:`fastunlearn.unlearn.sisa` (``train_sisa``).

Aggregation (``aggregate=``): ``"logits"`` — mean of the members' logits (default);
``"probs"`` — log of the mean softmax; ``"vote"`` — majority vote of the members' argmax,
returned as log vote shares (ties broken by the mean softmax, which is added before the log).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from fastunlearn.models._registry import create_model, register_model

AGGREGATES = ("logits", "probs", "vote")


def _sanitize(key: str) -> str:
    return key.replace(".", "__")


class _StateSlot(nn.Module):
    """Buffers holding one copy of a member's state dict (names with ``.`` → ``__``)."""

    def __init__(self, template: nn.Module) -> None:
        super().__init__()
        self._keys = list(template.state_dict().keys())
        for k, v in template.state_dict().items():
            self.register_buffer(_sanitize(k), v.detach().clone())

    def load_from(self, module: nn.Module) -> None:
        with torch.no_grad():
            for k, v in module.state_dict().items():
                getattr(self, _sanitize(k)).copy_(v)

    def state(self) -> dict[str, Tensor]:
        return {k: getattr(self, _sanitize(k)) for k in self._keys}


class SISAEnsemble(nn.Module):
    """S shard models of one architecture, with SISA's data partition and slice checkpoints.

    Build it with ``create_model("sisa_ensemble", data, base="small_cnn", shards=S, slices=R,
    train_size=N, ...)`` (``train_sisa`` does this and trains it).
    """

    def __init__(
        self,
        members: list[nn.Module],
        *,
        slices: int,
        train_size: int,
        aggregate: str = "logits",
    ) -> None:
        super().__init__()
        if not members:
            raise ValueError("a SISA ensemble needs at least one member")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if slices < 1 or train_size < 0:
            raise ValueError(f"slices must be ≥ 1 and train_size ≥ 0, got {slices}, {train_size}")
        self.aggregate = aggregate
        self.members = nn.ModuleList(members)
        self.slice_checkpoints = nn.ModuleList(
            nn.ModuleList(_StateSlot(m) for _ in range(slices)) for m in members
        )
        self.register_buffer("shard_of", torch.full((train_size,), -1, dtype=torch.long))
        self.register_buffer("slice_of", torch.full((train_size,), -1, dtype=torch.long))

    @property
    def num_shards(self) -> int:
        return len(self.members)

    @property
    def num_slices(self) -> int:
        return len(self.slice_checkpoints[0])

    @property
    def train_size(self) -> int:
        return int(self.shard_of.numel())

    def member_logits(self, x: Tensor) -> Tensor:
        """Logits of every member: ``[S, N, num_classes]``."""
        return torch.stack([m(x) for m in self.members])

    def forward(self, x: Tensor) -> Tensor:
        logits = self.member_logits(x)
        if self.aggregate == "logits":
            return logits.mean(0)
        probs = logits.float().softmax(-1).mean(0)
        if self.aggregate == "probs":
            return probs.clamp_min(torch.finfo(probs.dtype).tiny).log()
        votes = nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).sum(0).to(probs.dtype)
        scores = votes + probs  # probs < 1 only breaks ties between equal vote counts
        shares = scores / scores.sum(-1, keepdim=True)
        return shares.clamp_min(torch.finfo(shares.dtype).tiny).log()

    def save_slice(self, shard: int, slice_: int) -> None:
        """Store member ``shard``'s current weights as its checkpoint before slice ``slice_``."""
        self.slice_checkpoints[shard][slice_].load_from(self.members[shard])

    def restore_slice(self, shard: int, slice_: int) -> None:
        """Load member ``shard``'s checkpoint from before slice ``slice_``."""
        state = self.slice_checkpoints[shard][slice_].state()
        self.members[shard].load_state_dict({k: v.clone() for k, v in state.items()})

    def shard_indices(self, shard: int, up_to_slice: int) -> Tensor:
        """Training-set indices of shard ``shard`` in slices ``0 … up_to_slice`` (sorted, CPU)."""
        shard_of, slice_of = self.shard_of.cpu(), self.slice_of.cpu()
        keep = (shard_of == shard) & (slice_of >= 0) & (slice_of <= up_to_slice)
        return torch.nonzero(keep).flatten()


@register_model("sisa_ensemble")
def sisa_ensemble(
    num_classes: int,
    in_chans: int,
    img_size: tuple[int, int],
    pretrained: bool = False,
    *,
    base: str = "small_cnn",
    shards: int = 5,
    slices: int = 1,
    train_size: int = 0,
    aggregate: str = "logits",
    base_kwargs: dict[str, Any] | None = None,
    seed: int = 0,
    recipe: dict[str, Any] | None = None,
) -> nn.Module:
    """SISA ensemble: S shard models (mean logits, mean probs or vote) with slice checkpoints.

    Member ``s`` is initialised under ``torch.manual_seed(seed + s)`` (the global RNG is left
    untouched). ``recipe`` (the training config) is only recorded in the spec.
    """
    if pretrained:
        raise ValueError("sisa_ensemble has no pretrained weights; use pretrained=False")
    if int(shards) != shards or shards < 1:
        raise ValueError(f"sisa_ensemble: shards must be a positive integer, got {shards}")
    if int(slices) != slices or slices < 1:
        raise ValueError(f"sisa_ensemble: slices must be a positive integer, got {slices}")
    if base.strip().lower() == "sisa_ensemble":
        raise ValueError("sisa_ensemble: base must be a single-model architecture")
    members = []
    for s in range(int(shards)):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed) + s)
            members.append(
                create_model(base, num_classes=num_classes, in_chans=in_chans, img_size=img_size,
                             **(base_kwargs or {}))
            )
    return SISAEnsemble(members, slices=int(slices), train_size=int(train_size),
                        aggregate=aggregate)
