"""Per-layer rules of the fast Fisher (:mod:`fastunlearn.kernels.fisher_fast`), one module per
layer type, each registering itself at import (the Opacus ``register_grad_sampler`` pattern):

* :mod:`~fastunlearn.kernels.fisher_rules.registry` — the rule and batch-broadcast registries
  and what driver and rules share (the recorded call, the scratch buffer, helpers). It imports
  no rule and not the driver; the rules import only it (and each other), never the driver.
* :mod:`~fastunlearn.kernels.fisher_rules.linear` — ``nn.Linear`` (rank-one ``[B, in]``
  shortcut, token ``bmm`` rule).
* :mod:`~fastunlearn.kernels.fisher_rules.conv` — ``nn.Conv2d`` (unfold + ``bmm`` / grouped
  ``convolution_backward``).
* :mod:`~fastunlearn.kernels.fisher_rules.fused` — the fused Triton Fisher of token-Linear and
  ``groups=1`` Conv2d weights (CUDA).
* :mod:`~fastunlearn.kernels.fisher_rules.norms` — BatchNorm (running statistics), LayerNorm,
  GroupNorm, and timm's ``LayerNorm`` / ``LayerNorm2d`` / ``GroupNorm`` (registered by name).
* :mod:`~fastunlearn.kernels.fisher_rules.norm_act` — timm ``BatchNormAct2d`` (batch norm +
  activation child; owns its parameters although it has children).
* :mod:`~fastunlearn.kernels.fisher_rules.fallback` — the ``vmap(vjp)`` fallback for any other
  module.
* :mod:`~fastunlearn.kernels.fisher_rules.vit` — timm ``VisionTransformer``'s broadcast
  parameters.

Importing this package registers every rule; the driver imports it.
"""

from fastunlearn.kernels.fisher_rules import conv, fallback, fused, linear, norm_act, norms, vit
from fastunlearn.kernels.fisher_rules.registry import (
    register_batch_broadcast,
    register_fisher_rule,
)

__all__ = ["conv", "fallback", "fused", "linear", "norm_act", "norms",
           "register_batch_broadcast", "register_fisher_rule", "vit"]
