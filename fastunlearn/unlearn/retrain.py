"""``retrain``: train a fresh model from scratch on the retain set — the gold standard."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.models import model_from_spec
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split


@dataclass
class RetrainConfig(UnlearnConfig):
    """Same defaults as :class:`fastunlearn.TrainConfig` so the gold model matches the original's
    recipe: 5 epochs SGD (momentum 0.9, wd 5e-4), lr 0.05, cosine schedule."""

    method = "retrain"
    epochs: int = 5
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    label_smoothing: float = 0.0

    def train_config(self) -> TrainConfig:
        return TrainConfig(
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            schedule=self.schedule,
            label_smoothing=self.label_smoothing,
            seed=self.seed,
            device=self.device,
            eval_every=0,
            progress=self.progress,
            compile=self.compile,
        )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1:
            raise ValueError("retrain: epochs must be ≥ 1")
        self.train_config()  # validates optimizer, schedule, weight decay …


@register_method(RetrainConfig)
def retrain(model: nn.Module, split: ForgetSplit, config: RetrainConfig) -> UnlearnResult:
    """Retrain from scratch on the retain set (gold standard; slow, exact)."""
    check_split(split, "retrain", needs_forget=False)
    spec = getattr(model, "fastunlearn_spec", None)
    if spec is None:
        raise ValueError("retrain: model has no fastunlearn_spec; build it with create_model")
    torch.manual_seed(config.seed)
    fresh = model_from_spec(spec)
    train(fresh, split.retain, config.train_config(), eval_on={})
    return UnlearnResult(fresh, "retrain", config, info={"retrained_samples": len(split.retain)})
