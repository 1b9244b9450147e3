"""``zero_shot``: data-free class unlearning from class impressions (no training sample is read).

1. **Class impressions** (Nayak et al., "Zero-Shot Knowledge Distillation", 2019): for every
   class ``c``, ``impressions_per_class`` vectors start as Gaussian noise and are optimised
   (Adam, ``impression_steps``) to raise the model's softmax for ``c`` up to
   ``impression_confidence`` τ: minimise ``max(CE(f(x), c) + log τ, 0) + l2 · mean(x²)`` (a
   fully saturated impression would give the forget term no gradient). With
   ``space="features"`` (default) they live at the input of the final linear layer — the
   *responsive layer* — and are kept non-negative (``nonneg_features``, as after a ReLU); with
   ``space="input"`` they are images in normalised pixel space, clamped to the valid range.
2. **NegGrad+-style unlearning on impressions only**: ``epochs`` passes of SGD on
   ``β · KL(f_orig ‖ f)(retain impressions) + (1 − β) · L_forget(forget impressions)``. The
   retain term keeps the original outputs on the other classes' impressions; ``forget_loss``:

   * ``"relabel"`` (default) — KL to the original's own prediction with the forgotten classes
     removed and the rest renormalised (bounded: the model learns what it would have said
     without those classes);
   * ``"margin"`` — hinge ``max(z_c − max_{j∉forget} z_j + 1, 0)``;
   * ``"neggrad"`` — plain gradient ascent ``−CE`` (NegGrad+ as published; unbounded — on
     Fashion-MNIST it either stops before real forget data is forgotten or collapses).

   Feature impressions train only the final layer; input impressions train the whole network.
   Every ``check_every`` steps the run stops when the retain impressions' accuracy falls under
   ``collapse_fraction`` × its start (restoring the last healthy weights) or, when
   ``target_forget_acc`` is set, when the forget impressions' accuracy reaches it.

Only the dataset's *shape* (classes, channels, image size, normalisation) is used; the forget
split only names the classes. Class forgetting only. The final layer is found by
:func:`fastunlearn.models.head.find_head` (``head=`` names it). On a user split (``mean`` /
``std`` None: the user's transforms normalised the data, in a range fastunlearn does not know)
input-space impressions are not clamped.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fastunlearn.data.base import ImageDataset
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.engine.guards import ForgetGuard, check_guard_fields, finish_guarded
from fastunlearn.engine.rng import seed_everything
from fastunlearn.engine.runner import StepRunner
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, method_device
from fastunlearn.unlearn.fisher import _example_input, classifier_layer

__all__ = ["ZeroShotConfig", "class_impressions", "zero_shot"]

log = logging.getLogger(__name__)

_SPACES = ("features", "input")
_FORGET_LOSSES = ("relabel", "margin", "neggrad")


@dataclass
class ZeroShotConfig(UnlearnConfig):
    """Zero-shot recipe (Fashion-MNIST / digits ``small_cnn``): 32 feature-space impressions
    per class (100 Adam steps, lr 0.1, up to 90 % confidence), then 30 passes of SGD (lr 0.1,
    momentum 0.9, batch 64, β = 0.9) with the "relabel" forget loss on the final layer. For
    ``space="input"`` use ``lr=0.01``, ``epochs=5`` (whole network, ~100× the cost).

    The lr was 0.5, which collapses an under-trained model: a 3-epoch digits ``small_cnn``
    went from 85.7 % to 19.4 % retain accuracy (class "3"; class "5": 84.1 → 47.1 %). At 0.1:
    85.5 % and 83.9 %, and a 3-epoch fashion-mnist-10k ``small_cnn`` 88.8 → 90.6 % (class
    "Coat"), the forget class at 0 % in all three.

    ``compile`` has no effect (an info line says so): the default trains one linear layer on
    a few hundred feature vectors, and with ``space="input"`` most of the time goes into
    synthesising the impressions (input gradients of the frozen model), not training steps.
    ``head``: the classifier's module name when :func:`fastunlearn.models.head.find_head`'s
    rule does not find it."""

    method = "zero_shot"
    epochs: int = 30
    lr: float = 0.1
    batch_size: int = 64
    momentum: float = 0.9
    beta: float = 0.9
    space: str = "features"
    forget_loss: str = "relabel"
    impressions_per_class: int = 32
    impression_steps: int = 100
    impression_lr: float = 0.1
    impression_l2: float = 1e-3
    impression_confidence: float = 0.9
    nonneg_features: bool = True
    target_forget_acc: float | None = None
    collapse_fraction: float = 0.5
    check_every: int = 1
    head: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head is not None and (not isinstance(self.head, str) or not self.head):
            raise ValueError(f"zero_shot: head must be a module name or None, got {self.head!r}")
        if self.space not in _SPACES:
            raise ValueError(f"zero_shot: space must be one of {_SPACES}, got {self.space!r}")
        if self.forget_loss not in _FORGET_LOSSES:
            raise ValueError(f"zero_shot: forget_loss must be one of {_FORGET_LOSSES}, got "
                             f"{self.forget_loss!r}")
        if not 0 <= self.beta <= 1:
            raise ValueError(f"zero_shot: beta must be in [0, 1], got {self.beta}")
        if self.impressions_per_class < 1 or self.impression_steps < 0:
            raise ValueError("zero_shot: impressions_per_class must be ≥ 1 and "
                             "impression_steps ≥ 0")
        if not (self.impression_lr > 0 and math.isfinite(self.impression_lr)):
            raise ValueError(f"zero_shot: impression_lr must be positive, got {self.impression_lr}")
        if not 0 < self.impression_confidence < 1:
            raise ValueError("zero_shot: impression_confidence must be in (0, 1), got "
                             f"{self.impression_confidence}")
        if self.impression_l2 < 0:
            raise ValueError(f"zero_shot: impression_l2 must be ≥ 0, got {self.impression_l2}")
        # data-free: its guard probes the impressions, so "auto" (a validation target) has no
        # meaning here
        check_guard_fields("zero_shot", 1, self.check_every, self.collapse_fraction,
                           self.target_forget_acc, allow_auto=False)


def _pixel_range(data: ImageDataset,
                 device: torch.device) -> tuple[Tensor, Tensor] | tuple[None, None]:
    """The normalised image of pixel values 0 and 1; (None, None) for a user dataset (its own
    normalisation: no known range, no clamping)."""
    if data.mean is None or data.std is None:
        return None, None
    m = torch.tensor(data.mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(data.std, device=device).view(1, -1, 1, 1)
    return (0 - m) / s, (1 - m) / s


def class_impressions(
    model: nn.Module, data: ImageDataset, config: ZeroShotConfig, device: torch.device,
    generator: torch.Generator, head: nn.Linear | None = None,
) -> tuple[Tensor, Tensor]:
    """``(impressions, labels)``: ``impressions_per_class`` synthetic samples per class, in
    normalised input space (``space="input"``) or at the final layer's input (``"features"``).
    Reads only the dataset's shape and normalisation, never its samples. ``head``: the final
    layer (default: found by :func:`classifier_layer`)."""
    k, c = config.impressions_per_class, data.num_classes
    labels = torch.arange(c, device=device).repeat_interleave(k)
    if head is None:
        example = torch.zeros(1, data.channels, *data.image_size)
        head = classifier_layer(model, config.head, example=example)
    lo: Tensor | None
    hi: Tensor | None
    if config.space == "input":
        shape: tuple[int, ...] = (k * c, data.channels, *data.image_size)
        lo, hi = _pixel_range(data, device)
        forward = model
    else:
        shape = (k * c, head.in_features)
        lo, hi = (torch.tensor(0.0, device=device) if config.nonneg_features else None), None
        forward = head
    x = torch.randn(shape, generator=generator).to(device)
    if lo is not None or hi is not None:
        x.clamp_(min=lo, max=hi)
    x.requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.impression_lr)
    ce_stop = -math.log(config.impression_confidence)
    was = model.training
    model.eval()
    frozen = [p for p in model.parameters() if p.requires_grad]
    for p in frozen:
        p.requires_grad_(False)
    runner = StepRunner(opt, None, config.impression_steps, desc="zero_shot impressions",
                        progress=False, check_finite=False)
    try:
        for _ in range(config.impression_steps):
            ce = F.cross_entropy(forward(x), labels, reduction="none")
            runner.step((ce - ce_stop).clamp_min(0).mean()
                        + config.impression_l2 * x.pow(2).mean())
            with torch.no_grad():
                if lo is not None or hi is not None:
                    x.clamp_(min=lo, max=hi)
    finally:
        runner.close()
        for p in frozen:
            p.requires_grad_(True)
        model.train(was)
    return x.detach(), labels


@torch.no_grad()
def _acc(fn: nn.Module, x: Tensor, y: Tensor) -> float:
    return 100.0 * (fn(x).argmax(1) == y).float().mean().item() if len(y) else math.nan


@register_method(ZeroShotConfig)
def zero_shot(model: nn.Module, split: ForgetSplit, config: ZeroShotConfig) -> UnlearnResult:
    """Data-free class unlearning: NegGrad+-style updates on synthesised class impressions."""
    if split.kind != "class":
        raise ValueError("zero_shot forgets whole classes only (it never sees the data); "
                         "use forget_classes(...)")
    if config.compile is not False:
        log.info("zero_shot: compile=%r has no effect (see ZeroShotConfig)", config.compile)
    device = method_device(model, config)
    head = classifier_layer(model, config.head, example=_example_input(split))
    gen = seed_everything(config.seed)
    imps, labels = class_impressions(model, split.data, config, device, gen, head)
    is_forget = torch.isin(labels, torch.tensor(split.forget_class_ids, device=device))
    xf, yf = imps[is_forget], labels[is_forget]
    xr, yr = imps[~is_forget], labels[~is_forget]
    fn: nn.Module = model if config.space == "input" else head
    with torch.no_grad():
        fn.eval()
        teacher = F.log_softmax(fn(xr), dim=1)  # the original's outputs on retain impressions
        forget_ids = torch.tensor(split.forget_class_ids, device=device)
        relabel = fn(xf).index_fill(1, forget_ids, float("-inf")).softmax(1)
    trainable = [p for p in fn.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"zero_shot: no trainable weights in its {config.space!r} space (the "
                         "classifier is frozen); unfreeze it or use space='input'")
    opt = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum)
    model.eval()
    start_retain, start_forget = _acc(fn, xr, yr), _acc(fn, xf, yf)
    # the engine's guard on the impressions: retain collapse restores, the target stops
    guard = ForgetGuard(fn, (xr, yr), (xf, yf), collapse_fraction=config.collapse_fraction,
                        target=config.target_forget_acc)
    nb = max(1, math.ceil(len(yr) / config.batch_size))
    bf = max(1, math.ceil(len(yf) / nb))
    runner = StepRunner(opt, config.lr, config.epochs * nb, desc="zero_shot",
                        progress=config.progress, callbacks=[guard],
                        check_every=config.check_every)
    fn.train()
    for _ in range(config.epochs):
        order_r = torch.randperm(len(yr), generator=gen).to(device)
        order_f = torch.randperm(len(yf), generator=gen).to(device)
        for b in range(nb):
            ir = order_r[b * config.batch_size : (b + 1) * config.batch_size]
            jf = order_f[(b * bf) % len(yf) :][:bf]
            keep = F.kl_div(F.log_softmax(fn(xr[ir]), 1), teacher[ir], log_target=True,
                            reduction="batchmean")
            out_f = fn(xf[jf])
            if config.forget_loss == "neggrad":
                away = -F.cross_entropy(out_f, yf[jf])
            elif config.forget_loss == "margin":
                other = out_f.index_fill(1, forget_ids, float("-inf")).amax(1)
                own = out_f.gather(1, yf[jf, None]).squeeze(1)
                away = (own - other + 1.0).clamp_min(0).mean()
            else:
                away = F.kl_div(F.log_softmax(out_f, 1), relabel[jf], reduction="batchmean")
            runner.step(config.beta * keep + (1 - config.beta) * away)
            if runner.stopped:
                break
        if runner.stopped:
            break
    guarded = finish_guarded(fn, runner, guard, "zero_shot")
    model.eval()
    info = {
        "impressions": len(labels),
        "space": config.space,
        "steps": guarded["steps"],
        "stop_reason": guarded["stop_reason"],
        "diverged": guarded["diverged"],
        "impressions_retain_acc_start": start_retain,
        "impressions_forget_acc_start": start_forget,
        "impressions_retain_acc": _acc(fn, xr, yr),
        "impressions_forget_acc": _acc(fn, xf, yf),
    }
    return UnlearnResult(model, "zero_shot", config, info=info)
