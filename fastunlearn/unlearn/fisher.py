"""``fisher``: Fisher forgetting (Golatkar, Achille & Soatto, "Eternal Sunshine of the Spotless
Net", CVPR 2020) as the SalUn repository runs it — no training epochs.

Reference code: OPTML-Group/Unlearn-Saliency, ``Classification/unlearn/fisher.py``
(``fisher_new`` = ``hessian`` + ``get_mean_var``).

1. **Fisher** (``hessian``), ``estimator="batch"``: the model in eval mode, the retain data in
   unshuffled batches of ``batch_size`` (32), and for every label ``c`` of the ``C`` classes the
   gradient of the batch-mean cross-entropy *towards* ``c``, squared and weighted by the batch's
   mean predicted probability of ``c``, averaged over the ``B`` batches:

       F = (1/B) Σ_b Σ_c p̄_b(c) · (∇θ mean_{i∈b} CE(f(x_i), c))²,   p̄_b(c) = mean_{i∈b} p(c | x_i).

2. **Variance** (``get_mean_var``), per parameter tensor:
   ``v = min(1/(F + 1e-8), max_var)`` (1e3); for the classifier layer (weight and bias)
   ``v = min(v, head_max_var)`` (1e2); ``v = α · v``; for tensors of 2+ dimensions ``v`` is
   averaged over dimension 1 (a linear layer's inputs, a conv layer's input channels — one
   variance per output unit and kernel position); for class forgetting the forgotten classes'
   rows of the classifier get mean 0 and variance ``forget_row_var`` (1e-4, not scaled by α);
   then the classifier's variance and that of every 1-D tensor (biases, norm-layer weights)
   is multiplied by 10.
3. **Noise**: ``θ ← μ + sqrt(v) · ε``, ``ε ~ N(0, I)``, ``μ`` = the trained weights (0 on the
   forgotten rows).

Where this still differs from the reference code:

* The classifier layer is found by identity (:func:`classifier_layer`, the rule of
  :func:`fastunlearn.models.head.find_head`, or ``head=`` a module name); the reference treats
  every tensor whose first dimension equals the number of classes as "last layer" (a conv
  layer with ``C`` output channels would be caught too).
* The forgotten rows are zeroed for every class-forgetting split (``zero_forget_head``); the
  reference does it only for its full-class CIFAR-10 / CIFAR-100 settings (4,500 / 450
  forgotten samples). ``forget_row_var=0`` makes those rows exactly zero and noise-free.
* The Fisher is estimated on ``num_samples`` (1,024) seeded random retain samples (in index
  order); the reference reads the whole retain set (``num_samples=0``) — ``C`` backward passes
  per batch of 32 over every retain sample, on Fashion-MNIST roughly ten training epochs'
  worth of backward passes.
* ``α`` defaults to 1e-6 (the SalUn parser's shared ``--alpha`` default of 0.2 is the
  noise scale of other methods; with it the noise swamps every weight).
* ``estimator="per_sample"`` keeps the earlier estimator (mean per-sample diagonal Fisher
  with ``labels`` drawn from the model, :func:`mean_fisher`); not the reference.
* The noise is drawn from a local generator seeded by ``config.seed``, on the CPU.

Random-sample forgetting only gets the noise (Fisher forgetting is weak there by design).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from fastunlearn._modes import eval_mode
from fastunlearn.data.base import DataPart
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.kernels.fisher import LABEL_MODES, fisher_diagonal
from fastunlearn.models.head import find_head
from fastunlearn.unlearn._registry import register_method
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult, check_split, method_device

__all__ = [
    "FisherConfig", "classifier_layer", "expected_batch_fisher", "fisher", "fisher_variances",
    "mean_fisher",
]

log = logging.getLogger(__name__)


def classifier_layer(
    model: nn.Module, head: str | None = None, *, example: Tensor | None = None
) -> nn.Linear:
    """The final linear layer by :func:`fastunlearn.models.head.find_head`'s rule:
    ``head`` (a module name) when given, else ``model.get_classifier()`` (timm and the small
    nets), torchvision's ``fc`` / ``classifier`` / ``heads``, else the last ``nn.Linear`` the
    forward of ``example`` reaches (the last one registered without an example)."""
    return find_head(model, head, example=example)[1]


def _example_input(split: ForgetSplit) -> Tensor:
    """One zero image of the split's shape (reads no sample): the head search's probe."""
    return torch.zeros(1, split.data.channels, *split.data.image_size)


def mean_fisher(
    model: nn.Module,
    part: DataPart,
    *,
    labels: str,
    batch_size: int,
    device: torch.device,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Mean diagonal Fisher ``(1/n) Σ_i g_i²`` of ``model`` over every sample of ``part``."""
    if len(part) == 0:
        raise ValueError(f"cannot compute a Fisher on the empty part {part.name!r}")
    total = fisher_diagonal(model, loader=part.batches(batch_size, device=device), labels=labels,
                            generator=generator)
    return {n: v / len(part) for n, v in total.items()}


