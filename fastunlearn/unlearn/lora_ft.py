"""``lora_ft``: fine-tune on the retain set through LoRA adapters (peft), then merge.

Every ``Conv1d/2d/3d`` and ``Linear`` layer (``target="conv_linear"``; ``"linear"`` for linear
layers only) gets a rank-``rank`` LoRA adapter (``ΔW = (α/r) B A``, B initialised to zero, so
training starts at the original function); only the adapters train (SGD, cosine schedule,
the same loop as ``ft``), every original weight is frozen. The adapters are then merged into
the weights (``merge_and_unload``) and the plain model is returned.

**Sparsity is kept:** weights that are exactly zero before LoRA (a pruned model, e.g.
``PruneConfig(base="lora_ft")``) are zero again after the merge — the merged update is
masked to the original support. ``result.info["merge_dropped_fraction"]`` is the share of the
update's norm that fell on pruned weights and was dropped by that mask (0 for a dense model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import prune as torch_prune

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split
from fastunlearn.unlearn.prune import PRUNABLE

__all__ = ["LoRAFTConfig", "lora_ft"]

_TARGETS = ("conv_linear", "linear")


@dataclass
class LoRAFTConfig(UnlearnConfig):
    """LoRA fine-tune recipe (Fashion-MNIST / digits ``small_cnn``): rank 8, α = 16 on every
    conv and linear layer, 3 epochs SGD lr 0.05 (momentum 0.9, no weight decay), cosine."""

    method = "lora_ft"
    epochs: int = 3
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target: str = "conv_linear"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1:
            raise ValueError("lora_ft: epochs must be ≥ 1")
        if int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"lora_ft: rank must be a positive integer, got {self.rank}")
        if not (self.lora_alpha > 0 and math.isfinite(self.lora_alpha)):
            raise ValueError(f"lora_ft: lora_alpha must be positive, got {self.lora_alpha}")
        if not 0 <= self.lora_dropout < 1:
            raise ValueError(f"lora_ft: lora_dropout must be in [0, 1), got {self.lora_dropout}")
        if self.target not in _TARGETS:
            raise ValueError(f"lora_ft: target must be one of {_TARGETS}, got {self.target!r}")
        self.train_config()

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           momentum=self.momentum, weight_decay=self.weight_decay,
                           schedule=self.schedule, seed=self.seed, device=self.device,
                           eval_every=0, progress=self.progress, compile=self.compile)


def _targets(model: nn.Module, target: str) -> dict[str, nn.Module]:
    kinds = PRUNABLE if target == "conv_linear" else (nn.Linear,)
    found = {n: m for n, m in model.named_modules() if isinstance(m, kinds) and n}
    if not found:
        raise ValueError(f"lora_ft: {type(model).__name__} has no {target} layer for LoRA")
    return found


@register_method(LoRAFTConfig)
def lora_ft(model: nn.Module, split: ForgetSplit, config: LoRAFTConfig) -> UnlearnResult:
    """Fine-tune on the retain set through LoRA adapters (peft); merge keeps zeros at zero."""
    from peft import LoraConfig, get_peft_model

    check_split(split, "lora_ft", needs_forget=False)
    torch.manual_seed(config.seed)
    targets = _targets(model, config.target)
    for mod in targets.values():  # peft must see plain weights: fold any pruning mask in
        if torch_prune.is_pruned(mod) and hasattr(mod, "weight_orig"):
            torch_prune.remove(mod, "weight")
    support: dict[str, Tensor] = {n: m.weight.detach() != 0 for n, m in targets.items()}
    before = {n: m.weight.detach().clone() for n, m in targets.items()}
    grad_flags = {n: p.requires_grad for n, p in model.named_parameters()}
    lcfg = LoraConfig(r=int(config.rank), lora_alpha=config.lora_alpha,
                      lora_dropout=config.lora_dropout, target_modules=list(targets))
    peft_model = get_peft_model(model, lcfg)
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    train(peft_model, split.retain, config.train_config(), eval_on={})
    merged = peft_model.merge_and_unload()
    layers = dict(merged.named_modules())
    dropped2 = total2 = 0.0
    with torch.no_grad():
        for n, keep in support.items():
            w = layers[n].weight
            delta = w - before[n]
            total2 += float(delta.pow(2).sum())
            dropped2 += float(delta[~keep].pow(2).sum())
            w.mul_(keep.to(w.dtype))
    for n, p in merged.named_parameters():
        p.requires_grad_(grad_flags.get(n, True))
    merged.eval()
    info = {
        "lora_params": trainable,
        "lora_layers": len(targets),
        "merge_dropped_fraction": math.sqrt(dropped2 / total2) if total2 > 0 else 0.0,
        "steps_samples": config.epochs * len(split.retain),
    }
    return UnlearnResult(merged, "lora_ft", config, info=info)
