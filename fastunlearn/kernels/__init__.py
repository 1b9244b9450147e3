"""Kernels: tensor-level building blocks the unlearning methods share (leaves of the import
graph — they know modules and tensors, never methods or data sets).

``fisher`` — per-sample gradients and the diagonal Fisher information:

* :func:`per_sample_grads` ``(model, x, y, loss="ce") -> {name: Tensor[B, *shape]}``
* :func:`fisher_diagonal` ``(model, x=None, y=None, *, loader=None, labels="data") -> {name:
  Tensor}`` with ``F = Σ_i (∂ℓ_i/∂θ)²``
* :func:`torch_fisher_diagonal_loop`, :func:`torch_per_sample_grads_loop` — batch-size-1
  references ("obviously correct, but slow") used by the tests.

These names are stable: faster providers plug in behind the same signatures.

``fisher_fast`` — the fast path ``fisher_diagonal(impl="auto")`` dispatches to: per-layer
rules via hooks, squares summed chunk by chunk, never a batch × |θ| buffer.
``fisher_triton`` — :func:`triton_token_fisher` (fused Triton kernel for token/conv weights: each
sample's gradient tile squared in registers, never stored; used by ``fisher_fast`` on CUDA) and
its einsum reference :func:`torch_token_fisher`.
``ig`` — :func:`integrated_gradients` over weights (Riemann / Gauss–Legendre).
``masked_sgd`` — :func:`masked_sgd_step`: ``reference`` (per tensor, obviously correct),
``torch`` (fused CPU path, bit-identical to ``torch.optim.SGD`` with an all-ones mask) and
``triton`` (one launch over every parameter, dense or bit-packed masks); ``auto`` = Triton on
CUDA, torch otherwise. See docs/kernels.md for what happens outside the mask.
"""

from fastunlearn.kernels.fisher import (
    LABEL_MODES,
    fisher_diagonal,
    per_sample_grads,
    torch_fisher_diagonal_loop,
    torch_per_sample_grads_loop,
)
from fastunlearn.kernels.fisher_fast import (
    fast_fisher_diagonal,
    fast_fisher_supported,
    fast_per_sample_grads,
    register_batch_broadcast,
    register_fisher_rule,
)
from fastunlearn.kernels.fisher_triton import torch_token_fisher, triton_token_fisher
from fastunlearn.kernels.ig import integrated_gradients
from fastunlearn.kernels.masked_sgd import (
    choose_impl,
    masked_sgd_step,
    pack_mask,
    prepare_mask,
    reference_masked_sgd_step,
    torch_masked_sgd_step,
    triton_masked_sgd_step,
    unpack_mask,
)

__all__ = [
    "choose_impl",
    "prepare_mask",
    "reference_masked_sgd_step",
    "fast_fisher_diagonal",
    "fast_fisher_supported",
    "fast_per_sample_grads",
    "integrated_gradients",
    "masked_sgd_step",
    "pack_mask",
    "register_batch_broadcast",
    "register_fisher_rule",
    "torch_masked_sgd_step",
    "torch_token_fisher",
    "triton_token_fisher",
    "triton_masked_sgd_step",
    "unpack_mask",
    "LABEL_MODES",
    "fisher_diagonal",
    "per_sample_grads",
    "torch_fisher_diagonal_loop",
    "torch_per_sample_grads_loop",
]