_ESTIMATORS = ("batch", "per_sample")


def expected_batch_fisher(
    model: nn.Module, batches: Iterable[tuple[Tensor, Tensor]]
) -> dict[str, Tensor]:
    """The reference's ``hessian``: ``(1/B) Σ_b Σ_c p̄_b(c) (∇θ mean_{i∈b} CE(f(x_i), c))²``
    over the ``B`` batches ``(x, y)`` (``y`` unused: the expectation runs over every label),
    ``p̄_b(c)`` the batch's mean predicted probability of ``c`` (not differentiated). Float32,
    one tensor per trainable parameter; eval mode (each submodule's own mode restored)."""
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("fisher: the model has no trainable parameters")
    acc = {n: torch.zeros_like(p, dtype=torch.float32) for n, p in params.items()}
    count = 0
    with eval_mode(model), torch.enable_grad():
        for x, _ in batches:
            logits = model(x).float()
            logp = torch.log_softmax(logits, dim=1)
            weight = logp.detach().exp().mean(0)
            num_classes = logits.shape[1]
            for c in range(num_classes):
                # mean CE towards label c = −mean_i log p(c | x_i)
                loss = -logp[:, c].mean()
                grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True,
                                            retain_graph=c < num_classes - 1)
                for name, g in zip(params, grads):
                    if g is not None:
                        acc[name].add_(g.detach().float().square(), alpha=float(weight[c]))
            count += 1
    if count == 0:
        raise ValueError("fisher: no batches to compute a Fisher from (empty part)")
    return {n: a.div_(count) for n, a in acc.items()}


def fisher_variances(
    model: nn.Module,
    fis: dict[str, Tensor],
    *,
    alpha: float,
    max_var: float,
    head_max_var: float,
    per_unit: bool = True,
    forget_rows: list[int] | None = None,
    forget_row_var: float = 1e-4,
    head: nn.Linear | str | None = None,
) -> dict[str, Tensor]:
    """The reference's ``get_mean_var`` (variances only; the means are the weights, 0 on the
    forgotten rows): clamp ``1/(F + 1e-8)`` at ``max_var`` (classifier: ``head_max_var``),
    scale by ``alpha``, average over dim 1 for 2+-D tensors (``per_unit``), set the forgotten
    classifier rows to ``forget_row_var``, then ×10 for the classifier and every 1-D tensor.
    ``head``: the classifier module, or its name (default: :func:`classifier_layer`)."""
    if not isinstance(head, nn.Module):
        head = classifier_layer(model, head)
    head_ids = {id(getattr(head, "weight_orig", head.weight))}
    if head.bias is not None:
        head_ids.add(id(head.bias))
    out = {}
    for name, p in model.named_parameters():
        if name not in fis:
            continue
        is_head = id(p) in head_ids
        var = (1.0 / (fis[name].float() + 1e-8)).clamp(max=max_var)
        if is_head:
            var = var.clamp(max=head_max_var)
        var = alpha * var
        if per_unit and var.dim() > 1:
            var = var.mean(dim=1, keepdim=True).expand_as(var).clone()
        if is_head and forget_rows:
            var[forget_rows] = forget_row_var
        if is_head or var.dim() == 1:
            var = var * 10.0
        out[name] = var
    return out


