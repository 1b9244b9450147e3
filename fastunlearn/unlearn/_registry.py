"""Method registry: ``@register_method(Config)`` on ``fn(model, split, config) -> UnlearnResult``.

``unlearn(model, split, config)`` copies the model (the original is never modified), moves it
to the configured device, times the method honestly (synchronised; precomputation included)
and fills in ``rte_s`` and ``peak_mem_mb``.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from torch import nn

from fastunlearn._device import resolve_device
from fastunlearn._timing import measure
from fastunlearn.data.splits import ForgetSplit
from fastunlearn.unlearn.base import UnlearnConfig, UnlearnResult

MethodFn = Callable[[nn.Module, ForgetSplit, Any], UnlearnResult]


@dataclass(frozen=True)
class MethodEntry:
    name: str
    fn: MethodFn
    config_cls: type[UnlearnConfig]
    description: str


_METHODS: dict[str, MethodEntry] = {}


def register_method(config_cls: type[UnlearnConfig]) -> Callable[[MethodFn], MethodFn]:
    """Register a method under ``config_cls.method``; the function docstring's first line is
    the description ``fastunlearn list methods`` shows."""
    name = config_cls.method
    if not name:
        raise ValueError(f"{config_cls.__name__} must set the class attribute `method`")

    def deco(fn: MethodFn) -> MethodFn:
        if name in _METHODS:
            raise ValueError(f"method {name!r} is registered twice")
        doc = inspect.getdoc(fn) or ""
        _METHODS[name] = MethodEntry(name, fn, config_cls, doc.splitlines()[0] if doc else "")
        return fn

    return deco


def _ensure_builtin() -> None:
    from fastunlearn.unlearn import methods  # noqa: F401  (imports register the built-ins)


def list_methods() -> dict[str, str]:
    """``{name: one-line description}`` of every registered method, sorted by name."""
    _ensure_builtin()
    return {n: _METHODS[n].description for n in sorted(_METHODS)}


def config_classes() -> dict[str, type[UnlearnConfig]]:
    """``{ConfigClassName: class}`` of every registered method (e.g. ``"SalUnConfig"``)."""
    _ensure_builtin()
    return {e.config_cls.__name__: e.config_cls for e in _METHODS.values()}


def get_method(name: str) -> MethodEntry:
    _ensure_builtin()
    entry = _METHODS.get(name.strip().lower().replace("-", "_"))
    if entry is None:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(sorted(_METHODS))}")
    return entry


def make_config(name: str, **overrides: Any) -> UnlearnConfig:
    """The config of method ``name`` with the given fields overridden (None values ignored);
    unknown fields raise ValueError naming the valid ones."""
    entry = get_method(name)
    valid = {f.name for f in fields(entry.config_cls)}
    given = {k: v for k, v in overrides.items() if v is not None}
    bad = sorted(set(given) - valid)
    if bad:
        raise ValueError(
            f"method {entry.name!r} has no option {bad[0]!r}; options: {', '.join(sorted(valid))}"
        )
    return entry.config_cls(**given)


def unlearn(
    model: nn.Module, split: ForgetSplit, config: UnlearnConfig, *, inplace: bool = False
) -> UnlearnResult:
    """Run the method named by ``config`` on a copy of ``model`` and time it."""
    entry = get_method(config.method)
    if not isinstance(config, entry.config_cls):
        raise TypeError(f"method {entry.name!r} expects {entry.config_cls.__name__}")
    device = resolve_device(config.device)
    work = model if inplace else copy.deepcopy(model)
    work.to(device)
    with measure(device) as m:
        result = entry.fn(work, split, config)
    result.rte_s = m.seconds
    result.peak_mem_mb = m.peak_mem_mb
    spec = getattr(model, "fastunlearn_spec", None)
    if spec is not None and not hasattr(result.model, "fastunlearn_spec"):
        result.model.fastunlearn_spec = spec  # type: ignore[attr-defined]
    result.model.eval()
    return result
