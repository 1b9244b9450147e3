"""Shared pieces of every unlearning method: the base config, the result, common loops."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import torch
from torch import nn

from fastunlearn._device import model_device, resolve_device
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.optim import check_sgd_options
from fastunlearn.kernels.compile import check_compile_mode


@dataclass
class UnlearnConfig:
    """Hyper-parameters every method shares. Subclasses set ``method`` and add their own.

    ``compile``: False (default), True or ``"auto"`` — run the training steps' forward through
    ``torch.compile`` (:mod:`fastunlearn.kernels.compile`); its cost lands in the cold RTE.
    ``device``: ``"auto"`` (default) runs where the model already is; a device name
    (``"cpu"``, ``"cuda:1"``) moves the model there (:func:`method_device`).
    """

    method: ClassVar[str] = ""

    epochs: int = 1
    lr: float = 0.01
    batch_size: int = 128
    seed: int = 0
    device: str = "auto"
    progress: bool = True
    compile: bool | str = False

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 0:
            raise ValueError(
                f"{self.method}: epochs must be a non-negative integer, got {self.epochs}"
            )
        # the SGD options, checked once here for every config that has them
        check_sgd_options(self.method or "UnlearnConfig", self.lr,
                          getattr(self, "momentum", 0.0), getattr(self, "weight_decay", 0.0))
        if int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise ValueError(
                f"{self.method}: batch_size must be a positive integer, got {self.batch_size}"
            )
        check_compile_mode(self.compile, self.method or "UnlearnConfig")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, **asdict(self)}


def explicit_device(config: UnlearnConfig) -> bool:
    """Whether ``config.device`` names a device (anything but ``"auto"`` / None)."""
    return config.device is not None and config.device != "auto"


def method_device(model: nn.Module, config: UnlearnConfig) -> torch.device:
    """The device a method runs ``model`` on: ``config.device`` when it names one, else
    (``"auto"``) the model's own device (its first parameter's; CPU for a model without
    any) — the model stays where the caller put it. Methods call this rather than
    ``resolve_device(config.device)``."""
    if explicit_device(config):
        return resolve_device(config.device)
    return model_device(model)


@dataclass
class UnlearnResult:
    """The unlearned model plus its cost: ``rte_s`` is the wall time of everything the method
    needed (device synchronised, evaluation excluded), ``peak_mem_mb`` the peak memory rise."""

    model: nn.Module
    method: str
    config: UnlearnConfig
    rte_s: float = 0.0
    peak_mem_mb: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "rte_s": self.rte_s,
            "peak_mem_mb": self.peak_mem_mb,
            **{k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool))},
        }


def check_split(split: ForgetSplit, method: str, *, needs_forget: bool = True) -> None:
    if needs_forget and len(split.forget) == 0:
        raise ValueError(f"{method}: the forget set is empty")
    if len(split.retain) == 0:
        raise ValueError(f"{method}: the retain set is empty")
