"""Pieces shared by several unlearning methods: losses (distillation KL, KL to uniform, the
two-stage contrastive push), random wrong labels, part views (relabelled, concatenated,
sampled), copies (random init, frozen teacher) and config checks. The training loop itself is
the engine's (:mod:`fastunlearn.engine`). Private: not a method module."""

from __future__ import annotations

import copy
import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn._device import model_device
from fastunlearn.data.base import DataPart

log = logging.getLogger(__name__)


def check_fraction(method: str, name: str, value: float, *, closed: bool = False) -> None:
    """ValueError unless ``value`` is in (0, 1) — or [0, 1] when ``closed``."""
    ok = 0 <= value <= 1 if closed else 0 < value < 1
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
        interval = "[0, 1]" if closed else "(0, 1)"
        raise ValueError(f"{method}: {name} must be in {interval}, got {value!r}")


def check_nonneg(method: str, name: str, value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{method}: {name} must be ≥ 0, got {value!r}")


def check_positive_int(
    method: str, name: str, value: int | None, *, allow_none: bool = False
) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{method}: {name} must be a positive integer, got {value!r}")


def kl_to_uniform(logits: Tensor) -> Tensor:
    """``KL(u ‖ softmax(logits))`` averaged over the batch (u uniform over the classes)."""
    logp = F.log_softmax(logits.float(), dim=1)
    c = logits.shape[1]
    return (-math.log(c) - logp.mean(dim=1)).mean()


def distill_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """Knowledge-distillation loss ``T² · KL(p_T(teacher) ‖ p_T(student))``, batch mean (the
    ``DistillKL`` of SCRUB and Hinton et al.)."""
    t = temperature
    log_s = F.log_softmax(student_logits.float() / t, dim=1)
    p_t = F.softmax(teacher_logits.float() / t, dim=1)
    return F.kl_div(log_s, p_t, reduction="batchmean") * (t * t)


def kl_to_probs(student_logits: Tensor, target_probs: Tensor, temperature: float = 1.0) -> Tensor:
    """``KL(target ‖ p_T(student))``, batch mean (``target_probs`` rows sum to 1)."""
    log_s = F.log_softmax(student_logits.float() / temperature, dim=1)
    return F.kl_div(log_s, target_probs.float(), reduction="batchmean")


def contrastive_push(out_f: Tensor, out_r: Tensor, temperature: float = 1.15) -> Tensor:
    """The two-stage seed's contrastive term ``mean_{i,j} −log softmax_j(z_f,i · z_r,jᵀ / τ)``
    over forget outputs ``out_f`` [m, C] against (detached) retain outputs ``out_r`` [n, C]."""
    sim = out_f.float() @ out_r.detach().float().T / temperature
    return -F.log_softmax(sim, dim=1).mean()


def random_wrong_labels(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """A uniformly random label different from ``y`` for each sample (on ``y``'s device)."""
    if num_classes < 2:
        raise ValueError("random labels need at least 2 classes")
    shift = torch.randint(1, num_classes, y.shape, generator=generator).to(y.device)
    return (y + shift) % num_classes


def relabelled(part: DataPart, labels: Tensor, name: str = "") -> DataPart:
    """A view of ``part`` whose samples carry ``labels`` instead of their own."""
    if labels.shape != part.labels.shape:
        raise ValueError("relabelled: one label per sample is needed")
    return DataPart(part.dataset, part.part, part.indices, name or part.name, _labels=labels.cpu())


def concat_parts(a: DataPart, b: DataPart, name: str = "") -> DataPart:
    """The samples (and labels) of two views of the same dataset part, one after the other."""
    if a.dataset is not b.dataset or a.part != b.part:
        raise ValueError("concat_parts: both views must come from the same dataset part")
    return DataPart(
        a.dataset, a.part, torch.cat([a.indices, b.indices]), name or f"{a.name}+{b.name}",
        _labels=torch.cat([a.labels, b.labels]),
    )


def sample_part(part: DataPart, n: int | None, generator: torch.Generator) -> DataPart:
    """A random subset of ``n`` samples drawn with ``generator`` (the whole part for None)."""
    if n is None or n >= len(part):
        return part
    pos = torch.randperm(len(part), generator=generator)[:n].sort().values
    return DataPart(part.dataset, part.part, part.indices[pos], part.name, _labels=part.labels[pos])


def random_init_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with freshly initialised weights (every submodule that has
    ``reset_parameters``), drawn on the CPU from ``seed`` — the same network on every device
    — then moved to the model's device; the global RNG state is left untouched."""
    device = model_device(model)
    fresh = copy.deepcopy(model).cpu()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for m in fresh.modules():
            reset = getattr(m, "reset_parameters", None)
            if callable(reset):
                reset()
    return fresh.to(device)


def frozen_copy(model: nn.Module) -> nn.Module:
    """An eval-mode, gradient-free copy (a teacher)."""
    t = copy.deepcopy(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t
