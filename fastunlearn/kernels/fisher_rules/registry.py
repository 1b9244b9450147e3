"""What the fast-Fisher driver and its per-layer rules share: the rule and broadcast
registries, the recorded call (:class:`_Call`), the scratch buffer (:class:`_Scratch`) and a few
helpers. Both :mod:`fastunlearn.kernels.fisher_fast` (the driver) and the rule modules import
this module, and it imports neither, so there is no cycle between them.

A rule is ``rule(module, calls, start, end, scratch) -> {local_name: Tensor[end - start, ...]}``:
the per-sample gradients of samples ``[start, end)`` for the module's own trainable parameters,
given every call of the module in one forward pass (its inputs ``call.args`` /
``call.kwargs``, detached, and the gradient of the summed loss with respect to its ``k``-th
tensor output ``call.grad_out(k)``, rows = samples). The returned tensors are temporaries
(fresh, or views of ``scratch``, never aliases of a recorded input or gradient): the driver
may overwrite them, and they are invalid after the next rule call.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class _Call:
    """One call of a module: its positional/keyword inputs and the gradients of its outputs."""

    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    versions: list[tuple[Tensor, int]]
    n_out: int = 0
    grads: dict[int, Tensor] = field(default_factory=dict)

    def check_unchanged(self, module: nn.Module) -> None:
        for t, v in self.versions:
            if t._version != v:
                raise RuntimeError(f"the input of {type(module).__name__} was modified in place "
                                   "after the module used it; fast Fisher cannot use it")

    def grad_out(self, k: int = 0) -> Tensor | None:
        return self.grads.get(k)


class _Scratch:
    """One flat buffer reused by every rule call of a pass. Fresh multi-megabyte tensors cost
    page faults on every allocation (glibc returns them to the OS), which on CPU took longer
    than the matmuls themselves; views of one buffer are faulted in once."""

    def __init__(self, dtype: torch.dtype, device: torch.device) -> None:
        self.buf = torch.empty(0, dtype=dtype, device=device)

    def views(self, *shapes: tuple[int, ...]) -> list[Tensor]:
        """Disjoint uninitialised views; valid until the next call."""
        sizes = [math.prod(sh) for sh in shapes]
        if sum(sizes) > self.buf.numel():
            self.buf = torch.empty(sum(sizes), dtype=self.buf.dtype, device=self.buf.device)
        out, o = [], 0
        for sh, n in zip(shapes, sizes):
            out.append(self.buf[o : o + n].view(sh))
            o += n
        return out


# --------------------------------------------------------------------------- rules -----------
def _qualname(t: type) -> str:
    """``"module.QualName"`` of a class (how third-party types are registered by name)."""
    return f"{t.__module__}.{t.__qualname__}"


Rule = Callable[[nn.Module, list[_Call], int, int, _Scratch], dict[str, Tensor]]
#: Rules by exact module type, or by a type's qualified name ``"module.QualName"`` (third-party
#: classes registered without importing their package).
_RULES: dict[type[nn.Module] | str, Rule] = {}
#: ``applies(module)`` of a rule registered with one: where it returns ``False`` the module
#: is treated as if its type had no rule.
_APPLIES: dict[type[nn.Module] | str, Callable[[nn.Module], bool]] = {}
#: Types whose rule covers their whole ``forward``, child modules included (``non_leaf=True``).
_NON_LEAF: set[type[nn.Module] | str] = set()


def register_fisher_rule(*types: type[nn.Module] | str,
                         applies: Callable[[nn.Module], bool] | None = None,
                         non_leaf: bool = False) -> Callable[[Rule], Rule]:
    """Decorator: use ``rule(module, calls, start, end, scratch) -> {param_name:
    Tensor[end - start, ...]}`` (per-sample gradients of samples ``start:end`` of the module's
    own trainable parameters; see this module's docstring) for modules of exactly these types
    (not subclasses: a subclass may change ``forward``; register it explicitly, by class or by
    its qualified name ``"package.module.QualName"``, once its ``forward`` is known to compute
    what the rule assumes). A later registration for the same type replaces the earlier one.

    ``applies(module)`` (optional) restricts the rule to the instances it returns ``True``
    for; the others are treated as if their type had no rule (the vmap fallbacks).
    ``non_leaf=True`` declares that the rule accounts for the module's whole ``forward``,
    child modules included (e.g. a norm followed by its activation submodule), so such a
    module owns its direct parameters even though it has children; otherwise only leaf
    modules own parameters and a non-leaf module's go to the whole-model fallback."""
    for t in types:
        if not (isinstance(t, str) or (isinstance(t, type) and issubclass(t, nn.Module))):
            raise TypeError("register_fisher_rule takes nn.Module subclasses or qualified "
                            f"class names, got {t!r}")

    def deco(fn: Rule) -> Rule:
        for t in types:
            _RULES[t] = fn
            _APPLIES.pop(t, None)
            _NON_LEAF.discard(t)
            if applies is not None:
                _APPLIES[t] = applies
            if non_leaf:
                _NON_LEAF.add(t)
        return fn

    return deco


def _rule_key(m: nn.Module) -> type[nn.Module] | str | None:
    t = type(m)
    if t in _RULES:
        return t
    name = _qualname(t)
    return name if name in _RULES else None


def rule_for(m: nn.Module) -> Rule | None:
    """The rule registered for ``type(m)`` (exact type, else its qualified name) where it
    applies to ``m``; ``None`` otherwise (the driver's vmap fallbacks)."""
    key = _rule_key(m)
    if key is None:
        return None
    applies = _APPLIES.get(key)
    return _RULES[key] if applies is None or applies(m) else None


def owns_with_children(m: nn.Module) -> bool:
    """Whether ``m`` owns its direct parameters although it has child modules: its type's rule
    was registered with ``non_leaf=True`` and applies to ``m``."""
    key = _rule_key(m)
    return key is not None and key in _NON_LEAF and rule_for(m) is not None


# --------------------------------------------------------------------------- broadcast -------
BroadcastNames = Callable[[nn.Module], tuple[str, ...]]
_BROADCAST: dict[str, BroadcastNames] = {}


def register_batch_broadcast(owner: type[nn.Module] | str, names: BroadcastNames) -> None:
    """Declare that modules of type ``owner`` (a class or its ``module.QualName``) use their
    direct parameters ``names(module)`` — each of shape ``[1, ...]`` — only by broadcasting or
    ``expand``-ing dim 0 over the batch, so a ``[B, ...]`` stand-in gives per-sample gradients
    in the ordinary backward. A wrong declaration gives wrong Fishers: declare only what the
    owner's ``forward`` visibly does (the tests compare such models with the references)."""
    _BROADCAST[owner if isinstance(owner, str) else _qualname(owner)] = names


def _broadcast_params(model: nn.Module, rest: dict[str, Tensor]) -> dict[str, Tensor]:
    """The parameters in ``rest`` that a registered owner only broadcasts over the batch."""
    ids = {id(p): n for n, p in rest.items()}
    out: dict[str, Tensor] = {}
    for m in model.modules():
        fn = _BROADCAST.get(_qualname(type(m)))
        if fn is None:
            continue
        for local in fn(m):
            p = m._parameters.get(local)
            if p is not None and id(p) in ids and p.dim() > 0 and p.shape[0] == 1:
                out[ids[id(p)]] = p
    return out


# --------------------------------------------------------------------------- helpers ---------
def _own_trainable(m: nn.Module) -> dict[str, Tensor]:
    return {n: p for n, p in m.named_parameters(recurse=False) if p.requires_grad}


def _active_calls(calls: list[_Call]) -> list[_Call]:
    """Calls whose output reached the loss (a call without gradients contributes zero)."""
    return [c for c in calls if c.grads]


def _tokens(t: Tensor, b: int, last: int) -> Tensor:
    """``[B, ..., last]`` → ``[B, T, last]``."""
    return t.reshape(b, -1, last)


def _cat(ts: list[Tensor], dim: int) -> Tensor:
    return ts[0] if len(ts) == 1 else torch.cat(ts, dim)


def _chunks(b: int, numel: int, chunk_elems: int) -> list[tuple[int, int]]:
    """Sample ranges ``[(start, end), ...]`` holding at most ``chunk_elems`` entries of
    ``numel`` per sample (at least one sample each)."""
    step = max(1, min(b, chunk_elems // max(numel, 1)))
    return [(s, min(b, s + step)) for s in range(0, b, step)]
