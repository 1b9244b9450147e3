"""``ft``: fine-tune the trained model on the retain set only (catastrophic forgetting)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split


@dataclass
class FTConfig(UnlearnConfig):
    """Fine-tune recipe. Default (Fashion-MNIST ``small_cnn``): 2 epochs, SGD lr 0.02,
    momentum 0.9, wd 5e-4, cosine schedule."""

    method = "ft"
    epochs: int = 2
    lr: float = 0.02
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1:
            raise ValueError("ft: epochs must be ≥ 1")
        self.train_config()

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            seed=self.seed,
            device=self.device,
            eval_every=0,
            progress=self.progress,
        )


@register_method(FTConfig)
def ft(model: nn.Module, split: ForgetSplit, config: FTConfig) -> UnlearnResult:
    """Fine-tune on the retain set (forgetting by not seeing the forget data)."""
    check_split(split, "ft", needs_forget=False)
    train(model, split.retain, config.train_config(), eval_on={})
    return UnlearnResult(model, "ft", config, info={"steps_samples": config.epochs * len(split.retain)})
