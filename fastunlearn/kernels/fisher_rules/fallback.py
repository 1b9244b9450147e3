"""The generic fallback for a module that owns parameters and has no registered rule:
``torch.func.vmap`` over samples of ``vjp`` of the module's own ``functional_call`` (its direct
parameters only) on one sample's input with that sample's output gradient. Not registered: the
driver uses it for every type without a rule (after the backward — functorch inside an autograd
hook loses track of its tensors)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vjp, vmap
from torch.utils._pytree import tree_flatten

from fastunlearn.kernels.fisher_rules.registry import _active_calls, _Call, _own_trainable, _Scratch


def vmap_rule(m: nn.Module, calls: list[_Call], s: int, e: int,
              scratch: _Scratch | None = None) -> dict[str, Tensor]:
    """Any module: ``vmap`` over samples of ``vjp`` of the module's own ``functional_call``
    (its direct parameters only) on one sample's input with that sample's output gradient."""
    params = {n: p.detach() for n, p in _own_trainable(m).items()}
    fixed = {n: p.detach() for n, p in m.named_parameters(recurse=False) if not p.requires_grad}
    fixed.update(dict(m.named_buffers(recurse=False)))
    b = None
    total: dict[str, Tensor] = {}
    for call in _active_calls(calls):
        leaves, spec = tree_flatten((call.args, call.kwargs))
        b = b or next(t.shape[0] for t in call.grads.values())
        mapped = [i for i, t in enumerate(leaves)
                  if isinstance(t, Tensor) and t.dim() > 0 and t.shape[0] == b]
        cot = [call.grads.get(k) for k in range(call.n_out)]

        def one(p: dict[str, Tensor], xs: list[Tensor], gs: list[Tensor | None],
                leaves: list[Any] = leaves, mapped: list[int] = mapped, spec: Any = spec,
                ) -> dict[str, Tensor]:
            vals = list(leaves)
            for i, t in zip(mapped, xs):
                vals[i] = t.unsqueeze(0)
            args, kwargs = spec.unflatten(vals)

            def fwd(q: dict[str, Tensor]) -> tuple[Tensor, ...]:
                outs = functional_call(m, (q, fixed), tuple(args), kwargs)
                return tuple(o for o in tree_flatten(outs)[0] if isinstance(o, Tensor))

            outs, pull = vjp(fwd, p)
            cots = tuple(torch.zeros_like(o) if gk is None else gk.unsqueeze(0)
                         for o, gk in zip(outs, gs))
            return pull(cots)[0]

        xs = [leaves[i][s:e] for i in mapped]
        gs = [None if gk is None else gk[s:e] for gk in cot]
        part = vmap(one, in_dims=(None, 0, 0))(params, xs, gs)
        for n, v in part.items():
            total[n] = total[n] + v if n in total else v
    return total