@dataclass
class FisherConfig(UnlearnConfig):
    """Fisher-forgetting recipe (Fashion-MNIST / digits ``small_cnn``): the reference's
    expected batch Fisher (``estimator="batch"``, batches of 32) on 1,024 retain samples,
    noise scale ``alpha`` = 1e-6 on the clamped inverse (``max_var`` 1e3, classifier
    ``head_max_var`` 1e2), per-output-unit averaging, ×10 for the classifier and 1-D tensors,
    forgotten classifier rows at mean 0 / variance ``forget_row_var`` 1e-4 (class forgetting).
    No training: ``epochs`` and ``lr`` are not used, and ``compile`` has no effect (one Fisher
    pass, no training steps to compile; an info line says so). ``labels`` applies to
    ``estimator="per_sample"`` only. ``head``: the classifier's module name (e.g. ``"fc"``)
    when :func:`fastunlearn.models.head.find_head`'s rule does not find it."""

    method = "fisher"
    epochs: int = 0
    batch_size: int = 32
    alpha: float = 1e-6
    num_samples: int = 1024
    estimator: str = "batch"
    labels: str = "model"
    max_var: float = 1e3
    head_max_var: float = 1e2
    per_unit: bool = True
    zero_forget_head: bool = True
    forget_row_var: float = 1e-4
    head: str | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.head is not None and (not isinstance(self.head, str) or not self.head):
            raise ValueError(f"fisher: head must be a module name or None, got {self.head!r}")
        if not (self.alpha > 0 and math.isfinite(self.alpha)):
            raise ValueError(f"fisher: alpha must be a positive number, got {self.alpha}")
        if self.num_samples < 0:
            raise ValueError(f"fisher: num_samples must be ≥ 0 (0 = all), got {self.num_samples}")
        if self.estimator not in _ESTIMATORS:
            raise ValueError(f"fisher: estimator must be one of {_ESTIMATORS}, "
                             f"got {self.estimator!r}")
        if self.labels not in LABEL_MODES:
            raise ValueError(f"fisher: labels must be one of {LABEL_MODES}, got {self.labels!r}")
        for name in ("max_var", "head_max_var"):
            if not getattr(self, name) > 0:
                raise ValueError(f"fisher: {name} must be positive, got {getattr(self, name)}")
        if not (self.forget_row_var >= 0 and math.isfinite(self.forget_row_var)):
            raise ValueError(f"fisher: forget_row_var must be ≥ 0, got {self.forget_row_var}")


@register_method(FisherConfig)
@torch.no_grad()
def fisher(model: nn.Module, split: ForgetSplit, config: FisherConfig) -> UnlearnResult:
    """Fisher forgetting: noise scaled by the inverse retain Fisher (Golatkar et al.)."""
    check_split(split, "fisher")
    if config.compile is not False:
        log.info("fisher: compile=%r has no effect (no training steps)", config.compile)
    device = method_device(model, config)
    head = classifier_layer(model, config.head, example=_example_input(split))
    gen = torch.Generator().manual_seed(config.seed)
    part = split.retain.take(config.num_samples, seed=config.seed) if config.num_samples \
        else split.retain
    with torch.enable_grad():
        if config.estimator == "batch":
            fis = expected_batch_fisher(model, part.batches(config.batch_size, device=device))
        else:
            fis = mean_fisher(model, part, labels=config.labels, batch_size=config.batch_size,
                              device=device, generator=gen)
    forget_rows = split.forget_class_ids if split.kind == "class" and config.zero_forget_head \
        else []
    variances = fisher_variances(
        model, fis, alpha=config.alpha, max_var=config.max_var,
        head_max_var=config.head_max_var, per_unit=config.per_unit, forget_rows=forget_rows,
        forget_row_var=config.forget_row_var, head=head,
    )
    head_params = [getattr(head, "weight_orig", head.weight), head.bias]  # (pruned: weight_orig)
    noise_norm2 = 0.0
    for name, p in model.named_parameters():
        if name not in variances:
            continue
        noise = torch.randn(p.shape, generator=gen).to(p.device, p.dtype) \
            * variances[name].sqrt().to(p.device, p.dtype)
        if forget_rows and any(p is h for h in head_params):
            p[forget_rows] = 0.0
        p.add_(noise)
        noise_norm2 += float(noise.pow(2).sum())
    info = {"fisher_samples": len(part), "noise_norm": math.sqrt(noise_norm2),
            "zeroed_head_rows": len(forget_rows), "estimator": config.estimator}
    return UnlearnResult(model, "fisher", config, info=info)
