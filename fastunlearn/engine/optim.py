"""Optimisers for every loop, and the checks of their options (declared once, used by
``TrainConfig`` and every method config).

The saliency-masked update enters the engine here: :class:`MaskedSGD` (built by
:func:`make_sgd` / :func:`build_optimizer` with ``masks``) is SGD that moves only the masked
weights — weight decay and momentum masked too, so frozen weights stay bit-for-bit unchanged —
through the masked SGD kernel (:func:`fastunlearn.kernels.masked_sgd_step`: the foreach torch
path on CPU, one Triton launch for all parameters on CUDA). The step runner steps it like any
optimiser."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn

from fastunlearn.kernels.masked_sgd import masked_sgd_step, prepare_mask

OPTIMIZERS = ("sgd", "adamw")


def check_sgd_options(where: str, lr: float, momentum: float = 0.0,
                      weight_decay: float = 0.0) -> None:
    """One-line ValueErrors for a non-positive/non-finite ``lr``, ``momentum`` outside
    [0, 1) or a negative ``weight_decay`` (``where`` names the config)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not (
            lr > 0 and math.isfinite(lr)):
        raise ValueError(f"{where}: lr must be a positive number, got {lr!r}")
    if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not (
            0 <= momentum < 1):
        raise ValueError(f"{where}: momentum must be in [0, 1), got {momentum!r}")
    if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not (
            weight_decay >= 0):
        raise ValueError(f"{where}: weight_decay must be ≥ 0, got {weight_decay!r}")


def build_optimizer(
    params: nn.Module | Iterable[Tensor], optimizer: str = "sgd", lr: float = 0.01,
    momentum: float = 0.9, weight_decay: float = 0.0, *,
    masks: Mapping[str, Tensor] | None = None,
) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW over ``params`` — a module's trainable
    parameters when a module is given. ``masks`` (``{param_name: BoolTensor}``; SGD on a
    module only) gives :class:`MaskedSGD`."""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if masks is not None:
        if optimizer != "sgd" or not isinstance(params, nn.Module):
            raise ValueError("masks need optimizer='sgd' and the model (not a parameter list)")
        return make_sgd(params, lr, momentum=momentum, weight_decay=weight_decay, masks=masks)
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _named_trainable(model: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def masked_step(
    params: Sequence[Tensor],
    grads: Sequence[Tensor | None],
    masks: Sequence[Tensor | None],
    momentum_buffers: list[Tensor | None],
    *,
    lr: float,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    nesterov: bool = False,
    dampening: float = 0.0,
    overwrite_grads: bool = False,
) -> None:
    """One SGD step ``d = mask·(g + wd·p); buf = μ·buf + (1 − dampening)·d; p −= lr·buf``
    (or Nesterov's ``p −= lr·(d + μ·buf)``) in place, by
    :func:`fastunlearn.kernels.masked_sgd_step` (``impl="auto"``).

    Matches ``torch.optim.SGD`` exactly where the mask is True (and everywhere when a mask is
    None); entries where the mask is False keep their value and a zero momentum buffer (for a
    mask that stays the same from the first step on). ``None`` grads are skipped.
    ``momentum_buffers`` is updated in place (None → created). ``overwrite_grads=True`` lets the
    CPU path use the gradients as scratch (values afterwards unspecified; saves a copy).
    """
    masked_sgd_step(params, grads, masks, momentum_buffers, lr, momentum, weight_decay,
                    nesterov, dampening, overwrite_grads=overwrite_grads)


class MaskedSGD(torch.optim.Optimizer):
    """SGD (momentum, weight decay, Nesterov) that only updates masked weights, via
    :func:`masked_step` — one fused Triton launch for all parameters on CUDA.

    ``masks`` maps each parameter tensor (by identity) to a bool tensor of its shape; parameters
    without an entry are updated normally. The masks are converted once into the format the
    step reads fastest (:func:`fastunlearn.kernels.masked_sgd.prepare_mask`: bool on CUDA, 0/1
    in the parameter dtype on CPU). Like ``torch.optim.SGD`` with Nesterov, ``step()`` may
    leave other values in ``p.grad`` (it uses them as scratch; the next ``zero_grad`` clears
    them).
    """

    def __init__(
        self,
        params: Iterable[Tensor],
        masks: dict[int, Tensor],
        lr: float,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        dampening: float = 0.0,
    ) -> None:
        defaults = {"lr": lr, "momentum": momentum, "weight_decay": weight_decay,
                    "nesterov": nesterov, "dampening": dampening}
        params = list(params)
        super().__init__(params, defaults)
        by_id = {id(p): p for group in self.param_groups for p in group["params"]}
        self._masks = {k: prepare_mask(m, by_id[k]) if k in by_id else m
                       for k, m in masks.items()}

    def _mask(self, p: Tensor) -> Tensor | None:
        m = self._masks.get(id(p))
        if m is not None and m.device != p.device:  # the model moved since construction
            m = self._masks[id(p)] = prepare_mask(m, p)
        return m

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001, ANN201 - torch.optim.Optimizer signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            ps = [p for p in group["params"] if p.grad is not None]
            bufs = [self.state[p].get("momentum_buffer") for p in ps]
            masked_step(
                ps,
                [p.grad for p in ps],
                [self._mask(p) for p in ps],
                bufs,
                lr=group["lr"],
                momentum=group["momentum"],
                weight_decay=group["weight_decay"],
                nesterov=group.get("nesterov", False),
                dampening=group.get("dampening", 0.0),
                overwrite_grads=True,
            )
            for p, b in zip(ps, bufs):
                if b is not None:
                    self.state[p]["momentum_buffer"] = b
        return loss


def make_sgd(
    model: nn.Module,
    lr: float,
    *,
    momentum: float = 0.0,
    weight_decay: float = 0.0,
    masks: Mapping[str, Tensor] | None = None,
) -> torch.optim.Optimizer:
    """``torch.optim.SGD`` over the trainable parameters, or :class:`MaskedSGD` when ``masks``
    (``{param_name: BoolTensor}``, e.g. from :func:`compute_saliency`) is given."""
    params = _named_trainable(model)
    if masks is None:
        return torch.optim.SGD(
            params.values(), lr=lr, momentum=momentum, weight_decay=weight_decay
        )
    unknown = sorted(set(masks) - set(params))
    if unknown:
        raise ValueError(f"mask names a parameter the model does not have: {unknown[0]!r}")
    by_id = {}
    for name, m in masks.items():
        p = params[name]
        if m.shape != p.shape:
            raise ValueError(
                f"mask for {name!r} has shape {tuple(m.shape)}, parameter {tuple(p.shape)}"
            )
        by_id[id(p)] = m.to(device=p.device, dtype=torch.bool)
    return MaskedSGD(params.values(), by_id, lr, momentum, weight_decay)
