"""Worst-case forget sets: the data-wise selection of Fan, Liu, Hero and Liu, "Challenging
Forgets: Unveiling the Worst-Case Forget Sets in Machine Unlearning" (ECCV 2024), reference code
OPTML-Group/Unlearn-WorstCase (``data-wise/main_selmu.py``, ``unlearn/FT.py`` ``w_FT``,
``unlearn/impl.py`` ``optimize_select``, ``utils.py`` ``bisection`` / ``SignSGD``).

The problem (bi-level). Data weights ``w ∈ [0, 1]^N`` with ``Σ w = count`` mark the forget set
(relaxed from ``{0, 1}^N``).

- Lower level (the unlearning): ``θ*(w)`` = the original model fine-tuned on the retained data,
  each example's loss weighted by ``1 − w_i`` (the reference's ``w_FT``).
- Upper level (the selection): ``min_w Σ_i w_i ℓ_i(θ*(w)) + γ ‖w‖²`` — the forget set whose
  loss stays *lowest* after unlearning, i.e. the examples the unlearned model still fits best:
  the hardest to erase.

The first-order solver alternates: (1) reload the original weights and run ``inner_epochs``
epochs of sign-SGD (``θ ← θ − theta_lr · sign(∇_θ Σ_i (1 − w_i) ℓ_i)``) over the whole part;
(2) score every example's loss ``ℓ_i`` under the unlearned model and take one projected
gradient step on ``w`` using only the direct gradient ``ℓ_i + 2γ w_i`` (the implicit term
through ``θ*(w)`` is dropped), projecting onto ``{0 ≤ w ≤ 1, Σ w = count}`` by bisection on the
shift ``μ`` of ``clip(w − μ, 0, 1)``. ``w`` starts as a seeded random ``count``-subset and
stays continuous across the ``outer_steps`` steps; the forget set is the ``count`` largest
weights at the end.

Deviations from the reference code (all on purpose, for small CPU runs or for determinism):

- ``outer_steps = 3`` selection steps (reference ``select_epochs``: default 10, its README's
  CIFAR-10 example 2) and ``inner_epochs = 1`` sign-SGD epoch per lower-level solve (reference
  ``unlearn_steps``: default 10, README example 2).
- The upper step is divided by the standard deviation of the per-example gradient over the
  part (``normalize_upper=True``; an adaptive step size) and ``w_lr = 1.0`` is in those units.
  The reference takes a raw step of ``w_lr = 0.01``: a weight then moves by ~0.01 × the loss,
  so at its defaults the top-``count`` set hardly leaves the random initial set, and the
  effect of ``w_lr`` depends on the loss scale of the model. ``normalize_upper=False`` with
  ``w_lr=0.01`` is the reference's step. (Subtracting a constant from the gradient would not
  change the projection, so only the scale matters.)
- ``theta_lr = 1e-3`` (the README example's value; argparse default 0.01). As in the
  reference's ``SignSGD.sign_step``, there is no momentum, weight decay or lr schedule (its
  MultiStepLR milestones 91, 136 are never reached) and a zero gradient gives no update.
- The lower level is always weighted fine-tuning (``w_FT``); the reference's other lower
  levels (``w_retrain`` from scratch — its argparse default —, ``w_RL``, ``w_scrub``,
  boundary methods, ``w_EU``) are not implemented.
- The per-example losses of the upper step are computed in ``eval()`` mode on un-augmented
  images; the reference scores with the model still in train mode (batch-norm batch
  statistics) through the augmented training loader.
- Ties among the final weights go to the example with the lower final loss, then the lower
  position (the reference's ``torch.topk`` leaves ties unspecified).
- The random initial set is drawn by a local ``torch.Generator`` seeded with ``seed`` (the
  reference: NumPy with ``seed − 1``); shuffling uses the same generator and the global RNG
  is restored afterwards (:func:`fastunlearn.engine.rng.seeded`).
- ``batch_size = 256`` as in the reference; the forward-only scoring pass uses
  ``score_batch_size`` (no effect on the result).

Cost, in units of one training epoch over the part (one forward + backward over all
``len(part)`` examples): ``outer_steps × inner_epochs`` epochs of sign-SGD (every example is
computed, the selected ones with weight ``1 − w_i``) plus ``outer_steps`` forward-only scoring
passes (≈ 1/3 epoch each), i.e. ≈ ``outer_steps × (inner_epochs + 1/3)`` epochs: ≈ 4 at the
defaults (reference defaults: ≈ 103; its README example: ≈ 4.7). ``info["cost_epochs"]``
reports this estimate and ``info["seconds"]`` the measured time.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn._device import model_device, synchronize
from fastunlearn.data.base import DataPart
from fastunlearn.engine.rng import seeded

__all__ = ["WorstCaseConfig", "project_capped_simplex", "select_worst"]

log = logging.getLogger(__name__)

#: A forward-only pass costs about this fraction of a training (forward + backward) epoch.
FORWARD_EPOCH_FRACTION = 1.0 / 3.0


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"WorstCaseConfig.{name} must be an integer ≥ {low}, got {value!r}")


def _check_float(name: str, value: Any, *, positive: bool) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= 0 if positive else value < 0):
        bound = "> 0" if positive else "≥ 0"
        raise ValueError(f"WorstCaseConfig.{name} must be a finite number {bound}, got {value!r}")


@dataclass
class WorstCaseConfig:
    """Hyper-parameters of :func:`select_worst` (reference names in brackets; module docstring
    for how each default differs from the reference).

    ``outer_steps`` [select_epochs]: upper-level (selection) steps. ``inner_epochs``
    [unlearn_steps]: sign-SGD epochs of each lower-level solve. ``theta_lr`` [theta_lr]:
    lower-level sign-SGD step. ``w_lr`` [w_lr]: upper-level step (in units of the gradient's
    standard deviation when ``normalize_upper``). ``gamma`` [gamma]: weight of ``‖w‖²``.
    ``batch_size`` [batch_size]: lower-level batch size; ``score_batch_size``: batch size of the
    forward-only scoring pass. ``seed`` [seed]: the initial random set and the shuffling.
    """

    outer_steps: int = 3
    inner_epochs: int = 1
    theta_lr: float = 1e-3
    w_lr: float = 1.0
    gamma: float = 0.0
    normalize_upper: bool = True
    batch_size: int = 256
    score_batch_size: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        _check_int("outer_steps", self.outer_steps, 1)
        _check_int("inner_epochs", self.inner_epochs, 1)
        _check_float("theta_lr", self.theta_lr, positive=True)
        _check_float("w_lr", self.w_lr, positive=True)
        _check_float("gamma", self.gamma, positive=False)
        if not isinstance(self.normalize_upper, bool):
            raise ValueError(
                f"WorstCaseConfig.normalize_upper must be True or False, got "
                f"{self.normalize_upper!r}"
            )
        _check_int("batch_size", self.batch_size, 1)
        _check_int("score_batch_size", self.score_batch_size, 1)
        _check_int("seed", self.seed, 0)

    def cost_epochs(self) -> float:
        """Estimated cost in training epochs over the part (module docstring)."""
        return self.outer_steps * (self.inner_epochs + FORWARD_EPOCH_FRACTION)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def project_capped_simplex(a: Tensor, total: float, iters: int = 100) -> Tensor:
    """Euclidean projection of ``a`` onto ``{0 ≤ w ≤ 1, Σ w = total}``: ``clip(a − μ, 0, 1)``
    with ``μ`` found by bisection (float64; ``0 < total < len(a)``)."""
    a = a.double()
    lo = float(a.min()) - 1.0  # Σ clip(a − lo) = len(a) ≥ total
    hi = float(a.max())  # Σ clip(a − hi) = 0 ≤ total
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        if float((a - mid).clamp(0.0, 1.0).sum()) > total:
            lo = mid
        else:
            hi = mid
        if hi - lo < 1e-12:
            break
    return (a - 0.5 * (lo + hi)).clamp(0.0, 1.0)


def _lower_level(work: nn.Module, original: dict[str, Tensor], part: DataPart, keep: Tensor,
                 config: WorstCaseConfig, gen: torch.Generator, device: torch.device) -> int:
    """Reload the original weights, then ``inner_epochs`` epochs of sign-SGD on the loss
    weighted by ``keep = 1 − w`` (in place on ``work``); returns the number of steps."""
    work.load_state_dict(original)
    params = [p for p in work.parameters() if p.requires_grad]
    keep_dev = keep.to(device=device, dtype=torch.float32)
    holder: list[Tensor] = []
    steps = 0
    work.train()
    for _ in range(config.inner_epochs):
        for x, y in part.batches(config.batch_size, shuffle=True, generator=gen, device=device,
                                 positions=holder.append):
            pos = holder.pop().to(device)
            loss = (keep_dev[pos] * F.cross_entropy(work(x), y, reduction="none")).sum()
            grads = torch.autograd.grad(loss, params, allow_unused=True)
            with torch.no_grad():
                for p, g in zip(params, grads):
                    if g is not None:
                        p.add_(g.sign(), alpha=-config.theta_lr)
            steps += 1
    return steps


@torch.no_grad()
def _losses(work: nn.Module, part: DataPart, batch_size: int, device: torch.device) -> Tensor:
    """Per-example cross-entropy of ``work`` on every position of ``part`` (float64, CPU)."""
    work.eval()
    out = torch.zeros(len(part), dtype=torch.float64)
    holder: list[Tensor] = []
    for x, y in part.batches(batch_size, shuffle=False, device=device, positions=holder.append):
        pos = holder.pop()
        out[pos] = F.cross_entropy(work(x).float(), y, reduction="none").double().cpu()
    return out


def _top(w: Tensor, losses: Tensor, count: int) -> Tensor:
    """The ``count`` largest weights (ties: lower loss, then lower position), sorted."""
    order = np.lexsort((np.arange(len(w)), losses.numpy(), -w.numpy()))
    return torch.from_numpy(np.sort(order[:count]).astype(np.int64))


def select_worst(model: nn.Module, part: DataPart, count: int,
                 config: WorstCaseConfig | None = None) -> tuple[Tensor, dict]:
    """The worst-case forget set of ``count`` examples of ``part`` for ``model`` (the original
    model, trained on all of ``part``; it is copied, never modified).

    Returns ``(positions, info)``: positions into ``part``, a sorted ascending long tensor of
    length ``count``; ``info`` holds ``weights`` (the final continuous ``w``, numpy float64, one
    per example; higher = more worst-case), ``losses`` (each example's loss under the last
    unlearned model), ``upper_losses`` (``Σ w_i ℓ_i`` per step), ``initial`` (the random start
    set), ``overlap_with_initial``, ``steps`` (upper-level steps run), ``lower_steps``
    (sign-SGD steps in all), ``cost_epochs`` (estimated cost in training epochs over the part),
    ``seconds`` and ``config``. Deterministic for a given ``config.seed``; the caller's global
    RNG is left as it was. Algorithm, defaults and deviations from the reference: module
    docstring.
    """
    config = WorstCaseConfig() if config is None else config
    if not isinstance(config, WorstCaseConfig):
        raise TypeError(f"select_worst needs a WorstCaseConfig, got {type(config).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"select_worst needs an nn.Module, got {type(model).__name__}")
    if not isinstance(part, DataPart):
        raise TypeError(f"select_worst needs a DataPart (e.g. data.train), got "
                        f"{type(part).__name__}")
    n = len(part)
    if isinstance(count, bool) or not isinstance(count, (int, np.integer)):
        raise ValueError(f"count must be an integer, got {count!r}")
    count = int(count)
    if not 1 <= count < n:
        raise ValueError(f"count must be between 1 and {n - 1} for a part of {n} examples, "
                         f"got {count}")

    device = model_device(model)
    t0 = time.perf_counter()
    work = copy.deepcopy(model)
    work.requires_grad_(True)
    original = {k: v.detach().clone() for k, v in work.state_dict().items()}
    upper_losses: list[float] = []
    lower_steps = 0
    with seeded(config.seed, device) as gen:
        initial = torch.randperm(n, generator=gen)[:count].sort().values
        w = torch.zeros(n, dtype=torch.float64)
        w[initial] = 1.0
        for step in range(config.outer_steps):
            lower_steps += _lower_level(work, original, part, 1.0 - w, config, gen, device)
            losses = _losses(work, part, config.score_batch_size, device)
            if not torch.isfinite(losses).all():
                raise ValueError("select_worst: the lower-level unlearning diverged (non-finite "
                                 "losses); lower WorstCaseConfig.theta_lr")
            upper_losses.append(float((w * losses).sum()))
            grad = losses + 2.0 * config.gamma * w
            scale = 1.0
            if config.normalize_upper:
                std = float(grad.std())
                scale = 1.0 / std if std > 0 else 1.0
            w = project_capped_simplex(w - config.w_lr * scale * grad, float(count))
            log.info("worst-case selection step %d/%d: forget loss %.4f, mean loss %.4f",
                     step + 1, config.outer_steps, upper_losses[-1] / count,
                     float(losses.mean()))
    chosen = _top(w, losses, count)
    synchronize(device)
    seconds = time.perf_counter() - t0
    info = {
        "weights": w.numpy(),
        "losses": losses.numpy(),
        "upper_losses": upper_losses,
        "initial": initial.numpy(),
        "overlap_with_initial": int(np.intersect1d(initial.numpy(), chosen.numpy()).size),
        "steps": config.outer_steps,
        "lower_steps": lower_steps,
        "cost_epochs": config.cost_epochs(),
        "seconds": seconds,
        "config": config.to_dict(),
    }
    return chosen, info
