"""Per-sample gradients and the diagonal of the Fisher information — reference implementations.

Public API (stable names; a later kernels issue adds fast paths behind the same signatures):

* :func:`per_sample_grads` ``(model, x, y, loss="ce") -> {name: Tensor[B, *param.shape]}`` —
  ``torch.func``: ``vmap(grad(loss ∘ functional_call))`` over the batch.
* :func:`fisher_diagonal` ``(model, x, y, *, loader=None, labels="data") -> {name: Tensor}`` —
  ``F = Σ_i (∂ℓ_i/∂θ)²`` summed over every sample (not averaged), accumulated micro-batch by
  micro-batch so memory stays bounded by ``chunk_size`` per-sample gradients.
* :func:`torch_fisher_diagonal_loop` — the micro-batch (batch size 1) reference: one ordinary
  ``backward()`` per sample. Obviously correct, but slow; the tests compare against it.
* :func:`torch_per_sample_grads_loop` — the same loop returning the per-sample gradients.

Conventions shared by all four:

* ``ℓ_i`` is the **sum-reduced** loss of sample ``i`` alone (cross-entropy for ``loss="ce"``,
  or ``loss(logits[i:i+1], y[i:i+1])`` for a callable), so batch size never rescales it.
* The model runs in **eval mode** (batch norm uses running statistics, dropout is off) and its
  training flag is restored afterwards; only parameters with ``requires_grad`` are reported,
  keyed by ``model.named_parameters()`` names.
* ``labels``: ``"data"`` — the given labels (empirical Fisher); ``"model"`` — one label per
  sample drawn from the model's own softmax (true Fisher, Monte-Carlo with one draw; seeded by
  ``generator``); ``"expected"`` — the exact expectation over classes,
  ``Σ_c p_c(x_i) (∂(−log p_c(x_i))/∂θ)²`` (C times the work).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, vmap

from fastunlearn._modes import eval_mode

__all__ = [
    "LABEL_MODES",
    "fisher_diagonal",
    "per_sample_grads",
    "torch_fisher_diagonal_loop",
    "torch_per_sample_grads_loop",
]

log = logging.getLogger(__name__)

LossFn = Callable[[Tensor, Tensor], Tensor]
LABEL_MODES = ("data", "model", "expected")
_NO_VMAP: set[type] = set()  # model classes whose forward vmap rejects (warned once each)


def _loss_fn(loss: str | LossFn) -> LossFn:
    if callable(loss):
        return loss
    if loss == "ce":
        return lambda logits, y: F.cross_entropy(logits, y, reduction="sum")
    raise ValueError(f"loss must be 'ce' or a callable (logits, y) -> scalar, got {loss!r}")


def _trainable(model: nn.Module) -> dict[str, Tensor]:
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    if not params:
        raise ValueError("model has no parameters with requires_grad=True")
    return params


def _check_xy(x: Tensor, y: Tensor | None, labels: str) -> None:
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [B, ...], got shape {tuple(x.shape)}")
    if labels == "data":
        if y is None:
            raise ValueError("labels='data' needs y (or use labels='model' / 'expected')")
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"x has {x.shape[0]} samples but y has {y.shape[0]}")


@torch.no_grad()
def _model_labels(model: nn.Module, x: Tensor, generator: torch.Generator | None) -> Tensor:
    """One label per sample drawn from the model's softmax (sampled on CPU for determinism)."""
    probs = F.softmax(model(x).float(), dim=1).cpu()
    return torch.multinomial(probs, 1, generator=generator).squeeze(1).to(x.device)


