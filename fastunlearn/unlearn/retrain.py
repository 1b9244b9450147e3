"""``retrain``: train a fresh model from scratch on the retain set — the gold standard.

The fresh model comes from, in order: ``RetrainConfig(model_fn=...)`` (a zero-argument
factory), the model's ``fastunlearn_spec`` (models from :func:`fastunlearn.create_model`), or —
for any other ``nn.Module`` — a deep copy re-initialised through every submodule's
``reset_parameters`` (logged, with any parameter that no ``reset_parameters`` covers).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.models import model_from_spec
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._losses import random_init_copy
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split

log = logging.getLogger(__name__)


@dataclass
class RetrainConfig(UnlearnConfig):
    """Same defaults as :class:`fastunlearn.TrainConfig` so the gold model matches the original's
    recipe: 5 epochs SGD (momentum 0.9, wd 5e-4), lr 0.05, cosine schedule.

    ``model_fn``: a zero-argument callable returning a freshly initialised model of the same
    architecture (called with torch's RNG seeded by ``seed`` inside ``fork_rng``: the same
    initial weights every time, the caller's RNG state untouched); None = rebuild from the
    model's ``fastunlearn_spec``, or re-initialise a copy via ``reset_parameters``."""

    method = "retrain"
    epochs: int = 5
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    label_smoothing: float = 0.0
    model_fn: Callable[[], nn.Module] | None = None

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
        if self.model_fn is not None and not callable(self.model_fn):
            raise ValueError(f"retrain: model_fn must be a callable returning a fresh model, "
                             f"got {type(self.model_fn).__name__}")
        self.train_config()  # validates optimizer, schedule, weight decay …

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        fn = self.model_fn
        if fn is not None:  # JSON-friendly: the factory's qualified name
            out["model_fn"] = f"{getattr(fn, '__module__', '?')}." \
                              f"{getattr(fn, '__qualname__', type(fn).__name__)}"
        return out


def _uncovered_parameters(model: nn.Module) -> list[str]:
    """Names of parameters held directly by a module without ``reset_parameters`` (a
    re-initialisation through ``reset_parameters`` leaves them as trained)."""
    out = []
    for mname, m in model.named_modules():
        if callable(getattr(m, "reset_parameters", None)):
            continue
        out += [f"{mname}.{p}" if mname else p for p, _ in m.named_parameters(recurse=False)]
    return out


def fresh_model(model: nn.Module, config: RetrainConfig) -> tuple[nn.Module, str]:
    """A freshly initialised model of ``model``'s architecture and how it was made
    (``"model_fn"``, ``"spec"`` or ``"reset_parameters"``)."""
    if config.model_fn is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            fresh = config.model_fn()
        if not isinstance(fresh, nn.Module):
            raise TypeError(f"retrain: model_fn returned {type(fresh).__name__}, not an "
                            "nn.Module")
        if fresh is model:
            raise ValueError("retrain: model_fn returned the model being unlearned; it must "
                             "build a new one")
        return fresh, "model_fn"
    spec = getattr(model, "fastunlearn_spec", None)
    if spec is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed)
            return model_from_spec(spec), "spec"
    fresh = random_init_copy(model, config.seed)
    left = _uncovered_parameters(fresh)
    log.info("retrain: %s has no fastunlearn_spec and no model_fn was given; re-initialised a "
             "copy through reset_parameters", type(model).__name__)
    if left:
        log.warning("retrain: %d parameter(s) have no reset_parameters and keep their trained "
                    "values (first: %s); pass RetrainConfig(model_fn=...) to build a fresh "
                    "model", len(left), left[0])
    return fresh, "reset_parameters"


@register_method(RetrainConfig)
def retrain(model: nn.Module, split: ForgetSplit, config: RetrainConfig) -> UnlearnResult:
    """Retrain from scratch on the retain set (gold standard; slow, exact)."""
    check_split(split, "retrain", needs_forget=False)
    fresh, how = fresh_model(model, config)
    train(fresh, split.retain, config.train_config(), eval_on={})
    info: dict[str, Any] = {"retrained_samples": len(split.retain), "fresh_model": how}
    if how == "reset_parameters":
        info["not_reinitialised"] = len(_uncovered_parameters(fresh))
    return UnlearnResult(fresh, "retrain", config, info=info)
