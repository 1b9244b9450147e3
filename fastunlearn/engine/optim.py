"""Optimisers for every loop, and the checks of their options (declared once, used by
``TrainConfig`` and every method config)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

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
    momentum: float = 0.9, weight_decay: float = 0.0,
) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or AdamW over ``params`` — a module's trainable
    parameters when a module is given. (Masked SGD, which moves only the weights of a saliency
    mask through the masked SGD kernel, is :func:`fastunlearn.unlearn.masks.make_sgd`.)"""
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if isinstance(params, nn.Module):
        params = [p for p in params.parameters() if p.requires_grad]
    if optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
