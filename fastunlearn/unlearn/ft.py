"""``ft``: fine-tune the trained model on the retain set only (catastrophic forgetting).

``schedule``: ``"cosine"`` (default: the lr decays from ``lr`` to 0 over all the steps) or
``"constant"`` (``lr`` at every step) — the reference (OPTML-Group/Unlearn-Saliency,
``Classification/unlearn/FT.py``) is constant for its ≤ 10-epoch runs (its MultiStepLR
milestones 91, 136 are never reached), so ``schedule="constant"`` reproduces it. Cosine stays
the default: it kept 0.6 retain / 0.4 test accuracy points more than constant on
fashion-mnist-10k random 10 % (3 seeds; the side-by-side run: 1.4–2.9 points) —
docs/methods.md, "Reference fidelity".

With ``mask="salun"`` or ``mask="ig"`` only the weights most salient for the forget set
(:func:`fastunlearn.unlearn.masks.compute_saliency`, ``mask_sparsity`` of them frozen) are
updated — the seed projects' "FT + saliency" variants.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import nn

from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.rng import seed_everything
from fastunlearn.engine.runner import StepRunner, check_schedule, run_epochs, steps_per_epoch
from fastunlearn.train import TrainConfig, train
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split, method_device
from fastunlearn.unlearn.masks import check_mask_option, make_sgd, mask_density, masks_for_config


@dataclass
class FTConfig(UnlearnConfig):
    """Fine-tune recipe. Default (Fashion-MNIST ``small_cnn``): 2 epochs, SGD lr 0.06 (re-tuned on
    the validation split: docs/tuning.md), momentum 0.9, wd 5e-4, cosine schedule
    (``schedule="constant"``: the SalUn reference's constant lr). ``mask``: None,
    ``"salun"`` or ``"ig"``; ``mask_sparsity``: fraction of weights frozen by the mask.

    Measured on Fashion-MNIST ``small_cnn`` (class "Coat" / 10% random): forget 0.0 / 93.2%,
    retain 96.4 / 95.4%, test 93.9 / 92.6%, 0.36× / 0.27× the retrain time
    (docs/methods.md).
    """

    method = "ft"
    epochs: int = 2
    lr: float = 0.06
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"
    mask: str | None = None
    mask_sparsity: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.epochs < 1:
            raise ValueError("ft: epochs must be ≥ 1")
        check_schedule("ft", self.schedule)
        self.train_config()
        check_mask_option("ft", self.mask, self.mask_sparsity)

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
            compile=self.compile,
        )


@register_method(FTConfig)
def ft(model: nn.Module, split: ForgetSplit, config: FTConfig) -> UnlearnResult:
    """Fine-tune on the retain set (forgetting by not seeing the forget data)."""
    check_split(split, "ft", needs_forget=config.mask is not None)
    info: dict = {"steps_samples": config.epochs * len(split.retain)}
    if config.mask is None:
        train(model, split.retain, config.train_config(), eval_on={})
        return UnlearnResult(model, "ft", config, info=info)
    device = method_device(model, config)
    masks = masks_for_config(model, split.forget, config)
    gen = seed_everything(config.seed)
    opt = make_sgd(
        model, config.lr, momentum=config.momentum, weight_decay=config.weight_decay, masks=masks
    )
    total = config.epochs * steps_per_epoch(len(split.retain), config.batch_size)
    runner = StepRunner(
        opt, config.lr, total, schedule=config.schedule, desc="ft", progress=config.progress,
        compile=config.compile,
    )
    run_epochs(
        model, split.retain, lambda m, x, y: F.cross_entropy(m(x), y), runner,
        config.epochs, config.batch_size, gen, device,
    )
    runner.close()
    model.eval()
    info.update(mask=config.mask, mask_density=mask_density(masks))
    return UnlearnResult(model, "ft", config, info=info)
