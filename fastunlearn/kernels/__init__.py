"""Kernels: tensor-level building blocks the unlearning methods share (leaves of the import
graph — they know modules and tensors, never methods or data sets).

``fisher`` — per-sample gradients and the diagonal Fisher information:

* :func:`per_sample_grads` ``(model, x, y, loss="ce") -> {name: Tensor[B, *shape]}``
* :func:`fisher_diagonal` ``(model, x=None, y=None, *, loader=None, labels="data") -> {name:
  Tensor}`` with ``F = Σ_i (∂ℓ_i/∂θ)²``
* :func:`torch_fisher_diagonal_loop`, :func:`torch_per_sample_grads_loop` — batch-size-1
  references ("obviously correct, but slow") used by the tests.

These names are stable: faster providers plug in behind the same signatures.
"""

from fastunlearn.kernels.fisher import (
    LABEL_MODES,
    fisher_diagonal,
    per_sample_grads,
    torch_fisher_diagonal_loop,
    torch_per_sample_grads_loop,
)

__all__ = [
    "LABEL_MODES",
    "fisher_diagonal",
    "per_sample_grads",
    "torch_fisher_diagonal_loop",
    "torch_per_sample_grads_loop",
]