def per_sample_grads(
    model: nn.Module, x: Tensor, y: Tensor, loss: str | LossFn = "ce"
) -> dict[str, Tensor]:
    """Gradient of each sample's own loss: ``{name: Tensor[B, *param.shape]}``.

    ``torch.func``: ``vmap`` over the batch of ``grad`` of ``loss(functional_call(model, θ,
    x_i[None]), y_i[None])``. Buffers are passed through unchanged; the model runs in eval mode.
    Memory is ``B × (number of parameters)`` floats — chunk large batches (as
    :func:`fisher_diagonal` does). A model whose forward ``vmap`` cannot trace (an op without
    a batching rule) falls back to :func:`torch_per_sample_grads_loop`, with one warning.
    """
    _check_xy(x, y, "data")
    loss_fn = _loss_fn(loss)
    params = {n: p.detach() for n, p in _trainable(model).items()}
    frozen = {n: p.detach() for n, p in model.named_parameters() if not p.requires_grad}
    buffers = dict(model.named_buffers())

    def sample_loss(p: dict[str, Tensor], xi: Tensor, yi: Tensor) -> Tensor:
        out = functional_call(model, (p, frozen, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    with eval_mode(model):
        try:
            return vmap(grad(sample_loss), in_dims=(None, 0, 0))(params, x, y)
        except RuntimeError as err:
            if "vmap" not in str(err):
                raise
            if type(model) not in _NO_VMAP:
                _NO_VMAP.add(type(model))
                log.warning("per_sample_grads: %s cannot run under torch.func.vmap (%s); "
                            "using the per-sample loop", type(model).__name__,
                            str(err).splitlines()[0])
    return torch_per_sample_grads_loop(model, x, y, loss)


def torch_per_sample_grads_loop(
    model: nn.Module, x: Tensor, y: Tensor, loss: str | LossFn = "ce"
) -> dict[str, Tensor]:
    """Reference for :func:`per_sample_grads`: one ``backward()`` per sample (batch size 1).
    Obviously correct, but slow."""
    _check_xy(x, y, "data")
    loss_fn = _loss_fn(loss)
    params = _trainable(model)
    out = {n: torch.empty((x.shape[0], *p.shape), dtype=p.dtype, device=p.device)
           for n, p in params.items()}
    with eval_mode(model):
        for i in range(x.shape[0]):
            grads = torch.autograd.grad(loss_fn(model(x[i : i + 1]), y[i : i + 1]),
                                        list(params.values()), allow_unused=True)
            for (n, p), g in zip(params.items(), grads):
                out[n][i] = torch.zeros_like(p) if g is None else g
    return out


SquaresFn = Callable[..., dict[str, Tensor]]


def _squares_from(grads_fn: Callable[..., dict[str, Tensor]]) -> SquaresFn:
    """``Σ_i w_i g_i²`` from a per-sample-gradient function (the reference providers)."""

    def squares(model: nn.Module, x: Tensor, y: Tensor, loss: str | LossFn,
                weights: Tensor | None = None) -> dict[str, Tensor]:
        out = {}
        for n, gn in grads_fn(model, x, y, loss).items():
            sq = gn.pow(2)
            if weights is not None:
                sq = weights.to(gn.dtype).view(-1, *([1] * (gn.dim() - 1))) * sq
            out[n] = sq.sum(0)
        return out

    return squares


def _fast_squares(model: nn.Module, x: Tensor, y: Tensor, loss: str | LossFn,
                  weights: Tensor | None = None) -> dict[str, Tensor]:
    from fastunlearn.kernels.fisher_fast import fast_fisher_diagonal

    return fast_fisher_diagonal(model, x, y, loss=loss, weights=weights)


def _fisher_batch(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None,
    labels: str,
    generator: torch.Generator | None,
    squares_fn: SquaresFn,
    loss: str | LossFn,
) -> dict[str, Tensor]:
    """``Σ_i g_i²`` of one batch; ``squares_fn`` gives the (weighted) square sums."""
    if labels == "expected":
        with torch.no_grad(), eval_mode(model):
            probs = F.softmax(model(x).float(), dim=1)
        total: dict[str, Tensor] = {}
        for c in range(probs.shape[1]):
            yc = torch.full((x.shape[0],), c, dtype=torch.long, device=x.device)
            for n, term in squares_fn(model, x, yc, loss, probs[:, c]).items():
                total[n] = total[n] + term if n in total else term
        return total
    if labels == "model":
        with eval_mode(model):
            y = _model_labels(model, x, generator)
    assert y is not None
    return squares_fn(model, x, y, loss)


def _batches(
    x: Tensor | None, y: Tensor | None, loader: Iterable[Any] | None, chunk_size: int
) -> Iterable[tuple[Tensor, Tensor | None]]:
    if (x is None) == (loader is None):
        raise ValueError("fisher_diagonal needs exactly one of x (with y) or loader=")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be ≥ 1, got {chunk_size}")
    if loader is not None:
        for batch in loader:
            bx, by = (batch[0], batch[1]) if isinstance(batch, (tuple, list)) else (batch, None)
            for s in range(0, bx.shape[0], chunk_size):
                yield bx[s : s + chunk_size], None if by is None else by[s : s + chunk_size]
        return
    assert x is not None
    for s in range(0, x.shape[0], chunk_size):
        yield x[s : s + chunk_size], None if y is None else y[s : s + chunk_size]


def fisher_diagonal(
    model: nn.Module,
    x: Tensor | None = None,
    y: Tensor | None = None,
    *,
    loader: Iterable[Any] | None = None,
    labels: str = "data",
    loss: str | LossFn = "ce",
    chunk_size: int = 64,
    generator: torch.Generator | None = None,
    impl: str = "auto",
) -> dict[str, Tensor]:
    """Diagonal Fisher ``F = Σ_i (∂ℓ_i/∂θ)²`` over every sample: ``{name: Tensor[param.shape]}``.

    ``impl="auto"`` uses the hook-based fast path (:mod:`fastunlearn.kernels.fisher_fast`, no
    batch × |θ| buffer) whenever it supports the model, else this module's vmap reference;
    ``"fast"`` / ``"reference"`` force one of them.

    Give either a batch ``x`` (with ``y`` unless ``labels`` is ``"model"``/``"expected"``) or
    ``loader=`` — any iterable of ``(x, y)`` batches (e.g. ``part.batches(256, device=dev)``).
    Batches are processed ``chunk_size`` samples at a time and squared gradients are summed
    into one accumulator per parameter, so memory is bounded whatever the data size. Divide by
    the sample count for the mean Fisher. ``generator`` seeds the label draws of
    ``labels="model"``.
    """
    if labels not in LABEL_MODES:
        raise ValueError(f"labels must be one of {LABEL_MODES}, got {labels!r}")
    if impl not in ("auto", "fast", "reference"):
        raise ValueError(f"impl must be 'auto', 'fast' or 'reference', got {impl!r}")
    squares_fn = _squares_from(per_sample_grads)
    if impl != "reference":
        from fastunlearn.kernels.fisher_fast import fast_fisher_supported

        if impl == "fast" or fast_fisher_supported(model):
            squares_fn = _fast_squares
    acc: dict[str, Tensor] = {}
    seen = 0
    for bx, by in _batches(x, y, loader, chunk_size):
        _check_xy(bx, by, labels)
        part = _fisher_batch(model, bx, by, labels, generator, squares_fn, loss)
        for n, v in part.items():
            acc[n] = acc[n] + v if n in acc else v
        seen += bx.shape[0]
    if seen == 0:
        raise ValueError("fisher_diagonal got no samples")
    return acc


def torch_fisher_diagonal_loop(
    model: nn.Module,
    x: Tensor,
    y: Tensor | None = None,
    *,
    labels: str = "data",
    loss: str | LossFn = "ce",
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Reference for :func:`fisher_diagonal`: per-sample gradients from one ``backward()`` per
    sample, squared and summed. Obviously correct, but slow. With ``labels="model"`` and the
    same ``generator`` seed it draws the same labels as :func:`fisher_diagonal` fed the same
    batch in one chunk."""
    _check_xy(x, y, labels)
    return _fisher_batch(
        model, x, y, labels, generator, _squares_from(torch_per_sample_grads_loop), loss
    )
