"""Batched prediction over a :class:`~fastunlearn.data.DataPart` (training and evaluation)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from fastunlearn._device import model_device
from fastunlearn._modes import eval_mode
from fastunlearn.data.base import DataPart


@torch.no_grad()
def predict_logits(
    model: nn.Module, part: DataPart, *, batch_size: int = 512, device: torch.device | None = None
) -> Tensor:
    """Logits of ``model`` on every sample of ``part`` (eval mode; float32, on CPU)."""
    device = device or model_device(model)
    with eval_mode(model):  # every submodule's own train/eval flag comes back afterwards
        out = [model(x).float().cpu() for x, _ in part.batches(batch_size, device=device)]
    if not out:
        return torch.empty(0, 0)
    return torch.cat(out)


def accuracy(model: nn.Module, part: DataPart, *, batch_size: int = 512) -> float:
    """Top-1 accuracy in percent; NaN for an empty part."""
    if len(part) == 0:
        return float("nan")
    pred = predict_logits(model, part, batch_size=batch_size).argmax(1)
    return 100.0 * (pred == part.labels).float().mean().item()
