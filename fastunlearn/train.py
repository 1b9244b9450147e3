"""``fu.train``: the original model (all train data), the retrained "gold" model (retain set
only) and fine-tuning style unlearning — on the engine's step runner
(:mod:`fastunlearn.engine`), like every unlearning method.

SGD or AdamW, cosine or constant schedule with optional warm-up, weight decay, label smoothing,
AMP on CUDA, a tqdm bar, seed control (the caller's global RNG is left as it was) and
per-epoch evaluation.

``compile=True | "auto"`` runs the forward through ``torch.compile`` (see
:mod:`fastunlearn.kernels.compile`): the module is compiled on the first batch, inside the
call, so compilation counts in its cold time; the returned model is the original module.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from fastunlearn._device import resolve_device, synchronize
from fastunlearn.data.base import DataPart
from fastunlearn.engine.optim import OPTIMIZERS, build_optimizer
from fastunlearn.engine.rng import seeded
from fastunlearn.engine.runner import SCHEDULES, StepRunner, run_epochs, steps_per_epoch
from fastunlearn.inference import accuracy
from fastunlearn.kernels.compile import check_compile_mode

log = logging.getLogger(__name__)

_OPTIMIZERS = OPTIMIZERS
_SCHEDULES = SCHEDULES


@dataclass
class TrainConfig:
    """Training hyper-parameters. Defaults train ``small_cnn`` on Fashion-MNIST to ≈ 91 % test
    accuracy in a few epochs on CPU."""

    epochs: int = 5
    batch_size: int = 128
    lr: float = 0.05
    optimizer: str = "sgd"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    eval_every: int = 1
    progress: bool = True
    compile: bool | str = False

    def __post_init__(self) -> None:
        if int(self.epochs) != self.epochs or self.epochs < 1:
            raise ValueError(f"epochs must be a positive integer, got {self.epochs}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {self.batch_size}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if self.weight_decay < 0:
            raise ValueError(f"weight_decay must be ≥ 0, got {self.weight_decay}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {self.momentum}")
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.warmup_epochs < 0 or self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs], got {self.warmup_epochs}")
        check_compile_mode(self.compile, "TrainConfig")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class TrainHistory:
    """Per-epoch records: loss, train accuracy, eval accuracies, seconds; ``compiled`` says
    whether the forward ran through ``torch.compile``."""

    epochs: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    compiled: bool = False
    confidence: torch.Tensor | None = None
    """Per training example (in the order of the part trained on), its mean true-class
    probability over the epochs, from the training batches' own forward passes (no extra pass):
    the learning-event memorization proxy of Zhao et al. 2024
    (:func:`fastunlearn.evaluate.memorization.proxy_scores`)."""


def nonfinite_tensors(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``model`` holding NaN or inf (a
    diverged model; empty when every weight is finite)."""
    return [name for name, t in model.state_dict().items()
            if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_model_fits(model: nn.Module, part: DataPart, where: str) -> None:
    """ValueError unless ``model`` outputs one logit per class of ``part``'s dataset (one
    forward pass of a zero image of the dataset's shape — no sample is read, so data-free
    methods stay data-free — in eval mode, every submodule's mode restored)."""
    from fastunlearn._device import model_device
    from fastunlearn._modes import eval_mode

    if len(part) == 0:
        return
    shape = tuple(int(d) for d in part._images.shape[1:])
    x = torch.zeros((1, *shape), device=model_device(model))
    with eval_mode(model), torch.no_grad():
        width = model(x).shape[1]
    c = part.dataset.num_classes
    if width != c:
        raise ValueError(
            f"{where}: the model outputs {width} classes, but {part.dataset.name!r} has {c}; "
            "build it for this dataset with fu.create_model(name, data)"
        )


def check_split_arg(split: object, where: str) -> None:
    """TypeError unless ``split`` is a :class:`~fastunlearn.data.ForgetSplit` (a dataset or a
    DataPart is the usual mistake: the split says what is forgotten and what is kept)."""
    from fastunlearn.data.splits import ForgetSplit

    if not isinstance(split, ForgetSplit):
        raise TypeError(
            f"{where} needs a ForgetSplit (what to forget and what to keep), got "
            f"{type(split).__name__}; build one with fu.forget_classes(data, [...]), "
            "fu.forget_random(data, count=...) or fu.forget_indices(data, ids)"
        )


def check_part_arg(part: object, where: str) -> None:
    """TypeError unless ``part`` is a :class:`DataPart` (what to train on)."""
    if isinstance(part, DataPart):
        return
    hint = ""
    if type(part).__name__ == "ForgetSplit":
        hint = "; pass split.full (the original model) or split.retain (the retrained model)"
    elif hasattr(part, "train") and hasattr(part, "num_classes"):
        hint = "; pass data.train"
    raise TypeError(f"{where} trains on a DataPart, got {type(part).__name__}{hint}")


def train(
    model: nn.Module,
    data: DataPart,
    config: TrainConfig | None = None,
    *,
    eval_on: dict[str, DataPart] | None = None,
) -> nn.Module:
    """Train ``model`` in place on ``data`` and return it.

    ``eval_on`` maps names to parts evaluated every ``config.eval_every`` epochs (default: the
    dataset's test set). The history is attached as ``model.fastunlearn_history``.
    With ``config.compile`` the forward of batches shaped like the first one runs compiled;
    ``model`` itself (never the compiled wrapper) is trained and returned.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"train needs an nn.Module, got {type(model).__name__}")
    check_part_arg(data, "train")
    if config is not None and not isinstance(config, TrainConfig):
        raise TypeError(f"train needs a TrainConfig, got {type(config).__name__} (unlearning "
                        "configs go to fu.unlearn)")
    config = config or TrainConfig()
    if len(data) == 0:
        raise ValueError("cannot train on an empty dataset part")
    check_model_fits(model, data, "train")
    device = resolve_device(config.device)
    model.to(device)
    if eval_on is None:
        eval_on = {"test": data.dataset.test}
    with seeded(config.seed, device) as gen:  # the caller's global RNG is restored afterwards
        history = _train_epochs(model, data, config, eval_on, device, gen)
    model.eval()
    model.fastunlearn_history = history  # type: ignore[attr-defined]
    return model


class _EpochStats:
    """The per-batch loss of :func:`train` (cross-entropy), keeping the epoch's summed loss
    and correct count on the device (no host sync per step)."""

    def __init__(self, label_smoothing: float, device: torch.device, n: int) -> None:
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        self.device = device
        # the learning-event proxy: each example's true-class probability, summed over epochs
        self.confidence = torch.zeros(n, device=device)
        self.pos: torch.Tensor | None = None
        self.reset()

    def positions(self, pos: torch.Tensor) -> None:
        self.pos = pos.to(self.device, non_blocking=True)

    def reset(self) -> None:
        self.loss_sum = torch.zeros((), device=self.device)
        self.correct = torch.zeros((), device=self.device, dtype=torch.long)
        self.seen = 0

    def __call__(self, net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = net(x)
        loss = self.loss_fn(out, y)
        self.loss_sum += loss.detach() * len(y)
        self.correct += (out.detach().argmax(1) == y).sum()
        self.seen += len(y)
        if self.pos is not None:
            p = torch.softmax(out.detach().float(), 1).gather(1, y[:, None])[:, 0]
            self.confidence.index_add_(0, self.pos, p)
            self.pos = None
        return loss


def _train_epochs(model: nn.Module, data: DataPart, config: TrainConfig,
                  eval_on: dict[str, DataPart], device: torch.device,
                  gen: torch.Generator) -> TrainHistory:
    opt = build_optimizer(
        model.parameters(), config.optimizer, config.lr, config.momentum, config.weight_decay
    )
    per_epoch = steps_per_epoch(len(data), config.batch_size)
    total = per_epoch * config.epochs
    runner = StepRunner(
        opt, config.lr, total, schedule=config.schedule,
        warmup_steps=round(config.warmup_epochs * per_epoch), desc=f"train {data.name}",
        progress=config.progress, compile=config.compile, amp=config.amp,
        check_finite=False,  # like any plain loop: no host sync per step (a diverged model is
    )                        # caught by the callers' finite-weights checks)
    stats = _EpochStats(config.label_smoothing, device, len(data))
    history = TrainHistory()
    t0 = time.perf_counter()
    for epoch in range(config.epochs):
        stats.reset()
        run_epochs(model, data, stats, runner, 1, config.batch_size, gen, device,
                   positions=stats.positions)
        record = {
            "epoch": epoch + 1,
            "loss": stats.loss_sum.item() / stats.seen,
            "train_acc": 100.0 * stats.correct.item() / stats.seen,
        }
        if config.eval_every and (
            (epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs
        ):
            for name, part in eval_on.items():
                record[f"{name}_acc"] = accuracy(model, part)
        synchronize(device)
        record["seconds"] = time.perf_counter() - t0
        history.epochs.append(record)
        runner.bar.set_postfix({k: round(v, 3) for k, v in record.items() if k != "epoch"})
        log.info("epoch %d/%d %s", epoch + 1, config.epochs, record)
    history.compiled = runner.compiled
    history.confidence = (stats.confidence / config.epochs).cpu()
    runner.close()
    history.seconds = time.perf_counter() - t0
    return history
