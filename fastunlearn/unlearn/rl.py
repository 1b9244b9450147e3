"""``rl``: random labelling — fine-tune on the forget set with random wrong labels mixed with
the retain set (the RL baseline of the SalUn paper; SalUn = RL restricted to salient weights).

Each epoch every forget sample gets a fresh random label (uniform over the classes other than
its own — the SalUn code draws over all classes, which wastes 1/C of the relabels), the
relabelled forget set is concatenated with a random draw of ``retain_per_epoch`` retain samples
(all of them for None; the SalUn code uses the whole retain set, 12 000 keeps the cost near
0.1× retrain on Fashion-MNIST), shuffled, and trained on with plain cross-entropy, SGD +
momentum and a cosine schedule. ``mask="salun"|"ig"`` restricts the updates to salient
weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.train import seed_everything
from fastunlearn.unlearn._losses import (
    StepRunner,
    check_nonneg,
    check_positive_int,
    check_schedule,
    concat_parts,
    random_wrong_labels,
    relabelled,
    run_epochs,
    sample_part,
    steps_per_epoch,
)
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split, method_device
from fastunlearn.unlearn.masks import check_mask_option, make_sgd, mask_density, masks_for_config


@dataclass
class RLOptions(UnlearnConfig):
    """Options of the random-label loop, shared by ``rl``, ``salun`` and ``ig_salun``."""

    epochs: int = 2
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    retain_per_epoch: int | None = 12000

    def __post_init__(self) -> None:
        super().__post_init__()
        m = self.method
        if self.epochs < 1:
            raise ValueError(f"{m}: epochs must be ≥ 1")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"{m}: momentum must be in [0, 1), got {self.momentum}")
        check_nonneg(m, "weight_decay", self.weight_decay)
        check_schedule(m, self.schedule)
        check_positive_int(m, "retain_per_epoch", self.retain_per_epoch, allow_none=True)


@dataclass
class RLConfig(RLOptions):
    """Random-label recipe (Fashion-MNIST ``small_cnn``): 2 epochs, SGD lr 0.01, momentum 0.9,
    wd 5e-4, cosine, batch 128, 12 000 retain samples per epoch. ``mask``: None, ``"salun"``
    or ``"ig"``; ``mask_sparsity``: fraction of weights frozen by the mask.

    Measured on Fashion-MNIST ``small_cnn`` (class "Coat" / 10% random): forget 0.0 / 91.4%,
    retain 94.5 / 92.4%, test 92.8 / 90.6%, 0.12× / 0.14× the retrain time
    (docs/methods.md).
    """

    method = "rl"
    mask: str | None = None
    mask_sparsity: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        check_mask_option(self.method, self.mask, self.mask_sparsity)


def random_label_training(
    model: nn.Module, split: ForgetSplit, config: RLOptions, masks: dict | None, name: str
) -> int:
    """The RL loop (shared with ``salun`` / ``ig_salun``); returns the number of steps."""
    device = method_device(model, config)
    gen = seed_everything(config.seed)
    c = split.data.num_classes
    n_ret = len(split.retain)
    if config.retain_per_epoch is not None:
        n_ret = min(config.retain_per_epoch, n_ret)
    per_epoch = steps_per_epoch(len(split.forget) + n_ret, config.batch_size)
    opt = make_sgd(
        model, config.lr, momentum=config.momentum, weight_decay=config.weight_decay, masks=masks
    )
    runner = StepRunner(
        opt, config.lr, config.epochs * per_epoch, schedule=config.schedule, desc=name,
        progress=config.progress, compile=config.compile,
    )
    for _ in range(config.epochs):
        forget = relabelled(split.forget, random_wrong_labels(split.forget.labels, c, gen))
        part = concat_parts(forget, sample_part(split.retain, n_ret, gen), name)
        run_epochs(
            model, part, lambda m, x, y: F.cross_entropy(m(x), y), runner, 1,
            config.batch_size, gen, device,
        )
    runner.close()
    model.eval()
    return runner.steps


@register_method(RLConfig)
def rl(model: nn.Module, split: ForgetSplit, config: RLConfig) -> UnlearnResult:
    """Random labels on the forget set, trained together with retain samples."""
    check_split(split, "rl")
    masks = masks_for_config(model, split.forget, config)
    steps = random_label_training(model, split, config, masks, "rl")
    info: dict = {"steps": steps}
    if masks is not None:
        info.update(mask=config.mask, mask_density=mask_density(masks))
    return UnlearnResult(model, "rl", config, info=info)
